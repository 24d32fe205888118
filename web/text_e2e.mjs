// End-to-end check of an exported text page in headless Chromium (see browser.mjs). Usage:
//   node web/text_e2e.mjs URL TEXTS.json [CHROMIUM]
// TEXTS.json: ["a sentence", ...]. Prints JSON: {"status", "ids": [[...]], "mask": [[...]] (the page's
// tokenisation, padded to the longest), "outputs": [B*K or B*D] (the page's model run on them),
// "typed": {"index", "label", "tokens"} (the first text typed into the page and run), "errors",
// "foreign": requests that left the page's own server}.
import { readFileSync } from "node:fs";
import { openPage } from "./browser.mjs";

const [url, textsPath, executable = "/usr/bin/chromium"] = process.argv.slice(2);
const texts = JSON.parse(readFileSync(textsPath, "utf8"));
const { browser, page, errors, requests } = await openPage(url, executable);
try {
  const { ids, mask } = await page.evaluate((texts) => window.distill.tokenize(texts), texts);
  const outputs = await page.evaluate((texts) => window.distill.run(texts), texts);
  // the user's path: type the first text, press Run
  await page.fill("#text", texts[0]);
  await page.click("#run");
  await page.waitForFunction(() => document.getElementById("result").dataset.index !== undefined);
  const typed = { index: Number(await page.getAttribute("#result", "data-index")),
                  label: await page.textContent("#result"), tokens: await page.textContent("#tokens") };
  const status = await page.textContent("#status");
  const origin = new URL(url).origin;
  const foreign = requests.filter((address) => !address.startsWith(origin));
  console.log(JSON.stringify({ status, ids, mask, outputs, typed, errors, foreign }));
} finally {
  await browser.close();
}
