"""Text for causal LMs: plain text files packed into fixed-length sequences, JSONL prompt/response
pairs (or chat messages rendered with the tokenizer's chat template) with the prompt masked, and a
byte-level BPE tokenizer trained here when the user has none.

Every builder returns a :class:`distill.data.TensorData` that ``distill.distil(..., task="token")``
takes as it is: inputs ``{"input_ids": (N, L), "attention_mask": (N, L)}`` (+ ``"loss_mask"``
(N, L) for prompt/response data: 0 on the prompt, so the token task predicts only the response;
padding is masked by ``attention_mask``).

>>> tokenizer = train_bpe_tokenizer(read_text("corpus.txt.gz"), vocab_size=4096)  # doctest: +SKIP
>>> train = packed_text_data(read_text("corpus.txt.gz"), tokenizer, length=128)     # doctest: +SKIP
"""
from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from distill.data.sources import TensorData
from distill.tasks.token import LOSS_MASK

OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
EOS_TOKEN, PAD_TOKEN = "<|endoftext|>", "<|pad|>"


class TextDataError(ValueError):
    """A text or JSONL file that cannot be read; the message names the file and the line."""


def _read_lines(path: str | Path) -> Iterable[tuple[int, str]]:
    """(line number, text without the newline) of a UTF-8 file; a bad byte raises naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with OPENERS.get(path.suffix.lower(), open)(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise TextDataError(f"{path}:{number}: not UTF-8 ({exc.reason} at column {exc.start + 1})") from None


def read_text(path: str | Path, *, limit: int | None = None) -> list[str]:
    """The non-empty lines of a UTF-8 text file (``.gz`` / ``.bz2`` / ``.xz`` read as they are), at
    most ``limit`` of them; one document a line."""
    texts = []
    for _, line in _read_lines(path):
        if line.strip():
            texts.append(line)
            if limit is not None and len(texts) >= limit:
                break
    return texts


def read_jsonl(path: str | Path, *, prompt_key: str = "prompt", response_key: str = "response",
               messages_key: str = "messages") -> list[dict[str, Any]]:
    """Examples of a JSONL file: each line ``{"prompt": ..., "response": ...}`` or
    ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the last message the assistant's).
    Returns ``[{"prompt", "response"}]`` or ``[{"messages"}]``; a bad line raises naming file:line
    (:class:`TextDataError`, or :class:`distill.data.text.TextFileError` for one that is not JSON)."""
    from distill.data.text import _format_of, _jsonl_rows  # JSONL read as text classification files are

    path = Path(path)
    examples = []
    for number, record, _ in _jsonl_rows(path, _format_of(path, None)[1]):
        where = f"{path}:{number}"
        if messages_key in record:
            messages = record[messages_key]
            if (not isinstance(messages, list) or not messages
                    or not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages)):
                raise TextDataError(f"{where}: {messages_key!r} must be a non-empty list of {{role, content}} objects")
            if messages[-1]["role"] != "assistant":
                raise TextDataError(f"{where}: the last message is the {messages[-1]['role']!r}'s; distillation "
                                    "learns the assistant's reply, so the last message must be role 'assistant'")
            examples.append({"messages": messages})
        elif prompt_key in record and response_key in record:
            prompt, response = record[prompt_key], record[response_key]
            if not isinstance(prompt, str) or not isinstance(response, str):
                raise TextDataError(f"{where}: {prompt_key!r} and {response_key!r} must be strings")
            examples.append({"prompt": prompt, "response": response})
        else:
            raise TextDataError(f"{where}: expected keys {prompt_key!r} + {response_key!r}, or {messages_key!r}; "
                                f"got {sorted(record)}")
    return examples


def train_bpe_tokenizer(texts: Iterable[str], *, vocab_size: int = 8192, min_frequency: int = 2,
                        special_tokens: Sequence[str] = (EOS_TOKEN, PAD_TOKEN)):
    """A byte-level BPE tokenizer (GPT-2's scheme: any UTF-8 text encodes, nothing is unknown) trained on
    ``texts`` with the ``tokenizers`` library, as a ``transformers.PreTrainedTokenizerFast`` whose
    ``eos_token`` is the first special token and ``pad_token`` the second (ids 0 and 1).
    ``save_pretrained(folder)`` writes it beside the model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    specials = list(special_tokens)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=specials[0] if specials else None,
                                   pad_token=specials[1] if len(specials) > 1 else None)


def _eos_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos_token: packing separates "
                         "documents with it (give one, e.g. tokenizer.eos_token = '<|endoftext|>')")
    return int(eos)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else _eos_id(tokenizer)


def packed_text_data(texts: Iterable[str], tokenizer, *, length: int = 128, name: str = "text",
                     split: str = "train") -> TensorData:
    """``texts`` tokenised, each followed by EOS, concatenated and cut into sequences of ``length``
    tokens (every position predicts the next; attention crosses document boundaries, as in GPT-2's
    training). The last, shorter sequence is padded and its padding masked. ``num_tokens`` counts
    the real tokens."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"packed_text_data: length must be an int >= 2, got {length!r}")
    eos = _eos_id(tokenizer)
    stream: list[int] = []
    texts = list(texts)
    if texts:
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
    if not stream:
        raise ValueError("packed_text_data: no text to pack")
    rows = -(-len(stream) // length)
    ids = torch.full((rows * length,), _pad_id(tokenizer), dtype=torch.int64)
    ids[:len(stream)] = torch.tensor(stream, dtype=torch.int64)
    mask = torch.zeros(rows * length, dtype=torch.int64)
    mask[:len(stream)] = 1
    data = TensorData({"input_ids": ids.view(rows, length), "attention_mask": mask.view(rows, length)},
                      name=name, split=split)
    data.num_tokens = len(stream)
    data.tokenizer = tokenizer  # a run's report decodes sample generations with it
    return data


def _encode_example(example: dict[str, Any], tokenizer) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one example; chat messages through the tokenizer's chat template."""
    if "messages" in example:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"chat messages need a tokenizer with a chat template; "
                             f"{getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} has none "
                             "(set tokenizer.chat_template, or give prompt/response pairs)")
        messages = example["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template renders the conversation without the prompt as its beginning; "
                             "cannot tell the reply's tokens apart")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return prompt_ids, tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(example["response"], add_special_tokens=False)["input_ids"] + [_eos_id(tokenizer)]
    return prompt_ids, response_ids


def prompt_response_data(examples: Sequence[dict[str, Any]], tokenizer, *, max_length: int = 256,
                         name: str = "prompts", split: str = "train") -> TensorData:
    """Prompt/response examples (:func:`read_jsonl`) as right-padded sequences of ``max_length`` with
    ``loss_mask`` 0 on the prompt (and padding): the student learns the response only (plus EOS after
    a plain response; a chat template ends replies its own way). Longer examples are cut at
    ``max_length`` (``num_truncated``); those with no response token left are dropped (``num_dropped``)."""
    pad = _pad_id(tokenizer)
    rows, prompts, truncated, dropped = [], [], 0, 0
    for example in examples:
        prompt_ids, response_ids = _encode_example(example, tokenizer)
        ids = prompt_ids + response_ids
        if len(ids) > max_length:
            truncated += 1
            ids = ids[:max_length]
        if len(prompt_ids) >= len(ids):
            dropped += 1
            continue
        rows.append(ids)
        prompts.append(len(prompt_ids))
    if not rows:
        raise ValueError(f"prompt_response_data: no example keeps a response token within max_length={max_length}")
    count = len(rows)
    input_ids = torch.full((count, max_length), pad, dtype=torch.int64)
    attention = torch.zeros((count, max_length), dtype=torch.int64)
    loss_mask = torch.zeros((count, max_length), dtype=torch.int64)
    for row, (ids, prompt) in enumerate(zip(rows, prompts)):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
        loss_mask[row, prompt:len(ids)] = 1
    data = TensorData({"input_ids": input_ids, "attention_mask": attention, LOSS_MASK: loss_mask}, name=name,
                      split=split)
    data.num_truncated, data.num_dropped = truncated, dropped
    data.tokenizer = tokenizer  # a run's report decodes sample generations with it
    return data


def causal_lm_text(split: str, root: str | Path | None = None, cache_dir: str | Path | None = None, *,
                   tokenizer: str, train_file: str = "train.txt", test_file: str = "test.txt", length: int = 128,
                   limit: int | None = None, prompt_key: str = "prompt", response_key: str = "response") -> TensorData:
    """The registered ``causal_lm_text`` data set (task ``token``): ``root/train_file`` / ``root/test_file``
    tokenised with the tokenizer of the model folder ``tokenizer`` (the teacher's, say). A ``.jsonl``
    file is prompt/response or chat examples (:func:`read_jsonl` + :func:`prompt_response_data`,
    rows of ``length`` tokens, the prompt masked); any other file is plain text, one document a line
    (:func:`read_text` + :func:`packed_text_data`, packed into rows of ``length`` tokens). ``limit``:
    the first N lines / examples. Relative paths are taken in ``root`` (``tokenizer`` too, when it is
    there). The result carries its tokenizer (a run's sample generations decode with it)::

        data: {name: causal_lm_text, root: data/glosses,
               params: {tokenizer: runs/teacher-hf, train_file: train.txt, test_file: test.txt, length: 64}}
    """
    from distill.llm.models import load_tokenizer

    folder = Path(root) if root is not None else Path(".")
    if split not in ("train", "test"):
        raise ValueError(f"causal_lm_text: split must be 'train' or 'test', got {split!r}")
    path = folder / (train_file if split == "train" else test_file)
    if not path.is_file():
        raise FileNotFoundError(f"field 'data.params.{split}_file': {path} does not exist (a .jsonl file of "
                                "prompt/response lines, or a text file with one document a line)")
    source = Path(tokenizer) if Path(tokenizer).exists() or root is None else folder / tokenizer
    if not source.exists():
        raise FileNotFoundError(f"field 'data.params.tokenizer': {tokenizer} does not exist (give the model folder, "
                                "or .gguf file, whose tokenizer the data is encoded with)")
    tok = load_tokenizer(source)
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".xz")]
    name = path.name.split(".")[0]
    if suffixes and suffixes[-1] == ".jsonl":
        examples = read_jsonl(path, prompt_key=prompt_key, response_key=response_key)
        data = prompt_response_data(examples[:limit] if limit else examples, tok, max_length=length, name=name,
                                    split=split)
    else:
        data = packed_text_data(read_text(path, limit=limit), tok, length=length, name=name, split=split)
    data.source = path
    return data


__all__ = ["TextDataError", "causal_lm_text", "packed_text_data", "prompt_response_data", "read_jsonl", "read_text",
           "train_bpe_tokenizer"]
