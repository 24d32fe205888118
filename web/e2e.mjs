// End-to-end check of an exported web page in headless Chromium (playwright-core + the system's
// chromium; never downloads a browser). Usage:
//   node web/e2e.mjs URL INPUTS.json IMAGE.png [CHROMIUM]
// INPUTS.json: {"batch": B, "data": [B*C*H*W normalised floats]}. Prints JSON:
// {"status": page status line, "logits": [B*K], "dropped": predicted class index for IMAGE.png}.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const [url, inputsPath, imagePath, executable = "/usr/bin/chromium"] = process.argv.slice(2);
const inputs = JSON.parse(readFileSync(inputsPath, "utf8"));
const browser = await chromium.launch({
  executablePath: executable,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(url);
  await page.waitForFunction(() => window.distill !== undefined);
  await page.evaluate(() => window.distill.ready);
  const logits = await page.evaluate(async ({ data, batch }) =>
    window.distill.logits(new Float32Array(data), batch), inputs);
  // the user's path: an image file given to the drop zone's file input
  await page.setInputFiles("#file", imagePath);
  await page.waitForFunction(() => document.getElementById("result").dataset.index !== undefined);
  const dropped = Number(await page.getAttribute("#result", "data-index"));
  const status = await page.textContent("#status");
  console.log(JSON.stringify({ status, logits, dropped, label: await page.textContent("#result"), errors }));
} finally {
  await browser.close();
}
