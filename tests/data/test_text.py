"""Text classification files: CSV / TSV / JSONL parsing with file:line errors, WordVocab, AG News."""
from __future__ import annotations

import gzip
import json

import pytest
import torch

from distill.data import (
    TensorData,
    TensorLoader,
    TextFileError,
    WordVocab,
    as_batch_source,
    read_text_classification,
    text_classification_data,
)
from shared_data import require_shared


def write(path, text, *, binary=False):
    if binary:
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- reading
def test_csv_tsv_jsonl_and_gzip_parse_alike(tmp_path):
    rows = [("good movie, really", "pos"), ('said "hi"\nthen left', "neg"), ("fine", "pos")]
    csv_text = "label,text\n" + "".join(f'{label},"{text.replace(chr(34), chr(34) * 2)}"\n' for text, label in rows)
    tsv_text = "text\tlabel\n" + "".join(f'"{text.replace(chr(34), chr(34) * 2)}"\t{label}\n' for text, label in rows)
    jsonl_text = "".join(json.dumps({"text": text, "label": label, "id": i}) + "\n" for i, (text, label) in enumerate(rows))
    expected = ([text for text, _ in rows], [1, 0, 1], ["neg", "pos"])  # names: sorted unique
    assert read_text_classification(write(tmp_path / "a.csv", csv_text)) == expected
    assert read_text_classification(write(tmp_path / "a.tsv", tsv_text)) == expected
    assert read_text_classification(write(tmp_path / "a.jsonl", jsonl_text + "\n")) == expected
    with gzip.open(tmp_path / "a.csv.gz", "wt", encoding="utf-8") as f:
        f.write(csv_text)
    assert read_text_classification(tmp_path / "a.csv.gz") == expected
    semicolons = write(tmp_path / "a.txt", "label;text\n" + "".join(f"{label};{text}\n" for text, label in
                                                                     [("x, y", "pos"), ("z", "neg")]))
    assert read_text_classification(semicolons, delimiter=";") == (["x, y", "z"], [1, 0], ["neg", "pos"])
    # the BOM a spreadsheet writes is not part of the first column's name
    assert read_text_classification(write(tmp_path / "bom.csv", "\ufeff" + csv_text)) == expected


def test_labels_as_ids_names_or_given_classes(tmp_path):
    path = write(tmp_path / "ids.csv", "text,label\na,2\nb,0\nc,2\n")
    assert read_text_classification(path) == (["a", "b", "c"], [2, 0, 2], ["0", "1", "2"])
    assert read_text_classification(path, classes=["x", "y", "z"])[1:] == ([2, 0, 2], ["x", "y", "z"])
    named = write(tmp_path / "names.csv", "text,label\na,dog\nb,cat\n")
    assert read_text_classification(named, classes=["dog", "cat"])[1] == [0, 1]
    classes_file = write(tmp_path / "classes.txt", "dog\ncat\n")
    assert read_text_classification(named, classes=classes_file)[1:] == ([0, 1], ["dog", "cat"])
    with pytest.raises(TextFileError, match=r"names.csv:3: label 'cat' is not one of the 2 classes \(dog, bird\)"):
        read_text_classification(named, classes=["dog", "bird"])
    with pytest.raises(TextFileError, match=r"ids.csv:2: label '2' is not one of the 2 classes"):
        read_text_classification(path, classes=["x", "y"])
    with pytest.raises(TextFileError, match="neg.csv:3: label '-1' is a negative class id"):
        read_text_classification(write(tmp_path / "neg.csv", "text,label\na,0\nb,-1\n"))
    other = write(tmp_path / "cols.csv", "review,stars\nnice,5\n")
    assert read_text_classification(other, text_column="review", label_column="stars")[0] == ["nice"]


def test_errors_name_file_and_line(tmp_path):
    with pytest.raises(TextFileError, match=r"cols.csv:1: no columns \['text'\] \(columns found: label, body\)"):
        read_text_classification(write(tmp_path / "cols.csv", "label,body\n0,hello\n"))
    with pytest.raises(TextFileError, match=r"keys.jsonl:1: no keys \['label'\] \(keys found: text, y\)"):
        read_text_classification(write(tmp_path / "keys.jsonl", '{"text": "a", "y": 1}\n'))
    with pytest.raises(TextFileError, match=r"later.jsonl:2: no key \['label'\]"):
        read_text_classification(write(tmp_path / "later.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n'))
    bad = b"text,label\nfine,0\ncaf\xe9,1\n"
    with pytest.raises(TextFileError, match=r"latin.csv:3: not UTF-8 \(byte b'\\xe9' at column 4\)"):
        read_text_classification(write(tmp_path / "latin.csv", bad, binary=True))
    with pytest.raises(TextFileError, match="fields.csv:3: 3 fields, but the header has 2"):
        read_text_classification(write(tmp_path / "fields.csv", "text,label\na,0\nb,c,1\n"))
    with pytest.raises(TextFileError, match="json.jsonl:2: not valid JSON"):
        read_text_classification(write(tmp_path / "json.jsonl", '{"text": "a", "label": 0}\n{"text": \n'))
    with pytest.raises(TextFileError, match="list.jsonl:1: each line must be a JSON object, got a list"):
        read_text_classification(write(tmp_path / "list.jsonl", '["a", 0]\n'))
    with pytest.raises(TextFileError, match="nolabel.csv:2: empty label"):
        read_text_classification(write(tmp_path / "nolabel.csv", "text,label\na,\n"))
    with pytest.raises(TextFileError, match="float.jsonl:1: label 0.5 must be a class name or an integer id"):
        read_text_classification(write(tmp_path / "float.jsonl", '{"text": "a", "label": 0.5}\n'))
    with pytest.raises(TextFileError, match=r"unknown file type 'data.xml'.*\.csv, \.tsv, \.jsonl"):
        read_text_classification(write(tmp_path / "data.xml", "<x/>"))
    with pytest.raises(TextFileError, match="empty file; expected a header row"):
        read_text_classification(write(tmp_path / "empty.csv", ""))
    with pytest.raises(FileNotFoundError, match="missing.csv: no such file"):
        read_text_classification(tmp_path / "missing.csv")


def test_empty_texts_are_refused_or_skipped(tmp_path):
    path = write(tmp_path / "gaps.csv", "text,label\nok,0\n,1\n   ,0\nfine,1\n")
    with pytest.raises(TextFileError, match=r"2 empty text\(s\) in column 'text': .*gaps.csv:3, .*gaps.csv:4; "
                                            r".*skip_empty=True"):
        read_text_classification(path)
    with pytest.warns(UserWarning, match=r"skipped 2 empty text\(s\)"):
        assert read_text_classification(path, skip_empty=True) == (["ok", "fine"], [0, 1], ["0", "1"])


# --------------------------------------------------------------------------- WordVocab
def test_word_vocab_build_encode_and_json_round_trip(tmp_path):
    texts = ["The cat sat.", "the dog sat, the end", "Cat!"]
    vocab = WordVocab.build(texts)
    assert vocab.tokens[:2] == ["<pad>", "<unk>"] and vocab.tokens[2] == "the"  # most frequent first
    assert vocab.tokenize("Don't stop!") == ["don", "'", "t", "stop", "!"]
    encoded = vocab.encode(["the cat", "a dog sat the end ."], max_length=4)
    assert encoded["input_ids"].shape == (2, 4) and encoded["input_ids"].dtype == torch.int64
    assert encoded["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert encoded["input_ids"][0, 2:].tolist() == [0, 0] and encoded["input_ids"][1, 0] == vocab.unk_id  # "a" unseen
    assert vocab.last_truncated == 1
    assert vocab.encode(["cat"], max_length=10)["input_ids"].shape == (1, 1)  # padded to the longest
    assert vocab(["cat"], padding="max_length", max_length=6)["input_ids"].shape == (1, 6)
    path = vocab.save(tmp_path / "vocab.json")
    assert json.loads(path.read_text())["format"] == "distill.WordVocab"
    loaded = WordVocab.load(path)
    assert loaded == vocab and torch.equal(loaded.encode(texts)["input_ids"], vocab.encode(texts)["input_ids"])
    # the: 3, cat: 2, sat: 2 (ties by text), the rest once
    assert WordVocab.build(texts, min_freq=2).tokens == ["<pad>", "<unk>", "the", "cat", "sat"]
    assert WordVocab.build(texts, max_size=4).tokens == ["<pad>", "<unk>", "the", "cat"]
    assert WordVocab.build(["A a"], lowercase=False).tokens == ["<pad>", "<unk>", "A", "a"]
    write(tmp_path / "bad.json", '{"format": "other"}')
    with pytest.raises(ValueError, match="bad.json: not a WordVocab file"):
        WordVocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="max_length must be an int >= 1"):
        vocab.encode(texts, max_length=0)


# --------------------------------------------------------------------------- TensorData from files
def test_text_classification_data_with_word_vocab(tmp_path):
    path = write(tmp_path / "reviews.csv", "text,label\ngreat film,pos\nawful film,neg\nreally really great film,pos\n")
    data = text_classification_data(path, max_length=3)
    assert isinstance(data, TensorData) and data.name == "reviews" and data.classes == ["neg", "pos"]
    assert data.input_shape == {"input_ids": (3,), "attention_mask": (3,)} and data.num_truncated == 1
    assert data.targets.tolist() == [1, 0, 1] and isinstance(data.tokenizer, WordVocab)
    batch = next(iter(as_batch_source(data, batch_size=2, shuffle=False).epoch_batches(0)))
    assert batch["input"]["input_ids"].shape == (2, 3) and batch["target"].tolist() == [1, 0]
    test = text_classification_data(path, tokenizer=data.tokenizer, max_length=8)  # reuse the training vocabulary
    assert test.tokenizer is data.tokenizer and test.num_truncated == 0


def test_text_classification_data_with_a_hugging_face_tokenizer(tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed: the HF tokenizer path is untested")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "great", "film", "awful", "really"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")
    path = write(tmp_path / "reviews.jsonl", "".join(json.dumps({"text": t, "label": k}) + "\n" for t, k in
                                                     [("great film", 1), ("awful film", 0), ("really really great film", 1)]))
    data = text_classification_data(path, tokenizer=tokenizer, max_length=3)
    assert data.inputs["input_ids"].tolist() == [[2, 3, 0], [4, 3, 0], [5, 5, 2]]
    assert data.inputs["attention_mask"].dtype == torch.int64 and data.num_truncated == 1
    assert data.classes == ["0", "1"]


def test_ag_news_training_set():
    path = require_shared("ag_news", "train.csv")
    texts, labels, classes = read_text_classification(path)
    assert len(texts) == len(labels) == 5990 and classes == ["0", "1", "2", "3"]
    assert sorted(set(labels)) == [0, 1, 2, 3] and all(text.strip() for text in texts)
    named = read_text_classification(path, classes=path.parent / "classes.txt")[2]
    assert named == ["World", "Sports", "Business", "Sci/Tech"]
    data = text_classification_data(path, max_length=64, classes=path.parent / "classes.txt")
    assert len(data) == 5990 and data.num_classes == 4 and data.inputs["input_ids"].shape == (5990, 64)
    assert 0 < data.num_truncated < 5990 and len(data.tokenizer) <= 30000
    assert data.fingerprint() == text_classification_data(path, max_length=64, classes=path.parent / "classes.txt").fingerprint()
    loader = TensorLoader(data, 256, seed=0)
    assert len(loader) == 24 and next(iter(loader.epoch_batches(0)))["input"]["attention_mask"].shape == (256, 64)


def test_registered_text_classification_splits_share_the_training_vocabulary(tmp_path):
    from distill.data import build_dataset

    root = require_shared("ag_news", "train.csv").parent
    train = build_dataset("text_classification", "train", root=root, classes="classes.txt", max_length=32)
    test = build_dataset("text_classification", "test", root=root, classes="classes.txt", max_length=32)
    assert len(train) == 5990 and len(test) == 7600 and test.classes == ["World", "Sports", "Business", "Sci/Tech"]
    assert train.tokenizer.encode(["Stocks fell"], 32)["input_ids"].tolist() == \
        test.tokenizer.encode(["Stocks fell"], 32)["input_ids"].tolist()  # one vocabulary, from train.csv
    assert int(test.inputs["input_ids"].max()) < 30000
    with pytest.raises(ValueError, match="has no parameter 'max_lenght'"):
        build_dataset("text_classification", "train", root=root, max_lenght=32)
    with pytest.raises(FileNotFoundError, match="nope.csv does not exist"):
        build_dataset("text_classification", "train", root=root, train_file="nope.csv")
