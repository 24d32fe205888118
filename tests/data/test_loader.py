"""InMemoryLoader (exact resume, every sample once) and the batch augmentations."""
from __future__ import annotations

import pytest
import torch

from distill.data import (
    AUGMENTS,
    ArrayDataset,
    InMemoryLoader,
    RandomCropFlip,
    RandomShift,
    iterate_batches,
)


def toy_dataset(size=23, shape=(1, 4, 4)):
    inputs = torch.arange(size * int(torch.tensor(shape).prod()), dtype=torch.float32).view(size, *shape)
    return ArrayDataset(inputs, torch.arange(size) % 3, ["a", "b", "c"], "toy", "train")


def collect(batches):
    return [{key: value.clone() for key, value in batch.items()} for batch in batches]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_sample_once_per_epoch_and_batch_contents():
    data = toy_dataset()
    loader = InMemoryLoader(data, 5, seed=1)
    assert len(loader) == 5
    orders = []
    for epoch in range(3):
        batches = collect(loader.epoch_batches(epoch))
        assert [len(b["index"]) for b in batches] == [5, 5, 5, 5, 3]
        for batch in batches:
            assert batch["input"].dtype == torch.float32 and batch["input"].shape[1:] == (1, 4, 4)
            assert batch["target"].dtype == torch.int64 and batch["index"].dtype == torch.int64
            assert torch.equal(batch["input"], data.inputs[batch["index"]])
            assert torch.equal(batch["target"], data.targets[batch["index"]])
        order = torch.cat([b["index"] for b in batches])
        assert sorted(order.tolist()) == list(range(23))
        orders.append(order)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    # a pure function of (seed, epoch): a fresh loader agrees, another seed does not
    assert torch.equal(InMemoryLoader(data, 5, seed=1).permutation(2), orders[2])
    assert not torch.equal(InMemoryLoader(data, 5, seed=2).permutation(2), orders[2])


def test_resume_equals_tail_of_full_epoch_with_augmentation():
    loader = InMemoryLoader(toy_dataset(shape=(2, 6, 6)), 4, seed=7, augment=RandomCropFlip(padding=2))
    full = collect(loader.epoch_batches(3))
    for start in (0, 2, 5, len(loader)):
        assert_same_batches(collect(loader.epoch_batches(3, start=start)), full[start:])
    assert_same_batches(collect(loader.epoch_batches(3)), full)  # augmentation reproduced
    with pytest.raises(ValueError, match=r"start must be in \[0, 6\]"):
        loader.epoch_batches(0, start=7)


def test_plain_iteration_walks_epochs():
    loader = InMemoryLoader(toy_dataset(), 5, seed=0)
    first, second = collect(iter(loader)), collect(iter(loader))
    assert_same_batches(first, collect(loader.epoch_batches(0)))
    assert_same_batches(second, collect(loader.epoch_batches(1)))
    assert loader.epoch == 2


def test_drop_last_and_no_shuffle():
    data = toy_dataset()
    loader = InMemoryLoader(data, 5, drop_last=True, seed=0)
    batches = collect(loader.epoch_batches(0))
    assert len(loader) == len(batches) == 4 and all(len(b["index"]) == 5 for b in batches)
    assert len(set(torch.cat([b["index"] for b in batches]).tolist())) == 20
    ordered = collect(InMemoryLoader(data, 5, shuffle=False).epoch_batches(4))
    assert torch.cat([b["index"] for b in ordered]).tolist() == list(range(23))
    with pytest.raises(ValueError, match="leaves no batch"):
        InMemoryLoader(data, 24, drop_last=True)
    with pytest.raises(ValueError, match="batch_size"):
        InMemoryLoader(data, 0)


def test_iterate_batches_in_order():
    data = toy_dataset()
    batches = collect(iterate_batches(data, 10))
    assert [len(b["index"]) for b in batches] == [10, 10, 3]
    assert torch.equal(torch.cat([b["input"] for b in batches]), data.inputs)


# --------------------------------------------------------------------------- augmentations
def one_hot_images(batch=64, size=16, at=(8, 8)):
    images = torch.zeros(batch, 1, size, size)
    images[:, 0, at[0], at[1]] = 1.0
    return images


def hot_positions(images):
    """(B, 2) row, col of the single 1 in each image; asserts there is exactly one."""
    flat = images[:, 0].flatten(1)
    assert torch.equal((flat == 1).sum(1), torch.ones(len(flat), dtype=torch.long))
    index = flat.argmax(1)
    return torch.stack([index // images.shape[-1], index % images.shape[-1]], 1)


@pytest.mark.parametrize("max_shift", [1, 3])
def test_random_shift_moves_by_at_most_max_shift_and_varies(max_shift):
    images = one_hot_images()
    shifted = RandomShift(max_shift, fill=0.0)(images, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    moves = hot_positions(shifted) - torch.tensor([8, 8])
    assert moves.abs().max() == max_shift  # bounded, and the extremes occur in 64 draws
    assert len({tuple(m) for m in moves.tolist()}) > 3
    assert torch.equal(shifted, RandomShift(max_shift, fill=0.0)(images, torch.Generator().manual_seed(0)))


def test_shift_fill_min_and_content_preserved():
    images = torch.randn(8, 3, 5, 5)
    out = RandomShift(2)(images, torch.Generator().manual_seed(1))
    low = images.amin(dim=(2, 3), keepdim=True)
    assert torch.all(out >= low - 1e-6)  # only image content or its per-channel minimum
    assert torch.equal(RandomShift(0)(images), images)


def test_crop_flip_zero_padding_flips_exactly_and_varies():
    images = torch.randn(32, 3, 6, 6)
    out = RandomCropFlip(padding=0)(images, torch.Generator().manual_seed(0))
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped) and same.any() and flipped.any()


def test_crop_flip_is_a_bounded_shift_without_flip():
    moves = hot_positions(RandomCropFlip(padding=4, flip=False)(one_hot_images(), torch.Generator().manual_seed(2)))
    assert (moves - torch.tensor([8, 8])).abs().max() == 4


def test_crop_then_flip_matches_reference():
    """Against torchvision's order: pad, crop, then mirror the crop."""
    images = torch.randn(1, 2, 5, 7)
    from distill.data.augment import shift_flip

    out = shift_flip(images, torch.tensor([2]), torch.tensor([-1]), torch.tensor([True]), fill=0.0)
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3))
    # content moved right by 2, up by 1 == crop starting at row 3 + 1, col 3 - 2
    reference = padded[:, :, 4:9, 1:8].flip(-1)
    assert torch.equal(out, reference)


def test_repr_fingerprint_and_registry():
    shift, crop = RandomShift(2), RandomCropFlip(padding=4, flip=False, fill="min")
    assert repr(shift) == "RandomShift(max_shift=2, fill='min')"
    assert repr(crop) == "RandomCropFlip(padding=4, flip=False, fill='min')"
    assert shift.fingerprint != RandomShift(3).fingerprint and "RandomShift" in shift.fingerprint
    assert AUGMENTS.get("shift") is RandomShift and AUGMENTS.get("crop_flip") is RandomCropFlip
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(ValueError, match="fill"):
        RandomCropFlip(fill="edge")


@pytest.mark.parametrize("batch_size", [0, -1, -64, True, 2.5, "8"])
def test_a_bad_batch_size_is_refused_naming_it(batch_size):
    data = toy_dataset()
    with pytest.raises(ValueError, match=rf"batch_size must be an int >= 1, got {batch_size!r}"):
        InMemoryLoader(data, batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        iterate_batches(data, batch_size)


@pytest.mark.parametrize("world_size", [0, -2])
def test_a_non_positive_world_size_is_refused_naming_it(world_size):
    with pytest.raises(ValueError, match=rf"world_size must be an int >= 1.*got {world_size}"):
        InMemoryLoader(toy_dataset(), 4, rank=0, world_size=world_size, drop_last=True)
