// Opens a distill HTML report in headless Chromium (playwright-core + the system's chromium) and
// prints JSON: every request the page made besides its own file, the plots rendered, and the theme
// before and after clicking the toggle.   Usage: node web/report_check.mjs file:///.../report.html [CHROMIUM]
import { chromium } from "playwright-core";

const [url, executable = "/usr/bin/chromium"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: executable, headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ colorScheme: "light" });
  const requests = [], errors = [];
  page.on("request", (request) => { if (request.url() !== url) requests.push(request.url()); });
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(url, { waitUntil: "load" });
  const plots = await page.locator("svg.plot").count();
  const tables = await page.locator("table").count();
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const before = { theme: await page.evaluate(() => document.documentElement.dataset.theme || "system"),
                   background: await background() };
  await page.click("#theme");
  const after = { theme: await page.evaluate(() => document.documentElement.dataset.theme),
                  background: await background() };
  const chosen = await page.locator("tr.chosen").count();
  console.log(JSON.stringify({ requests, errors, plots, tables, before, after, chosen,
                               title: await page.title() }));
} finally {
  await browser.close();
}
