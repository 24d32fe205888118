"""Sequence-level knowledge distillation: train the student on the teacher's own generations.

Kim & Rush, 2016, "Sequence-Level Knowledge Distillation", EMNLP 2016, arXiv 1606.07947: instead
of (or beside) matching the teacher's distribution token by token, the student is trained with
cross-entropy on the sequences the teacher *generates* (beam search or greedy decoding in the
paper), which approximates matching the teacher's distribution over whole sequences. The teacher
runs once, ahead of training, and its responses are stored:

>>> path = generate_teacher_data(teacher, tokenizer, prompts, "teacher.jsonl",
...                              max_new_tokens=64, temperature=0.0)          # doctest: +SKIP
>>> train = prompt_response_data(read_jsonl(path), tokenizer)                # doctest: +SKIP
>>> distill.distil(teacher, student, train, task="token",
...                losses=[{"name": "cross_entropy"}])                       # doctest: +SKIP

The JSONL file holds one ``{"prompt", "response", "stop"}`` line per prompt (``stop``: ``"eos"``, or
``"length"`` when ``max_new_tokens`` cut the response; chat prompts give ``{"messages": [...,
{"role": "assistant", "content": response}], "stop"}``), written atomically, with a manifest beside it,
``<file>.distill.json``: the teacher's weights fingerprint, the tokenizer, the prompts' digest, the
generation settings and the file's sha256. Asked again with the same teacher, prompts and settings,
the stored file is used as it is (generated once); a file distill did not make (no manifest) is
never overwritten, and one made with other settings only with ``overwrite=True``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from distill.artifacts import atomic_write
from distill.data.loader import derive_seed
from distill.llm.onpolicy import completion_mask, eos_ids_of, sample_completions

MANIFEST_SUFFIX = ".distill.json"
FORMAT = "distill-teacher-generations-v1"


class TeacherDataError(ValueError):
    """A teacher-generations file that distill will not write over, or that does not match its manifest."""


def manifest_path(path: str | Path) -> Path:
    """The manifest beside a teacher-generations file: ``<file>.distill.json``."""
    path = Path(path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _prompt_text(prompt: Any, tokenizer, index: int) -> tuple[str, list[dict[str, str]] | None]:
    """(the text the teacher continues, the chat messages it came from or None) of one prompt: a string,
    ``{"prompt": ...}`` (a ``response`` is ignored), or ``{"messages": [...]}`` (a trailing assistant
    message dropped; rendered with the tokenizer's chat template and its generation prompt)."""
    if isinstance(prompt, str):
        return prompt, None
    if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), str):
        return prompt["prompt"], None
    if isinstance(prompt, dict) and isinstance(prompt.get("messages"), list):
        messages = [dict(m) for m in prompt["messages"]]
        if messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        if not messages:
            raise ValueError(f"prompts[{index}]: 'messages' holds no message before the assistant's reply")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"prompts[{index}] are chat messages, but the tokenizer has no chat template "
                             "(set tokenizer.chat_template, or give prompt strings)")
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), messages
    raise ValueError(f"prompts[{index}] is {type(prompt).__name__}; give strings, {{'prompt': ...}} or "
                     "{'messages': [...]} examples")


def read_prompts(path: str | Path) -> list[Any]:
    """The prompts of a file for :func:`generate_teacher_data`: a ``.jsonl`` file (``.gz`` / ``.bz2`` /
    ``.xz`` too) with ``{"prompt": ...}`` lines (a ``response`` is ignored) or ``{"messages": [...]}``
    chats, else a text file with one prompt a line (empty lines skipped). A bad line raises
    ``ValueError`` naming ``file:line``; non-UTF-8 bytes too."""
    from distill.data.text import COMPRESSIONS, _format_of, _jsonl_rows
    from distill.llm.data import read_text

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompts file (give a .jsonl file of {{'prompt': ...}} or "
                                "{'messages': [...]} lines, or a text file with one prompt a line)")
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    if not suffixes or suffixes[-1] != ".jsonl":
        prompts: list[Any] = read_text(path)
    else:
        prompts = []
        for number, record, _ in _jsonl_rows(path, _format_of(path, None)[1]):
            if isinstance(record.get("prompt"), str) and record["prompt"]:
                prompts.append({"prompt": record["prompt"]})
            elif isinstance(record.get("messages"), list) and record["messages"]:
                prompts.append({"messages": record["messages"]})
            else:
                raise ValueError(f"{path}:{number}: expected a non-empty string 'prompt' or a list 'messages', got "
                                 f"keys {sorted(record)}")
    if not prompts:
        raise ValueError(f"{path}: holds no prompt")
    return prompts


def _manifest(teacher: nn.Module, tokenizer, texts: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    from distill.data.cache import weights_fingerprint

    prompts = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:16]
    return {"format": FORMAT, "teacher": f"{type(teacher).__module__}.{type(teacher).__qualname__}",
            "teacher_fingerprint": weights_fingerprint(teacher),
            "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
            "tokenizer_size": len(tokenizer), "prompts": len(texts), "prompts_fingerprint": prompts,
            "settings": settings}


def _stored(path: Path, expected: dict[str, Any], overwrite: bool) -> bool:
    """True when ``path`` already holds these generations (same manifest, intact file); False when it may be
    (re)written; raises when it must not be."""
    manifest = manifest_path(path)
    if not path.exists():
        return False
    if not manifest.is_file():
        raise TeacherDataError(f"{path} exists and distill did not write it (no {manifest.name} beside it); "
                               "give another path or remove the file yourself")
    try:
        found = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise TeacherDataError(f"{manifest} cannot be read ({exc}); remove {path} and its manifest yourself") from None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise TeacherDataError(f"{manifest} is not a distill teacher-generations manifest; give another path")
    same = all(found.get(key) == value for key, value in expected.items())
    if same and found.get("sha256") == _file_digest(path):
        return True
    if overwrite:
        return False
    differ = sorted(key for key, value in expected.items() if found.get(key) != value) or ["sha256 (the file changed)"]
    raise TeacherDataError(f"{path} holds teacher generations made with a different {', '.join(differ)}; pass "
                           "overwrite=True to generate them again, or give another path")


@torch.no_grad()
def generate_teacher_data(teacher: nn.Module, tokenizer, prompts: Sequence[Any], path: str | Path, *,
                          max_new_tokens: int = 128, temperature: float = 0.0, top_k: int | None = None,
                          seed: int = 0, batch_size: int = 16, overwrite: bool = False,
                          progress: bool = True) -> Path:
    """Generate the teacher's response to every prompt once and store them as JSONL (Kim & Rush 2016).

    Args:
        teacher: a Hugging Face causal LM (or :class:`distill.llm.ChunkedLM`); run in eval mode without
            gradients, on its own device.
        tokenizer: the teacher's tokenizer (its ``eos_token_id``, else the teacher's, ends a response).
        prompts: strings, ``{"prompt": ...}`` examples (:func:`distill.llm.read_jsonl`; a response is
            ignored) or ``{"messages": [...]}`` chats (rendered with the chat template).
        path: the JSONL file to write (see the module docstring for its lines and manifest).
        max_new_tokens: response tokens at most; temperature: 0 is greedy decoding (equal to
            ``teacher.generate(do_sample=False)``), else sampling at that temperature (``top_k``:
            among the k largest logits), seeded per batch by ``derive_seed(seed, batch)``.
        batch_size: prompts generated together (left-padded); part of the settings, since it decides
            the draws and, in low precision, the numerics.

    Returns ``path``. Raises :class:`TeacherDataError` for a file distill did not make, or made with other
    settings (unless ``overwrite``); ``ValueError`` naming the argument for a bad value."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"generate_teacher_data: batch_size must be an int >= 1, got {batch_size!r}")
    if not temperature >= 0:
        raise ValueError(f"generate_teacher_data: temperature must be >= 0 (0: greedy), got {temperature!r}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("generate_teacher_data: prompts is empty")
    path = Path(path)
    rendered = [_prompt_text(prompt, tokenizer, index) for index, prompt in enumerate(prompts)]
    texts = [text for text, _ in rendered]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else eos_ids_of(teacher)
    if not eos:
        raise ValueError("generate_teacher_data: neither the tokenizer nor the teacher names an eos_token_id; set "
                         "tokenizer.eos_token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    settings = {"max_new_tokens": max_new_tokens, "temperature": float(temperature), "top_k": top_k, "seed": seed,
                "batch_size": batch_size, "eos_token_id": eos}
    expected = _manifest(teacher, tokenizer, texts, settings)
    if _stored(path, expected, overwrite):
        return path
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    empty = [index for index, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"generate_teacher_data: prompts {empty[:8]} encode to no token; the teacher needs at "
                         "least one to continue")
    device = next(teacher.parameters()).device
    lines, cut = [], 0
    bar = tqdm(total=len(prompts), desc="teacher generations", unit="prompt", disable=not progress,
               dynamic_ncols=True)
    for batch, start in enumerate(range(0, len(prompts), batch_size)):
        rows = encoded[start:start + batch_size]
        width = max(len(ids) for ids in rows)
        prompt_ids = torch.full((len(rows), width), pad, dtype=torch.int64)
        prompt_mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for row, ids in enumerate(rows):  # left padding: every prompt ends where generation starts
            prompt_ids[row, width - len(ids):] = torch.tensor(ids)
            prompt_mask[row, width - len(ids):] = 1
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=device).manual_seed(derive_seed(seed, batch))
        completions = sample_completions(teacher, prompt_ids.to(device), prompt_mask.to(device),
                                         max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                                         temperature=float(temperature), top_k=top_k, generator=generator).cpu()
        valid = completion_mask(completions, eos)
        for row, tokens in enumerate(completions):
            kept = tokens[valid[row]].tolist()
            ended = bool(kept) and kept[-1] in eos
            cut += not ended
            response = tokenizer.decode(kept[:-1] if ended else kept, skip_special_tokens=False)
            text, messages = rendered[start + row]
            line: dict[str, Any] = ({"messages": [*messages, {"role": "assistant", "content": response}]}
                                    if messages is not None else {"prompt": text, "response": response})
            line["stop"] = "eos" if ended else "length"
            lines.append(json.dumps(line, ensure_ascii=False))
        bar.update(len(rows))
    bar.close()
    manifest = manifest_path(path)
    manifest.unlink(missing_ok=True)  # never a manifest naming a file that is half replaced
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in lines), encoding="utf-8"))
    record = {**expected, "examples": len(lines), "stopped_at_length": cut, "sha256": _file_digest(path)}
    atomic_write(manifest, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
    return path


__all__ = ["TeacherDataError", "generate_teacher_data", "manifest_path", "read_prompts"]
