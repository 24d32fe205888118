"""Text students exported for CPU (ONNX fp32 / int8) and the web: a tiny TokenCNN and a tiny WordPiece
tokenizer built here from code (no download). The ONNX graph takes named int64 inputs input_ids /
attention_mask with dynamic batch and sequence axes and equals eager PyTorch on token batches; the
page's tokenizer (plain JavaScript over tokenizer.json) gives the Python tokenizer's ids, also for
all-MiniLM-L6-v2's real tokenizer when its package is installed; in headless Chromium the page
tokenises typed text and gives the eager model's logits. Skipped without the runtimes, except under
CI=true."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.api import infer_spec
from distill.artifacts import save_model
from distill.export import ExportError, ExportOptions, Exporter, MissingRuntimeError, load_student
from distill.export.targets import get_target
from distill.export.text import (RANDOM_TOKENS, check_web_tokenizer, encode_texts, load_tokenizer, text_student,
                                 token_inputs)
from distill.models import build_model
from test_web import CHROMIUM, REPO, require_browser  # the image page's test: the same browser and npm files

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'distill[export]'")
tokenizers = pytest.importorskip("tokenizers", reason="the text extra is not installed: pip install 'distill[text]'")

PAGE = REPO / "src" / "distill" / "export" / "page"
MAX_LENGTH = 16
CLASSES = ["animals", "food", "travel"]
KEYWORDS = {"animals": ["fox", "dog", "cat"], "food": ["cafe", "cake", "tea"], "travel": ["train", "city", "road"]}
SENTENCES = [  # accents, punctuation, unknown words, specials typed in, CJK, an over-long text, nothing
    "The quick brown fox jumps over the lazy dog.",
    "Café Müller's crème brûlée: naïve, déjà vu!",
    "Qu'est-ce que c'est? (Nobody knows...)",
    "Zyxqwvb glorptastic frobnication",
    "a [MASK] on the road, 東京 city",
    "tea " * 40 + "end",
    "",
]


def wordpiece_tokenizer():
    """A BERT-style WordPiece tokenizer over a small vocabulary (letters as fallback pieces)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = ["the", "quick", "brown", "over", "lazy", "jumps", "a", "on", "is", "what", "end", "nobody", "know"]
    words += [w for group in KEYWORDS.values() for w in group]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters, *(f"##{c}" for c in letters),
              "##s", "##ing", ".", ",", "!", "?", "'", "(", ")", ":", "-", "東"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=20))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return tokenizer


def keyword_data(tokenizer, num_samples: int, seed: int):
    """Sentences of random vocabulary words whose class is the keyword group they contain."""
    rng = np.random.default_rng(seed)
    filler = ["the", "quick", "brown", "over", "lazy", "a", "on", "is"]
    texts, labels = [], []
    for _ in range(num_samples):
        label = int(rng.integers(len(CLASSES)))
        words = list(rng.choice(filler, size=int(rng.integers(2, 9))))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(KEYWORDS[CLASSES[label]])))
        texts.append(" ".join(words))
        labels.append(label)
    return encode_texts(tokenizer, texts, MAX_LENGTH), torch.tensor(labels)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """model.safetensors (a TokenCNN trained for a moment, class names in its spec) + model.tokenizer.json."""
    folder = tmp_path_factory.mktemp("text")
    tokenizer = wordpiece_tokenizer()
    tokenizer.save(str(folder / "model.tokenizer.json"))
    torch.manual_seed(0)
    model = build_model("token_cnn", input_shape=(MAX_LENGTH,), num_classes=len(CLASSES),
                        vocab_size=tokenizer.get_vocab_size(), embed_dim=16, channels=16)
    inputs, labels = keyword_data(tokenizer, 256, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(**inputs), labels).backward()
        optimizer.step()
    spec = {**infer_spec(model.eval()), "classes": CLASSES}
    save_model(model, folder / "model.safetensors", spec)
    return folder / "model.safetensors"


# -- which models take tokens ------------------------------------------------------------------------
def test_a_spec_with_vocab_size_and_one_dimension_takes_tokens(text_model):
    assert token_inputs({"params": {"hidden": [32]}, "input_shape": [1, 8, 8]}) is None
    tokens = token_inputs({"params": {"vocab_size": 100, "pad_id": 3}, "input_shape": [64]})
    assert (tokens.vocab_size, tokens.max_length, tokens.pad_id) == (100, 64, 3)
    with pytest.raises(ExportError, match=r"records params.vocab_size 100 .* but input_shape \[1, 8, 8\]"):
        token_inputs({"params": {"vocab_size": 100}, "input_shape": [1, 8, 8]})
    student = load_student(text_model)  # no recipe, no --data: seeded token batches
    assert student.tokens.max_length == MAX_LENGTH and student.data_name == RANDOM_TOKENS
    assert student.tokenizer_path == text_model.with_name("model.tokenizer.json")
    test = student.dataset("test")
    ids, mask = test.inputs["input_ids"], test.inputs["attention_mask"]
    assert ids.dtype == torch.int64 and ids.shape == (256, MAX_LENGTH) and int(ids.max()) < student.tokens.vocab_size
    assert mask[0].all() and (mask.sum(1) < MAX_LENGTH).any() and bool((ids[mask == 0] == 0).all())
    # the first rows after the full one are real sentences, tokenised
    assert ids[1, 0].item() == wordpiece_tokenizer().token_to_id("[CLS]")
    with pytest.raises(ExportError, match=r"the model takes token ids \(input_ids, attention_mask\) but dataset "
                                          r"'digits' gives \(1, 8, 8\)"):
        load_student(text_model, data="digits").dataset("test")


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(text_model, tmp_path):
    model = build_model("token_cnn", input_shape=(MAX_LENGTH,), num_classes=3, vocab_size=10)
    save_model(model, tmp_path / "small.safetensors", infer_spec(model))
    shutil.copyfile(text_model.with_name("model.tokenizer.json"), tmp_path / "small.tokenizer.json")
    with pytest.raises(ExportError, match=r"small.tokenizer.json has \d+ tokens but the model's embedding table has "
                                          r"10 rows"):
        load_student(tmp_path / "small.safetensors")


# -- cpu ---------------------------------------------------------------------------------------------------
def test_cpu_export_has_named_dynamic_token_inputs_and_matches_eager(text_model, tmp_path):
    import onnx
    import onnxruntime as ort

    student = load_student(text_model)
    exporter = Exporter(student, tmp_path / "export", ExportOptions(latency_repeats=3))
    fp32 = exporter.export("cpu", "fp32")
    int8 = exporter.export("cpu", "int8-dynamic")
    assert fp32["status"] == "verified" and fp32["parity"]["max_abs_diff"] < 1e-4 and fp32["parity"]["samples"] == 256
    assert int8["status"] == "verified" and int8["parity"]["agreement"] >= 0.98
    assert int8["size"]["artifact_bytes"] > 0 and int8["latency"]["b1_ms"] > 0 and int8["latency"]["threads"] == 1
    assert [(i["name"], i["dtype"], i["shape"]) for i in fp32["inputs"]] == [
        ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"])]
    assert fp32["outputs"][0]["shape"] == ["batch", 3] and fp32["preprocessing"]["classes"] == CLASSES
    assert fp32["accuracy"]["accuracy"] is None and fp32["accuracy"]["dataset"] == RANDOM_TOKENS
    assert "not measured" in (tmp_path / "export" / "cpu-fp32" / "card.md").read_text()
    proto = onnx.load(str(tmp_path / "export" / "cpu-fp32" / "model.onnx"))
    dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    # another batch size and sequence length than the traced ones, from real sentences
    batch = encode_texts(load_tokenizer(student.tokenizer_path, student.tokens), SENTENCES, MAX_LENGTH)
    assert batch["input_ids"].shape == (len(SENTENCES), MAX_LENGTH) and batch["attention_mask"][-1].sum() == 2
    short = {name: value[:5, :9] for name, value in batch.items()}
    for folder in ("cpu-fp32", "cpu-int8-dynamic"):
        session = ort.InferenceSession(str(tmp_path / "export" / folder / "model.onnx"))
        for inputs in (batch, short):
            got = session.run(None, {name: value.numpy() for name, value in inputs.items()})[0]
            with torch.no_grad():
                want = student.model(**inputs).numpy()
            if folder == "cpu-fp32":
                np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
            else:
                assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.8


def test_cli_exports_a_text_student_with_its_labelled_text_data(text_model, tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    data = tmp_path / "news"
    data.mkdir()
    for split, seed in (("train", 1), ("test", 2)):
        rng = np.random.default_rng(seed)
        lines = ["text,label"] + [f"{' '.join(rng.choice(KEYWORDS[c], 3))} the road,{c}"
                                  for c in rng.choice(CLASSES, 40)]
        (data / f"{split}.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["export", str(text_model), "--target", "cpu", "--precision", "fp32",
                                      "--data", "text_classification", "--root", str(data),
                                      "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "export" / "cpu-fp32" / "card.json").read_text())
    assert card["status"] == "verified" and card["accuracy"]["dataset"] == "text_classification"
    assert card["accuracy"]["samples"] == 40 and 0 <= card["accuracy"]["accuracy"] <= 1
    assert card["preprocessing"]["classes"] == sorted(CLASSES)  # the data set's names


def test_a_hugging_face_bert_classifier_exports_from_python(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the text extra is not installed")
    tokenizer = wordpiece_tokenizer()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    config = transformers.BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                     num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    student = text_student(model, max_length=MAX_LENGTH, tokenizer=tmp_path / "tokenizer.json", classes=CLASSES)
    exporter = Exporter(student, tmp_path / "export", ExportOptions(latency_repeats=3))
    card = exporter.export("cpu", "fp32")
    assert card["status"] == "verified" and card["parity"]["max_abs_diff"] < 1e-4
    assert card["source"]["checkpoint"] is None and card["name"] == "BertForSequenceClassification-cpu-fp32"
    assert exporter.export("cpu", "int8-dynamic")["parity"]["samples"] == 256


def test_an_embedding_model_is_checked_by_cosine(tmp_path):
    class MeanEmbedding(torch.nn.Module):  # (B, L) ids -> (B, 8) vectors
        vocab_size = 50

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 8)
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask[..., None].float()
            return self.proj((self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1))

    torch.manual_seed(0)
    student = text_student(MeanEmbedding(), max_length=12)
    card = Exporter(student, tmp_path / "export", ExportOptions(latency_repeats=3)).export("cpu", "int8-dynamic")
    assert card["outputs"][0]["name"] == "embedding" and card["outputs"][0]["shape"] == ["batch", 8]
    assert card["parity"]["kind"] == "embedding" and card["parity"]["mean_cosine"] > 0.99
    assert card["status"] == "verified" and card["accuracy"]["accuracy"] is None


# -- the page's tokenizer, in node ----------------------------------------------------------------------------
def node_ids(tokenizer_json: Path, texts: list[str], max_length: int, tmp_path: Path) -> list[list[int]]:
    script = ("const W = require(process.argv[1]); const fs = require('fs');"
              "const w = new W(JSON.parse(fs.readFileSync(process.argv[2], 'utf8')));"
              "const texts = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));"
              "console.log(JSON.stringify(texts.map((t) => w.encode(t, Number(process.argv[4])))));")
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    done = subprocess.run(["node", "-e", script, str(PAGE / "wordpiece.js"), str(tokenizer_json),
                           str(tmp_path / "texts.json"), str(max_length)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


HARD_TEXTS = SENTENCES + [
    "tabs\tand\nnewlines\r\x00 control\u200b zero-width\ufeff bom", "日本語のテキスト 中文 한국어",
    "ΣΊΣΥΦΟΣ Straße İstanbul ﬁne", "emoji 😀 and $100 + 5% = <x> ^ ~ | `", "a" * 150 + " end",
    "nbsp\u00a0ideographic\u3000space", "x\u0301y e\u0300\u0327 Ωmega", "[CLS][SEP] [mask] [MASK]x",
    "long " * 200,
]


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_the_page_tokenizer_gives_the_python_tokenizers_ids(which, tmp_path, skip_or_fail):
    if shutil.which("node") is None:
        skip_or_fail("node is missing (apt-get install -y nodejs)")
    if which == "tiny":
        path, max_length = tmp_path / "tokenizer.json", MAX_LENGTH
        wordpiece_tokenizer().save(str(path))
    else:
        try:
            from distill.models.hf import minilm_folder

            path, max_length = minilm_folder() / "tokenizer.json", 128
        except ModuleNotFoundError as exc:
            pytest.skip(str(exc))  # an optional teacher package, not an export runtime
    check_web_tokenizer(path)
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    expected = [encoding.ids for encoding in tokenizer.encode_batch(HARD_TEXTS)]
    assert node_ids(path, HARD_TEXTS, max_length, tmp_path) == expected
    assert max(len(ids) for ids in expected) == max_length  # the over-long texts were cut


def test_a_tokenizer_the_page_cannot_reproduce_is_refused(tmp_path):
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE({"a": 0, "b": 1}, [])).save(str(tmp_path / "bpe.json"))
    with pytest.raises(ExportError, match="this tokenizer's model is 'BPE'"):
        check_web_tokenizer(tmp_path / "bpe.json")
    data = json.loads(wordpiece_tokenizer().to_str())
    data["normalizer"] = {"type": "NFKC"}
    (tmp_path / "nfkc.json").write_text(json.dumps(data))
    with pytest.raises(ExportError, match="normalizer 'NFKC' is not implemented there"):
        check_web_tokenizer(tmp_path / "nfkc.json")


def test_web_and_mobile_refuse_what_they_cannot_run(text_model, tmp_path, skip_or_fail):
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copyfile(text_model, folder / "model.safetensors")  # no tokenizer beside it
    student = load_student(folder / "model.safetensors")
    exporter = Exporter(student, tmp_path / "export", ExportOptions(latency_repeats=3))
    with pytest.raises(ExportError, match=r"mobile target exports models over a float tensor"):
        get_target("mobile").build(exporter, "fp32", tmp_path)
    try:
        from distill.export.web import ort_web_dist

        ort_web_dist()
    except MissingRuntimeError as exc:
        skip_or_fail(str(exc))
    with pytest.raises(ExportError, match=r"needs its tokenizer: save it as <model stem>.tokenizer.json"):
        exporter.export("web", "fp32")


# -- the page, in headless Chromium ---------------------------------------------------------------------------
@pytest.fixture
def served_text(text_model, tmp_path, skip_or_fail):
    require_browser(skip_or_fail)
    student = load_student(text_model)
    card = Exporter(student, tmp_path / "export", ExportOptions(latency_repeats=3)).export("web", "fp32")
    folder = tmp_path / "export" / "web-fp32"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield student, card, folder, f"http://127.0.0.1:{server.server_address[1]}/index.html", tmp_path
    finally:
        server.shutdown()


def test_text_page_tokenises_and_classifies_in_chromium_like_python(served_text):
    student, card, folder, url, tmp_path = served_text
    assert card["status"] == "verified"
    assert {"index.html", "text.js", "wordpiece.js", "tokenizer.json", "meta.json", "model.onnx"} <= {
        p.name for p in folder.iterdir()}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "text" and meta["classes"] == CLASSES and meta["max_length"] == MAX_LENGTH
    texts = SENTENCES
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    done = subprocess.run(["node", str(REPO / "web" / "text_e2e.mjs"), url, str(tmp_path / "texts.json"), str(CHROMIUM)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and result["foreign"] == [] and "model loaded" in result["status"]
    expected = encode_texts(load_tokenizer(student.tokenizer_path, student.tokens), texts, MAX_LENGTH)
    assert result["ids"] == expected["input_ids"].tolist() and result["mask"] == expected["attention_mask"].tolist()
    with torch.no_grad():
        eager = student.model(**expected).numpy()
    np.testing.assert_allclose(np.array(result["outputs"]).reshape(eager.shape), eager, rtol=0, atol=1e-4)
    assert result["typed"]["index"] == int(eager[0].argmax()) and result["typed"]["label"] == CLASSES[int(eager[0].argmax())]
    assert result["typed"]["index"] == 0  # "the quick brown fox ...": animals, as trained
