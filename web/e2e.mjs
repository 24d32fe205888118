// End-to-end check of an exported web page in headless Chromium (playwright-core + the system's
// chromium; never downloads a browser). Usage:
//   node web/e2e.mjs URL INPUTS.json IMAGE.png [CHROMIUM]
// INPUTS.json: {"batch": B, "data": [B*C*H*W normalised floats]}. Prints JSON:
// {"status": page status line, "logits": [B*K], "dropped": predicted class index for IMAGE.png}.
import { readFileSync } from "node:fs";
import { openPage } from "./browser.mjs";

const [url, inputsPath, imagePath, executable = "/usr/bin/chromium"] = process.argv.slice(2);
const inputs = JSON.parse(readFileSync(inputsPath, "utf8"));
const { browser, page, errors } = await openPage(url, executable);
try {
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
