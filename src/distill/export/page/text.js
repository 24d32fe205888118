// Tokenises typed text in the browser (wordpiece.js over the shipped tokenizer.json) and runs
// model.onnx with onnxruntime-web (wasm, one thread): the class (names from meta.json) or the embedding.
// meta.json: {kind: "text", name, max_length, pad_id, inputs: [input_ids, attention_mask],
//             output: "logits" | "embedding", classes: [...] | null, tokenizer: "tokenizer.json"}.
// For tests: window.distill.ready, .tokenize(texts) -> {ids, mask} (rows padded to the longest),
// .run(texts) -> flat float outputs (B * K or B * D), .classifyText(text).
"use strict";
const state = {};
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = new URL("./", window.location.href).href;
const fetchJson = async (name) => (await fetch(name)).json();

async function load() {
  state.meta = await fetchJson("meta.json");
  const [tokenizer, session] = await Promise.all([
    fetchJson(state.meta.tokenizer),
    ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] }),
  ]);
  state.tokenizer = new WordPiece(tokenizer);
  state.session = session;
  const meta = state.meta;
  document.getElementById("title").textContent = meta.name;
  document.getElementById("label").textContent = meta.output === "embedding" ? "Embedding" : "Prediction";
  document.getElementById("status").textContent = `model loaded: up to ${meta.max_length} tokens, ` +
    (meta.output === "embedding" ? "a sentence embedding" : `${meta.classes.length} classes`);
  document.getElementById("run").disabled = false;
}

function tokenize(texts) {
  return state.tokenizer.batch(texts, state.meta.max_length, state.meta.pad_id);
}

async function run(texts) {
  const { ids, mask, length } = tokenize(texts);
  const shape = [texts.length, length];
  const tensor = (rows) => new ort.Tensor("int64", BigInt64Array.from(rows.flat(), (v) => BigInt(v)), shape);
  const feeds = { input_ids: tensor(ids), attention_mask: tensor(mask) };
  const inputs = {};
  for (const name of state.session.inputNames) inputs[name] = feeds[name];
  const output = await state.session.run(inputs);
  return Array.from(output[state.session.outputNames[0]].data);
}

async function classifyText(text) {
  const scores = await run([text]);
  const result = document.getElementById("result");
  const table = document.getElementById("scores");
  const ids = tokenize([text]).ids[0];
  document.getElementById("tokens").textContent = `${ids.length} token ids: ${ids.join(" ")}`;
  if (state.meta.output === "embedding") {
    const norm = Math.sqrt(scores.reduce((total, v) => total + v * v, 0));
    result.textContent = `${scores.length} dimensions, norm ${norm.toFixed(3)}`;
    result.dataset.index = "0";
    table.innerHTML = scores.slice(0, 8).map((v, k) => `<tr><td>${k}</td><td>${v.toFixed(4)}</td></tr>`).join("") +
      (scores.length > 8 ? "<tr><td>...</td><td></td></tr>" : "");
    return scores;
  }
  const max = Math.max(...scores);
  const exp = scores.map((s) => Math.exp(s - max));
  const total = exp.reduce((a, b) => a + b, 0);
  const order = scores.map((_, k) => k).sort((a, b) => scores[b] - scores[a]);
  result.textContent = state.meta.classes[order[0]];
  result.dataset.index = order[0];
  table.innerHTML = order.slice(0, 5)
    .map((k) => `<tr><td>${state.meta.classes[k]}</td><td>${(100 * exp[k] / total).toFixed(1)}%</td></tr>`).join("");
  return order[0];
}

document.getElementById("run").addEventListener("click", () => classifyText(document.getElementById("text").value));

window.distill = { ready: load(), tokenize, run, classifyText };
window.distill.ready.catch((error) => {
  document.getElementById("status").textContent = `failed to load the model: ${error}`;
});
