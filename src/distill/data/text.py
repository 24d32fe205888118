"""Text classification files: read CSV / TSV / JSONL, tokenise, and hold the result as TensorData.

>>> data = text_classification_data("../shared/data/ag_news/train.csv", max_length=64)
>>> data.input_shape                    # {"input_ids": (64,), "attention_mask": (64,)}
>>> data.num_truncated                  # texts longer than 64 tokens, cut

Files are read defensively: strict UTF-8 (a bad byte is an error naming file:line), a header
row for CSV/TSV, one JSON object per line for JSONL; every error names the file and the line.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from .sources import TensorData

TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".ndjson": None}
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
PAD, UNK = "<pad>", "<unk>"
VOCAB_FORMAT = "distill.WordVocab"


class TextFileError(ValueError):
    """A text classification file that cannot be read; the message names the file and the line."""


# --------------------------------------------------------------------------- reading
def _format_of(path: Path, delimiter: str | None) -> tuple[str | None, Callable[..., Any]]:
    """(delimiter or None for JSONL, opener) from the suffixes: ``.csv``, ``.tsv.gz``, ``.jsonl.xz`` ..."""
    suffixes = [s.lower() for s in path.suffixes]
    opener: Callable[..., Any] = open
    if suffixes and suffixes[-1] in COMPRESSIONS:
        opener = COMPRESSIONS[suffixes.pop()]
    kind = suffixes[-1] if suffixes else ""
    if kind in TEXT_SUFFIXES:
        if delimiter is not None and TEXT_SUFFIXES[kind] is None:
            raise TextFileError(f"{path}: delimiter= is for CSV/TSV files; a {kind} file holds one JSON object a line")
        return (delimiter if delimiter is not None else TEXT_SUFFIXES[kind]), opener
    if delimiter is not None:  # any other suffix read as delimited text when the delimiter is given
        return delimiter, opener
    raise TextFileError(f"{path}: unknown file type {path.name!r}; expected one of "
                        f"{', '.join(TEXT_SUFFIXES)} (optionally {'/'.join(COMPRESSIONS)} compressed), or pass "
                        "delimiter= for another delimited text file")


def _lines(path: Path, opener: Callable[..., Any]) -> Iterator[str]:
    """Decoded lines (newlines kept) of ``path``; a non-UTF-8 byte raises naming file:line and column."""
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise TextFileError(f"{path}:{number}: not UTF-8 (byte {raw[exc.start:exc.start + 1]!r} at "
                                        f"column {exc.start + 1}); save the file as UTF-8") from None
                if number == 1 and line.startswith("\ufeff"):
                    line = line[1:]  # a byte-order mark
                yield line
    except (OSError, EOFError, lzma.LZMAError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(f"{path}: no such file") from None
        raise TextFileError(f"{path}: cannot read it ({exc})") from exc


def _delimited_rows(path: Path, opener, delimiter: str) -> Iterator[tuple[int, dict[str, str] | None, list[str]]]:
    """(line number, row by column, header) of every record; the header first with row None."""
    lines = _lines(path, opener)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    previous = 0
    try:
        for fields in reader:
            line, previous = previous + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip() and header is not None):
                continue  # a blank line
            if header is None:
                header = [name.strip() for name in fields]
                duplicates = sorted({name for name in header if header.count(name) > 1})
                if duplicates:
                    raise TextFileError(f"{path}:{line}: the header names {duplicates} more than once")
                yield line, None, header
                continue
            if len(fields) != len(header):
                raise TextFileError(f"{path}:{line}: {len(fields)} fields, but the header has {len(header)} "
                                    f"({', '.join(header)}); quote fields that hold the delimiter {delimiter!r}")
            yield line, dict(zip(header, fields)), header
    except csv.Error as exc:
        raise TextFileError(f"{path}:{reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})") from None
    if header is None:
        raise TextFileError(f"{path}: empty file; expected a header row naming the columns")


def _jsonl_rows(path: Path, opener) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    for line, text in enumerate(_lines(path, opener), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TextFileError(f"{path}:{line}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise TextFileError(f"{path}:{line}: each line must be a JSON object, got a {type(row).__name__}")
        yield line, row, list(row)


def _read_classes(classes: Sequence[str] | str | Path | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, Path)):  # a file of class names, one a line (AG News' classes.txt)
        path = Path(classes)
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise TextFileError(f"{path}: no class names (expected one a line)")
        classes = names
    classes = [str(name) for name in classes]
    duplicates = sorted({name for name in classes if classes.count(name) > 1})
    if not classes or duplicates:
        raise ValueError(f"classes must be distinct names, got {classes}" + (f" ({duplicates} repeated)" if duplicates else ""))
    return classes


def _int_label(value: Any) -> int | None:
    """``value`` as an integer class id when it is one (an int, or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value.strip())
    return None


def read_text_classification(path: str | Path, *, text_column: str = "text", label_column: str = "label",
                             classes: Sequence[str] | str | Path | None = None, delimiter: str | None = None,
                             skip_empty: bool = False) -> tuple[list[str], list[int], list[str]]:
    """Read a labelled text file: ``(texts, labels, classes)`` with ``labels[i]`` in ``[0, len(classes))``.

    The format comes from the suffix: ``.csv`` (comma), ``.tsv`` (tab), ``.jsonl``/``.ndjson``
    (one JSON object a line), each optionally ``.gz``/``.bz2``/``.xz`` compressed; ``delimiter``
    overrides the CSV/TSV delimiter or reads another suffix as delimited text. CSV/TSV need a
    header row naming ``text_column`` and ``label_column``.

    Labels: with ``classes`` (a list of names, or a file of names one a line), a label that
    is a class name maps to its position, otherwise an integer label is the class id itself.
    Without ``classes``: if every label is an integer, labels are the ids as they are and the
    classes are ``"0" .. str(max)``; otherwise labels are names and the classes are the sorted
    unique names.

    Raises :class:`TextFileError` naming ``file:line`` for: a missing column (listing the
    columns found), a row with the wrong number of fields, a non-UTF-8 byte, an empty label, a
    label outside the classes or a negative id, and empty texts (all of them counted, the
    first few named; ``skip_empty=True`` skips them with a warning instead).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    delimiter, opener = _format_of(path, delimiter)
    rows = _jsonl_rows(path, opener) if delimiter is None else _delimited_rows(path, opener, delimiter)
    known = _read_classes(classes)
    texts: list[str] = []
    raw_labels: list[tuple[int, Any]] = []  # (line, label as written)
    empty: list[int] = []
    checked_header = False
    for line, row, columns in rows:
        if row is None or not checked_header:  # the header (CSV/TSV) or the first object (JSONL)
            missing = [name for name in (text_column, label_column) if name not in columns]
            if missing:
                what = "columns" if delimiter is not None else "keys"
                raise TextFileError(f"{path}:{line}: no {what} {missing} ({what} found: {', '.join(columns)}); pass "
                                    "text_column= / label_column= naming the right ones")
            checked_header = True
            if row is None:
                continue
        if text_column not in row or label_column not in row:
            missing = [name for name in (text_column, label_column) if name not in row]
            raise TextFileError(f"{path}:{line}: no key {missing} (keys found: {', '.join(row)})")
        text, label = row[text_column], row[label_column]
        if not isinstance(text, str):
            raise TextFileError(f"{path}:{line}: {text_column!r} must be a string, got {type(text).__name__}")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise TextFileError(f"{path}:{line}: empty label in column {label_column!r}")
        if not isinstance(label, (str, int)) or isinstance(label, bool):
            raise TextFileError(f"{path}:{line}: label {label!r} must be a class name or an integer id, "
                                f"got a {type(label).__name__}")
        if not text.strip():
            empty.append(line)
            if skip_empty:
                continue
        texts.append(text)
        raw_labels.append((line, label.strip() if isinstance(label, str) else label))
    if empty:
        shown = ", ".join(f"{path}:{line}" for line in empty[:5]) + (", ..." if len(empty) > 5 else "")
        if not skip_empty:
            raise TextFileError(f"{len(empty)} empty text(s) in column {text_column!r}: {shown}; remove them or pass "
                                "skip_empty=True to skip them")
        warnings.warn(f"skipped {len(empty)} empty text(s) in {path}: {shown}", stacklevel=2)
    labels, names = _map_labels(path, raw_labels, known)
    return texts, labels, names


def _map_labels(path: Path, raw: list[tuple[int, Any]], classes: list[str] | None) -> tuple[list[int], list[str]]:
    if classes is not None:
        index = {name: k for k, name in enumerate(classes)}
        labels = []
        for line, label in raw:
            k = index.get(str(label))
            if k is None:
                k = _int_label(label)
                if k is None or not 0 <= k < len(classes):
                    raise TextFileError(f"{path}:{line}: label {label!r} is not one of the {len(classes)} classes "
                                        f"({', '.join(classes)}) nor an id in [0, {len(classes)})")
            labels.append(k)
        return labels, classes
    ids = [_int_label(label) for _, label in raw]
    if all(k is not None for k in ids):
        for (line, label), k in zip(raw, ids):
            if k < 0:
                raise TextFileError(f"{path}:{line}: label {label!r} is a negative class id; ids start at 0")
        return ids, [str(k) for k in range(max(ids) + 1)] if ids else []  # type: ignore[type-var]
    names = sorted({str(label) for _, label in raw})
    index = {name: k for k, name in enumerate(names)}
    return [index[str(label)] for _, label in raw], names


# --------------------------------------------------------------------------- a word-level tokenizer
class WordVocab:
    """A word-level tokenizer: tokens are ``\\w+|[^\\w\\s]`` matches (lowercased by default).

    Ids: 0 ``<pad>``, 1 ``<unk>``, then the vocabulary by descending frequency (ties by the
    token's text, so a build is deterministic). Saved and loaded as JSON (never pickle). It can
    be called like a Hugging Face tokenizer (``vocab(texts, padding=..., truncation=True,
    max_length=..., return_tensors="pt")``).
    """

    pad_id = 0
    unk_id = 1

    def __init__(self, tokens: Sequence[str], *, lowercase: bool = True) -> None:
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a WordVocab's tokens must start with {PAD!r}, {UNK!r}, got {tokens[:2]}")
        if not all(isinstance(token, str) and token for token in tokens):
            raise ValueError("a WordVocab's tokens must be non-empty strings")
        if len(set(tokens)) != len(tokens):
            repeated = sorted({token for token, count in Counter(tokens).items() if count > 1})[:5]
            raise ValueError(f"a WordVocab's tokens must be distinct, got repeats such as {repeated}")
        self.tokens = tokens
        self.lowercase = lowercase
        self.index = {token: i for i, token in enumerate(tokens)}
        self.last_truncated = 0  # texts cut to max_length by the last encode

    @classmethod
    def build(cls, texts: Iterable[str], *, max_size: int = 30000, min_freq: int = 1,
              lowercase: bool = True) -> "WordVocab":
        """The ``max_size - 2`` most frequent tokens seen at least ``min_freq`` times (plus pad and unk)."""
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2:
            raise ValueError(f"max_size must be an int >= 2 (it counts {PAD} and {UNK}), got {max_size!r}")
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(cls._split(text, lowercase))
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        ranked = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda item: (-item[1], item[0]))
        return cls([PAD, UNK, *(token for token, _ in ranked[:max_size - 2])], lowercase=lowercase)

    @staticmethod
    def _split(text: str, lowercase: bool) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got a {type(text).__name__}")
        return TOKEN_PATTERN.findall(text.lower() if lowercase else text)

    def tokenize(self, text: str) -> list[str]:
        return self._split(text, self.lowercase)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"WordVocab({len(self)} tokens, lowercase={self.lowercase})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordVocab) and other.tokens == self.tokens and other.lowercase == self.lowercase

    def ids(self, text: str) -> list[int]:
        return [self.index.get(token, self.unk_id) for token in self.tokenize(text)]

    def encode(self, texts: Sequence[str], max_length: int = 128) -> dict[str, Tensor]:
        """``{"input_ids": (N, L) int64, "attention_mask": (N, L) int64}``, padded with 0 on the right.

        ``L`` is the longest text's token count, at most ``max_length`` (at least 1). Longer
        texts are cut; how many is kept in ``self.last_truncated``.
        """
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, got one string (wrap it: [text])")
        rows = [self.ids(text) for text in texts]
        self.last_truncated = sum(len(row) > max_length for row in rows)
        length = max(1, min(max_length, max((len(row) for row in rows), default=0)))
        input_ids = torch.zeros(len(rows), length, dtype=torch.int64)
        mask = torch.zeros(len(rows), length, dtype=torch.int64)
        for i, row in enumerate(rows):
            row = row[:length]
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
            mask[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def __call__(self, texts: Sequence[str], *, padding: Any = "longest", truncation: bool = True,
                 max_length: int = 128, return_tensors: str = "pt") -> dict[str, Tensor]:
        """Hugging Face-style call: right padding to the longest (or to ``max_length`` with
        ``padding="max_length"``), truncation on, PyTorch tensors."""
        if not truncation or return_tensors != "pt":
            raise ValueError("WordVocab pads and truncates to tensors only: truncation=True, return_tensors='pt'")
        encoded = self.encode(texts, max_length)
        if padding == "max_length" and encoded["input_ids"].shape[1] < max_length:
            extra = max_length - encoded["input_ids"].shape[1]
            encoded = {key: torch.nn.functional.pad(value, (0, extra)) for key, value in encoded.items()}
        return encoded

    def decode(self, ids: Sequence[int] | Tensor) -> list[str]:
        """Tokens of ``ids``, pads dropped."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return [self.tokens[i] for i in values if i != self.pad_id]

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON: ``{"format", "version", "lowercase", "tokens"}``."""
        path = Path(path)
        path.write_text(json.dumps({"format": VOCAB_FORMAT, "version": 1, "lowercase": self.lowercase,
                                    "pattern": TOKEN_PATTERN.pattern, "tokens": self.tokens}, ensure_ascii=False),
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "WordVocab":
        """Read a vocabulary written by :meth:`save`; anything else raises ValueError naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a WordVocab JSON file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT or data.get("version") != 1:
            raise ValueError(f"{path}: not a WordVocab file (expected format {VOCAB_FORMAT!r} version 1)")
        if data.get("pattern", TOKEN_PATTERN.pattern) != TOKEN_PATTERN.pattern:
            raise ValueError(f"{path}: written with token pattern {data['pattern']!r}, this version splits with "
                             f"{TOKEN_PATTERN.pattern!r}")
        tokens, lowercase = data.get("tokens"), data.get("lowercase")
        if not isinstance(tokens, list) or not isinstance(lowercase, bool):
            raise ValueError(f"{path}: 'tokens' must be a list and 'lowercase' a bool")
        try:
            return cls(tokens, lowercase=lowercase)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- TensorData from a file
def _count_truncated(tokenizer: Any, texts: list[str], max_length: int) -> int | None:
    """Texts whose untruncated encoding is longer than ``max_length`` (None when the tokenizer cannot say)."""
    try:
        encoded = tokenizer(texts, padding=False, truncation=False)
        return sum(len(ids) > max_length for ids in encoded["input_ids"])
    except Exception:  # noqa: BLE001 - any tokenizer: the count is informational
        return None


def text_classification_data(path: str | Path, *, tokenizer: Any = None, max_length: int = 128,
                             text_column: str = "text", label_column: str = "label",
                             classes: Sequence[str] | str | Path | None = None, delimiter: str | None = None,
                             skip_empty: bool = False, max_vocab: int = 30000, min_freq: int = 1,
                             name: str | None = None, split: str = "train") -> TensorData:
    """A text classification file (see :func:`read_text_classification`) tokenised into TensorData.

    Inputs ``{"input_ids": (N, L) int64, "attention_mask": (N, L) int64}`` (plus whatever
    else a Hugging Face tokenizer returns, e.g. ``token_type_ids``), ``L <= max_length``;
    targets ``(N,)`` int64; ``classes`` from the file (or as given).

    ``tokenizer``: None builds a :class:`WordVocab` from this file's texts (``max_vocab``,
    ``min_freq``); pass the training set's ``data.tokenizer`` for its validation/test files. A
    Hugging Face tokenizer (or any callable taking ``(texts, padding="longest",
    truncation=True, max_length=..., return_tensors="pt")``) is used as it is.

    The result carries ``num_truncated`` (texts longer than ``max_length`` tokens, cut; None
    when a foreign tokenizer cannot report it), ``tokenizer`` and ``source`` (the path).
    ``name`` defaults to the file's stem (``train`` for ``train.csv.gz``).
    """
    path = Path(path)
    texts, labels, names = read_text_classification(path, text_column=text_column, label_column=label_column,
                                                    classes=classes, delimiter=delimiter, skip_empty=skip_empty)
    if not texts:
        raise TextFileError(f"{path}: no texts (only a header?)")
    if tokenizer is None:
        tokenizer = WordVocab.build(texts, max_size=max_vocab, min_freq=min_freq)
    if isinstance(tokenizer, WordVocab):
        encoded = tokenizer.encode(texts, max_length)
        truncated: int | None = tokenizer.last_truncated
    elif callable(tokenizer):
        encoded = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        encoded = {key: value for key, value in dict(encoded).items() if isinstance(value, Tensor)}
        if "input_ids" not in encoded:
            raise ValueError(f"the tokenizer {type(tokenizer).__name__} returned no 'input_ids' tensor "
                             f"(keys {sorted(encoded)}); it must return tensors with return_tensors='pt'")
        truncated = _count_truncated(tokenizer, texts, max_length)
    else:
        raise TypeError(f"tokenizer must be a WordVocab, a Hugging Face tokenizer or a callable, got "
                        f"{type(tokenizer).__name__}")
    encoded = {key: value.to(torch.int64) if not value.is_floating_point() else value for key, value in encoded.items()}
    stem = path.name.split(".")[0]
    data = TensorData(encoded, torch.tensor(labels, dtype=torch.int64), name=name or stem, classes=names, split=split)
    data.num_truncated = truncated
    data.tokenizer = tokenizer
    data.source = str(path)
    return data


def read_sentences(path: str | Path) -> tuple[list[str], int]:
    """``(sentences, empty lines skipped)`` of a text file with one sentence a line (``.gz`` read as gzip).

    Lines are stripped of their line ending and surrounding whitespace; empty ones are skipped and
    counted. Bytes that are not UTF-8 raise :class:`TextFileError` naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a text file, one sentence a line)")
    opener = gzip.open if path.suffix == ".gz" else open
    sentences, empty = [], 0
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise TextFileError(f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                    "re-encode the file as UTF-8") from None
            if line:
                sentences.append(line)
            else:
                empty += 1
    return sentences, empty


def sentence_data(sentences: Sequence[str], tokenizer: Any, *, max_length: int = 64, name: str = "sentences",
                  split: str = "train") -> TensorData:
    """Unlabelled sentences tokenised into TensorData ``{"input_ids", "attention_mask"} (N, L)``, ``L <= max_length``
    (padded to the longest), for the ``embedding`` task (the teacher's embeddings are the targets).
    ``num_truncated``: sentences longer than ``max_length`` tokens, cut."""
    if not sentences:
        raise ValueError(f"sentence_data {name!r}: no sentences")
    encoded = tokenizer(list(sentences), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    inputs = {key: encoded[key].to(torch.int64) for key in ("input_ids", "attention_mask") if key in encoded}
    data = TensorData(inputs, None, name=name, split=split)
    data.num_truncated = _count_truncated(tokenizer, list(sentences), max_length)
    data.tokenizer = tokenizer
    return data


__all__ = [
    "TextFileError",
    "WordVocab",
    "read_sentences",
    "read_text_classification",
    "sentence_data",
    "text_classification_data",
]


def text_classification(split: str, root: str | Path | None = None, cache_dir: str | Path | None = None, *,
                        train_file: str = "train.csv", test_file: str = "test.csv", text_column: str = "text",
                        label_column: str = "label", classes: str | None = None, max_length: int = 128,
                        max_vocab: int = 30000, min_freq: int = 1, tokenizer: str | None = None) -> TensorData:
    """The registered ``text_classification`` data set: ``root/train_file`` / ``root/test_file``
    (CSV / TSV / JSONL, see :func:`read_text_classification`) as token ids of a :class:`WordVocab`
    built from the training file (both splits share it; ids < ``max_vocab``, 0 = padding), so a
    recipe reads e.g. AG News with ``data: {name: text_classification, root: ../shared/data/ag_news,
    params: {classes: classes.txt}}`` and a ``token_cnn`` student with ``vocab_size: 30000``.
    ``classes``: a file in ``root`` with one class name a line (else from the labels).

    ``tokenizer``: a model folder (a sentence-transformers or Hugging Face one, e.g. the teacher's) whose
    tokenizer replaces the word vocabulary (for a ``transformer_student`` of that folder); both splits are
    then padded to ``max_length``, so the model's recorded length covers every row.
    """
    from .datasets import _check_split, _require_root

    _check_split("text_classification", split)
    folder = _require_root("text_classification", root, "ag_news", f"{train_file} and {test_file}")
    for name in (train_file, test_file):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"dataset 'text_classification': {folder / name} does not exist (params "
                                    "train_file / test_file name the files in root)")
    class_names = folder / classes if classes is not None else None
    train_texts, _, _ = read_text_classification(folder / train_file, text_column=text_column,
                                                 label_column=label_column, classes=class_names)
    vocab = WordVocab.build(train_texts, max_size=max_vocab, min_freq=min_freq) if tokenizer is None else \
        _folder_tokenizer(tokenizer, max_length)
    path = folder / (train_file if split == "train" else test_file)
    return text_classification_data(path, tokenizer=vocab, max_length=max_length, text_column=text_column,
                                    label_column=label_column, classes=class_names, name="text_classification",
                                    split=split)


def _folder_tokenizer(folder: str | Path, max_length: int):
    """The Hugging Face tokenizer of a model folder (local files only), padding every batch to ``max_length``."""
    from distill.models.hf import _read_layout

    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset 'text_classification': params.tokenizer {str(path)!r} is not a folder (give "
                                "the model folder whose tokenizer the student reads, e.g. the teacher's)")
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("dataset 'text_classification': params.tokenizer needs transformers (the text extra: "
                          "pip install 'distill[text]')") from exc
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(_read_layout(path)["model_folder"]),
                                                           local_files_only=True, trust_remote_code=False)

    def encode(texts, *, padding="longest", truncation=True, max_length=max_length, return_tensors=None):
        return tokenizer(texts, padding="max_length" if padding else False, truncation=truncation,
                         max_length=max_length, return_tensors=return_tensors)

    encode.tokenizer = tokenizer  # the Hugging Face tokenizer itself
    return encode
