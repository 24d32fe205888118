"""Text students: models that take token ids, and the tokenizer that ships with their export.

**Which models take tokens.** A model file's recorded spec says it: ``params.vocab_size`` (the
rows of its embedding table) together with a one-dimensional ``input_shape`` ``[max_length]``
(``token_cnn`` records both). Such a student is called as ``model(input_ids=(B, L) int64,
attention_mask=(B, L) int64)`` (1 = token, 0 = padding, ``L <= max_length``) and exports with
those two named inputs, both with dynamic ``batch`` and ``sequence`` axes. A model held in Python
(a Hugging Face encoder or classifier) is described by :func:`text_student` instead.

**The tokenizer.** A Hugging Face ``tokenizer.json`` (the ``tokenizers`` library's file) saved
beside the model file as ``<model stem>.tokenizer.json`` (``model.safetensors`` ->
``model.tokenizer.json``), or as ``tokenizer.json`` in the same folder. With one, the held-out
token batches start with a few tokenised sentences, the card records it, and the web target
copies it into the page folder, where the page tokenises typed text itself (``wordpiece.js``:
WordPiece with the BERT normalizer and pre-tokenizer; :func:`check_web_tokenizer` refuses, before
anything is written, a tokenizer.json the page would tokenise differently). A tokenizer larger
than the model's embedding table is refused (its ids would index past it).

**Held-out data.** A text data set (``--data`` / the run's recipe, e.g. ``text_classification``)
gives real batches and an accuracy. Without one, the export checks parity on seeded token batches
(:data:`RANDOM_TOKENS`): ids drawn from ``[0, vocab_size)``, right-padded rows of lengths from 1
to ``max_length`` (at least one full row), never random floats.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from distill.export.errors import ExportError, require

INPUT_NAMES = ("input_ids", "attention_mask")
RANDOM_TOKENS = "random-tokens"  # the data name of the seeded token batches (no text data set given)
RANDOM_TOKEN_SAMPLES = {"test": 256, "train": 512}
SAMPLE_TEXTS = (  # tokenised first when the student has a tokenizer: accents, punctuation, unknown words
    "The quick brown fox jumps over the lazy dog.",
    "Stocks rallied on Wall Street after the central bank held rates steady.",
    "Café Müller's crème brûlée is naïve, déjà vu!",
    "Qu'est-ce que c'est? (Nobody knows...)",
    "Zyxqwvb glorptastic frobnication",
    "",
)


@dataclass(frozen=True)
class TokenInputs:
    """How a text student is called: ``vocab_size`` ids, at most ``max_length`` of them, ``pad_id`` padding."""

    vocab_size: int
    max_length: int
    pad_id: int = 0
    names: tuple[str, ...] = INPUT_NAMES


def token_inputs(spec: Mapping[str, Any], where: str = "the model file") -> TokenInputs | None:
    """The token inputs a recorded spec describes (``params.vocab_size`` and ``input_shape`` ``[max_length]``),
    or None for a model that takes a float tensor."""
    params = spec.get("params") or {}
    vocab_size = params.get("vocab_size") if isinstance(params, Mapping) else None
    if vocab_size is None:
        return None
    shape = spec.get("input_shape")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ExportError(f"{where}: params.vocab_size is {vocab_size!r}, not a vocabulary size (an integer >= 1)")
    if not isinstance(shape, (list, tuple)) or len(shape) != 1 or isinstance(shape[0], bool) \
            or not isinstance(shape[0], int) or shape[0] < 1:
        raise ExportError(f"{where} records params.vocab_size {vocab_size} (a model over token ids) but input_shape "
                          f"{shape!r}; a text model records input_shape [max_length] (e.g. [128])")
    pad_id = params.get("pad_id", 0)
    return TokenInputs(vocab_size=vocab_size, max_length=int(shape[0]), pad_id=int(pad_id or 0))


# -- the tokenizer -------------------------------------------------------------------------------------
def tokenizer_path_for(model_file: str | Path) -> Path | None:
    """``<stem>.tokenizer.json`` beside ``model_file``, else ``tokenizer.json`` in its folder, else None."""
    model_file = Path(model_file)
    for candidate in (model_file.with_name(f"{model_file.stem}.tokenizer.json"), model_file.parent / "tokenizer.json"):
        if candidate.is_file():
            return candidate
    return None


def load_tokenizer(path: str | Path, tokens: TokenInputs | None = None):
    """The ``tokenizers.Tokenizer`` in ``path`` set to truncate at the model's ``max_length`` and not pad
    (the file's own padding and truncation settings are dropped); refused when its vocabulary is larger
    than the model's embedding table."""
    tokenizers = require("tokenizers", "text", "reading a tokenizer.json")
    path = Path(path)
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises its own Exception type
        raise ExportError(f"{path} is not a Hugging Face tokenizer.json ({' '.join(str(exc).split())}); save one with "
                          "tokenizer.save(path) (tokenizers) or tokenizer.backend_tokenizer.save(path) "
                          "(transformers)") from None
    tokenizer.no_padding()
    if tokens is not None:
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if size > tokens.vocab_size:
            raise ExportError(f"{path} has {size:,} tokens but the model's embedding table has {tokens.vocab_size:,} "
                              "rows (params.vocab_size): ids past it would index outside the table; give the "
                              "tokenizer the student was trained with")
        tokenizer.enable_truncation(tokens.max_length)
    return tokenizer


def encode_texts(tokenizer, texts, max_length: int, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}`` (N, L) int64 of ``texts``: truncated at ``max_length``, right-padded
    with ``pad_id`` to the longest (what the web page does in the browser)."""
    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(list(texts))
    length = max(1, max((len(e.ids) for e in encodings), default=1))
    ids = torch.full((len(encodings), length), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(encodings), length), dtype=torch.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids, dtype=torch.int64)
        mask[row, : len(encoding.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


WEB_NORMALIZERS = ("BertNormalizer", "Lowercase", "NFD", "StripAccents", "Sequence")
WEB_PRE_TOKENIZERS = ("BertPreTokenizer", "WhitespaceSplit", "Sequence")
WEB_POST_PROCESSORS = ("BertProcessing", "TemplateProcessing")


def check_web_tokenizer(path: str | Path) -> dict[str, Any]:
    """The parsed ``tokenizer.json`` if the page's tokenizer (``page/wordpiece.js``) reproduces it: a WordPiece
    model, a BERT-style normalizer / pre-tokenizer and [CLS] ... [SEP] post-processing; else ExportError
    naming the part it does not implement."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not readable JSON ({exc}); save the tokenizer again") from None
    where = f"{path}: the web page tokenises with WordPiece (BERT-style)"
    model = data.get("model") or {}
    if model.get("type") != "WordPiece":
        raise ExportError(f"{where}, but this tokenizer's model is {model.get('type')!r}; export to --target cpu, "
                          "or give a WordPiece tokenizer")

    def types(node, allowed, what):
        if node is None:
            return
        kind = node.get("type")
        if kind not in allowed:
            raise ExportError(f"{where}; its {what} {kind!r} is not implemented there (supported: {', '.join(allowed)})")
        for child in node.get("normalizers" if what == "normalizer" else "pretokenizers", []) if kind == "Sequence" else []:
            types(child, allowed, what)

    types(data.get("normalizer"), WEB_NORMALIZERS, "normalizer")
    types(data.get("pre_tokenizer"), WEB_PRE_TOKENIZERS, "pre-tokenizer")
    post = data.get("post_processor")
    if post is not None and post.get("type") not in WEB_POST_PROCESSORS:
        raise ExportError(f"{where}; its post-processor {post.get('type')!r} is not implemented there (supported: "
                          f"{', '.join(WEB_POST_PROCESSORS)})")
    for token in data.get("added_tokens") or []:
        if any(token.get(flag) for flag in ("single_word", "lstrip", "rstrip")):
            raise ExportError(f"{where}; added token {token.get('content')!r} sets single_word/lstrip/rstrip, which "
                              "the page does not implement")
    return data


# -- the model, called with named token inputs --------------------------------------------------------
class TokenModel(nn.Module):
    """``(input_ids, attention_mask) -> logits``: a text student as ONNX sees it (positional inputs, one
    output tensor read by :func:`distill.core.io.logits_of`, e.g. a Hugging Face ``ModelOutput``'s logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from distill.core.io import logits_of

        return logits_of(self.model(input_ids=input_ids, attention_mask=attention_mask))


def example_tokens(tokens: TokenInputs, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A (batch, max_length) id batch with a padded row, for tracing."""
    ids = (torch.arange(batch * tokens.max_length).view(batch, tokens.max_length) % tokens.vocab_size).long()
    mask = torch.ones_like(ids)
    if batch > 1 and tokens.max_length > 1:
        mask[1:, tokens.max_length // 2:] = 0
        ids[1:, tokens.max_length // 2:] = tokens.pad_id
    return ids, mask


def random_tokens(tokens: TokenInputs, num_samples: int, seed: int = 0, tokenizer=None) -> dict[str, torch.Tensor]:
    """Seeded token batches (N, max_length): ids uniform in ``[0, vocab_size)``, each row right-padded after a
    length drawn from ``[1, max_length]`` (the first row full); with a tokenizer, the first rows are
    :data:`SAMPLE_TEXTS` tokenised."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, tokens.vocab_size, (num_samples, tokens.max_length), generator=generator)
    lengths = torch.randint(1, tokens.max_length + 1, (num_samples,), generator=generator)
    lengths[0] = tokens.max_length
    mask = (torch.arange(tokens.max_length)[None, :] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, tokens.pad_id)
    if tokenizer is not None:
        texts = encode_texts(tokenizer, SAMPLE_TEXTS[: max(0, num_samples - 1)], tokens.max_length, tokens.pad_id)
        count, width = texts["input_ids"].shape
        ids[1 : 1 + count] = tokens.pad_id
        mask[1 : 1 + count] = 0
        ids[1 : 1 + count, :width] = texts["input_ids"]
        mask[1 : 1 + count, :width] = texts["attention_mask"]
    return {"input_ids": ids, "attention_mask": mask}


def random_token_data(tokens: TokenInputs, split: str, seed: int = 0, tokenizer=None, classes=None):
    """:data:`RANDOM_TOKENS` as unlabelled TensorData (the test and train splits differ by seed)."""
    from distill.data import TensorData

    offset = 0 if split == "test" else 1
    inputs = random_tokens(tokens, RANDOM_TOKEN_SAMPLES.get(split, 256), seed * 2 + offset, tokenizer)
    return TensorData(inputs, None, name=RANDOM_TOKENS, classes=classes, split=split)


# -- a text student held in Python ---------------------------------------------------------------------
def vocabulary_size(model: nn.Module) -> int | None:
    """The rows of ``model``'s token table: ``config.vocab_size`` or ``vocab_size`` (of the model, else of the
    first submodule that has one: a SentenceClassifier's encoder), else the first nn.Embedding's; None without."""
    for module in model.modules():
        size = getattr(getattr(module, "config", None), "vocab_size", None) or getattr(module, "vocab_size", None)
        if isinstance(size, int) and not isinstance(size, bool):
            return size
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return None if embedding is None else embedding.num_embeddings


def text_student(model: nn.Module, *, max_length: int, vocab_size: int | None = None, tokenizer: str | Path | None = None,
                 classes: list[str] | None = None, name: str | None = None, data=None, train_data=None,
                 seed: int = 0):
    """A :class:`~distill.export.source.Student` for a text model held in Python (e.g. a Hugging Face
    ``BertForSequenceClassification`` or a :class:`~distill.models.hf.SentenceEncoder`), exported with
    :class:`~distill.export.Exporter` as a model file's student is.

    ``vocab_size`` defaults to what :func:`vocabulary_size` reads off the model; ``tokenizer`` is a tokenizer.json path (needed by the web target); ``classes`` the
    class names (``None`` with a model giving (B, D) vectors: an embedding model); ``data`` /
    ``train_data`` held-out / calibration TensorData of token ids (default: :data:`RANDOM_TOKENS`).
    The card's source has no checkpoint file (``distill bench`` needs one: save registered models
    with ``distill.save_model``)."""
    from distill.export.source import Student

    if vocab_size is None:
        vocab_size = vocabulary_size(model)
    if vocab_size is None:
        raise ExportError(f"text_student: {type(model).__name__} says no vocab_size (config.vocab_size); pass "
                          "vocab_size=")
    label = name or type(model).__name__
    spec = {"model": label, "params": {"vocab_size": int(vocab_size)}, "input_shape": [int(max_length)],
            "num_classes": None if classes is None else len(classes)}
    if classes is not None:
        spec["classes"] = list(classes)
    tokens = token_inputs(spec, where=f"text_student({label})")
    tokenizer_path = Path(tokenizer) if tokenizer is not None else None
    if tokenizer_path is not None:
        load_tokenizer(tokenizer_path, tokens)  # refuses a tokenizer larger than the embedding table now
    student = Student(model=model.eval(), spec=spec, checkpoint=None, run_dir=None,
                      data_name=getattr(data, "name", None) or RANDOM_TOKENS, data_root=None, seed=seed,
                      tokens=tokens, tokenizer_path=tokenizer_path)
    student._test_set, student._train_set = data, train_data
    return student


# -- what the card and the page record ------------------------------------------------------------------
def card_inputs(tokens: TokenInputs) -> list[dict[str, Any]]:
    return [{"name": name, "dtype": "int64", "shape": ["batch", "sequence"], "max_sequence": tokens.max_length}
            for name in tokens.names]


def text_preprocessing(student, classes) -> dict[str, Any]:
    tokens = student.tokens
    tokenizer = (f"the tokenizer.json beside the model ({student.tokenizer_path.name})" if student.tokenizer_path
                 else "the tokenizer the student was trained with (none saved beside the model: see docs/export.md)")
    return {"description": f"token ids from {tokenizer}, truncated at {tokens.max_length} (special tokens "
                           f"included), right-padded with id {tokens.pad_id}; attention_mask 1 = token, 0 = padding",
            "max_length": tokens.max_length, "vocab_size": tokens.vocab_size, "pad_id": tokens.pad_id,
            "tokenizer": "tokenizer.json" if student.tokenizer_path else None, "classes": classes}


def text_meta(student, classes) -> dict[str, Any]:
    """The page's meta.json for a text student."""
    tokens = student.tokens
    return {"kind": "text", "name": f"{student.spec['model']} student", "max_length": tokens.max_length,
            "vocab_size": tokens.vocab_size, "pad_id": tokens.pad_id, "inputs": list(tokens.names),
            "output": "embedding" if student.num_classes is None else "logits", "classes": classes,
            "tokenizer": "tokenizer.json" if student.tokenizer_path else None}
