"""Diffusion training on the shared loop (:func:`distill.training.loop.train`).

Every diffusion method here (teacher training, progressive, consistency, regression, and the
classifier behind the Frechet distance) is an *objective*: a small object with ``student`` (the
network being trained, wrapped as a :class:`Trainee`) and ``__call__(batch) -> {"loss": ...}``.
:func:`train_objective` runs one on the loop every ``distill run`` uses, so diffusion gets what
that loop gives: Accelerate (devices, DDP under ``torchrun``), gradient clipping, checkpoints
with checksums, exact resume (``run_dir=`` + ``resume=True``), metrics in ``metrics.jsonl``,
non-finite losses stopped with the last good checkpoint kept.

Randomness: batches are real samples in the loop's seeded order (each epoch a permutation, the
global batch split between processes); noise levels and noise come from a generator seeded per
batch by :class:`NoiseSeeds` (a pure function of seed, epoch, batch and process), never from the
global RNG. An EMA copy of the weights (the teacher's EMA, consistency's target network theta-)
lives inside the :class:`Trainee`, so checkpoints hold it, and is updated after every optimiser
step through the loop's ``after_step``.
"""
from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from distill.core.teacher import freeze
from distill.data.loader import derive_seed
from distill.tasks.diffusion import DiffusionTask

CALLS = ("raw", "x0", "consistency")


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, mu: float) -> None:
    """``theta_target <- mu theta_target + (1 - mu) theta_online`` for every parameter
    (buffers copied). ``mu = 0`` makes the target a plain copy of the online weights (the
    choice Song & Dhariwal 2023 recommend for consistency models)."""
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"EMA decay mu must be in [0, 1], got {mu}")
    online_params = dict(online.named_parameters())
    for name, param in target.named_parameters():
        param.mul_(mu).add_(online_params[name].detach(), alpha=1.0 - mu)
    online_buffers = dict(online.named_buffers())
    for name, buffer in target.named_buffers():
        buffer.copy_(online_buffers[name])


def frozen(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with no parameter requiring grad (a teacher, a finished student, an EMA
    target): the one freeze helper, :func:`distill.core.teacher.freeze`."""
    return freeze(module, f"the {type(module).__name__}")


class Trainee(nn.Module):
    """The network being trained and, with ``ema_decay``, its EMA copy: one module, so a checkpoint
    holds both and DDP wraps the pair (the EMA copy has no trainable parameters).

    ``call`` says what ``forward(x, t)`` returns: ``"raw"`` the network's own output
    (``online(x, t)``: a Denoiser's eps / v / x_0 / flow, a classifier's logits), ``"x0"`` a
    Denoiser's clean-sample prediction (``online.predict(x, t).x0``), ``"consistency"`` a
    ConsistencyModel's ``f(x, sigma)``. Objectives call the trainee (not ``online`` directly), so
    DDP's gradient synchronisation sees every forward.
    """

    def __init__(self, online: nn.Module, *, call: str = "raw", ema_decay: float | None = None) -> None:
        super().__init__()
        if call not in CALLS:
            raise ValueError(f"unknown call {call!r}; valid: {', '.join(CALLS)}")
        if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1] (or None for no EMA copy), got {ema_decay}")
        self.online = online
        self.call = call
        self.ema_decay = ema_decay
        self.ema = freeze(copy.deepcopy(online), "the EMA copy") if ema_decay is not None else None

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        if self.call == "x0":
            return self.online.predict(x, t).x0
        return self.online(x) if t is None else self.online(x, t)

    def train(self, mode: bool = True) -> "Trainee":
        super().train(mode)
        if self.ema is not None:  # the EMA copy is a frozen model: always in eval mode
            self.ema.eval()
        return self

    def update_ema(self) -> None:
        if self.ema is not None:
            ema_update(self.ema, self.online, self.ema_decay)


class NoiseSeeds:
    """A batch source (the loop's contract: ``len()``, ``epoch_batches(epoch, start)``) that adds
    ``batch["noise_seed"] = derive_seed(seed, epoch, batch number)`` and ``batch["noise_share"] =
    (rank, world_size)`` to another's batches. Every process draws the noise of the whole global
    batch from that seed and keeps its rows ``rank::world_size`` (:class:`Draws`), as the loader
    shares the samples: W processes draw exactly what one process would."""

    def __init__(self, loader: Any, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.loader = loader
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return len(self.loader)

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        for number, batch in enumerate(self.loader.epoch_batches(epoch, start), start):
            batch["noise_seed"] = derive_seed(self.seed, epoch, number)
            batch["noise_share"] = (self.rank, self.world_size)
            yield batch


class Objective:
    """The contract :func:`distill.training.loop.train` needs of a "distiller": ``student`` (set to the
    prepared, possibly DDP-wrapped :class:`Trainee`), ``task``, ``teacher`` / ``teacher_outputs``
    (read only to explain a non-finite loss) and ``__call__(batch) -> {"loss": scalar}``.
    Subclasses implement :meth:`loss`; ``self.student(x, t)`` is the trainee's forward."""

    task = DiffusionTask()
    teacher_outputs = None

    def __init__(self, teacher: Any = None) -> None:
        self.teacher = teacher
        self.student: nn.Module | None = None  # set by train_objective after accelerator.prepare

    def loss(self, batch: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def samples(batch: dict[str, Any]) -> tuple[Tensor, "Draws"]:
        """(the batch's samples x_0 (B, ...), its :class:`Draws`)."""
        x0 = batch["input"]
        return x0, Draws(batch, x0.device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"loss": self.loss(batch)}

    def teacher_logits(self, inputs: Any) -> None:  # no per-sample teacher outputs to diagnose
        return None


def _unwrapped(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DDP keeps the model as .module


def history_from(run_dir: Path) -> list[float]:
    """Per-step training losses from a run folder's metrics.jsonl (logged every step)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [record["loss"] for record in records if record.get("split") == "train" and "loss" in record]


def train_objective(objective: Objective, trainee: Trainee, data: Any, *, num_steps: int, batch_size: int,
                    lr: float, seed: int = 0, grad_clip: float | None = 1.0, run_dir: str | Path | None = None,
                    resume: bool = False, checkpoint_every: int = 0, fingerprint: str = "",
                    progress: bool | None = None, on_step: Callable | None = None) -> dict[str, Any]:
    """Train ``trainee`` (in place) with Adam on ``objective`` for ``num_steps`` optimiser steps.

    ``data``: a :class:`distill.data.TensorData` (or an (N, ...) tensor) of training samples; batches of
    ``batch_size`` (the global batch under DDP) in a seeded order, the last partial batch dropped.
    ``run_dir``: where metrics.jsonl and checkpoints go (a temporary folder when None);
    ``resume=True`` continues exactly from its last checkpoint (same objective and settings,
    checked through ``fingerprint``). Returns ``{"losses": per-step losses, "seconds": ...,
    "num_steps": ..., "resumed_from": step}``.
    """
    import sys

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from distill.data.sources import TensorData, TensorLoader
    from distill.training.loop import LoopConfig, train

    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir= of the run to continue")
    if isinstance(data, Tensor):
        data = TensorData(data, name="samples")
    trainable = [p for p in trainee.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{type(trainee.online).__name__}: no trainable parameters")
    AcceleratorState._reset_state(reset_partial_state=False)  # each run configures its own (see runner)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world = accelerator.num_processes
    if len(data) < batch_size and world == 1:
        raise ValueError(f"batch_size {batch_size} is larger than the {len(data)} training samples; lower it")
    loader = NoiseSeeds(TensorLoader(data, batch_size, shuffle=True, drop_last=True, seed=seed,
                                     rank=accelerator.process_index, world_size=world),
                        seed, accelerator.process_index, world)
    if world > 1:  # dropout etc.: one stream per process
        torch.manual_seed(seed * 1_000_003 + accelerator.process_index)
    if isinstance(objective.teacher, nn.Module):
        objective.teacher.to(accelerator.device)
    optimizer = torch.optim.Adam(trainable, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    prepared, optimizer = accelerator.prepare(trainee, optimizer)
    objective.student = prepared
    show = sys.stderr.isatty() if progress is None else progress
    config = LoopConfig(max_grad_norm=grad_clip, checkpoint_every=checkpoint_every, log_every=1,
                        eval_every_epoch=False)
    with tempfile.TemporaryDirectory(prefix="distill-diffusion-") as scratch:
        folder = Path(scratch) if run_dir is None else Path(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            state = train(objective, loader, optimizer, scheduler, config, accelerator=accelerator, run_dir=folder,
                          total_steps=num_steps, resume=resume, fingerprint=fingerprint, on_step=on_step,
                          after_step=lambda _state: _unwrapped(prepared).update_ema(), progress=show)
        finally:
            objective.student = None
            from distill.training.precision import release_model

            release_model(accelerator, prepared)  # no autocast wrapper left on the trainee
        seconds = time.perf_counter() - start
        losses = history_from(folder)
    trainee.to("cpu")
    if isinstance(objective.teacher, nn.Module):
        objective.teacher.to("cpu")
    return {"losses": losses, "seconds": seconds, "num_steps": state.step}


class Draws:
    """This batch's random draws (noise levels, noise, indices) from its own seeded CPU generator
    (:func:`distill.tasks.diffusion.noise_generator`), moved to ``device``. Each draw's first
    dimension is this process's batch: the global batch's values are drawn and this process's rows
    (``rank::world_size``) kept, so data-parallel runs draw what one process would."""

    def __init__(self, batch: dict[str, Any], device: torch.device | str) -> None:
        from distill.tasks.diffusion import noise_generator

        self.generator = noise_generator(batch)
        self.rank, self.world_size = batch.get("noise_share", (0, 1))
        self.device = device

    def _share(self, draw: Callable[[tuple[int, ...]], Tensor], shape: tuple[int, ...]) -> Tensor:
        if self.world_size == 1:
            return draw(shape).to(self.device)
        values = draw((shape[0] * self.world_size, *shape[1:]))
        return values[self.rank::self.world_size].to(self.device)

    def rand(self, *shape: int) -> Tensor:
        """U(0, 1) of ``shape``."""
        return self._share(lambda size: torch.rand(size, generator=self.generator), shape)

    def randn(self, shape: tuple[int, ...] | torch.Size) -> Tensor:
        """N(0, I) of ``shape``."""
        return self._share(lambda size: torch.randn(size, generator=self.generator), tuple(shape))

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        """Integers in [low, high) of ``shape``."""
        return self._share(lambda size: torch.randint(low, high, size, generator=self.generator), shape)
