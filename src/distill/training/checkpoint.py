"""Training checkpoints: written atomically, resumed exactly.

Layout of ``<run>/checkpoints/``::

    step-00000500/          one complete checkpoint (a folder is renamed into place
        model.safetensors   only once every file in it is written and synced)
        state.pt            optimiser, scheduler, RNG states, counters
    latest                  text file naming the newest complete checkpoint

A run killed while writing leaves a ``.tmp-*`` folder that is ignored, and the previous
checkpoint stays loadable. ``state.pt`` holds only tensors and plain containers and is
read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distill.artifacts import atomic_write, load_weights, model_state, state_copy

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """The global torch RNG state (dropout etc.); data order and augmentation use their own
    generators seeded from (seed, epoch, batch), so they need no saved state."""
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    directory: Path,
    step: int,
    model: nn.Module | dict[str, torch.Tensor],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` under ``directory`` atomically; prune to ``keep`` newest.

    ``model``: the module, or its full state dict (a sharded student's, gathered beforehand)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        save_file(model_state(model) if isinstance(model, nn.Module) else state_copy(model), str(tmp / MODEL_FILE))
        torch.save(state, tmp / STATE_FILE)
        for name in (MODEL_FILE, STATE_FILE):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write(directory / "latest", lambda path: Path(path).write_text(final.name + "\n"))
    # keep ``final`` and the keep - 1 newest complete checkpoints before it; drop the rest
    # (incomplete folders, and later steps left by a run that was resumed from an earlier one)
    earlier = [p for p in sorted(directory.glob("step-*")) if p.name < final.name and _complete(p)]
    survivors = {final, *earlier[-(keep - 1):]} if keep > 1 else {final}
    for old in directory.glob("step-*"):
        if old not in survivors:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file() and (folder / MODEL_FILE).is_file()


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    directory = Path(directory)
    pointer = directory / "latest"
    if pointer.is_file():
        candidate = directory / pointer.read_text().strip()
        if _complete(candidate):
            return candidate
    complete = [p for p in sorted(directory.glob("step-*")) if _complete(p)]
    return complete[-1] if complete else None


def load_checkpoint(path: Path, model: nn.Module, load: Callable[[nn.Module, dict], None] | None = None) -> dict[str, Any]:
    """Load weights into ``model`` and return the saved training state.

    ``load(model, state_dict)`` replaces ``model.load_state_dict`` (a sharded student's loader)."""
    if load is None:
        load_weights(model, Path(path) / MODEL_FILE)
    else:
        load(model, load_file(str(Path(path) / MODEL_FILE)))
    return torch.load(Path(path) / STATE_FILE, weights_only=True)
