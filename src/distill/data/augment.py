"""Batch augmentations: ``aug(inputs (B, C, H, W), generator) -> (B, C, H, W)``, vectorised.

Random draws come from the given CPU ``torch.Generator`` only, so a loader that seeds it
from (seed, epoch, batch) reproduces every batch exactly on resume. ``fingerprint`` names
the augmentation and its arguments, for caches of teacher outputs that it must invalidate.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import AUGMENTS


def shift_flip(inputs: Tensor, dx: Tensor, dy: Tensor, flip: Tensor | None = None,
               fill: float | str = 0.0) -> Tensor:
    """Move each image's content by (dx[b], dy[b]) pixels (right, down), then optionally mirror it.

    inputs (B, C, H, W); dx, dy (B,) int64; flip (B,) bool mirrors left-right after the shift
    (as crop-then-flip does): ``out[b, :, y, x] = in[b, :, y - dy, x' - dx]`` with
    ``x' = W - 1 - x`` where flipped, else ``x``. Pixels from outside the image are ``fill``:
    a number, or ``"min"`` for each image's per-channel minimum (its background in normalised
    MNIST-like data). One gather, no Python loop over samples.
    """
    _check_fill(fill)
    batch, _, height, width = inputs.shape
    device = inputs.device
    dx, dy = dx.to(device).view(batch, 1), dy.to(device).view(batch, 1)
    cols = torch.arange(width, device=device).expand(batch, width)
    if flip is not None:
        cols = torch.where(flip.to(device).view(batch, 1), width - 1 - cols, cols)
    src_cols = cols - dx  # (B, W)
    src_rows = torch.arange(height, device=device) - dy  # (B, H)
    valid = (((src_rows >= 0) & (src_rows < height)).view(batch, 1, height, 1)
             & ((src_cols >= 0) & (src_cols < width)).view(batch, 1, 1, width))
    gathered = inputs[torch.arange(batch, device=device).view(batch, 1, 1),
                      :, src_rows.clamp(0, height - 1).view(batch, height, 1),
                      src_cols.clamp(0, width - 1).view(batch, 1, width)]  # (B, H, W, C)
    gathered = gathered.permute(0, 3, 1, 2)
    if fill == "min":
        fill_value = inputs.amin(dim=(2, 3), keepdim=True)
    else:
        fill_value = torch.tensor(float(fill), dtype=inputs.dtype, device=device)
    return torch.where(valid, gathered, fill_value).contiguous()


def _check_fill(fill: float | str) -> None:
    if fill != "min" and (isinstance(fill, bool) or not isinstance(fill, (int, float))):
        raise ValueError(f"fill must be a number or 'min', got {fill!r}")


class _BatchAugment:
    """Shared shell: arguments stored verbatim, repr from them, fingerprint = versioned repr."""

    version = 1
    _args: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._args)
        return f"{type(self).__name__}({args})"

    @property
    def fingerprint(self) -> str:
        return f"{self!r}@v{self.version}"

    @staticmethod
    def _offsets(batch: int, max_shift: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        dx, dy = torch.randint(-max_shift, max_shift + 1, (2, batch), generator=generator)
        return dx, dy


@AUGMENTS.register("shift")
class RandomShift(_BatchAugment):
    """Shift each image by integers dx, dy drawn uniformly from [-max_shift, max_shift].

    Uncovered pixels take ``fill`` (default ``"min"``: each image's per-channel minimum,
    the background of normalised digit images; or a number, 0.0 being the data mean).
    """

    _args = ("max_shift", "fill")

    def __init__(self, max_shift: int = 2, fill: float | str = "min") -> None:
        if not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
        _check_fill(fill)
        self.max_shift = max_shift
        self.fill = fill

    def __call__(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """inputs (B, C, H, W) -> shifted (B, C, H, W)."""
        dx, dy = self._offsets(len(inputs), self.max_shift, generator)
        return shift_flip(inputs, dx, dy, None, self.fill)


@AUGMENTS.register("crop_flip")
class RandomCropFlip(_BatchAugment):
    """CIFAR-style pad by ``padding``, random crop back to (H, W), then a horizontal flip with p=0.5.

    Pad-then-crop equals a shift by an offset in [-padding, padding]; padded pixels take
    ``fill`` (0.0: the data mean once normalised; or ``"min"``).
    """

    _args = ("padding", "flip", "fill")

    def __init__(self, padding: int = 4, flip: bool = True, fill: float | str = 0.0) -> None:
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {padding!r}")
        _check_fill(fill)
        self.padding = padding
        self.flip = flip
        self.fill = fill

    def __call__(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """inputs (B, C, H, W) -> cropped and maybe flipped (B, C, H, W)."""
        dx, dy = self._offsets(len(inputs), self.padding, generator)
        flips = torch.rand(len(inputs), generator=generator) < 0.5 if self.flip else None
        return shift_flip(inputs, dx, dy, flips, self.fill)
