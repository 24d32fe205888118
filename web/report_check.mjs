// Opens a distill HTML report in headless Chromium (playwright-core + the system's chromium) and
// prints JSON: every request the page made besides its own file (each one is intercepted: anything
// not file: or data: is aborted, so nothing leaves the machine), the plots and images rendered, and
// the theme before and after clicking the toggle, once with the system in light and once in dark.
// Usage: node web/report_check.mjs file:///.../report.html [CHROMIUM]   ->  {"light": {...}, "dark": {...}}
import { chromium } from "playwright-core";

const [url, executable = "/usr/bin/chromium"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: executable, headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
async function check(scheme) {
  const context = await browser.newContext({ colorScheme: scheme });
  const requests = [], errors = [];
  await context.route("**/*", (route) => {
    const asked = route.request().url();
    if (asked === url) return route.continue();
    requests.push(asked);  // any other request, file: included, means the page is not self-contained
    return /^(file|data):/.test(asked) ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => { if (message.type() === "error") errors.push(message.text()); });
  await page.goto(url, { waitUntil: "load" });
  const plots = await page.locator("svg.plot").count();
  const drawn = await page.evaluate(() => [...document.querySelectorAll("svg.plot")]
    .filter((svg) => svg.getBoundingClientRect().width > 100 && svg.querySelectorAll("path, use").length > 10).length);
  const images = await page.evaluate(() => [...document.images].map((image) => image.complete && image.naturalWidth > 0));
  const tables = await page.locator("table").count();
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const theme = () => page.evaluate(() => document.documentElement.dataset.theme || "system");
  const before = { theme: await theme(), background: await background(),
                   button: await page.locator("#theme").textContent() };
  await page.click("#theme");
  const after = { theme: await theme(), background: await background(),
                  button: await page.locator("#theme").textContent() };
  const chosen = await page.locator("tr.chosen").count();
  const headings = await page.locator("h2").allTextContents();
  const title = await page.title();
  await context.close();
  return { requests, errors, plots, drawn, images, tables, before, after, chosen, headings, title };
}
try {
  console.log(JSON.stringify({ light: await check("light"), dark: await check("dark") }));
} finally {
  await browser.close();
}
