"""Training checkpoints: written atomically, resumed exactly.

Layout of ``<run>/checkpoints/``::

    step-00000500/          one complete checkpoint (a folder is renamed into place
        model.safetensors   only once every file in it is written and synced)
        state.pt            optimiser, scheduler, RNG states, counters
        checksums.json      sha256 of each file above, checked before a resume uses them
    latest                  text file naming the newest complete checkpoint

A run killed while writing leaves a ``.tmp-*`` folder that is ignored (and removed by the next
start), and the previous checkpoint stays loadable. A checkpoint whose files no longer match
their checksums is skipped by :func:`latest_checkpoint` (``verify=True``), which says so and
falls back to the newest good one; non-finite weights are never written. ``state.pt`` holds only tensors and plain containers and is
read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file
from torch import nn

from distill.artifacts import ArtifactError, atomic_write, check_finite_state, load_state, load_weights, model_state
from distill.artifacts import state_copy, with_digest
from distill.safety import sha256_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
CHECKSUMS_FILE = "checksums.json"


class CheckpointError(ArtifactError):
    """A checkpoint that is damaged, or one that would hold non-finite weights."""


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
    weights = model_state(model) if isinstance(model, nn.Module) else state_copy(model)
    try:
        check_finite_state(weights, f"checkpoint step {step}")
    except ArtifactError as exc:
        raise CheckpointError(f"{exc}; the previous checkpoint in {directory} is kept") from None
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        save_file(weights, str(tmp / MODEL_FILE), metadata=with_digest(weights))
        torch.save(state, tmp / STATE_FILE)
        (tmp / CHECKSUMS_FILE).write_text(json.dumps({name: sha256_file(tmp / name) for name in (MODEL_FILE, STATE_FILE)}))
        for name in (MODEL_FILE, STATE_FILE, CHECKSUMS_FILE):
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


def checkpoint_problem(folder: Path) -> str | None:
    """Why the checkpoint ``folder`` cannot be trusted (a file missing or changed), or None when it is intact.

    Checkpoints written before checksums existed (no ``checksums.json``) are taken as they are."""
    folder = Path(folder)
    if not _complete(folder):
        return "incomplete (a file is missing)"
    checksums_path = folder / CHECKSUMS_FILE
    if not checksums_path.is_file():
        return None
    try:
        expected = json.loads(checksums_path.read_text())
    except (OSError, ValueError) as exc:
        return f"its {CHECKSUMS_FILE} is unreadable ({exc})"
    for name, digest in expected.items():
        if sha256_file(folder / name) != digest:
            return f"{name} does not match the sha256 recorded when it was written (a damaged file)"
    return None


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def latest_checkpoint(directory: Path, *, verify: bool = False, say: Callable[[str], None] = _say) -> Path | None:
    """The newest complete checkpoint folder, or None.

    ``verify``: also check each candidate's checksums, newest first; a damaged one is skipped with
    a message through ``say`` naming it, so a resume falls back to the previous good checkpoint.
    """
    directory = Path(directory)
    pointer = directory / "latest"
    candidates = [p for p in sorted(directory.glob("step-*")) if _complete(p)]
    if pointer.is_file():
        named = directory / pointer.read_text().strip()
        if _complete(named) and named in candidates:  # the pointer's choice first
            candidates.remove(named)
            candidates.append(named)
    if not verify:
        return candidates[-1] if candidates else None
    for candidate in reversed(candidates):
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate
        say(f"checkpoint {candidate} is damaged: {problem}; falling back to the previous checkpoint")
    return None


def load_checkpoint(path: Path, model: nn.Module, load: Callable[[nn.Module, dict], None] | None = None) -> dict[str, Any]:
    """Load weights into ``model`` and return the saved training state.

    ``load(model, state_dict)`` replaces ``model.load_state_dict`` (a sharded student's loader)."""
    problem = checkpoint_problem(Path(path))
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}")
    if load is None:
        load_weights(model, Path(path) / MODEL_FILE)
    else:
        load(model, load_state(Path(path) / MODEL_FILE, what="checkpoint weights"))
    return torch.load(Path(path) / STATE_FILE, weights_only=True)
