"""Text from a causal LM, streamed as it is generated (``distill generate``), and a trained student
saved as a folder transformers loads.

>>> model, tokenizer = load_generator("runs/student-hf")                       # doctest: +SKIP
>>> text = generate(model, tokenizer, "The cat", max_new_tokens=20, on_text=print)  # doctest: +SKIP
>>> save_causal_lm(result.model, tokenizer, "runs/student-hf")  # then AutoModelForCausalLM.from_pretrained

A model is a Hugging Face causal-LM folder (``config.json`` + safetensors weights, local files only,
never remote code: :func:`distill.llm.load_causal_lm`) with its tokenizer, or a ``.gguf`` file (its
vocabulary inside, or tokenizer files in the folder beside it). Decoding is greedy at ``temperature=0`` (deterministic, equal to
``model.generate(do_sample=False)``), else sampling at ``temperature`` from the ``top_k`` most likely
tokens, seeded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from distill.llm.models import ChunkedLM, load_causal_lm, load_tokenizer


class GenerateError(ValueError):
    """A model path that cannot generate text; the message names the path and what was expected."""


def load_generator(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of a causal-LM folder or a ``.gguf`` file, the model in eval mode.

    Refused with :class:`GenerateError` naming ``path`` when it is neither, when its ``config.json``
    is not a causal LM's (e.g. an encoder such as BERT), or when it has no tokenizer."""
    path = Path(path)
    if not path.exists():
        raise GenerateError(f"{path} does not exist: give a Hugging Face causal-LM folder (config.json + "
                            "*.safetensors + tokenizer files) or a .gguf file")
    if path.is_file() and path.suffix != ".gguf":
        raise GenerateError(f"{path} is a file but not a .gguf file: give a .gguf file or a Hugging Face causal-LM "
                            "folder (config.json + *.safetensors + tokenizer files)")
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise GenerateError(f"{path} is not a Hugging Face model folder: it has no config.json (save a student "
                                "with distill.llm.save_causal_lm, or give a .gguf file)")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GenerateError(f"{config_file} is unreadable ({exc})") from None
        architectures = config.get("architectures") or []
        if architectures and not any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
            raise GenerateError(f"{path} is not a causal language model: its config.json names {architectures} "
                                "(a causal LM is a ...ForCausalLM / ...LMHeadModel); distill generate needs a model "
                                "that predicts the next token")
    try:
        model = load_causal_lm(path)
    except (OSError, ValueError) as exc:  # transformers: an unknown or non-causal configuration
        raise GenerateError(f"{path} could not be loaded as a causal language model: {exc}") from None
    # a .gguf file: the vocabulary inside it, else tokenizer files beside it (distill.llm.save_gguf writes none)
    sources = [path] + ([path.parent] if path.is_file() and (path.parent / "tokenizer_config.json").is_file() else [])
    problems = []
    for source in sources:
        try:
            return model, load_tokenizer(source)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"{source}: {exc}")
    raise GenerateError(f"{path} has no tokenizer that transformers can load ({'; '.join(problems)}); save one beside "
                        "the model (tokenizer.save_pretrained(folder), or distill.llm.save_causal_lm)")


def generation_options(*, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
                       tokenizer: Any = None) -> dict[str, Any]:
    """The keyword arguments of ``model.generate`` for these settings (checked, ValueError naming the field)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 (or None: every token), got {top_k!r}")
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if temperature == 0:
        options.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    else:
        options.update(do_sample=True, temperature=float(temperature), top_k=top_k or 0, top_p=None)
    pad = getattr(tokenizer, "pad_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    if pad is not None or eos is not None:
        options["pad_token_id"] = pad if pad is not None else eos
    return options


def generate(model: nn.Module, tokenizer: Any, prompt: str, *, max_new_tokens: int = 64, temperature: float = 0.0,
             top_k: int | None = None, seed: int = 0, on_text: Callable[[str], None] | None = None) -> str:
    """The text ``model`` continues ``prompt`` with (the prompt not included), ``on_text`` called with
    each piece as soon as it is decoded (whole words where the tokenizer needs them).

    ``prompt``: a non-empty string, tokenised as (1, P) ids. Greedy at ``temperature=0``; else sampling
    at ``temperature`` among the ``top_k`` most likely tokens, from ``torch.manual_seed(seed)``. Stops at
    ``max_new_tokens`` or the model's EOS."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string (the text to continue)")
    options = generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                 tokenizer=tokenizer)
    model = unwrap_causal_lm(model).eval()
    device = next(model.parameters()).device
    encoded = tokenizer(prompt, return_tensors="pt")
    streamer = TokenStreamer(tokenizer, on_text)
    torch.manual_seed(seed)
    with torch.inference_mode():
        model.generate(input_ids=encoded["input_ids"].to(device),
                       attention_mask=encoded["attention_mask"].to(device), streamer=streamer, **options)
    return streamer.text


class TokenStreamer:
    """A ``generate(streamer=...)`` that passes on the text of every new token as soon as it decodes
    (a byte-level token that ends inside a UTF-8 character waits for the next). The prompt (the first
    ``put``) is skipped; special tokens are left out. ``text``: everything passed on, equal to
    ``tokenizer.decode(new_ids, skip_special_tokens=True)``."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None] | None = None) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""
        self._prompt_seen = False

    def _emit(self, final: bool) -> None:
        decoded = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not final and decoded.endswith("\ufffd"):  # half a character: wait for its other bytes
            return
        piece = decoded[len(self.text):] if decoded.startswith(self.text) else ""
        if piece:
            self.text += piece
            if self.on_text is not None:
                self.on_text(piece)

    def put(self, value: torch.Tensor) -> None:
        """Token ids (1, P) of the prompt first, then (1,) or (1, 1) per new token."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(token) for token in value.reshape(-1).tolist())
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)


def unwrap_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers model inside ``model``: a :class:`ChunkedLM`'s ``.model``, a DDP / Accelerate
    wrapper's ``.module``; refused (TypeError) when the result cannot ``generate`` / ``save_pretrained``."""
    while True:
        if isinstance(model, ChunkedLM):
            model = model.model
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            break
    if not (hasattr(model, "save_pretrained") and hasattr(model, "generate")):
        raise TypeError(f"{type(model).__name__} is not a Hugging Face causal LM (no save_pretrained / generate); "
                        "give the transformers model (or a distill.llm.ChunkedLM around one)")
    return model


def positions_left(model: nn.Module, length: int) -> int | None:
    """How many tokens a causal LM with learnt positions can add to a sequence of ``length`` (its
    config's ``max_position_embeddings`` / ``n_positions`` minus ``length``); None when it names no limit."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return None if not isinstance(limit, int) else limit - length


def sample_generations(models: dict[str, nn.Module], tokenizer: Any, data: Any, *, count: int = 4,
                       max_new_tokens: int = 32, prompt_tokens: int = 16) -> dict[str, Any]:
    """Greedy continuations of the first ``count`` prompts of token ``data`` by each of ``models``
    (e.g. ``{"teacher": ..., "student": ...}``), for a run's report.

    ``data``: token data with ``inputs["input_ids"]`` (N, L) and ``attention_mask`` (and ``loss_mask``,
    as :func:`distill.llm.prompt_response_data` gives): a row's prompt is its tokens before the first
    loss-masked-in one (its first ``prompt_tokens`` tokens when it has no loss mask, as packed text),
    the reference is what follows in the data (cut at ``max_new_tokens`` tokens). Models that are not
    Hugging Face causal LMs (no ``generate``) are left out. Returns ``{"prompts": [str], "references":
    [str], "generations": {name: [str]}, "max_new_tokens": int}``; decoding is greedy, so it is the
    same on every call."""
    inputs = getattr(data, "inputs", None)
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        raise TypeError("sample_generations: data must be token data with inputs['input_ids'] (N, L), e.g. "
                        "distill.llm.prompt_response_data(...)")
    ids, attention = inputs["input_ids"], inputs.get("attention_mask")
    loss_mask = inputs.get("loss_mask")
    prompts, references = [], []
    for row in range(min(count, ids.shape[0])):
        valid = ids[row] if attention is None else ids[row][attention[row].bool()]
        if loss_mask is not None and bool(loss_mask[row].any()):
            start = int(loss_mask[row].nonzero()[0, 0])
        else:
            start = min(prompt_tokens, max(1, valid.numel() // 2))
        if start < 1:
            continue
        prompts.append(valid[:start])
        references.append(tokenizer.decode(valid[start:start + max_new_tokens].tolist(), skip_special_tokens=True))
    options = generation_options(max_new_tokens=max_new_tokens, tokenizer=tokenizer)
    generations: dict[str, list[str]] = {}
    for name, model in models.items():
        if model is None:
            continue
        try:
            lm = unwrap_causal_lm(model)
        except TypeError:
            continue
        was_training, texts = lm.training, []
        lm.eval()
        device = next(lm.parameters()).device
        try:
            with torch.inference_mode():
                for prompt in prompts:
                    room = positions_left(lm, prompt.numel())
                    if room is not None and room < 1:
                        texts.append("")
                        continue
                    new = options["max_new_tokens"] if room is None else min(options["max_new_tokens"], room)
                    out = lm.generate(input_ids=prompt[None].to(device),
                                      attention_mask=torch.ones(1, prompt.numel(), dtype=torch.long, device=device),
                                      **{**options, "max_new_tokens": new})
                    texts.append(tokenizer.decode(out[0, prompt.numel():].tolist(), skip_special_tokens=True))
        finally:
            lm.train(was_training)
        generations[name] = texts
    return {"prompts": [tokenizer.decode(p.tolist(), skip_special_tokens=True) for p in prompts],
            "references": references, "generations": generations, "max_new_tokens": max_new_tokens}


def save_causal_lm(model: nn.Module, tokenizer: Any, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` (a transformers causal LM, or a :class:`ChunkedLM` around one) and ``tokenizer``
    to ``folder`` with ``save_pretrained`` (safetensors weights, ``config.json``, tokenizer files), so
    that ``AutoModelForCausalLM.from_pretrained(folder)``, :func:`distill.llm.load_causal_lm` and
    ``distill generate folder`` load it.

    A folder that exists and holds anything is refused unless ``overwrite`` and it is a model folder
    (it has a ``config.json``); files of the same names are then replaced. Returns ``folder``."""
    folder = Path(folder)
    model = unwrap_causal_lm(model)
    if tokenizer is None or not hasattr(tokenizer, "save_pretrained"):
        raise TypeError(f"save_causal_lm: tokenizer must be a transformers tokenizer (with save_pretrained), got "
                        f"{type(tokenizer).__name__}; distill generate and transformers need it beside the model")
    if folder.exists():
        if not folder.is_dir():
            raise FileExistsError(f"save_causal_lm: {folder} is a file; give a folder path")
        contents = sorted(entry.name for entry in folder.iterdir())
        if contents and not (overwrite and "config.json" in contents):
            raise FileExistsError(f"save_causal_lm: {folder} already holds {', '.join(contents[:5])}"
                                  f"{' ...' if len(contents) > 5 else ''}; choose an empty or new folder"
                                  + ("" if overwrite else ", or pass overwrite=True to replace a model folder"))
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        model.train(was_training)
    tokenizer.save_pretrained(folder)
    return folder


__all__ = ["GenerateError", "TokenStreamer", "generate", "generation_options", "load_generator", "sample_generations", "save_causal_lm", "unwrap_causal_lm"]
