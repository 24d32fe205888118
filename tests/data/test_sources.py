"""Batch sources: every adapter keeps the InMemoryLoader contract (exact resume, seeded order,
sharding), and to_batch reads each accepted format and refuses the rest clearly."""
from __future__ import annotations

from collections import UserDict

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from distill.data import (
    ArrayDataset,
    BatchSource,
    DataFormatError,
    DataLoaderSource,
    InMemoryLoader,
    MapStyleLoader,
    RandomCropFlip,
    TensorData,
    TensorLoader,
    as_batch_source,
    describe_data,
    eval_batches,
    to_batch,
    to_example,
)


# --------------------------------------------------------------------------- helpers
def clone(value):
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    return value.clone()


def collect(batches):
    return [clone(batch) for batch in batches]


def same(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert same(a, b)


def order_of(batches):
    return torch.cat([b["index"] for b in batches]).tolist()


def token_data(size=23, length=5):
    ids = torch.arange(size * length).view(size, length) % 50
    mask = (torch.arange(length) < (torch.arange(size) % length + 1)[:, None]).long()
    return TensorData({"input_ids": ids, "attention_mask": mask}, torch.arange(size) % 4, name="tokens")


class Pairs(Dataset):
    """A map-style data set of (features (3,), label) items that counts its fetches."""

    def __init__(self, size=23):
        self.features = torch.arange(size * 3, dtype=torch.float32).view(size, 3)
        self.labels = torch.arange(size) % 3
        self.fetched = []

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.fetched.append(i)
        return self.features[i], int(self.labels[i])


class Records(Dataset):
    """Items as HF-style dicts of python lists: {"input_ids": [...], "attention_mask": [...], "label": k}."""

    def __init__(self, size=23, length=4):
        self.size, self.length = size, length

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return {"input_ids": [i * 10 + j for j in range(self.length)], "attention_mask": [1] * self.length,
                "label": i % 2}


class Stream(IterableDataset):
    def __iter__(self):
        yield from (torch.tensor([float(i)]) for i in range(5))


def hf_datasets():
    return pytest.importorskip("datasets", reason="Hugging Face `datasets` is not installed "
                                                  "(pip install datasets) so its adapter is not tested")


def hf_dataset(size=23, length=4):
    datasets = hf_datasets()
    return datasets.Dataset.from_dict({
        "input_ids": [[i * 10 + j for j in range(length)] for i in range(size)],
        "attention_mask": [[1] * length for _ in range(size)],
        "label": [i % 4 for i in range(size)],
    })


# sources that own their order: built fresh for each use
OWNED = {
    "tensor": lambda b=5, **kw: TensorLoader(TensorData(torch.randn(23, 2, 3, generator=torch.Generator().manual_seed(0)),
                                                        torch.arange(23) % 5), b, **kw),
    "dict": lambda b=5, **kw: TensorLoader(token_data(), b, **kw),
    "unlabelled": lambda b=5, **kw: TensorLoader(TensorData(torch.arange(23.0)[:, None]), b, **kw),
    "map": lambda b=5, **kw: MapStyleLoader(Pairs(), b, **kw),
    "records": lambda b=5, **kw: MapStyleLoader(Records(), b, **kw),
    "list": lambda b=5, **kw: MapStyleLoader([(torch.tensor([float(i)]), i % 2) for i in range(23)], b, **kw),
    "hf": lambda b=5, **kw: MapStyleLoader(hf_dataset(), b, **kw),
    "hf-torch": lambda b=5, **kw: MapStyleLoader(hf_dataset().with_format("torch"), b, **kw),
}


# --------------------------------------------------------------------------- the contract, for every source
@pytest.mark.parametrize("kind", list(OWNED))
def test_resume_is_the_tail_of_a_full_epoch_and_orders_are_seeded(kind):
    source = OWNED[kind](seed=3)
    assert isinstance(source, BatchSource) and source.has_index and source.num_samples == 23 and len(source) == 5
    full = collect(source.epoch_batches(2))
    assert [len(b["index"]) for b in full] == [5, 5, 5, 5, 3]
    assert sorted(order_of(full)) == list(range(23))
    for start in (0, 1, 4, 5):
        assert_same_batches(collect(source.epoch_batches(2, start=start)), full[start:])
    assert_same_batches(collect(OWNED[kind](seed=3).epoch_batches(2)), full)  # same seed, same batches
    assert order_of(collect(source.epoch_batches(3))) != order_of(full)  # epochs differ
    assert order_of(collect(OWNED[kind](seed=4).epoch_batches(2))) != order_of(full)  # seeds differ
    with pytest.raises(ValueError, match=r"start must be in \[0, 5\]"):
        source.epoch_batches(0, start=6)


@pytest.mark.parametrize("kind", ["tensor", "dict", "map", "records", "hf"])
def test_rank_shares_are_disjoint_and_together_the_global_batch(kind):
    whole = collect(OWNED[kind](4, seed=5, drop_last=True).epoch_batches(2, start=1))
    parts = [collect(OWNED[kind](4, seed=5, drop_last=True, rank=r, world_size=2).epoch_batches(2, start=1))
             for r in (0, 1)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 4  # len counts global batches: 23 // 4 - start 1
    for batch, zero, one in zip(whole, *parts):
        assert set(zero["index"].tolist()).isdisjoint(one["index"].tolist())
        assert same(batch, weave(zero, one))  # rows rank::2 of the global batch, whatever the input's form
    with pytest.raises(ValueError, match="must divide evenly"):
        OWNED[kind](4, seed=1, drop_last=True, rank=0, world_size=3)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\)"):
        OWNED[kind](4, drop_last=True, rank=2, world_size=2)


def weave(first, second):
    if isinstance(first, dict):
        return {key: weave(first[key], second[key]) for key in first}
    return interleave(first, second)


def interleave(first, second):
    out = torch.empty((len(first) + len(second), *first.shape[1:]), dtype=first.dtype)
    out[0::2], out[1::2] = first, second
    return out


def test_plain_iteration_walks_epochs():
    for source in (OWNED["dict"](seed=0), OWNED["map"](seed=0)):
        first, second = collect(iter(source)), collect(iter(source))
        assert_same_batches(first, collect(source.epoch_batches(0)))
        assert_same_batches(second, collect(source.epoch_batches(1)))


# --------------------------------------------------------------------------- TensorData / TensorLoader
def image_dataset(size=23):
    inputs = torch.arange(size * 2 * 6 * 6, dtype=torch.float32).view(size, 2, 6, 6)
    return ArrayDataset(inputs, torch.arange(size) % 3, ["a", "b", "c"], "toy", "train")


@pytest.mark.parametrize("world", [(0, 1), (1, 2)])
def test_tensor_loader_equals_inmemory_loader_on_an_array_dataset(world):
    rank, world_size = world
    data = image_dataset()
    kw = dict(seed=7, augment=RandomCropFlip(padding=2), rank=rank, world_size=world_size, drop_last=world_size > 1)
    ours, theirs = TensorLoader(data, 4, **kw), InMemoryLoader(data, 4, **kw)
    assert isinstance(ours, InMemoryLoader) and len(ours) == len(theirs)
    for epoch in (0, 3):
        assert_same_batches(collect(ours.epoch_batches(epoch, start=1)), collect(theirs.epoch_batches(epoch, start=1)))
    # and a TensorData of the same tensors gives the same batches
    same_data = TensorData(data.inputs, data.targets, classes=data.classes)
    assert_same_batches(collect(TensorLoader(same_data, 4, **kw).epoch_batches(1)), collect(theirs.epoch_batches(1)))


def test_dict_inputs_round_trip_rows_by_index():
    data = token_data()
    for batch in TensorLoader(data, 6, seed=2).epoch_batches(0):
        assert set(batch) == {"input", "target", "index"} and set(batch["input"]) == {"input_ids", "attention_mask"}
        for key, value in batch["input"].items():
            assert value.dtype == torch.int64 and torch.equal(value, data.inputs[key][batch["index"]])
        assert torch.equal(batch["target"], data.targets[batch["index"]])
    assert data.input_shape == {"input_ids": (5,), "attention_mask": (5,)} and data.num_classes == 4


def test_unlabelled_tensor_data_has_no_target_key():
    data = TensorData(torch.zeros(7, 4))
    batches = list(TensorLoader(data, 3, shuffle=False).epoch_batches(0))
    assert [set(b) for b in batches] == [{"input", "index"}] * 3 and data.num_classes is None


def test_tensor_data_validation_names_the_sizes():
    with pytest.raises(ValueError, match="9 targets for 10 inputs"):
        TensorData(torch.zeros(10, 2), torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"disagree on the number of samples: \{'a': 4, 'b': 5\}"):
        TensorData({"a": torch.zeros(4, 2), "b": torch.zeros(5, 2)})
    with pytest.raises(ValueError, match=r"targets must be \(B,\) class ids, got shape \(10, 3\)"):
        TensorData(torch.zeros(10, 2), torch.zeros(10, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="regression targets are not supported"):
        TensorData(torch.zeros(3, 2), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 2\)"):
        TensorData(torch.zeros(3, 2), torch.tensor([0, 1, 2]), classes=["a", "b"])
    with pytest.raises(ValueError, match="an \\(N, ...\\) tensor or a dict"):
        TensorData("not a tensor")
    with pytest.raises(ValueError, match="class ids >= 0"):
        TensorData(torch.zeros(2, 1), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="augment= works on tensor inputs"):
        TensorLoader(token_data(), 4, augment=RandomCropFlip())
    # whole-valued floats and other integer dtypes become int64; numpy arrays are tensors
    data = TensorData(np.zeros((3, 2), dtype=np.float32), torch.tensor([0.0, 2.0, 1.0]))
    assert data.targets.dtype == torch.int64 and data.targets.tolist() == [0, 2, 1] and data.num_classes == 3
    assert TensorData(torch.zeros(2, 1), torch.tensor([1, 0], dtype=torch.int32)).targets.dtype == torch.int64


def test_tensor_data_fingerprint_and_subset():
    data = TensorData(torch.arange(40.0).view(20, 2), torch.arange(20) % 4, name="x", classes=list("abcd"))
    assert data.fingerprint() == TensorData(data.inputs.clone(), data.targets.clone(), name="x",
                                            classes=list("abcd")).fingerprint()
    changed = data.inputs.clone()
    changed[3, 1] += 1
    assert TensorData(changed, data.targets, name="x", classes=list("abcd")).fingerprint() != data.fingerprint()
    assert token_data().fingerprint() != TensorData(dict(token_data().inputs), name="tokens").fingerprint()
    # the subset rows are ArrayDataset.subset's for the same targets and seed
    images = ArrayDataset(torch.arange(20.0).view(20, 1, 1, 1), data.targets, list("abcd"), "x", "train")
    subset = data.subset(9, seed=3)
    assert torch.equal(subset.inputs[:, 0] / 2, images.subset(9, seed=3).inputs.view(-1))
    assert len(subset) == 9 and subset.classes == list("abcd")
    assert len(TensorData(torch.zeros(8, 1)).subset(3)) == 3
    with pytest.raises(ValueError, match=r"subset size must be an int in \[1, 20\]"):
        data.subset(21)


# --------------------------------------------------------------------------- map-style
def test_map_style_fetches_only_the_needed_items():
    dataset = Pairs()
    loader = MapStyleLoader(dataset, 5, seed=0)
    tail = collect(loader.epoch_batches(1, start=3))
    assert sorted(dataset.fetched) == sorted(order_of(tail)) and len(dataset.fetched) == 8
    batch = tail[0]
    assert batch["input"].shape == (5, 3) and batch["input"].dtype == torch.float32
    assert torch.equal(batch["input"], dataset.features[batch["index"]])
    assert torch.equal(batch["target"], dataset.labels[batch["index"]])


def test_map_style_records_give_dict_inputs_of_tensors():
    batch = next(iter(MapStyleLoader(Records(), 4, shuffle=False).epoch_batches(0)))
    assert set(batch["input"]) == {"input_ids", "attention_mask"}
    assert batch["input"]["input_ids"].tolist()[1] == [10, 11, 12, 13] and batch["target"].tolist() == [0, 1, 0, 1]


def test_map_style_workers_give_the_same_batches():
    plain = collect(MapStyleLoader(Records(), 5, seed=9).epoch_batches(1, start=2))
    workers = collect(MapStyleLoader(Records(), 5, seed=9, num_workers=1).epoch_batches(1, start=2))
    assert_same_batches(workers, plain)


def test_map_style_collate_fn_and_errors():
    def pad(items):  # a user's collate: gets to_example'd items
        longest = max(len(item["input_ids"]) for item in items)
        ids = torch.zeros(len(items), longest, dtype=torch.long)
        for i, item in enumerate(items):
            ids[i, :len(item["input_ids"])] = item["input_ids"]
        return {"input_ids": ids, "label": torch.tensor([item["label"] for item in items])}

    ragged = [{"input_ids": list(range(1, i % 3 + 2)), "label": i % 2} for i in range(10)]
    batch = next(iter(MapStyleLoader(ragged, 4, shuffle=False, collate_fn=pad).epoch_batches(0)))
    assert batch["input"]["input_ids"].shape == (4, 3) and batch["index"].tolist() == [0, 1, 2, 3]
    with pytest.raises(DataFormatError, match="need padding.*DataCollatorWithPadding"):
        list(MapStyleLoader(ragged, 4, shuffle=False).epoch_batches(0))
    with pytest.raises(DataFormatError, match=r"is a str \('hello'\).*tokenised first"):
        list(MapStyleLoader(["hello", "world"], 2).epoch_batches(0))
    with pytest.raises(DataFormatError, match=r"input 'text' is a list.*not a tensor.*remove_columns"):
        list(MapStyleLoader([{"text": "a", "x": torch.zeros(2), "label": 0}] * 2, 2).epoch_batches(0))
    with pytest.raises(DataFormatError, match="one row per item"):
        list(MapStyleLoader(ragged, 4, collate_fn=lambda items: torch.zeros(1, 2)).epoch_batches(0))
    with pytest.raises(ValueError, match="leaves no batch"):
        MapStyleLoader(Pairs(5), 6, drop_last=True)
    with pytest.raises(TypeError, match="wrap an iterable data set in a torch DataLoader"):
        MapStyleLoader(Stream(), 2)


def test_hugging_face_dataset_batches():
    dataset = hf_dataset()
    source = as_batch_source(dataset, batch_size=8, seed=1)
    assert isinstance(source, MapStyleLoader)
    batch = next(iter(source.epoch_batches(0)))
    ids = batch["index"].tolist()
    assert batch["input"]["input_ids"].dtype == torch.int64 and batch["input"]["input_ids"].shape == (8, 4)
    assert batch["input"]["input_ids"][:, 0].tolist() == [i * 10 for i in ids]
    assert batch["target"].tolist() == [i % 4 for i in ids]
    assert describe_data(dataset) == "Hugging Face Dataset of 23 rows (columns input_ids, attention_mask, label)"
    with pytest.raises(DataFormatError, match=r"input 'text' is .*remove_columns"):
        list(MapStyleLoader(dataset.add_column("text", ["t"] * 23), 4).epoch_batches(0))
    datasets = hf_datasets()
    with pytest.raises(DataFormatError, match=r"pass one split, e.g. data\['train'\]"):
        as_batch_source(datasets.DatasetDict({"train": dataset}), batch_size=4)
    with pytest.raises(DataFormatError, match="wrap it in a torch DataLoader"):
        as_batch_source(dataset.to_iterable_dataset(), batch_size=4)


# --------------------------------------------------------------------------- a user's DataLoader
def test_dataloader_shuffle_is_seeded_by_seed_and_epoch():
    def source(seed=0, **kw):
        return DataLoaderSource(DataLoader(Pairs(), batch_size=4, shuffle=True, **kw), seed=seed)

    def features(batches):
        return torch.cat([b["input"][:, 0] for b in batches]).tolist()

    first = collect(source().epoch_batches(1))
    assert len(source()) == 6 and source().num_samples == 23 and not source().has_index and source().reproducible
    assert all("index" not in b for b in first) and len(features(first)) == 23
    assert features(collect(source().epoch_batches(1))) == features(first)
    assert features(collect(source(generator=torch.Generator().manual_seed(99)).epoch_batches(1))) == features(first)
    assert features(collect(source().epoch_batches(2))) != features(first)
    assert features(collect(source(seed=1).epoch_batches(1))) != features(first)
    assert_same_batches(collect(source().epoch_batches(1, start=4)), first[4:])
    with pytest.raises(ValueError, match=r"start must be in \[0, 6\]"):
        source().epoch_batches(1, start=7)


def test_dataloader_distributed_sampler_gets_the_epoch():
    loader = DataLoader(Pairs(), batch_size=4, sampler=DistributedSampler(Pairs(), num_replicas=2, rank=0, seed=3))
    source = DataLoaderSource(loader)
    assert len(source) == 3 and source.reproducible
    list(source.epoch_batches(5))
    assert loader.sampler.epoch == 5


def test_dataloader_without_length_and_other_refusals():
    with pytest.raises(ValueError, match="has no length.*give the data set a __len__"):
        DataLoaderSource(DataLoader(Stream(), batch_size=2))
    loader = DataLoader(Pairs(), batch_size=4)
    for bad in (dict(augment=RandomCropFlip()), dict(collate_fn=list), dict(world_size=2, drop_last=True)):
        with pytest.raises(ValueError, match="distill iterates a DataLoader as it is"):
            as_batch_source(loader, batch_size=4, **bad)
    source = as_batch_source(loader, batch_size=999, shuffle=False)  # the loader's own batching wins
    assert isinstance(source, DataLoaderSource) and len(source) == 6
    with pytest.raises(DataFormatError, match=r"batch 0 of DataLoader over list \(2 samples, batch 2\).*got a str"):
        list(DataLoaderSource(DataLoader(["ab", "cd"], batch_size=2)).epoch_batches(0))


# --------------------------------------------------------------------------- to_batch
def test_to_batch_accepts_each_format():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    ids, mask = torch.ones(4, 6, dtype=torch.long), torch.ones(4, 6, dtype=torch.long)
    assert same(to_batch(x), {"input": x})
    assert same(to_batch((x, y)), {"input": x, "target": y}) and same(to_batch([x]), {"input": x})
    assert same(to_batch({"input": x, "target": y}), {"input": x, "target": y})
    full = {"input": {"input_ids": ids}, "target": y, "index": torch.arange(4)}
    assert same(to_batch(full), full)  # a distill batch passes through
    for key in ("label", "labels", "target", "targets"):
        assert same(to_batch({"input_ids": ids, "attention_mask": mask, key: y}),
                    {"input": {"input_ids": ids, "attention_mask": mask}, "target": y})
    assert same(to_batch({"image": x, "label": y}), {"input": x, "target": y})  # one plain key: the tensor
    assert same(to_batch({"pixel_values": x, "label": y}), {"input": {"pixel_values": x}, "target": y})
    assert same(to_batch({"x": x, "z": x}), {"input": {"x": x, "z": x}})  # no target key: all input
    assert same(to_batch((x, [0, 1, 2, 1])), {"input": x, "target": y})  # python ints
    assert same(to_batch((x, y.float())), {"input": x, "target": y})  # whole floats are cast
    assert same(to_batch((np.ones((4, 3), dtype=np.float32), y.numpy())), {"input": torch.ones(4, 3), "target": y})
    assert same(to_batch(UserDict({"input_ids": ids, "labels": y})), {"input": {"input_ids": ids}, "target": y})
    transformers = pytest.importorskip("transformers", reason="transformers is not installed: BatchEncoding untested")
    encoding = transformers.BatchEncoding({"input_ids": ids, "attention_mask": mask, "labels": y})
    assert same(to_batch(encoding), {"input": {"input_ids": ids, "attention_mask": mask}, "target": y})


@pytest.mark.parametrize("raw, message", [
    ("a string", r"got a str \('a string'\); accepted formats"),
    (3, "got an int; accepted formats"),
    ({"label": torch.tensor([1])}, r"only a target \(\['label'\]\) and no input"),
    ({"text": ["a", "b"], "label": torch.tensor([0, 1])}, r"input 'text' is a list of 2 items \(str, str\), not a tensor"),
    ({"a": "x", "b": "y"}, "input 'a' is a str"),
    ({"input_ids": torch.ones(2, 3), "label": torch.tensor([0, 1]), "labels": torch.tensor([0, 1])},
     r"keys \['label', 'labels'\] are all target names"),
    ((torch.ones(2, 3), torch.tensor([0, 1]), torch.ones(2)), r"a tuple must be \(input,\) or \(input, target\)"),
    ((torch.ones(2, 3), torch.tensor([0.0, 0.4])), "regression targets are not supported"),
    ((torch.ones(2, 3), torch.tensor([[0], [1]])), r"shape \(2, 1\).*squeeze"),
    ({"input_ids": torch.ones(2, 4), "labels": torch.ones(2, 4, dtype=torch.long)}, "token-level labels"),
    ((torch.ones(2, 3), torch.tensor([0, 1, 1])), "3 targets for 2 inputs"),
    ((torch.ones(2, 3), torch.tensor([True, False])), "torch.bool"),
    ({"input_ids": torch.ones(2, 4), "attention_mask": torch.ones(3, 4)}, "disagree on the batch size"),
    ({"input": torch.ones(2, 3), "extra": torch.ones(2)}, r"got also \['extra'\]"),
    (torch.tensor(1.0), "0-d tensor"),
    ({}, "no input"),
])
def test_to_batch_refuses_clearly(raw, message):
    with pytest.raises(DataFormatError, match=message) as info:
        to_batch(raw, where="batch 3 of MyData")
    assert str(info.value).startswith("batch 3 of MyData")
    assert isinstance(info.value, ValueError)


def test_to_example_normalises_items():
    item = to_example({"input_ids": [1, 2], "pixel": np.zeros((2, 2), dtype=np.float32), "label": 3, "text": "hi"})
    assert item["input_ids"].dtype == torch.int64 and item["pixel"].dtype == torch.float32
    assert item["label"] == 3 and item["text"] == "hi"
    assert isinstance(to_example((np.ones(2), 1))[0], torch.Tensor)
    with pytest.raises(DataFormatError, match="item 4 is a NoneType"):
        to_example(None, where="item 4")


# --------------------------------------------------------------------------- dispatch, eval, describe
def test_as_batch_source_dispatch():
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    assert isinstance(as_batch_source((x, y), batch_size=4), TensorLoader)
    assert "target" not in next(iter(as_batch_source((x,), batch_size=4).epoch_batches(0)))
    assert isinstance(as_batch_source(x, batch_size=4), TensorLoader)
    assert isinstance(as_batch_source(image_dataset(), batch_size=4), InMemoryLoader)
    assert isinstance(as_batch_source(token_data(), batch_size=4), TensorLoader)
    assert isinstance(as_batch_source(Pairs(), batch_size=4), MapStyleLoader)
    assert isinstance(as_batch_source([(x[0], 1)] * 3, batch_size=2), MapStyleLoader)
    already = MapStyleLoader(Pairs(), 4)
    assert as_batch_source(already, batch_size=99) is already
    plain = InMemoryLoader(image_dataset(), 4, seed=2)
    assert_same_batches(collect(as_batch_source(plain, batch_size=1).epoch_batches(1)), collect(plain.epoch_batches(1)))
    with pytest.raises(DataFormatError, match="iterable-style data set.*wrap it in a torch DataLoader"):
        as_batch_source(Stream(), batch_size=2)
    with pytest.raises(DataFormatError, match="wrap it in a torch DataLoader"):
        as_batch_source((i for i in range(3)), batch_size=2)
    with pytest.raises(DataFormatError, match=r"pass TensorData\(inputs, targets\)"):
        as_batch_source({"input_ids": x}, batch_size=2)
    with pytest.raises(DataFormatError, match=r"\(inputs,\) or \(inputs, targets\)"):
        as_batch_source((x, y, y), batch_size=2)
    with pytest.raises(ValueError, match="augment inside its __getitem__"):
        as_batch_source(Pairs(), batch_size=2, augment=RandomCropFlip())
    with pytest.raises(ValueError, match="collate_fn is for map-style"):
        as_batch_source((x, y), batch_size=2, collate_fn=list)
    with pytest.raises(DataFormatError, match="cannot batch an int"):
        as_batch_source(5, batch_size=2)


@pytest.mark.parametrize("make, step", [
    (lambda: (torch.arange(11.0)[:, None], torch.arange(11) % 2), 1.0),
    (lambda: TensorLoader(TensorData(torch.arange(11.0)[:, None], torch.arange(11) % 2), 4, drop_last=True), 1.0),
    (lambda: Pairs(11), 3.0),
    (lambda: MapStyleLoader(Pairs(11), 2, drop_last=True), 3.0),
    (lambda: DataLoader(Pairs(11), batch_size=3, shuffle=True), 3.0),  # iterated as it is: its batch, its order
])
def test_eval_batches_give_every_sample_once(make, step):
    batches = list(eval_batches(make(), 4))
    assert sorted(torch.cat([b["input"][:, 0] for b in batches]).tolist()) == [step * i for i in range(11)]
    if "index" in batches[0]:  # distill's own order: in order, no drop
        assert order_of(batches) == list(range(11)) and [len(b["index"]) for b in batches] == [4, 4, 3]
    with pytest.raises(ValueError, match="drop_last=True.*skip samples"):
        list(eval_batches(DataLoader(Pairs(11), batch_size=3, drop_last=True), 4))


def test_describe_data():
    assert describe_data(TensorData(torch.zeros(1000, 3, 32, 32), torch.zeros(1000, dtype=torch.long), name="x")) == \
        "TensorData 'x' of 1,000 samples, inputs (3, 32, 32)"
    assert describe_data(token_data()) == \
        "TensorData 'tokens' of 23 samples, inputs {input_ids: (5,), attention_mask: (5,)}"
    assert describe_data(DataLoader(Pairs(500), batch_size=32)) == "DataLoader over Pairs (500 samples, batch 32)"
    assert describe_data(DataLoader(Stream(), batch_size=2)) == "DataLoader over Stream (length unknown, batch 2)"
    assert describe_data(image_dataset()) == "ArrayDataset 'toy/train' of 23 samples, inputs (2, 6, 6), 3 classes"
    assert describe_data(Pairs()) == "Pairs (map-style, 23 samples)"
    assert describe_data(Stream()) == "Stream (iterable-style)"
    assert "MapStyleLoader over Pairs (map-style, 23 samples) (batch 4)" == describe_data(MapStyleLoader(Pairs(), 4))
