"""``distill demo``: a real distillation on scikit-learn's digits, in about a minute.

Three runs of the same machinery ``distill run`` uses:

1. a CNN teacher trained on hard labels (reused from a cache folder when its recipe is unchanged),
2. an MLP student more than 10x smaller trained on hard labels alone,
3. the same student distilled from the teacher (soft targets at T=4 plus hard labels),

then one table comparing them on the held-out split, and a Markdown report with curves.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from distill.recipe import Recipe, load_recipe

TEACHER = {"model": "cnn", "params": {"channels": [32, 64], "convs_per_stage": 2, "dropout": 0.1}}
STUDENT = {"model": "mlp", "params": {"hidden": [32]}}
COMMON = {
    "seed": 0,
    "data": {"name": "digits", "batch_size": 64},
    "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4},
    "schedule": {"name": "cosine", "warmup_steps": 20},
}


def demo_recipes(out_dir: Path, teacher_dir: Path) -> dict[str, Recipe]:
    """The demo's three recipes; the distilled one reads the teacher from ``teacher_dir``."""
    teacher = load_recipe({**COMMON, "name": "teacher", "output_dir": str(teacher_dir), "student": TEACHER,
                           "train": {"epochs": 30}, "losses": [{"name": "cross_entropy"}]})
    scratch = load_recipe({**COMMON, "name": "student-from-scratch", "output_dir": str(out_dir / "student-from-scratch"),
                           "student": STUDENT, "train": {"epochs": 60}, "losses": [{"name": "cross_entropy"}]})
    distilled = load_recipe({
        **COMMON, "name": "student-distilled", "output_dir": str(out_dir / "student-distilled"), "student": STUDENT,
        "teacher": {"checkpoint": str(teacher_dir / "model.safetensors")}, "train": {"epochs": 60},
        "losses": [{"name": "kl", "weight": 0.9, "temperature": 4.0}, {"name": "cross_entropy", "weight": 0.1}],
    })
    return {"teacher": teacher, "scratch": scratch, "distilled": distilled}


def run_demo(out_dir: Path, cache_dir: Path, *, progress: bool = True, console=None) -> dict[str, dict[str, Any]]:
    """Run the demo into ``out_dir`` (replaced), caching the teacher under ``cache_dir``.

    Returns ``{"teacher": metrics, "student-from-scratch": ..., "student-distilled": ...}``.
    """
    from distill.report.demo import write_demo_report
    from distill.runner import run_recipe
    from distill.safety import check_writable_dir, mark_owned, remove_owned

    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    check_writable_dir(out_dir, "--out")
    remove_owned(out_dir, "--out folder")  # only a folder an earlier demo made (or an empty one)
    mark_owned(out_dir, "demo")
    say = console.print if console is not None else print

    # the teacher is cached under a name derived from its recipe (minus its output folder)
    probe = demo_recipes(out_dir, cache_dir)["teacher"]
    key = probe.model_copy(update={"output_dir": ""}).fingerprint()
    teacher_dir = cache_dir / f"demo-teacher-{key}"
    recipes = demo_recipes(out_dir, teacher_dir)
    results: dict[str, dict[str, Any]] = {}

    if (teacher_dir / "eval.json").is_file() and (teacher_dir / "model.safetensors").is_file():
        say(f"[1/3] teacher: reusing {teacher_dir}")
        results["teacher"] = json.loads((teacher_dir / "eval.json").read_text())
    else:
        say(f"[1/3] teacher: training {TEACHER['model']} {TEACHER['params']} (cached in {teacher_dir})")
        results["teacher"] = run_recipe(recipes["teacher"], overwrite=True, progress=progress).metrics
    shutil.copytree(teacher_dir, out_dir / "teacher", ignore=shutil.ignore_patterns(".distill.lock*"))

    say(f"[2/3] student from scratch: {STUDENT['model']} {STUDENT['params']} on hard labels")
    results["student-from-scratch"] = run_recipe(recipes["scratch"], progress=progress).metrics
    say("[3/3] student distilled: the same student, soft targets (T=4) + hard labels")
    results["student-distilled"] = run_recipe(recipes["distilled"], progress=progress).metrics

    # agreement / KL for the scratch student need the teacher's outputs: evaluate it again
    results["student-from-scratch"].update(_teacher_relative(out_dir / "student-from-scratch", teacher_dir))
    write_demo_report(out_dir, results)
    return results


def _teacher_relative(run_dir: Path, teacher_dir: Path) -> dict[str, float]:
    """Agreement and KL of a run's model with the teacher, on the test split."""
    from distill.artifacts import load_model
    from distill.data import build_dataset
    from distill.evaluation import compare_to_teacher, predict

    student, _ = load_model(run_dir / "model.safetensors")
    teacher, _ = load_model(teacher_dir / "model.safetensors")
    test = build_dataset("digits", "test")
    return compare_to_teacher(predict(student, test.inputs), predict(teacher, test.inputs))
