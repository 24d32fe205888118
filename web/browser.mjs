// Headless Chromium for the page tests: playwright-core driving the system's chromium (never
// downloads a browser). openPage(url, executable) -> {browser, page, errors, requests}, the page
// loaded and its window.distill.ready resolved.
import { chromium } from "playwright-core";

export async function openPage(url, executable = "/usr/bin/chromium") {
  const browser = await chromium.launch({
    executablePath: executable,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage();
  const errors = [];
  const requests = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("request", (request) => requests.push(request.url()));
  try {
    await page.goto(url);
    await page.waitForFunction(() => window.distill !== undefined);
    await page.evaluate(() => window.distill.ready);
  } catch (error) {
    await browser.close();
    throw error;
  }
  return { browser, page, errors, requests };
}
