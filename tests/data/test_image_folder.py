"""image_folder: any folder/tar of class folders, any image size and mode, resized, normalised and cached."""
from __future__ import annotations

import importlib
import io
import os
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image
from shared_data import require_shared

from distill.data import DATASETS, ImageSourceError
from distill.data.datasets import CIFAR10_MEAN, CIFAR10_STD

# the module, not the function: ``distill.data.image_folder`` may be rebound to the function by the package
mod = importlib.import_module("distill.data.image_folder")
image_folder = mod.image_folder

RAW = {"mean": 0.0, "std": 1.0}  # inputs are then the pixels / 255


def noise(width, height, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(array, "RGB").convert(mode)


def save(path, img, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def sixteen_bit(width, height, value):
    return Image.fromarray(np.full((height, width), value, dtype=np.uint16))  # mode I;16


def write_split_tree(root):
    """train/{cat,dog} (3 images each) and test/{cat,dog} (2 + 1): mixed sizes, modes and formats."""
    save(root / "train/cat/a.png", noise(40, 20, 0))
    save(root / "train/cat/b.jpg", noise(17, 33, 1), quality=95)
    save(root / "train/cat/c.png", noise(25, 25, 2, "L"))
    save(root / "train/dog/a.png", noise(30, 30, 3, "RGBA"))
    save(root / "train/dog/b.png", noise(12, 50, 4).quantize(16))  # mode P
    save(root / "train/dog/c.jpg", noise(20, 20, 5, "CMYK"))
    save(root / "test/cat/x.png", noise(64, 64, 6))
    save(root / "test/cat/y.png", sixteen_bit(16, 16, 40000))
    save(root / "test/dog/x.jpg", noise(9, 9, 7, "L"))
    (root / "train" / "README.txt").write_text("not an image: skipped")
    return root


@pytest.fixture
def tree(tmp_path):
    return write_split_tree(tmp_path / "pets")


def load(split, root, cache, **params):
    return image_folder(split, root=root, cache_dir=cache, **params)


def tar_split(root, out_root, split, suffix=".tar.gz"):
    out_root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out_root / f"{split}{suffix}", "w:gz" if suffix == ".tar.gz" else "w") as tar:
        tar.add(root / split, arcname=split)


# --------------------------------------------------------------------------- shapes, labels, modes
def test_shapes_dtypes_and_labels_from_folder_names(tree, tmp_path):
    train = load("train", tree, tmp_path / "c", size=8)
    assert train.inputs.shape == (6, 3, 8, 8) and train.inputs.dtype == torch.float32
    assert train.targets.tolist() == [0, 0, 0, 1, 1, 1] and train.classes == ["cat", "dog"]
    assert (train.name, train.split, train.input_shape, train.num_classes) == ("image_folder", "train", (3, 8, 8), 2)
    test = load("test", tree, tmp_path / "c", size=8)
    assert test.inputs.shape == (3, 3, 8, 8) and test.targets.tolist() == [0, 0, 1] and test.classes == ["cat", "dog"]
    assert load("train", tree, tmp_path / "c", size=(6, 10)).inputs.shape == (6, 3, 6, 10)  # (height, width)
    assert load("train", tree, tmp_path / "c", size=[5, 7], channels=1).inputs.shape == (6, 1, 5, 7)
    assert torch.isfinite(train.inputs).all() and torch.isfinite(test.inputs).all()


def white_square_root(tmp_path):
    """One 40x20 (W x H) black image with a white 20x20 square in the middle (x in [10, 30))."""
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, 10:30] = 255
    save(tmp_path / "sq/train/only/img.png", Image.fromarray(array))
    return tmp_path / "sq"


def test_squash_stretches_the_square_into_the_middle_columns(tmp_path):
    pixels = load("train", white_square_root(tmp_path), tmp_path / "c", size=16, **RAW).inputs[0]
    assert torch.allclose(pixels[:, :, 5:11], torch.ones(3, 16, 6))  # all rows, the middle columns
    assert pixels[:, :, :2].max() < 0.05 and pixels[:, :, 14:].max() < 0.05
    assert torch.equal(pixels, pixels[:, :1].expand_as(pixels))  # every row alike: stretched, not cropped


def test_center_crop_keeps_only_the_centre_square(tmp_path):
    pixels = load("train", white_square_root(tmp_path), tmp_path / "c", size=16, resize="center_crop", **RAW).inputs[0]
    assert torch.allclose(pixels[:, :, 1:15], torch.ones(3, 16, 14))
    assert pixels.min() > 0.7  # the edge columns blend a little with the black just outside the box


def test_pad_letterboxes_on_black(tmp_path):
    pixels = load("train", white_square_root(tmp_path), tmp_path / "c", size=16, resize="pad", **RAW).inputs[0]
    # the image becomes 16x8, centred: rows 4..11; its square covers the middle columns
    assert torch.equal(pixels[:, :4], torch.zeros(3, 4, 16)) and torch.equal(pixels[:, 12:], torch.zeros(3, 4, 16))
    assert torch.allclose(pixels[:, 4:12, 5:11], torch.ones(3, 8, 6))
    assert pixels[:, 4:12, :2].max() < 0.05 and pixels[:, 4:12, 14:].max() < 0.05


def test_non_square_target_and_tall_image_pad(tmp_path):
    save(tmp_path / "t/train/a/tall.png", Image.new("RGB", (10, 40), (255, 255, 255)))
    pixels = load("train", tmp_path / "t", tmp_path / "c", size=(8, 12), resize="pad", **RAW).inputs[0]
    assert pixels.shape == (3, 8, 12)  # the 10x40 image fits as 2x8, columns 5..6
    assert torch.equal(pixels[:, :, 5:7], torch.ones(3, 8, 2)) and pixels[:, :, :5].abs().max() == 0


def test_modes_convert_to_rgb_and_greyscale(tmp_path):
    root = tmp_path / "modes"
    save(root / "train/a/1_rgb.png", Image.new("RGB", (4, 4), (255, 0, 0)))
    save(root / "train/a/2_rgba.png", Image.new("RGBA", (4, 4), (255, 0, 0, 40)))  # alpha dropped
    save(root / "train/a/3_p.png", Image.new("RGB", (4, 4), (255, 0, 0)).quantize(4))
    save(root / "train/a/4_cmyk.jpg", Image.new("CMYK", (4, 4), (0, 255, 255, 0)), quality=100)
    save(root / "train/a/5_grey.png", Image.new("L", (4, 4), 76))
    save(root / "train/a/6_16bit.png", sixteen_bit(4, 4, 0x8080))  # 16-bit: scaled to 128, not clipped to 255
    rgb = load("train", root, tmp_path / "c", size=4, **RAW).inputs * 255
    red = torch.tensor([255.0, 0, 0]).view(3, 1, 1).expand(3, 4, 4)
    for row in range(3):
        assert torch.allclose(rgb[row], red, atol=1e-3), row
    assert torch.allclose(rgb[3], red, atol=8)  # JPEG is lossy
    assert torch.allclose(rgb[4], torch.full((3, 4, 4), 76.0), atol=1e-3)
    assert torch.allclose(rgb[5], torch.full((3, 4, 4), 128.0), atol=1e-3)
    grey = load("train", root, tmp_path / "c", size=4, channels=1, **RAW).inputs * 255
    assert grey.shape == (6, 1, 4, 4)
    assert torch.allclose(grey[0], torch.full((1, 4, 4), 76.0), atol=1e-3)  # ITU-R 601-2: 255 * 0.299
    assert torch.allclose(grey[4], torch.full((1, 4, 4), 76.0), atol=1e-3)
    assert torch.allclose(grey[5], torch.full((1, 4, 4), 128.0), atol=1e-3)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 10))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display: the image becomes 10 wide, 20 tall, white on top
    save(tmp_path / "e/train/a/photo.jpg", img, exif=exif, quality=100)
    pixels = load("train", tmp_path / "e", tmp_path / "c", size=(20, 10), **RAW).inputs[0]
    assert pixels[:, 2:8].mean() > 0.9 and pixels[:, 12:18].mean() < 0.1


# --------------------------------------------------------------------------- normalisation
def test_default_normalisation_uses_training_statistics_for_both_splits(tree, tmp_path):
    cache = tmp_path / "c"
    train = load("train", tree, cache, size=8)
    per_channel = train.inputs.transpose(0, 1).reshape(3, -1).double()
    assert torch.allclose(per_channel.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5)
    raw = load("train", tree, cache, size=8, **RAW).inputs.transpose(0, 1).reshape(3, -1).double()
    mean, std = raw.mean(1).tolist(), raw.std(1, unbiased=False).tolist()
    test = load("test", tree, cache, size=8)
    assert torch.allclose(test.inputs, load("test", tree, cache, size=8, mean=mean, std=std).inputs, atol=1e-5)
    fixed = load("test", tree, cache, size=8, mean=0.5, std=0.5).inputs
    assert torch.allclose(fixed, (load("test", tree, cache, size=8, **RAW).inputs - 0.5) / 0.5)


def test_constant_training_images_cannot_be_standardised(tmp_path):
    for split in ("train", "test"):
        save(tmp_path / f"r/{split}/a/x.png", Image.new("RGB", (5, 5), (10, 20, 30)))
    for split in ("train", "test", "test"):  # the second test call reads train's statistics from the cache
        with pytest.raises(ValueError, match=r"zero standard deviation on channel\(s\) \[0, 1, 2\].*mean= and std="):
            load(split, tmp_path / "r", tmp_path / "c", size=4)
    assert load("test", tmp_path / "r", tmp_path / "c", size=4, mean=0.5, std=0.5).inputs.shape == (1, 3, 4, 4)


def test_fresh_test_split_with_default_statistics_decodes_train_once(tree, tmp_path, monkeypatch):
    decoded = []
    real = mod._decode
    monkeypatch.setattr(mod, "_decode", lambda source, geometry: decoded.append(source.name) or real(source, geometry))
    first = load("test", tree, tmp_path / "c", size=8)
    assert sorted(decoded) == ["test", "train"]
    second = load("test", tree, tmp_path / "c", size=8)
    assert len(decoded) == 2 and torch.equal(first.inputs, second.inputs)


def test_test_split_with_fixed_statistics_never_decodes_train(tree, tmp_path, monkeypatch):
    decoded = []
    real = mod._decode
    monkeypatch.setattr(mod, "_decode", lambda source, geometry: decoded.append(source.name) or real(source, geometry))
    test = load("test", tree, tmp_path / "c", size=8, mean=[0.5, 0.5, 0.5], std=0.25)
    assert decoded == ["test"] and test.classes == ["cat", "dog"]
    listed = []
    real_entries = mod._entries
    monkeypatch.setattr(mod, "_entries", lambda source: listed.append(source.name) or real_entries(source))
    again = load("test", tree, tmp_path / "c", size=8, mean=0.5, std=0.25)  # train's classes remembered
    assert decoded == ["test"] and listed == [] and torch.equal(again.inputs, test.inputs)


# --------------------------------------------------------------------------- sources and cache
@pytest.mark.parametrize("suffix", [".tar.gz", ".tar"])
def test_tar_and_folder_give_identical_tensors(tree, tmp_path, suffix):
    tarred = tmp_path / "tarred"
    for split in ("train", "test"):
        tar_split(tree, tarred, split, suffix)
    for split in ("train", "test"):
        for params in ({"size": 8}, {"size": (6, 9), "resize": "pad", "channels": 1}):
            from_folder = load(split, tree, tmp_path / "c1", **params)
            from_tar = load(split, tarred, tmp_path / "c2", **params)
            assert torch.equal(from_folder.inputs, from_tar.inputs), (split, params)
            assert torch.equal(from_folder.targets, from_tar.targets) and from_folder.classes == from_tar.classes


def test_second_call_reads_the_cache_without_decoding(tree, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    first = {split: load(split, tree, cache, size=8) for split in ("train", "test")}
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 4 and all(n.startswith("image_folder-") and "8x8-squash-rgb" in n for n in names)

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(mod, "_decode", fail)
    for split in ("train", "test"):
        again = load(split, tree, cache, size=8)
        assert torch.equal(again.inputs, first[split].inputs) and torch.equal(again.targets, first[split].targets)


@pytest.mark.parametrize("change", [{"size": 12}, {"size": (8, 9)}, {"resize": "pad"}, {"resize": "center_crop"},
                                    {"channels": 1}])
def test_cache_is_keyed_by_size_resize_and_channels(tree, tmp_path, monkeypatch, change):
    cache = tmp_path / "c"
    load("train", tree, cache, size=8)
    decoded = []
    real = mod._decode
    monkeypatch.setattr(mod, "_decode", lambda source, geometry: decoded.append(geometry) or real(source, geometry))
    params = {"size": 8, **change}
    data = load("train", tree, cache, **params)
    assert len(decoded) == 1 and data.input_shape[0] == params.get("channels", 3)


def test_edited_image_invalidates_the_cache(tree, tmp_path):
    cache = tmp_path / "c"
    before = load("train", tree, cache, size=8, **RAW)
    save(tree / "train/cat/a.png", Image.new("RGB", (40, 20), (0, 0, 0)))  # same name, new pixels
    after = load("train", tree, cache, size=8, **RAW)
    assert after.inputs[0].abs().max() == 0 and torch.equal(after.inputs[1:], before.inputs[1:])


def test_damaged_cache_metadata_is_ignored_with_a_warning(tree, tmp_path):
    cache = tmp_path / "c"
    first = load("train", tree, cache, size=8)
    (meta,) = cache.glob("*.json")
    meta.write_text("{not json")
    with pytest.warns(UserWarning, match="ignoring unreadable dataset cache metadata"):
        again = load("train", tree, cache, size=8)
    assert torch.equal(first.inputs, again.inputs)


# --------------------------------------------------------------------------- single-folder layout
def write_single_folder(root, counts=(("bird", 10), ("cat", 5), ("dog", 7))):
    for k, (cls, count) in enumerate(counts):
        for i in range(count):
            save(root / cls / f"{i:03d}.png", noise(8 + i, 8, 100 * k + i))
    return root


def test_single_folder_is_split_stratified_and_deterministic(tmp_path):
    root = write_single_folder(tmp_path / "flat")
    train = load("train", root, tmp_path / "c", size=8, **RAW)
    test = load("test", root, tmp_path / "c", size=8, **RAW)
    assert train.classes == test.classes == ["bird", "cat", "dog"]
    assert torch.bincount(test.targets).tolist() == [2, 1, 1]  # round(0.2 n): 10 -> 2, 5 -> 1, 7 -> 1
    assert torch.bincount(train.targets).tolist() == [8, 4, 6]
    everything = load("train", root, tmp_path / "c", size=8, layout="single", test_fraction=0.5, **RAW)
    assert torch.bincount(everything.targets).tolist() == [5, 2, 3]  # halves round up: 2.5 -> 3 held out
    # disjoint, and together every image once
    rows = {tuple(x.flatten().tolist()) for x in torch.cat([train.inputs, test.inputs])}
    assert len(rows) == 22 and len(train) + len(test) == 22
    again = load("test", root, tmp_path / "c2", size=8, **RAW)  # fresh cache: the same images are held out
    assert torch.equal(again.inputs, test.inputs)
    other_seed = load("test", root, tmp_path / "c", size=8, split_seed=1, **RAW)
    assert not torch.equal(other_seed.inputs, test.inputs)
    bigger = load("test", root, tmp_path / "c", size=8, test_fraction=0.4, **RAW)
    assert torch.bincount(bigger.targets).tolist() == [4, 2, 3]


def test_single_folder_hold_out_is_stable_when_another_class_grows(tmp_path):
    root = write_single_folder(tmp_path / "flat")
    before = load("test", root, tmp_path / "c", size=8, **RAW)
    save(root / "dog" / "new.png", noise(9, 9, 999))
    after = load("test", root, tmp_path / "c", size=8, **RAW)
    keep = before.targets != 2
    assert torch.equal(before.inputs[keep], after.inputs[after.targets != 2])


def test_single_folder_statistics_come_from_its_training_part(tmp_path):
    root = write_single_folder(tmp_path / "flat")
    raw = load("train", root, tmp_path / "c", size=8, **RAW).inputs.transpose(0, 1).reshape(3, -1).double()
    mean, std = raw.mean(1).tolist(), raw.std(1, unbiased=False).tolist()
    test = load("test", root, tmp_path / "c", size=8)
    assert torch.allclose(test.inputs, load("test", root, tmp_path / "c", size=8, mean=mean, std=std).inputs, atol=1e-5)


def test_single_tar_archive_of_class_folders(tmp_path):
    root = write_single_folder(tmp_path / "flat")
    archive = tmp_path / "flat.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="flat")
    for split in ("train", "test"):
        assert torch.equal(load(split, archive, tmp_path / "c", size=8).inputs,
                           load(split, root, tmp_path / "c", size=8).inputs)


def test_class_named_train_needs_layout_single(tmp_path):
    root = tmp_path / "vehicles"
    for cls in ("bus", "car", "train"):
        for i in range(3):
            save(root / cls / f"{i}.png", noise(8, 8, i))
    with pytest.raises(ImageSourceError, match="layout='single'"):
        load("train", root, tmp_path / "c", size=8)
    data = load("train", root, tmp_path / "c", size=8, layout="single")
    assert data.classes == ["bus", "car", "train"] and len(data) == 6


def test_single_folder_errors(tmp_path):
    root = write_single_folder(tmp_path / "flat", counts=(("bird", 4), ("cat", 1)))
    with pytest.raises(ValueError, match=r"class 'cat' has 1 image.*at least 2"):
        load("train", root, tmp_path / "c", size=8)
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="test_fraction"):
            load("train", root, tmp_path / "c", size=8, test_fraction=bad)
    with pytest.raises(ValueError, match="split_seed"):
        load("train", root, tmp_path / "c", size=8, split_seed=-1)


def test_holdout_parameters_are_refused_for_split_folders(tree, tmp_path):
    with pytest.raises(ValueError, match="test_fraction= applies only to the single-folder layout"):
        load("train", tree, tmp_path / "c", size=8, test_fraction=0.3)


# --------------------------------------------------------------------------- errors
def test_root_missing_or_none_names_root_and_layout(tmp_path):
    with pytest.raises(ValueError, match=r"needs root=.*<split>/<class>/<image>"):
        image_folder("train", size=8)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist.*<split>/<class>/<image>"):
        load("train", missing, tmp_path / "c")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a folder or a .tar"):
        load("train", tmp_path / "file.txt", tmp_path / "c")


def test_missing_test_split_names_what_root_holds(tree, tmp_path):
    import shutil

    shutil.rmtree(tree / "test")
    (tree / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=r"test\.tar\.gz.*test/<class>/<image>.*holds train/, val/"):
        load("test", tree, tmp_path / "c", size=8)


def test_test_split_needs_the_training_split(tmp_path):
    save(tmp_path / "r/test/a/x.png", noise(8, 8, 0))
    with pytest.raises(FileNotFoundError, match=r"train\.tar\.gz.*beside the test split.*statistics"):
        load("test", tmp_path / "r", tmp_path / "c", size=8)
    with pytest.raises(FileNotFoundError, match="labels index the training split's classes"):
        load("test", tmp_path / "r", tmp_path / "c", size=8, **RAW)


def test_no_images_and_empty_class_are_named(tmp_path):
    root = tmp_path / "r"
    (root / "train" / "cat").mkdir(parents=True)
    (root / "train" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(ImageSourceError, match=r"no images found.*\.jpg\|\.jpeg\|\.png"):
        load("train", root, tmp_path / "c", size=8)
    save(root / "train/dog/a.png", noise(8, 8, 0))
    (root / "train" / "emu").mkdir()
    (root / "train" / ".hidden").mkdir()  # hidden and empty: not a class, not an error
    with pytest.raises(ImageSourceError, match=r"class folder\(s\) 'cat', 'emu' hold no images"):
        load("train", root, tmp_path / "c", size=8)


def test_empty_class_in_a_tar_is_named(tmp_path):
    root = tmp_path / "r"
    with tarfile.open(root.mkdir() or root / "train.tar", "w") as tar:
        for name, data in (("train/dog/a.png", None), ("train/emu/readme.txt", b"x")):
            if data is None:
                buffer = io.BytesIO()
                noise(8, 8, 0).save(buffer, "PNG")
                data = buffer.getvalue()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ImageSourceError, match=r"train\.tar.*class folder\(s\) 'emu' hold no images"):
        load("train", root, tmp_path / "c", size=8)


def test_undecodable_image_is_named(tree, tmp_path):
    (tree / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(ImageSourceError, match=r"dog/broken\.png: cannot decode the image"):
        load("train", tree, tmp_path / "c", size=8)
    tarred = tmp_path / "tarred"
    tar_split(tree, tarred, "train")
    with pytest.raises(ImageSourceError, match=r"train\.tar\.gz: train/dog/broken\.png: cannot decode"):
        load("train", tarred, tmp_path / "c", size=8)


def test_symbolic_link_is_refused_as_for_cifar10(tree, tmp_path):
    os.symlink(tree / "train/cat/a.png", tree / "train/dog/link.png")
    with pytest.raises(ImageSourceError, match="symbolic link"):
        load("train", tree, tmp_path / "c", size=8)


def test_test_classes_must_match_train_classes(tree, tmp_path):
    save(tree / "test/emu/x.png", noise(8, 8, 0))
    import shutil

    shutil.rmtree(tree / "test" / "dog")
    with pytest.raises(ValueError, match=r"missing from test: 'dog'; only in test: 'emu'"):
        load("test", tree, tmp_path / "c", size=8, **RAW)
    with pytest.raises(ValueError, match=r"missing from test: 'dog'"):  # the cached route too
        load("train", tree, tmp_path / "c", size=8)
        load("test", tree, tmp_path / "c", size=8)


@pytest.mark.parametrize("params, message", [
    ({"size": 0}, "size must be a positive integer"),
    ({"size": -3}, "size must be a positive integer"),
    ({"size": (8, 0)}, r"\(height, width\)"),
    ({"size": (8, 8, 8)}, "size must be"),
    ({"size": True}, "size must be"),
    ({"size": 8.0}, "size must be"),
    ({"resize": "centre_crop"}, "did you mean 'center_crop'"),
    ({"layout": "singel"}, "did you mean 'single'"),
    ({"channels": 2}, "channels must be 3"),
    ({"mean": 0.5}, "give both mean= and std="),
    ({"mean": [0.5, 0.5], "std": 0.5}, "one per channel"),
    ({"mean": 0.5, "std": 0}, "std must be positive"),
    ({"mean": float("nan"), "std": 1}, "finite"),
])
def test_bad_parameters_are_refused_early(tree, tmp_path, params, message):
    with pytest.raises(ValueError, match=message):
        load("train", tree, tmp_path / "c", **params)
    assert not (tmp_path / "c").exists()  # nothing decoded or cached


def test_unknown_parameter_names_the_closest_and_the_valid_ones(tree, tmp_path):
    with pytest.raises(mod.UnknownParameterError, match=r"'sise' \(did you mean 'size'\?\).*valid parameters: .*"):
        load("train", tree, tmp_path / "c", sise=8)
    with pytest.raises(TypeError):  # also a TypeError, as Python's own
        load("train", tree, tmp_path / "c", chanels=1)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load("val", tree, tmp_path / "c")


def test_registered_and_callable_as_the_registry_calls_builders(tree, tmp_path):
    builder = DATASETS.get("image_folder")
    assert builder is image_folder
    plain = builder("train", root=tree, cache_dir=tmp_path / "c")  # fn(split, root=, cache_dir=): 32x32 RGB
    assert plain.inputs.shape == (6, 3, 32, 32)
    assert builder("test", root=tree, cache_dir=tmp_path / "c", **{"size": 4, "channels": 1}).input_shape == (1, 4, 4)


# --------------------------------------------------------------------------- real data
def test_real_cifar10_test_split_resized_to_16(tmp_path):
    root = require_shared("cifar10")
    require_shared("cifar10", "test.tar.gz")
    start = time.perf_counter()
    data = load("test", root, tmp_path / "c", size=16, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    seconds = time.perf_counter() - start
    assert data.inputs.shape == (10000, 3, 16, 16) and data.inputs.dtype == torch.float32
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert torch.bincount(data.targets).tolist() == [1000] * 10
    # row 0 against an independent decode: the first member of the first class, resized by PIL
    with tarfile.open(root / "test.tar.gz") as tar:
        first = sorted(m.name for m in tar.getmembers() if m.isfile() and m.name.startswith("test/airplane/"))[0]
        img = Image.open(io.BytesIO(tar.extractfile(first).read())).convert("RGB")
    expected = np.asarray(img.resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    expected = (torch.from_numpy(expected).permute(2, 0, 1) - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) \
        / torch.tensor(CIFAR10_STD).view(3, 1, 1)
    assert torch.allclose(data.inputs[0], expected, atol=1e-5)
    print(f"cifar10 test 16x16: {seconds:.1f} s")


@pytest.mark.slow
def test_real_cifar10_at_32_matches_the_cifar10_loader_in_every_resize_mode(tmp_path):
    from distill.data.datasets import cifar10

    root = require_shared("cifar10")
    require_shared("cifar10", "test.tar.gz")
    reference = cifar10("test", root=root, cache_dir=tmp_path / "c")
    for resize in mod.RESIZE_MODES:  # 32x32 images at size 32: every mode leaves them as they are
        data = load("test", root, tmp_path / "c", size=32, resize=resize, mean=CIFAR10_MEAN, std=CIFAR10_STD)
        assert torch.equal(data.inputs, reference.inputs) and torch.equal(data.targets, reference.targets), resize
        assert data.classes == reference.classes
