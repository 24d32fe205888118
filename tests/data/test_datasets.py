"""Data sets: the IDX parser, MNIST-family and digits loaders, CIFAR-10 from tar/folder with its cache."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import warnings

import numpy as np
import pytest
import torch
from shared_data import require_shared
from PIL import Image

from distill.data import DATASETS, SPLITS, ArrayDataset, build_dataset, read_idx
from distill.data import datasets as datasets_module
from distill.registry import UnknownNameError


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 ``array``, written independently of the parser."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist_folder(folder, n_train=5, n_test=3):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))  # raw, not gzipped
        arrays[prefix] = (images, labels)
    return arrays


# --------------------------------------------------------------------------- IDX parser
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(array)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path, ndim=3)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x12\x34" + b[2:], "not an IDX file"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "element type"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing data"),
        (lambda b: b[:3] + b"\x01" + b[4:], "expected 3"),
    ],
)
def test_read_idx_bad_file_names_file_and_problem(tmp_path, mutate, message):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(np.zeros((2, 3, 4), np.uint8))))
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path, ndim=3)
    assert "bad-images-idx3-ubyte" in str(info.value)


def test_mnist_loader_from_tiny_folder(tmp_path):
    arrays = write_mnist_folder(tmp_path)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        data = build_dataset("mnist", split, root=tmp_path)
        images, labels = arrays[prefix]
        assert data.inputs.shape == (len(images), 1, 28, 28) and data.inputs.dtype == torch.float32
        assert data.targets.dtype == torch.int64 and data.targets.tolist() == labels.tolist()
        expected = (images.astype(np.float32) / 255 - 0.1307) / 0.3081
        np.testing.assert_allclose(data.inputs[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert (data.name, data.split, data.input_shape, data.num_classes) == ("mnist", split, (1, 28, 28), 10)


def test_mnist_loader_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.\./shared/data/mnist"):
        build_dataset("mnist", "train")
    with pytest.raises(ValueError, match=r"\.\./shared/data/fashion-mnist"):
        build_dataset("fashion_mnist", "train")
    with pytest.raises(FileNotFoundError) as info:
        build_dataset("mnist", "test", root=tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value) and str(tmp_path) in str(info.value)
    write_mnist_folder(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))  # 5 images, 4 labels
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        build_dataset("mnist", "train", root=tmp_path)


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion_mnist", "cifar10"])
def test_unknown_split_names_valid_splits(name, tmp_path):
    with pytest.raises(ValueError, match="valid splits are train, test"):
        build_dataset(name, "validation", root=tmp_path)


def test_registry_names_and_typos():
    assert {"digits", "mnist", "fashion_mnist", "cifar10"} <= set(DATASETS.names())
    with pytest.raises(UnknownNameError, match="did you mean 'mnist'"):
        build_dataset("mnsit", "train")


# --------------------------------------------------------------------------- real MNIST family
@pytest.mark.parametrize(
    "name, folder, train_first, test_first, train_counts",
    [
        ("mnist", "mnist", 5, 7, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]),
        ("fashion_mnist", "fashion-mnist", 9, 9, [6000] * 10),
    ],
)
def test_real_mnist_family(name, folder, train_first, test_first, train_counts):
    root = require_shared(folder)
    train, test = (build_dataset(name, split, root=root) for split in SPLITS)
    assert train.inputs.shape == (60000, 1, 28, 28) and test.inputs.shape == (10000, 1, 28, 28)
    assert train.inputs.dtype == torch.float32 and train.targets.dtype == torch.int64
    assert torch.bincount(train.targets).tolist() == train_counts
    assert len(torch.bincount(test.targets)) == 10
    assert int(train.targets[0]) == train_first and int(test.targets[0]) == test_first
    assert abs(float(train.inputs.mean())) < 1e-2 and abs(float(train.inputs.std()) - 1) < 1e-2


# --------------------------------------------------------------------------- digits, ArrayDataset
def test_digits_split_sizes_determinism_and_standardisation():
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.inputs.shape == (1437, 1, 8, 8) and test.input_shape == (1, 8, 8)
    assert abs(float(train.inputs.mean())) < 1e-5 and abs(float(train.inputs.std()) - 1) < 1e-4
    counts = torch.bincount(test.targets, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~18 % of ~180 per class
    again = build_dataset("digits", "test")
    assert torch.equal(again.inputs, test.inputs) and torch.equal(again.targets, test.targets)
    assert again.fingerprint() == test.fingerprint() != train.fingerprint()


def test_fingerprint_is_cached_and_sensitive():
    data = build_dataset("digits", "test")
    first = data.fingerprint()
    assert len(first) == 16 and data.fingerprint() is first
    changed = ArrayDataset(data.inputs.clone(), data.targets.clone(), data.classes, data.name, data.split)
    changed.inputs[0, 0, 0, 0] += 1
    assert changed.fingerprint() != first


def test_array_dataset_validates():
    with pytest.raises(ValueError, match="float32"):
        ArrayDataset(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64), ["a"], "x", "train")
    with pytest.raises(ValueError, match="int64"):
        ArrayDataset(torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.int64), ["a"], "x", "train")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ArrayDataset(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), ["a"], "x", "train")


def test_subset_is_deterministic_and_balanced():
    data = build_dataset("digits", "train")
    part = data.subset(100, seed=3)
    assert len(part) == 100 and torch.bincount(part.targets, minlength=10).tolist() == [10] * 10
    assert torch.equal(part.inputs, data.subset(100, seed=3).inputs)
    assert not torch.equal(part.inputs, data.subset(100, seed=4).inputs)
    assert len(data.subset(len(data))) == len(data)
    with pytest.raises(ValueError, match=r"\[1, 1437\]"):
        data.subset(0)


# --------------------------------------------------------------------------- CIFAR-10 (fake, tiny)
COLOURS = {"cat": [(200, 30, 30), (30, 200, 30)], "airplane": [(30, 30, 200), (250, 250, 250), (0, 0, 0)]}


def encoded_images(fmt="JPEG"):
    """{'train/<class>/<n>.jpg': bytes}: solid colours, so JPEG decoding is near exact."""
    out = {}
    for cls, colours in COLOURS.items():
        for n, colour in enumerate(colours):
            buffer = io.BytesIO()
            Image.new("RGB", (32, 32), colour).save(buffer, fmt, quality=95)
            out[f"train/{cls}/{n:04d}.jpg"] = buffer.getvalue()
    return out


def write_tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def check_fake_cifar(data):
    assert data.classes == ["airplane", "cat"]  # sorted alphabetically
    assert data.inputs.shape == (5, 3, 32, 32) and data.targets.tolist() == [0, 0, 0, 1, 1]
    mean = torch.tensor(datasets_module.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(datasets_module.CIFAR10_STD).view(3, 1, 1)
    pixels = (data.inputs * std + mean) * 255  # back to 0..255
    expected = torch.tensor(COLOURS["airplane"] + COLOURS["cat"], dtype=torch.float32)
    assert (pixels.mean((2, 3)) - expected).abs().max() < 3


@pytest.fixture
def fake_cifar(tmp_path):
    root = tmp_path / "cifar10"
    root.mkdir()
    write_tar(root / "train.tar.gz", encoded_images())
    return root


def test_cifar10_from_tar_then_from_cache(fake_cifar, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    data = build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)
    check_fake_cifar(data)
    (cache_file,) = cache.glob("cifar10-train-*.npz")
    assert not list(cache.glob("*.tmp"))

    def no_decoding(source):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(datasets_module, "_decode_images", no_decoding)
    again = build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)
    assert torch.equal(again.inputs, data.inputs) and again.fingerprint() == data.fingerprint()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_cifar10_corrupt_cache_is_not_used(fake_cifar, tmp_path, damage):
    cache = tmp_path / "cache"
    data = build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    blob = cache_file.read_bytes()
    cache_file.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else b"\x00" * len(blob))
    with pytest.warns(UserWarning, match="ignoring unreadable dataset cache"):
        again = build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)
    assert torch.equal(again.inputs, data.inputs)
    assert cache_file.read_bytes() == blob  # rewritten whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)


def test_cifar10_failed_cache_write_leaves_nothing(fake_cifar, tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def crash(file, **arrays):
        file.write(b"half a cache")
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets_module.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_cifar10_changed_source_invalidates_cache(fake_cifar, tmp_path):
    cache = tmp_path / "cache"
    build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)
    files = encoded_images()
    del files["train/airplane/0002.jpg"]
    write_tar(fake_cifar / "train.tar.gz", files)
    assert len(build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)) == 4
    assert len(list(cache.glob("*.npz"))) == 2


def test_cifar10_from_folder_matches_tar(fake_cifar, tmp_path, monkeypatch):
    folder_root = tmp_path / "extracted"
    for name, data in encoded_images().items():
        (folder_root / name).parent.mkdir(parents=True, exist_ok=True)
        (folder_root / name).write_bytes(data)
    (folder_root / "train" / "cat" / ".DS_Store").write_bytes(b"junk")  # ignored
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "env-cache"))
    from_folder = build_dataset("cifar10", "train", root=folder_root)  # default cache dir from env
    check_fake_cifar(from_folder)
    assert len(list((tmp_path / "env-cache" / "datasets").glob("cifar10-train-*.npz"))) == 1
    from_tar = build_dataset("cifar10", "train", root=fake_cifar, cache_dir=tmp_path / "c2")
    assert torch.equal(from_folder.inputs, from_tar.inputs)


def test_cifar10_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.\./shared/data/cifar10"):
        build_dataset("cifar10", "train")
    with pytest.raises(FileNotFoundError, match=r"test\.tar\.gz"):
        build_dataset("cifar10", "test", root=tmp_path, cache_dir=tmp_path / "c")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no <class>/<image>"):
        build_dataset("cifar10", "train", root=tmp_path, cache_dir=tmp_path / "c")
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "PNG")
    (tmp_path / "train" / "cat" / "0.png").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="expected 32x32"):
        build_dataset("cifar10", "train", root=tmp_path, cache_dir=tmp_path / "c")


def test_real_cifar10_test_tar_layout():
    """Member names only: decoding the real set is too slow for unit tests."""
    path = require_shared("cifar10", "test.tar.gz")
    with tarfile.open(path, "r:gz") as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    classes = sorted({name.split("/")[1] for name in names})
    assert len(names) == 10000 and len(classes) == 10 and classes[0] == "airplane"
    assert all(name.startswith("test/") and name.endswith(".jpg") for name in names)


def test_no_pickle_cache_reading(fake_cifar, tmp_path):
    """The cache is read with allow_pickle=False: an object array in it is refused, not unpickled."""
    cache = tmp_path / "cache"
    build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    np.savez(cache_file, images=np.zeros((1, 32, 32, 3), np.uint8), labels=np.zeros(1, np.int64),
             classes=np.array([object()], dtype=object))
    with pytest.warns(UserWarning, match="ignoring unreadable"):
        build_dataset("cifar10", "train", root=fake_cifar, cache_dir=cache)
    shutil.rmtree(cache)


# --------------------------------------------------------------------------- untrusted archives and folders
def png_bytes(colour, size=32):
    """An uncompressed PNG: its length depends only on ``size``, not on the colour."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def write_tar_members(path, members, mode="w:gz"):
    """A tar of ``members``: (TarInfo fields dict, bytes or None), written as given (no name clean-up)."""
    with tarfile.open(path, mode) as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields["name"])
            for key, value in fields.items():
                if key != "name":
                    setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def good_members():
    return [({"name": name}, data) for name, data in encoded_images().items()]


@pytest.mark.parametrize(
    "member, problem",
    [
        ({"name": "train/cat/../../evil.jpg"}, "'..'"),
        ({"name": "train/../cat/0009.jpg"}, "'..'"),
        ({"name": "/train/cat/0009.jpg"}, "absolute path"),
        ({"name": "train/cat/0009.jpg", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "symbolic link"),
        ({"name": "train/cat/0009.jpg", "type": tarfile.LNKTYPE, "linkname": "train/cat/0000.jpg"}, "hard link"),
        ({"name": "train/cat/0009.jpg", "type": tarfile.CHRTYPE}, "device"),
        ({"name": "train/cat/0009.jpg", "type": tarfile.FIFOTYPE}, "FIFO"),
        ({"name": "train/cat/notes", "type": tarfile.SYMTYPE, "linkname": "../../x"}, "symbolic link"),  # any name
    ],
)
def test_unsafe_tar_members_are_refused_naming_archive_and_member(tmp_path, member, problem):
    root = tmp_path / "cifar10"
    root.mkdir()
    name = member["name"]
    data = encoded_images()["train/cat/0000.jpg"] if member.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else None
    write_tar_members(root / "train.tar.gz", good_members() + [(member, data)])
    with pytest.raises(datasets_module.ImageSourceError, match=problem) as info:
        build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert str(root / "train.tar.gz") in message and repr(name) in message, message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing cached


@pytest.mark.parametrize(
    "name, problem",
    [
        ("train/0009.jpg", "not inside a class folder"),
        ("train/cat/extra/0009.jpg", "deeper than <top>/<class>/<image>"),
        ("cat/0009.jpg", "not inside a class folder"),  # no top folder
        ("valid/cat/0009.jpg", "one top folder"),
    ],
)
def test_tar_layout_other_than_top_class_image_is_refused(tmp_path, name, problem):
    root = tmp_path / "cifar10"
    root.mkdir()
    write_tar_members(root / "train.tar.gz", good_members() + [({"name": name}, encoded_images()["train/cat/0000.jpg"])])
    with pytest.raises(datasets_module.ImageSourceError, match=problem) as info:
        build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert repr(name) in message and "<split>/<class>/<image>" in message and "train/cat/0001.jpg" in message


def test_tar_directories_and_non_image_files_are_fine(tmp_path):
    root = tmp_path / "cifar10"
    root.mkdir()
    members = [({"name": "train", "type": tarfile.DIRTYPE}, None), ({"name": "train/cat", "type": tarfile.DIRTYPE}, None),
               ({"name": "train/README.txt"}, b"about"), ({"name": "train/cat/._0000.jpg"}, b"apple double")]
    write_tar_members(root / "train.tar.gz", members + good_members())
    check_fake_cifar(build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache"))


def test_duplicate_and_unreadable_tar_members_are_refused(tmp_path):
    root = tmp_path / "cifar10"
    root.mkdir()
    write_tar_members(root / "train.tar.gz", good_members() + good_members()[:1])
    with pytest.raises(datasets_module.ImageSourceError, match="'train/cat/0000.jpg' appears twice"):
        build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    write_tar_members(root / "train.tar.gz", good_members() + [({"name": "train/cat/0009.jpg"}, b"not a jpeg")])
    with pytest.raises(datasets_module.ImageSourceError, match=r"train\.tar\.gz: train/cat/0009\.jpg: cannot decode"):
        build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    (root / "train.tar.gz").write_bytes(b"\x1f\x8b garbage, not a gzip stream")
    with pytest.raises(datasets_module.ImageSourceError, match=r"train\.tar\.gz: cannot read it as a tar archive"):
        build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")


def extracted_folder(tmp_path):
    root = tmp_path / "extracted"
    for name, data in encoded_images().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.mark.parametrize("kind", ["file link", "folder link", "dangling link"])
def test_symbolic_links_in_an_image_folder_are_refused(tmp_path, kind):
    root = extracted_folder(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0000.jpg").write_bytes(encoded_images()["train/cat/0000.jpg"])
    if kind == "file link":
        link = root / "train" / "cat" / "0009.jpg"
        link.symlink_to(outside / "0000.jpg")
    elif kind == "folder link":
        link = root / "train" / "dog"
        link.symlink_to(outside, target_is_directory=True)
    else:
        link = root / "train" / "cat" / "gone.jpg"
        link.symlink_to(tmp_path / "missing.jpg")
    with pytest.raises(datasets_module.ImageSourceError, match="is a symbolic link") as info:
        build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    shown = link.relative_to(root / "train").as_posix()
    assert str(root / "train") in str(info.value) and repr(shown) in str(info.value)


@pytest.mark.parametrize(
    "name, problem",
    [("0009.jpg", "not inside a class folder"), ("cat/extra/0009.jpg", "deeper than <class>/<image>")],
)
def test_image_folder_layout_other_than_class_image_is_refused(tmp_path, name, problem):
    root = extracted_folder(tmp_path)
    path = root / "train" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded_images()["train/cat/0000.jpg"])
    with pytest.raises(datasets_module.ImageSourceError, match=problem) as info:
        build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    assert repr(name) in str(info.value) and "<split>/<class>/<image>" in str(info.value)
    path.unlink()
    (root / "train" / "notes.txt").write_text("not an image: skipped")
    check_fake_cifar(build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache"))


def test_tar_cache_key_covers_bytes_past_the_first_mib(tmp_path):
    """Same size, same first MiB, different image: decoded afresh (the old key read only 1 MiB)."""
    root = tmp_path / "cifar10"
    root.mkdir()
    padding = ({"name": "train/padding.bin"}, b"\x00" * (1 << 20) + b"\x00" * 4096)  # a non-image, skipped

    def write(colour):
        write_tar_members(root / "train.tar", [padding, ({"name": "train/cat/0000.png"}, png_bytes(colour))], mode="w")
        return (root / "train.tar").read_bytes()

    first = write((10, 20, 30))
    data = build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    key = datasets_module._source_key(root / "train.tar")
    second = write((200, 100, 50))
    assert len(first) == len(second) and first[: 1 << 20] == second[: 1 << 20] and first != second
    assert datasets_module._source_key(root / "train.tar") != key
    again = build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    assert not torch.equal(again.inputs, data.inputs)
    fresh = build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "fresh-cache")
    assert torch.equal(again.inputs, fresh.inputs)


def test_folder_cache_key_covers_content_with_size_and_mtime_kept(tmp_path):
    root = tmp_path / "extracted"
    image = root / "train" / "cat" / "0000.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(png_bytes((10, 20, 30)))
    data = build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    key, stat = datasets_module._source_key(root / "train"), image.stat()
    image.write_bytes(png_bytes((200, 100, 50)))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size == stat.st_size and image.stat().st_mtime_ns == stat.st_mtime_ns
    assert datasets_module._source_key(root / "train") != key
    again = build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "cache")
    assert not torch.equal(again.inputs, data.inputs)
    assert torch.equal(again.inputs, build_dataset("cifar10", "train", root=root, cache_dir=tmp_path / "c2").inputs)


def test_real_cifar10_test_tar_passes_the_member_and_layout_checks():
    """Reads every member (no decoding): the shipped layout test/<class>/NNNN.jpg must stay accepted."""
    path = require_shared("cifar10", "test.tar.gz")
    entries = datasets_module._read_entries(path)
    assert len(entries) == 10000
    assert sorted({cls for cls, _, _, _ in entries}) == ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                         "frog", "horse", "ship", "truck"]
    assert all(where.startswith(f"test/{cls}/") for cls, _, where, _ in entries)


# --------------------------------------------------------------------------- data roots
@pytest.mark.parametrize(
    "name, expected",
    [("mnist", "train-images-idx3-ubyte.gz"), ("fashion_mnist", "train-images-idx3-ubyte.gz"),
     ("cifar10", "train.tar.gz")],
)
def test_missing_or_wrong_root_names_the_path_and_the_files_expected(tmp_path, name, expected):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError) as info:
        build_dataset(name, "train", root=missing, cache_dir=tmp_path / "cache")
    assert str(missing) in str(info.value) and "does not exist" in str(info.value) and expected in str(info.value)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder") as info:
        build_dataset(name, "train", root=a_file, cache_dir=tmp_path / "cache")
    assert str(a_file) in str(info.value) and expected in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:  # exists, but lacks the files
        build_dataset(name, "train", root=empty, cache_dir=tmp_path / "cache")
    assert str(empty) in str(info.value) and expected in str(info.value)
