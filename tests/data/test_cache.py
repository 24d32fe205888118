"""Teacher-output cache: round trips, identity checks, atomic build and resume, batched reads."""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from distill.data import ArrayDataset, CacheError, build_cache, open_cache, weights_fingerprint
from distill.data.cache import CacheFolderError, TeacherCache, index_dtype
from distill.losses import SparseTeacher, kl
from distill.safety import MARKER, FolderError, is_owned, mark_owned, sha256_file


def make_dataset(num_samples=100, num_classes=10, seed=0, name="toy"):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_samples, 1, 4, 4, generator=generator)
    targets = torch.randint(0, num_classes, (num_samples,), generator=generator)
    return ArrayDataset(inputs, targets, [str(c) for c in range(num_classes)], name, "train")


class Teacher(nn.Module):
    """conv -> relu -> linear; counts its forward calls and can fail on the n-th one."""

    def __init__(self, num_classes=10, seed=0, scale=3.0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32, num_classes))
        self.scale = scale
        self.calls = 0
        self.fail_on: int | None = None

    def forward(self, inputs):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise RuntimeError("teacher crashed")
        return self.head(torch.relu(self.conv(inputs))) * self.scale


def reference(teacher, dataset):
    with torch.no_grad():
        calls = teacher.calls
        out = teacher(dataset.inputs)
        teacher.calls = calls
        return out


def build(teacher, dataset, path, **kwargs):
    kwargs = {"shard_size": 32, "batch_size": 8, "progress": False, **kwargs}
    return build_cache(teacher, dataset, path, **kwargs)


IDS = torch.tensor([70, 3, 3, 99, 40, 0, 65, 31, 32])


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float16", 1e-3), ("bfloat16", 1e-2)])
def test_dense_round_trip(tmp_path, dtype, rtol):
    teacher, dataset = Teacher(), make_dataset()
    cache = build(teacher, dataset, tmp_path / "dense", dtype=dtype)
    assert teacher.calls == 13  # 4 shards of <= 32 samples, batches of 8: 4 + 4 + 4 + 1
    expected = reference(teacher, dataset)
    looked_up = cache.lookup(IDS)
    assert looked_up.dtype == torch.float32 and looked_up.shape == (len(IDS), 10)
    torch.testing.assert_close(looked_up, expected[IDS], rtol=rtol, atol=rtol * 0.1)
    torch.testing.assert_close(cache[IDS], looked_up)
    stored = np.load(tmp_path / "dense" / "logits-00000.npy", mmap_mode="r")
    assert stored.dtype == {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[dtype]
    assert cache.manifest["dtype"] == dtype and cache.manifest["index_dtype"] is None


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float16", 1e-3), ("bfloat16", 1e-2)])
def test_top_k_round_trip(tmp_path, dtype, rtol):
    teacher, dataset = Teacher(), make_dataset()
    cache = build(teacher, dataset, tmp_path / "top3", k=3, temperature=2.0, dtype=dtype, mode="tail")
    expected = SparseTeacher.from_dense(reference(teacher, dataset)[IDS], 3, temperature=2.0)
    sparse = cache.lookup(IDS)
    assert isinstance(sparse, SparseTeacher) and sparse.mode == "tail" and sparse.tail_temperature == 2.0
    assert torch.equal(sparse.indices, expected.indices) and sparse.indices.dtype == torch.int64
    torch.testing.assert_close(sparse.values, expected.values, rtol=rtol, atol=rtol * 0.1)
    torch.testing.assert_close(sparse.log_tail, expected.log_tail, rtol=1e-6, atol=1e-6)  # float32 always
    assert cache.lookup(IDS, mode="renormalized").mode == "renormalized"
    assert np.load(tmp_path / "top3" / "indices-00000.npy", mmap_mode="r").dtype == np.uint8
    assert cache.manifest["index_dtype"] == "uint8"


def test_bf16_build_runs_the_teacher_under_autocast_and_serves_any_run(tmp_path):
    """precision="bf16": the teacher's forward is bf16 autocast (its logits differ from fp32 by a bf16
    rounding, the same classes win), stored as fp32, recorded in the manifest; not identity: an fp32
    build request reuses it without running the teacher, and a bad precision is refused by name."""
    teacher, dataset = Teacher(), make_dataset()
    cache = build(teacher, dataset, tmp_path / "bf16", dtype="float32", precision="bf16")
    assert cache.manifest["precision"] == "bf16"
    expected = reference(teacher, dataset)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        calls = teacher.calls
        under_autocast = teacher(dataset.inputs).float()
        teacher.calls = calls
    looked_up = cache.lookup(torch.arange(len(dataset)))
    torch.testing.assert_close(looked_up, under_autocast, rtol=1e-2, atol=2e-2)
    assert not torch.equal(looked_up, expected)  # it did run in bf16
    assert (looked_up - expected).abs().max() < 0.1 and (looked_up.argmax(1) == expected.argmax(1)).float().mean() > 0.95
    calls = teacher.calls
    again = build(teacher, dataset, tmp_path / "bf16", dtype="float32")  # an fp32 run: same cache, no teacher pass
    assert teacher.calls == calls and again.manifest["precision"] == "bf16"
    fp32 = build(teacher, dataset, tmp_path / "fp32", dtype="float32")
    assert fp32.manifest["precision"] == "fp32"
    torch.testing.assert_close(fp32.lookup(IDS), expected[IDS], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="precision='int8' is not one of"):
        build(teacher, dataset, tmp_path / "bad", precision="int8")


def test_index_dtype_is_the_smallest_that_fits(tmp_path):
    assert [index_dtype(c).name for c in (2, 10, 256, 257, 1000, 32768, 32769, 65536, 65537)] == [
        "uint8", "uint8", "uint8", "int16", "int16", "int16", "uint16", "uint16", "int32"]
    teacher, dataset = Teacher(num_classes=1000), make_dataset(20, num_classes=10)
    cache = build(teacher, dataset, tmp_path / "c1000", k=4)
    assert cache.manifest["index_dtype"] == "int16"
    assert np.load(tmp_path / "c1000" / "indices-00000.npy", mmap_mode="r").dtype == np.int16
    expected = reference(teacher, dataset).topk(4).indices
    assert torch.equal(cache.lookup(torch.arange(20)).indices, expected)


def test_k_equal_c_cache_gives_the_dense_loss(tmp_path):
    teacher, dataset = Teacher(), make_dataset(40)
    dense = build(teacher, dataset, tmp_path / "dense", dtype="float32")
    full = build(teacher, dataset, tmp_path / "k10", k=10, temperature=4.0, dtype="float32")
    student = torch.randn(len(IDS[IDS < 40]), 10, generator=torch.Generator().manual_seed(1))
    ids = IDS[IDS < 40]
    for mode in ("renormalized", "tail"):
        torch.testing.assert_close(kl(student, full.lookup(ids, mode=mode), temperature=4.0),
                                   kl(student, dense.lookup(ids), temperature=4.0), rtol=1e-6, atol=1e-6)


def test_sizes(tmp_path):
    teacher, dataset = Teacher(), make_dataset()
    dense = build(teacher, dataset, tmp_path / "dense")
    sparse = build(teacher, dataset, tmp_path / "k3", k=3)
    files = list((tmp_path / "dense").iterdir())
    assert {f.name for f in files} == {".distill-owned", "manifest.json", *(f"logits-0000{s}.npy" for s in range(4))}
    assert dense.nbytes == sum(f.stat().st_size for f in files)
    header = 128  # one .npy header per file
    assert dense.bytes_per_sample == pytest.approx(20 + 4 * header / 100)
    assert sparse.bytes_per_sample == pytest.approx(3 * 2 + 3 * 1 + 4 + 12 * header / 100)
    assert "top-3" in repr(sparse) and len(sparse) == 100 and sparse.is_sparse and not dense.is_sparse


# ----------------------------------------------------------------------------- reads
def test_a_batch_read_is_one_read_per_shard_touched(tmp_path, monkeypatch):
    teacher, dataset = Teacher(), make_dataset()
    cache = build(teacher, dataset, tmp_path / "k3", k=3, features={"conv": "conv"})
    reads = Counter()
    original = TeacherCache._read

    def counting(self, name, shard, local_ids):
        reads[name, shard] += 1
        assert np.all(np.diff(local_ids) >= 0)  # sorted within the shard
        return original(self, name, shard, local_ids)

    monkeypatch.setattr(TeacherCache, "_read", counting)
    ids = torch.tensor([99, 5, 70, 5, 68, 1])  # shards 3, 0, 2, 0, 2, 0
    sparse = cache.lookup(ids)
    assert reads == Counter({(name, shard): 1 for name in ("values", "indices", "log_tail") for shard in (0, 2, 3)})
    expected = SparseTeacher.from_dense(reference(teacher, dataset)[ids], 3)
    assert torch.equal(sparse.indices, expected.indices)  # original order kept, duplicates too
    reads.clear()
    cache.lookup_features("conv", ids)
    assert reads == Counter({("feature.conv", shard): 1 for shard in (0, 2, 3)})
    with pytest.raises(IndexError, match=r"\[0, 100\)"):
        cache.lookup(torch.tensor([100]))
    with pytest.raises(ValueError, match="integer sample ids"):
        cache.lookup(torch.tensor([1.0]))


def test_features_by_path_are_stored_and_read_back(tmp_path):
    teacher, dataset = Teacher(), make_dataset(50)
    cache = build(teacher, dataset, tmp_path / "feat", features={"conv": "conv", "flat": "head.0"}, dtype="float32")
    assert cache.features == {"conv": {"path": "conv", "shape": [2, 4, 4]}, "flat": {"path": "head.0", "shape": [32]}}
    assert not teacher.conv._forward_hooks and not teacher.head[0]._forward_hooks
    ids = torch.tensor([49, 0, 17])
    with torch.no_grad():
        conv = teacher.conv(dataset.inputs[ids])
    torch.testing.assert_close(cache.lookup_features("conv", ids), conv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache.lookup_features("flat", ids), torch.relu(conv).flatten(1), rtol=1e-6, atol=1e-6)
    with pytest.raises(KeyError, match="no feature 'logits'"):
        cache.lookup_features("logits", ids)


def test_wrong_feature_path_names_the_closest_paths(tmp_path):
    teacher, dataset = Teacher(), make_dataset(10)
    with pytest.raises(ValueError, match=r"no module 'head\.00'.*head\.0"):
        build(teacher, dataset, tmp_path / "bad", features={"x": "head.00"})
    with pytest.raises(ValueError, match="letters, digits"):
        build(teacher, dataset, tmp_path / "bad", features={"a/b": "conv"})
    assert teacher.calls == 0 and not (tmp_path / "bad.partial").exists()


def test_hooks_removed_and_mode_restored_after_a_failure(tmp_path):
    teacher, dataset = Teacher(), make_dataset(20)
    teacher.train()
    teacher.fail_on = 2
    with pytest.raises(RuntimeError, match="teacher crashed"):
        build(teacher, dataset, tmp_path / "c", features={"conv": "conv"})
    assert not teacher.conv._forward_hooks and teacher.training
    assert not list((tmp_path / "c.partial").glob(".*.tmp"))


# ----------------------------------------------------------------------------- identity
def test_mismatches_are_refused_naming_the_part(tmp_path):
    teacher, dataset = Teacher(), make_dataset()
    build(teacher, dataset, tmp_path / "k3", k=3, temperature=2.0)
    good = {"teacher_fingerprint": weights_fingerprint(teacher), "dataset_fingerprint": dataset.fingerprint(),
            "transform_fingerprint": "none", "k": 3, "temperature": 2.0, "dtype": "float16"}
    assert open_cache(tmp_path / "k3", expect=good).k == 3

    other_teacher = Teacher()
    with torch.no_grad():
        other_teacher.head[1].bias[0] += 1e-3
    other_data = make_dataset()
    other_data.inputs[5, 0, 0, 0] += 1.0
    cases = {
        "teacher weights": {"teacher_fingerprint": weights_fingerprint(other_teacher)},
        "dataset contents": {"dataset_fingerprint": other_data.fingerprint()},
        "top-k size": {"k": 8},
        "temperature": {"temperature": 4.0},
        "value dtype": {"dtype": "bfloat16"},
        "input transform": {"transform_fingerprint": "RandomShift(max_shift=2, fill='min')@v1"},
    }
    for part, change in cases.items():
        key, value = next(iter(change.items()))
        with pytest.raises(CacheError) as info:
            open_cache(tmp_path / "k3", expect={**good, **change})
        message = str(info.value)
        assert part in message and repr(good[key]) in message and repr(value) in message, message
        assert "distill cache" in message and message.count("\n  - ") == 1
    with pytest.raises(ValueError, match="unknown expect keys"):
        open_cache(tmp_path / "k3", expect={"teacher": "x"})


def test_dense_cache_ignores_temperature_and_features_are_a_subset(tmp_path):
    teacher, dataset = Teacher(), make_dataset(20)
    build(teacher, dataset, tmp_path / "dense", temperature=1.0, features={"conv": "conv"})
    open_cache(tmp_path / "dense", expect={"temperature": 4.0, "features": {}, "k": None})
    open_cache(tmp_path / "dense", expect={"features": {"conv": "conv"}})
    with pytest.raises(CacheError, match="captured features"):
        open_cache(tmp_path / "dense", expect={"features": {"conv": "head.0"}})
    calls = teacher.calls
    build(teacher, dataset, tmp_path / "dense", temperature=3.0, features={"conv": "conv"})  # same content
    assert teacher.calls == calls


def test_build_reuses_a_match_and_refuses_a_mismatch(tmp_path):
    teacher, dataset = Teacher(), make_dataset(40)
    first = build(teacher, dataset, tmp_path / "c", k=3)
    teacher.calls = 0
    again = build(teacher, dataset, tmp_path / "c", k=3, shard_size=16, batch_size=4)  # layout only: a match
    assert teacher.calls == 0 and again.manifest["created"] == first.manifest["created"]
    with pytest.raises(CacheError, match=r"(?s)does not match this build:\n  - top-k size .*this build has 5.*overwrite=True"):
        build(teacher, dataset, tmp_path / "c", k=5)
    other = Teacher(seed=1)
    with pytest.raises(CacheError, match="teacher weights"):
        build(other, dataset, tmp_path / "c", k=3)
    replaced = build(other, dataset, tmp_path / "c", k=3, overwrite=True)
    assert other.calls == 5 and replaced.manifest["teacher_fingerprint"] == weights_fingerprint(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    (tmp_path / "plain").mkdir()
    with pytest.raises(CacheError, match="not a teacher cache"):
        build(teacher, dataset, tmp_path / "plain")


def test_random_transform_refused_at_build(tmp_path):
    with pytest.raises(CacheError, match="random augmentation"):
        build(Teacher(), make_dataset(10), tmp_path / "c", transform_fingerprint="RandomShift(max_shift=2)@v1")


def test_weights_fingerprint():
    teacher = Teacher()
    assert weights_fingerprint(teacher) == weights_fingerprint(Teacher())
    assert len(weights_fingerprint(teacher)) == 16
    with torch.no_grad():
        teacher.conv.weight[0, 0, 0, 0] += 1e-6
    assert weights_fingerprint(teacher) != weights_fingerprint(Teacher())
    assert weights_fingerprint(Teacher().to(torch.bfloat16)) != weights_fingerprint(Teacher())


def test_overflowing_values_ask_for_a_wider_dtype(tmp_path):
    teacher, dataset = Teacher(scale=1e6), make_dataset(10)
    with pytest.raises(CacheError, match="overflow float16.*bfloat16"):
        build(teacher, dataset, tmp_path / "c")
    with pytest.warns(UserWarning, match=r"(?s)discarding.*value dtype"):  # the float16 attempt's .partial
        cache = build(teacher, dataset, tmp_path / "c", dtype="bfloat16")
    assert cache.lookup([0]).abs().max() > 1e4


# ----------------------------------------------------------------------------- atomicity and resume
def test_interrupted_build_resumes_and_equals_an_uninterrupted_one(tmp_path):
    dataset = make_dataset()
    whole = build(Teacher(), dataset, tmp_path / "whole", k=3)

    teacher = Teacher()
    teacher.fail_on = 6  # shard 0 (calls 1-4) finishes; shard 1 dies at its second batch
    with pytest.raises(RuntimeError, match="teacher crashed"):
        build(teacher, dataset, tmp_path / "c", k=3)
    partial = tmp_path / "c.partial"
    assert not (tmp_path / "c").exists() and not (partial / "manifest.json").exists()
    assert sorted(p.name for p in partial.glob("shard-*.done")) == ["shard-00000.done"]
    with pytest.raises(CacheError, match="unfinished build is in .*c.partial"):
        open_cache(tmp_path / "c")
    with pytest.raises(CacheError, match="unfinished teacher cache"):
        open_cache(partial)

    teacher.fail_on, teacher.calls = None, 0
    resumed = build(teacher, dataset, tmp_path / "c", k=3)
    assert teacher.calls == 4 + 4 + 1  # shards 1, 2, 3 only
    assert not partial.exists()
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "whole").iterdir())  # no markers, no temp files
    for name in names:
        if name.endswith(".npy"):
            assert np.array_equal(np.load(tmp_path / "c" / name), np.load(tmp_path / "whole" / name)), name
    manifest, reference_manifest = resumed.manifest, whole.manifest
    for key in ("created",):
        manifest, reference_manifest = ({k: v for k, v in m.items() if k != key} for m in (manifest, reference_manifest))
    assert manifest == reference_manifest


def test_crash_before_the_rename_finishes_without_the_teacher(tmp_path, monkeypatch):
    teacher, dataset = Teacher(), make_dataset(64)
    import distill.data.cache as cache_module

    def crash(source, target):
        raise OSError("killed before the rename")

    monkeypatch.setattr(cache_module.os, "rename", crash)
    with pytest.raises(OSError, match="killed"):
        build(teacher, dataset, tmp_path / "c")
    monkeypatch.undo()
    partial = tmp_path / "c.partial"
    assert (partial / "manifest.json").is_file() and not (tmp_path / "c").exists()
    with pytest.raises(CacheError, match="unfinished teacher cache"):  # even with its manifest written
        open_cache(partial)
    (partial / ".logits-00001.npy.tmp").write_bytes(b"junk")  # what a hard crash mid-shard leaves
    (tmp_path / "bare").mkdir()
    with pytest.raises(CacheError, match="no manifest.json"):  # a folder without a manifest is never a cache
        open_cache(tmp_path / "bare")
    teacher.calls = 0
    cache = build(teacher, dataset, tmp_path / "c")
    assert teacher.calls == 0 and len(cache) == 64 and not partial.exists()
    torch.testing.assert_close(cache.lookup(torch.arange(64)), reference(teacher, dataset), rtol=1e-3, atol=1e-3)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".distill-owned", "logits-00000.npy",
                                                                  "logits-00001.npy", "manifest.json"]


def test_a_partial_of_another_build_is_discarded(tmp_path):
    teacher, dataset = Teacher(), make_dataset(64)
    teacher.fail_on = 5
    with pytest.raises(RuntimeError):
        build(teacher, dataset, tmp_path / "c", k=3)
    teacher.fail_on, teacher.calls = None, 0
    with pytest.warns(UserWarning, match="discarding the unfinished teacher cache"):
        cache = build(teacher, dataset, tmp_path / "c", k=4)
    assert teacher.calls == 8 and cache.k == 4


# ----------------------------------------------------------------------------- ownership and overwrite
def test_a_finished_cache_carries_the_marker(tmp_path):
    build(Teacher(), make_dataset(20), tmp_path / "c")
    assert is_owned(tmp_path / "c")
    assert json.loads((tmp_path / "c" / MARKER).read_text())["kind"] == "teacher-cache"


@pytest.mark.parametrize("kind", ["foreign folder", "file", "symlink", "other distill folder", "old cache plus a file"])
def test_overwrite_refuses_a_path_that_is_not_a_distill_cache(tmp_path, kind):
    teacher, dataset = Teacher(), make_dataset(20)
    path = tmp_path / "target"
    if kind == "foreign folder":
        (path / "src").mkdir(parents=True)
        (path / "notes.txt").write_text("precious")
    elif kind == "file":
        path.write_text("precious")
    elif kind == "symlink":
        build(teacher, dataset, tmp_path / "real", k=3)
        path.symlink_to(tmp_path / "real", target_is_directory=True)
    elif kind == "other distill folder":
        mark_owned(path, "run")
        (path / "notes.txt").write_text("precious")
    else:  # a cache from before markers existed (no marker), with a user's file put into it
        build(teacher, dataset, path, k=3)
        (path / MARKER).unlink()
        (path / "notes.txt").write_text("precious")
    before = sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_text()
    teacher.calls = 0
    with pytest.raises(CacheFolderError) as info:
        build(teacher, dataset, path, overwrite=True)
    message = str(info.value)
    assert isinstance(info.value, FolderError) and isinstance(info.value, CacheError)
    assert str(path) in message, message
    if kind in ("foreign folder", "other distill folder", "old cache plus a file"):
        assert "'notes.txt'" in message and "another path" in message.lower(), message
    assert teacher.calls == 0  # refused before the teacher ran
    assert (sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_text()) == before
    assert not (tmp_path / "target.partial").exists()


@pytest.mark.parametrize("kind", ["distill cache", "cache without marker", "empty folder"])
def test_overwrite_replaces_a_cache_distill_made_or_an_empty_folder(tmp_path, kind):
    teacher, dataset = Teacher(), make_dataset(20)
    path = tmp_path / "c"
    if kind == "empty folder":
        path.mkdir()
    else:
        build(teacher, dataset, path, k=3)
        if kind == "cache without marker":  # written before markers existed
            (path / MARKER).unlink()
    replaced = build(teacher, dataset, path, k=5, overwrite=True)
    assert replaced.k == 5 and is_owned(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no .partial, no .old-* left


def test_a_foreign_partial_folder_is_never_deleted(tmp_path):
    teacher, dataset = Teacher(), make_dataset(20)
    partial = tmp_path / "c.partial"
    partial.mkdir()
    (partial / "thesis.tex").write_text("precious")
    with pytest.raises(CacheFolderError, match=r"(?s)unfinished teacher cache .*c\.partial.*'thesis\.tex'"):
        build(teacher, dataset, tmp_path / "c")
    assert (partial / "thesis.tex").read_text() == "precious" and teacher.calls == 0
    partial.rename(tmp_path / "elsewhere")
    partial.write_text("a file named like a partial build")
    with pytest.raises(CacheFolderError, match="is a file"):
        build(teacher, dataset, tmp_path / "c")
    assert partial.read_text() == "a file named like a partial build"


def test_an_old_partial_without_marker_is_resumed_and_marked(tmp_path):
    teacher, dataset = Teacher(), make_dataset()
    teacher.fail_on = 6
    with pytest.raises(RuntimeError):
        build(teacher, dataset, tmp_path / "c", k=3)
    (tmp_path / "c.partial" / MARKER).unlink()  # as a build from before markers left it
    teacher.fail_on, teacher.calls = None, 0
    build(teacher, dataset, tmp_path / "c", k=3)
    assert teacher.calls == 9 and is_owned(tmp_path / "c")


def test_replacing_never_renames_onto_an_existing_old_folder(tmp_path):
    teacher, dataset = Teacher(), make_dataset(20)
    build(teacher, dataset, tmp_path / "c", k=3)
    old = tmp_path / f"c.old-{os.getpid()}"
    old.mkdir()
    (old / "keep.txt").write_text("not ours")
    build(teacher, dataset, tmp_path / "c", k=4, overwrite=True)
    assert (old / "keep.txt").read_text() == "not ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", old.name]


# ----------------------------------------------------------------------------- checksums
def flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) - 3 if offset is None else offset  # in the array data, past the .npy header
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_manifest_records_every_shard_files_sha256(tmp_path):
    cache = build(Teacher(), make_dataset(), tmp_path / "k3", k=3, features={"conv": "conv"})
    files = sorted(p.name for p in (tmp_path / "k3").glob("*.npy"))
    assert sorted(cache.manifest["sha256"]) == files and len(files) == 4 * 4
    assert all(cache.manifest["sha256"][name] == sha256_file(tmp_path / "k3" / name) for name in files)
    cache.verify()


@pytest.mark.parametrize("file", ["logits-00001.npy", "values-00002.npy", "log_tail-00000.npy"])
def test_a_flipped_byte_in_a_shard_is_refused_naming_the_file(tmp_path, file):
    k = None if file.startswith("logits") else 3
    teacher, dataset = Teacher(), make_dataset()
    build(teacher, dataset, tmp_path / "c", k=k)
    flip_byte(tmp_path / "c" / file)
    cache = open_cache(tmp_path / "c")  # opening stays fast: each file is checked on its first read
    shard = int(file[-9:-4])
    other = (shard + 1) % 4
    cache.lookup(torch.arange(other * 32, min(other * 32 + 32, 100)))  # untouched shards read fine
    for attempt in range(2):  # refused every time, not only the first
        with pytest.raises(CacheError) as info:
            cache.lookup(torch.tensor([shard * 32 + 1]))
        message = str(info.value)
        assert file in message and "corrupted" in message and "distill cache --overwrite" in message, message
    with pytest.raises(CacheError, match=file.replace(".", r"\.")):
        open_cache(tmp_path / "c").verify()
    rebuilt = build(teacher, dataset, tmp_path / "c", k=k, overwrite=True)  # what the message says works
    rebuilt.verify()


def test_a_cache_without_checksums_opens_with_a_warning(tmp_path):
    teacher, dataset = Teacher(), make_dataset(40)
    build(teacher, dataset, tmp_path / "c")
    manifest_path = tmp_path / "c" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["sha256"]  # as written before checksums existed
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match=r"no shard checksums.*distill cache --overwrite"):
        cache = open_cache(tmp_path / "c")
    torch.testing.assert_close(cache.lookup(torch.arange(40)), reference(teacher, dataset), rtol=1e-3, atol=1e-3)
    manifest["sha256"] = {"logits-00000.npy": "0" * 64}  # one file's checksum missing: a damaged manifest
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match=r"no sha256 for logits-00001\.npy"):
        open_cache(tmp_path / "c")


def test_resume_recomputes_a_finished_shard_whose_bytes_changed(tmp_path):
    dataset = make_dataset()
    whole = build(Teacher(), dataset, tmp_path / "whole", k=3)
    teacher = Teacher()
    teacher.fail_on = 6  # shard 0 finishes, shard 1 dies
    with pytest.raises(RuntimeError):
        build(teacher, dataset, tmp_path / "c", k=3)
    flip_byte(tmp_path / "c.partial" / "values-00000.npy")
    teacher.fail_on, teacher.calls = None, 0
    resumed = build(teacher, dataset, tmp_path / "c", k=3)
    assert teacher.calls == 13  # shard 0 computed again, with shards 1-3
    assert resumed.manifest["sha256"] == whole.manifest["sha256"]
    resumed.verify()


# ----------------------------------------------------------------------------- non-finite teacher outputs
class PoisonRows(nn.Module):
    """Sets rows ``rows`` (a bool mask) of its input to ``bad``; a module, so a feature hook sees its output."""

    def __init__(self, bad):
        super().__init__()
        self.bad = bad

    def forward(self, values, rows):
        return torch.where(rows[:, None], torch.full_like(values, self.bad), values)


class PoisonTeacher(nn.Module):
    """A linear teacher whose output is ``bad`` for samples whose first pixel is above 999."""

    def __init__(self, bad, where="logits"):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)
        self.poison = PoisonRows(bad)
        self.where = where

    def forward(self, inputs):
        rows = inputs.flatten(1)[:, 0] > 999
        hidden = self.body(inputs.flatten(1))
        if self.where == "feature":
            return self.head(torch.nan_to_num(self.poison(hidden, rows), nan=0.0, posinf=0.0, neginf=0.0))
        return self.poison(self.head(hidden), rows)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("k", [None, 3])
def test_non_finite_teacher_logits_stop_the_build_naming_samples_and_shard(tmp_path, bad, k):
    dataset = make_dataset()
    dataset.inputs[[37, 41, 60, 70], 0, 0, 0] = 1000.0  # 37, 41, 60 in shard 1 (samples 32..63); 70 in shard 2
    teacher = PoisonTeacher(bad)
    with pytest.raises(CacheError) as info:
        build(teacher, dataset, tmp_path / "c", k=k)
    message = str(info.value)
    assert "not finite" in message and "shard 1 (samples 32..63)" in message, message
    assert "logits for sample id(s) 37, 41, 60." in message, message
    assert not (tmp_path / "c").exists()  # no finished cache
    partial = tmp_path / "c.partial"
    assert not list(partial.glob("*-00001.npy")) and not list(partial.glob(".*.tmp"))
    assert sorted(p.name for p in partial.glob("shard-*.done")) == ["shard-00000.done"]  # clean shards kept
    with pytest.raises(CacheError, match="shard 1"):  # building again stops again; it never finishes
        build(teacher, dataset, tmp_path / "c", k=k)
    assert not (tmp_path / "c").exists()


def test_non_finite_features_stop_the_build_naming_the_feature(tmp_path):
    dataset = make_dataset()
    dataset.inputs[5, 0, 0, 0] = 1000.0
    with pytest.raises(CacheError, match=r"shard 0 \(samples 0\.\.31\): feature 'hidden' for sample id\(s\) 5\."):
        build(PoisonTeacher(float("nan"), where="feature"), dataset, tmp_path / "c", features={"hidden": "poison"})
    assert not (tmp_path / "c").exists()
