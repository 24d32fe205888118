"""``distill diffusion ...``: train a teacher, distil it (progressive | consistency | regression), sample.

    distill diffusion train-teacher --data digits --out runs/diffusion/digits
    distill diffusion distill --method consistency --teacher runs/diffusion/digits/teacher.safetensors --out runs/diffusion/cd
    distill diffusion sample runs/diffusion/cd/student.safetensors --steps 1 --steps 2 --steps 4 --out runs/diffusion/cd/samples

Every command writes a model file that rebuilds itself (:mod:`distill.diffusion.io`) and a
``history.json``; ``sample`` writes ``samples.png`` (one panel per step count) and ``report.md``.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Diffusion step distillation: teachers, progressive / consistency / regression students, samples.")
METHODS = ("progressive", "consistency", "regression")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _setup(threads: int, seed: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def _write_history(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(record, indent=2))


def _main_process() -> bool:
    """True in a plain run and in process 0 of a ``torchrun`` launch (the one that writes files)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """A run folder for training: refuse to start over a run's checkpoints unless told what to do."""
    from distill.safety import FolderError, check_writable_dir, mark_owned, remove_owned
    from distill.training.checkpoint import latest_checkpoint

    check_writable_dir(out, "--out")
    held = [p.parent for p in [out / "checkpoints", *sorted(out.glob("round_*/checkpoints"))] if latest_checkpoint(p)]
    if resume and not held:
        raise FileNotFoundError(f"--resume: {out} holds no checkpoint to continue; run without --resume to start")
    if held and not resume:
        if not overwrite:
            raise FolderError(f"--out {out} holds a diffusion run (checkpoints in {', '.join(map(str, held))}); "
                              "pass --resume to continue it, --overwrite to start again, or choose another --out")
        if _main_process():
            remove_owned(out, "--out")
    if _main_process():
        mark_owned(out, "diffusion run")


@app.command("train-teacher")
def train_teacher_command(
    data: str = typer.Option("digits", help="toy | digits | mnist"),
    out: Path = typer.Option(Path("runs/diffusion/teacher"), help="run folder"),
    steps: int = typer.Option(3000, help="training steps"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(1e-3),
    size: str = typer.Option("default", help="default | small (smoke tests)"),
    arch: Optional[str] = typer.Option(None, help="time_mlp | tiny_unet (default: tiny_unet for mnist, else time_mlp)"),
    root: Optional[Path] = typer.Option(None, help="MNIST IDX folder, e.g. ../shared/data/mnist"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch threads (recorded)"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly from the last checkpoint in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start again over a run distill made in --out"),
    checkpoint_every: int = typer.Option(0, help="optimiser steps between checkpoints (0: at the end only)"),
) -> None:
    """Train a v-parameterised teacher (cosine schedule) on a data set; under torchrun, data-parallel."""
    from distill.diffusion.io import save_diffusion_model
    from distill.diffusion.pipeline import load_images, teacher_denoiser
    from distill.diffusion.teacher import train_teacher

    _setup(threads, seed)
    try:
        _prepare_out(out, resume, overwrite)
        images, _ = load_images(data, "train", root)
        teacher, history = train_teacher(teacher_denoiser(data, tuple(images.shape[1:]), size, arch), images,
                                         num_steps=steps, batch_size=batch_size, lr=lr, seed=seed, run_dir=out,
                                         resume=resume, checkpoint_every=checkpoint_every)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if not _main_process():
        return
    path = save_diffusion_model(teacher, out / "teacher.safetensors", data=data, root=str(root) if root else None,
                                num_steps=64)
    _write_history(out, {"command": "train-teacher", "threads": threads, "seed": seed, **history})
    typer.echo(f"teacher: {path} ({history['seconds']:.1f} s, final loss {history['losses'][-1]:.4f})")


@app.command("distill")
def distill_command(
    teacher: Path = typer.Option(..., help="teacher.safetensors from train-teacher"),
    method: str = typer.Option("consistency", help="progressive | consistency | regression"),
    out: Path = typer.Option(Path("runs/diffusion/student"), help="run folder"),
    steps: int = typer.Option(1500, help="training steps (progressive: per round)"),
    lr: float = typer.Option(3e-4),
    batch_size: int = typer.Option(128),
    start_steps: int = typer.Option(256, help="progressive: the teacher's DDIM steps"),
    end_steps: int = typer.Option(1, help="progressive: the last student's steps"),
    solver: str = typer.Option("heun", help="consistency: heun | ddim teacher solver"),
    distance: str = typer.Option("l2", help="consistency: l2 | l1 | pseudo_huber"),
    mu: float = typer.Option(0.95, help="consistency: EMA decay of the target network"),
    grid_points: int = typer.Option(18, help="consistency: Karras grid points"),
    pairs: int = typer.Option(4096, help="regression: ODE pairs"),
    teacher_steps: int = typer.Option(64, help="regression: DDIM steps of the teacher's ODE"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1),
    resume: bool = typer.Option(False, "--resume", help="continue exactly from the last checkpoint in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start again over a run distill made in --out"),
    checkpoint_every: int = typer.Option(0, help="optimiser steps between checkpoints (0: at the end only)"),
) -> None:
    """Distil a teacher into a few-step student; writes student.safetensors (progressive: one per round).
    Under torchrun, data-parallel."""
    import torch

    from distill.diffusion.consistency import consistency_distillation
    from distill.diffusion.io import load_diffusion_model, save_diffusion_model
    from distill.diffusion.pipeline import load_images
    from distill.diffusion.progressive import progressive_distillation
    from distill.diffusion.regression import regression_distillation

    if method not in METHODS:
        _fail(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    _setup(threads, seed)
    resumable = {"run_dir": out, "resume": resume, "checkpoint_every": checkpoint_every}
    try:
        _prepare_out(out, resume, overwrite)
        model, spec = load_diffusion_model(teacher)
        if spec["kind"] != "denoiser":
            raise ValueError(f"{teacher} is a {spec['kind']} model; distil from a denoiser (train-teacher's output)")
        images, _ = load_images(spec["data"], "train", spec.get("root"))
        extra = {"data": spec["data"], "root": spec.get("root")}
        if method == "progressive":
            students, history = progressive_distillation(model, images, start_steps=start_steps, end_steps=end_steps,
                                                         num_steps_per_round=steps, batch_size=batch_size, lr=lr,
                                                         seed=seed, **resumable)
            if not _main_process():
                return
            for n, student in students.items():
                save_diffusion_model(student, out / f"student_{n}steps.safetensors", num_steps=n, **extra)
            path = save_diffusion_model(students[end_steps], out / "student.safetensors", num_steps=end_steps, **extra)
            record = {"rounds": history, "seconds": sum(h["seconds"] for h in history)}
        elif method == "consistency":
            student, record = consistency_distillation(model, images, num_steps=steps, batch_size=batch_size, lr=lr,
                                                       num_grid_points=grid_points, mu=mu, solver=solver,
                                                       kind=distance, seed=seed, **resumable)
            if not _main_process():
                return
            path = save_diffusion_model(student, out / "student.safetensors", num_steps=1, **extra)
        else:
            noise = torch.randn(pairs, *images.shape[1:], generator=torch.Generator().manual_seed(seed))
            student, record = regression_distillation(model, noise, teacher_steps=teacher_steps, num_steps=steps,
                                                      batch_size=batch_size, lr=lr, seed=seed, **resumable)
            if not _main_process():
                return
            path = save_diffusion_model(student, out / "student.safetensors", num_steps=1, **extra)
    except (ValueError, FileNotFoundError) as exc:  # FolderError and NonFiniteError are ValueErrors
        _fail(str(exc))
    _write_history(out, {"command": "distill", "method": method, "teacher": str(teacher), "threads": threads,
                         "seed": seed, **record})
    typer.echo(f"{method} student: {path} ({record['seconds']:.1f} s)")


@app.command("sample")
def sample_command(
    model_path: Path = typer.Argument(..., help="a diffusion model file"),
    steps: List[int] = typer.Option([1, 2, 4], help="step counts (repeat the option)"),
    num: int = typer.Option(256, help="samples per step count"),
    sampler: str = typer.Option("ddim", help="ddim | euler | heun (denoisers)"),
    out: Optional[Path] = typer.Option(None, help="folder (default: next to the model, samples/)"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1),
) -> None:
    """Sample at each step count; write samples.png, samples.safetensors and report.md."""
    import torch
    from safetensors.torch import save_file

    from distill.diffusion.io import load_diffusion_model
    from distill.diffusion.metrics import mmd2, sliced_wasserstein, time_per_sample
    from distill.diffusion.pipeline import generate, load_images
    from distill.diffusion.report import sample_report, write_sample_grid

    _setup(threads, seed)
    out = out or model_path.parent / "samples"
    try:
        model, spec = load_diffusion_model(model_path)
        held_out, _ = load_images(spec["data"], "test", spec.get("root"))
        noise = torch.randn(num, *held_out.shape[1:], generator=torch.Generator().manual_seed(seed))
        samples, rows = {}, {}
        for n in steps:
            samples[n] = generate(model, noise, n, sampler, generator=torch.Generator().manual_seed(seed + 1))
            reference = held_out[torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed))[:num]]
            rows[n] = {"mmd2": mmd2(samples[n], reference), "sliced_w2": sliced_wasserstein(samples[n], reference),
                       "ms_per_sample": 1e3 * time_per_sample(lambda: generate(model, noise, n, sampler), num, repeats=3)}
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    save_file({f"steps_{n}": x.contiguous() for n, x in samples.items()}, str(out / "samples.safetensors"))
    write_sample_grid(samples, out / "samples.png", title=f"{model_path.name} ({spec['kind']})")
    command = (f"distill diffusion sample {shlex.quote(str(model_path))} " + " ".join(f"--steps {n}" for n in steps)
               + f" --num {num} --sampler {sampler} --seed {seed} --out {shlex.quote(str(out))}")
    (out / "report.md").write_text(sample_report(str(model_path), spec, rows, "samples.png", command))
    for n, row in rows.items():
        typer.echo(f"{n} steps: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    typer.echo(f"report: {out / 'report.md'}")
