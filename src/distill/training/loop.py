"""The one training loop, on Hugging Face Accelerate.

Accelerate owns devices, mixed precision and gradient accumulation (and later DDP/FSDP);
this loop owns the order of things: batches in a seeded order that is a pure function of
(seed, epoch), the distillation objective, optimiser and schedule steps, metrics, and
checkpoints that resume a run exactly.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from distill.core.io import batch_size_of, to_device
from distill.distiller import Distiller
from distill.safety import NonFiniteError
from distill.training.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from distill.training.sharding import (
    full_model_state,
    full_optimizer_state,
    is_sharded,
    load_full_model_state,
    load_full_optimizer_state,
    optimizer_state_for,
)


@dataclass(frozen=True)
class LoopConfig:
    """What the loop needs to know about training, as a plain dataclass (the recipe's ``train:``
    section, or any object with these attributes, converts with :meth:`of`)."""

    grad_accum: int = 1
    max_grad_norm: float | None = None
    checkpoint_every: int = 0  # optimiser steps between checkpoints; 0 = at the end only
    keep_checkpoints: int = 2
    log_every: int = 50
    eval_every_epoch: bool = True
    skip_nonfinite: int = 0  # micro-batches with a NaN / inf loss skipped before the run stops
    tensorboard: bool = False  # also write every metrics record to TensorBoard (<run_dir>/tensorboard)

    @classmethod
    def of(cls, spec: Any) -> "LoopConfig":
        """A LoopConfig from ``spec`` (a LoopConfig, or e.g. the recipe's TrainSpec)."""
        if isinstance(spec, cls):
            return spec
        return cls(**{f.name: getattr(spec, f.name) for f in fields(cls) if hasattr(spec, f.name)})


class MetricsLog:
    """Append-only JSONL metrics file (one record per line), and optionally TensorBoard scalars.

    ``tensorboard``: a folder for ``torch.utils.tensorboard.SummaryWriter``; every numeric field of a
    record becomes the scalar ``<split>/<field>`` at the record's ``step``."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard: Path | None = None) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ModuleNotFoundError(f"train.tensorboard needs the tensorboard package ({exc}): "
                                          "pip install 'distill[tensorboard]'", name="tensorboard") from None
            self.writer = SummaryWriter(log_dir=str(tensorboard))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.writer is not None:
                split, step = record.get("split", "train"), int(record.get("step", 0))
                for key, value in record.items():
                    if key not in ("step", "epoch", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.writer.add_scalar(f"{split}/{key}", value, step)
                self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def truncate_after(self, step: int, epoch: int | None = None) -> None:
        """Drop the records a run resumed at (``step``, ``epoch``) writes again: those past
        ``step``, and test records of epochs from ``epoch`` on (an epoch that ended exactly at
        the checkpoint's step is evaluated again after the resume)."""
        if not (self.enabled and self.path.is_file()):
            return

        def keep(record: dict[str, Any]) -> bool:
            if record.get("step", 0) > step:
                return False
            return not (epoch is not None and record.get("split") == "test" and record.get("epoch", -1) >= epoch)

        kept = [line for line in self.path.read_text().splitlines() if line and keep(json.loads(line))]
        self.path.write_text("".join(line + "\n" for line in kept))


@dataclass
class TrainState:
    """Counters saved in every checkpoint."""

    step: int = 0  # optimiser steps done
    micro: int = 0  # micro-batches done
    epoch: int = 0  # current epoch
    batch: int = 0  # next batch index within ``epoch``
    samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# NonFiniteError: training met a NaN / inf loss (beyond ``train.skip_nonfinite``): the run stops, its
# last good checkpoint is kept, and no model file is written.


def _nonfinite_causes(distiller: Distiller, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> str:
    """What went non-finite in one micro-batch: the loss terms, and whether the inputs or the
    teacher's outputs already were (sample ids named)."""
    terms = [key for key, value in out.items() if key != "loss" and not bool(torch.isfinite(value).all())]
    parts = [f"loss terms {terms} are NaN/inf" if terms else "the total loss is NaN/inf"]
    ids = batch.get("index")

    def which(rows: torch.Tensor) -> str:
        bad = (~torch.isfinite(rows.float().reshape(len(rows), -1))).any(-1)
        chosen = ids[bad] if ids is not None else bad.nonzero().flatten()
        return ", ".join(str(int(i)) for i in chosen[:8].tolist()) + (" ..." if int(bad.sum()) > 8 else "")

    inputs = batch.get("input")
    tensors = [inputs] if isinstance(inputs, torch.Tensor) else list((inputs or {}).values())
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            parts.append(f"the data holds NaN/inf inputs (samples {which(tensor)})")
            break
    teacher_logits = None
    try:
        if distiller.teacher_outputs is not None and ids is not None:
            teacher_logits = distiller.teacher_outputs[ids]
        elif distiller.teacher is not None and inputs is not None:
            teacher_logits = distiller.teacher_logits(inputs)
    except Exception:  # a diagnosis only: never hide the real error behind another
        teacher_logits = None
    if isinstance(teacher_logits, torch.Tensor) and not bool(torch.isfinite(teacher_logits).all()):
        parts.append(f"the teacher's outputs are NaN/inf (samples {which(teacher_logits)})")
    return "; ".join(parts)


def with_token_normaliser(batches, task, grad_accum: int, accelerator: Accelerator, micro: int):
    """``batches`` with ``batch["token_normaliser"]`` set for a token-level task: the valid tokens of
    the whole optimiser step (its ``grad_accum`` micro-batches, summed over every process) divided by
    ``grad_accum x processes`` (see :mod:`distill.tasks.token`). Looks ahead one step's micro-batches.
    ``micro``: micro-batches done so far (a resumed run starts on a step boundary). Exact within an
    epoch; a step that spans the end of an epoch is normalised by the part in each epoch."""
    import itertools

    iterator = iter(batches)
    need = grad_accum - micro % grad_accum
    while True:
        window = list(itertools.islice(iterator, need))
        if not window:
            return
        count = torch.tensor([float(sum(task.count(batch) for batch in window))], device=accelerator.device)
        if accelerator.num_processes > 1:
            count = accelerator.reduce(count, reduction="sum")
        normaliser = (count[0] / (grad_accum * accelerator.num_processes)).clamp(min=1e-6)
        for batch in window:
            batch["token_normaliser"] = normaliser
            yield batch
        need = grad_accum


class StopTraining(Exception):
    """Raised by an ``on_step`` callback to end training early: the loop checkpoints the step
    just done and re-raises, so the run resumes exactly from there (``--resume``)."""


def train(
    distiller: Distiller,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    spec: LoopConfig | Any,
    *,
    accelerator: Accelerator,
    run_dir: Path,
    total_steps: int,
    resume: bool = False,
    fingerprint: str = "",
    evaluate_epoch: Callable[[int], dict[str, Any]] | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    after_step: Callable[[TrainState], None] | None = None,
    prepare_batches: Callable[[Any, int], Any] | None = None,
    progress: bool = True,
) -> TrainState:
    """Train ``distiller.student`` for ``total_steps`` optimiser steps.

    ``loader.epoch_batches(epoch, start)`` yields batches (dicts of tensors) of one epoch in
    a seeded order; ``len(loader)`` is batches per epoch. ``optimizer``/``distiller.student``
    must already be prepared by ``accelerator``. ``evaluate_epoch(epoch)`` returns metrics
    logged at each epoch end. ``on_step`` is called after every optimiser step (it may raise
    :class:`StopTraining`, which saves a checkpoint of that step, then propagates; any other
    exception propagates with the last periodic checkpoint left as it was). ``after_step`` is
    part of the update itself (an EMA of the weights, say): it runs right after the optimiser
    and schedule steps, before any logging or checkpoint, so a checkpoint holds its effect.
    ``prepare_batches(batches, first_micro)`` may replace batches before the loss sees them (and
    before a token task counts their valid tokens): it gets each epoch's batches, on the device,
    and the run's index of the first of them (micro-batches done), e.g. on-policy sampling
    (:meth:`distill.llm.onpolicy.OnPolicy.batches`). Returns the final counters.
    """
    spec = LoopConfig.of(spec)  # plain values from here on (a recipe's train: section converts)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=accelerator.is_main_process,
                         tensorboard=run_dir / "tensorboard" if spec.tensorboard else None)
    student = distiller.student
    model = accelerator.unwrap_model(student)
    sharded = is_sharded(model)  # train.strategy fsdp: state is gathered by every process, written by one
    state = TrainState()
    running: dict[str, torch.Tensor] = {}  # sums over the current logging window
    running_count = 0
    skipped = 0  # non-finite micro-batches skipped (train.skip_nonfinite)

    if resume:
        found = latest_checkpoint(ckpt_dir, verify=True, say=lambda message: tqdm.write(f"--resume: {message}", file=sys.stderr))
        if found is None:
            raise FileNotFoundError(f"--resume: no complete, intact checkpoint under {ckpt_dir}; run with --overwrite "
                                    "to start this run again")
        saved = load_checkpoint(found, model, load=load_full_model_state if sharded else None)
        if fingerprint and saved.get("fingerprint") != fingerprint:
            raise ValueError(
                f"--resume: the checkpoint {found} was made by another recipe "
                f"(fingerprint {saved.get('fingerprint')} != {fingerprint}); resume with the same recipe"
            )
        inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper holds the torch optimiser
        optimizer_state = optimizer_state_for(saved["optimizer"], model, inner, by_name=sharded)
        if sharded:
            load_full_optimizer_state(model, inner, optimizer_state)
        else:
            optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        state = TrainState(**saved["counters"])
        skipped = int(state.extra.get("skipped_nonfinite", 0))
        if accelerator.num_processes > 1:  # per-process streams (the checkpoint holds the main one)
            torch.manual_seed(state.step * 1_000_003 + accelerator.process_index)
        window = saved.get("window", {"sums": {}, "count": 0})  # so the next record averages the same steps
        running = {key: value.to(accelerator.device) for key, value in window["sums"].items()}
        running_count = int(window["count"])
        metrics.truncate_after(state.step, state.epoch)
        accelerator.step = state.micro  # keeps gradient-accumulation boundaries where they were

    batches_per_epoch = len(loader)
    if batches_per_epoch == 0:
        raise ValueError("the training data gives no batch: lower data.batch_size or turn off drop_last")

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        weights = optimizer_state = None
        if sharded:  # collectives: every process gathers, the main one writes
            weights = full_model_state(model)
            optimizer_state = full_optimizer_state(model, getattr(optimizer, "optimizer", optimizer))
        if accelerator.is_main_process:
            payload = {
                "optimizer": optimizer_state if sharded else optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "counters": state.__dict__,
                "window": {"sums": {key: value.detach().cpu() for key, value in running.items()}, "count": running_count},
                "fingerprint": fingerprint,
            }
            save_checkpoint(ckpt_dir, state.step, weights if sharded else model, payload, keep=spec.keep_checkpoints)

    bar = tqdm(total=total_steps, initial=state.step, desc="train", unit="step", disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    student.train()
    window_start, window_samples = time.perf_counter(), 0
    done = state.step >= total_steps
    task = getattr(distiller, "task", None)
    while not done:
        batches = loader.epoch_batches(state.epoch, state.batch)
        if prepare_batches is not None:
            batches = prepare_batches((to_device(b, accelerator.device) for b in batches), state.micro)
        if task is not None and task.token_level:  # losses divide by the step's global count of valid tokens
            batches = with_token_normaliser((to_device(b, accelerator.device) for b in batches), task,
                                            spec.grad_accum, accelerator, state.micro)
        for batch in batches:
            batch = to_device(batch, accelerator.device, non_blocking=True)
            with accelerator.accumulate(student):
                if hasattr(distiller, "step"):  # loss terms with a warm-up read it
                    distiller.step = state.step
                with accelerator.autocast():
                    out = distiller(batch)
                bad = ~torch.isfinite(out["loss"].detach()).all()
                if accelerator.num_processes > 1:  # every process skips or stops together
                    bad = accelerator.reduce(bad.float().reshape(1), reduction="sum")[0] > 0
                if bool(bad):
                    where = (f"optimiser step {state.step + 1} (epoch {state.epoch}, batch {state.batch})")
                    causes = _nonfinite_causes(distiller, batch, out)
                    if skipped >= spec.skip_nonfinite:
                        last = latest_checkpoint(ckpt_dir)
                        raise NonFiniteError(
                            f"training stopped at {where}: {causes}. "
                            + (f"The last good checkpoint, {last}, is kept (--resume continues from it); "
                               if last is not None else "No checkpoint was written yet; ")
                            + "no model file was written. Lower optimizer.lr, set train.max_grad_norm, check the "
                            "data and teacher, or set train.skip_nonfinite to skip a few bad batches")
                    skipped += 1
                    state.extra["skipped_nonfinite"] = skipped
                    tqdm.write(f"skipping a non-finite batch at {where} ({skipped} of train.skip_nonfinite="
                               f"{spec.skip_nonfinite}): {causes}", file=sys.stderr)
                    out = None  # nothing of this batch enters the gradient or the logged means
                else:
                    accelerator.backward(out["loss"])
                if spec.max_grad_norm is not None and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(student.parameters(), spec.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            size = batch_size_of(batch["input"]) * accelerator.num_processes  # global samples
            state.micro += 1
            state.batch += 1
            state.samples += size
            window_samples += size
            if out is not None:
                for key, value in out.items():
                    running[key] = running.get(key, 0.0) + value.detach()
                running_count += 1
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            scheduler.step()
            if after_step is not None:
                after_step(state)
            bar.update(1)
            if (state.step % spec.log_every == 0 or state.step == total_steps) and running_count:
                elapsed = time.perf_counter() - window_start
                record = {"step": state.step, "epoch": state.epoch, "split": "train", "lr": scheduler.get_last_lr()[0]}
                keys = sorted(running)
                values = torch.stack([torch.as_tensor(running[key], dtype=torch.float32, device=accelerator.device) for key in keys])
                if accelerator.num_processes > 1:  # the mean over processes = the mean over the global batch
                    values = accelerator.reduce(values, reduction="mean")
                record.update({key: float(value) / running_count for key, value in zip(keys, values.tolist())})
                record["samples_per_s"] = window_samples / elapsed if elapsed > 0 else None
                metrics.write(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                running, running_count = {}, 0
                window_start, window_samples = time.perf_counter(), 0
            saved_now = bool(spec.checkpoint_every and state.step % spec.checkpoint_every == 0 and state.step < total_steps)
            if saved_now:
                checkpoint()
            if on_step is not None:
                try:
                    on_step(state)
                except StopTraining:
                    if not saved_now:
                        checkpoint()
                    bar.close()
                    raise
            if state.step >= total_steps:
                done = True
                break
        if state.batch >= batches_per_epoch or done:
            if state.batch >= batches_per_epoch:  # a whole epoch ended
                # every process calls it (a sharded student's forward is collective); the main one logs
                if evaluate_epoch is not None and spec.eval_every_epoch:
                    record = {"step": state.step, "epoch": state.epoch, "split": "test"}
                    record.update(evaluate_epoch(state.epoch))
                    metrics.write(record)
                    student.train()
                state.epoch += 1
                state.batch = 0
    bar.close()
    checkpoint()
    metrics.close()
    return state
