// Runs model.onnx with onnxruntime-web (wasm, one thread) on an image dropped on the page.
// meta.json: {input_shape: [C, H, W], classes: [...], mean: [...], std: [...], name}.
// window.distill.ready resolves when the model is loaded; window.distill.logits(Float32Array, batch)
// runs raw (already normalised) inputs, for tests.
"use strict";
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = new URL("./", window.location.href).href;

const state = {};

async function load() {
  state.meta = await (await fetch("meta.json")).json();
  state.session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
  document.getElementById("title").textContent = state.meta.name;
  document.getElementById("status").textContent =
    `model loaded: input ${state.meta.input_shape.join("x")}, ${state.meta.classes.length} classes`;
}

async function logits(data, batch) {
  const [c, h, w] = state.meta.input_shape;
  const input = new ort.Tensor("float32", data, [batch, c, h, w]);
  const output = await state.session.run({ [state.session.inputNames[0]]: input });
  return Array.from(output[state.session.outputNames[0]].data);
}

// RGBA pixels (h*w*4) -> normalised CHW floats, grey when the model takes one channel.
function toInput(pixels, invert) {
  const [c, h, w] = state.meta.input_shape;
  const data = new Float32Array(c * h * w);
  for (let i = 0; i < h * w; i++) {
    const rgb = [pixels[4 * i], pixels[4 * i + 1], pixels[4 * i + 2]];
    for (let ch = 0; ch < c; ch++) {
      let value = (c === 1 ? (rgb[0] + rgb[1] + rgb[2]) / 3 : rgb[ch]) / 255;
      if (invert) value = 1 - value;
      data[ch * h * w + i] = (value - state.meta.mean[ch]) / state.meta.std[ch];
    }
  }
  return data;
}

async function classifyImage(image) {
  const [, h, w] = state.meta.input_shape;
  const canvas = document.getElementById("preview");
  canvas.width = w; canvas.height = h;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0, w, h);
  const pixels = context.getImageData(0, 0, w, h).data;
  const scores = await logits(toInput(pixels, document.getElementById("invert").checked), 1);
  const max = Math.max(...scores);
  const exp = scores.map((s) => Math.exp(s - max));
  const total = exp.reduce((a, b) => a + b, 0);
  const order = scores.map((_, k) => k).sort((a, b) => scores[b] - scores[a]);
  document.getElementById("result").textContent = state.meta.classes[order[0]];
  document.getElementById("result").dataset.index = order[0];
  document.getElementById("scores").innerHTML = order.slice(0, 5)
    .map((k) => `<tr><td>${state.meta.classes[k]}</td><td>${(100 * exp[k] / total).toFixed(1)}%</td></tr>`).join("");
  return order[0];
}

async function classifyFile(file) {
  const image = await createImageBitmap(file);
  return classifyImage(image);
}

const drop = document.getElementById("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault(); drop.classList.remove("over");
  if (event.dataTransfer.files.length) classifyFile(event.dataTransfer.files[0]);
});
document.getElementById("file").addEventListener("change", (event) => {
  if (event.target.files.length) classifyFile(event.target.files[0]);
});

window.distill = { ready: load(), logits, classifyFile };
window.distill.ready.catch((error) => {
  document.getElementById("status").textContent = `failed to load the model: ${error}`;
});
