"""``distill bench``: teacher (eager), student (eager) and every exported variant, timed side by side.

All in one process with one thread count (torch and onnxruntime intra-op threads set
explicitly): median of repeated runs after warm-up, batch 1 and batch 64, on the same held-out
sample. Variants are read from an export folder (each ``<target>-<precision>/card.json``).

Nothing is timed on trust: every card is read and checked first (:func:`read_variant_card`), the
student checkpoint it names must still exist and hash to the sha256 the card recorded, and each
artifact must hash to its card's sha256, so a card left beside another checkpoint or a damaged
artifact is an :class:`ExportError` naming the file, never a traceback or a wrong row.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from distill.artifacts import load_model, refuse_code_named_by_file
from distill.export.runtime import EagerRunner, as_numpy, latency, run_batched
from distill.export.runtime import rows as take_rows
from distill.export.source import ExportError, file_sha256, load_student
from distill.export.targets import TARGETS, Target

# the card fields bench reads: (path of keys, type)
CARD_FIELDS: tuple[tuple[tuple[str, ...], type | tuple[type, ...]], ...] = (
    (("target",), str), (("precision",), str), (("status",), str),
    (("artifact", "file"), str), (("artifact", "bytes"), int), (("artifact", "sha256"), str),
    (("runtime", "name"), str),
    (("source", "checkpoint"), str), (("source", "sha256"), str),
    (("accuracy", "dataset"), str),
)


def variant_folders(export_dir: Path) -> list[Path]:
    """The variant folders (``<target>-<precision>/`` holding a ``card.json``) of ``export_dir``, sorted.

    Raises :class:`ExportError` when ``export_dir`` is missing, a file, or holds no variant
    (pointing at ``<dir>/export`` when ``export_dir`` is a run folder that has one).
    """
    export_dir = Path(export_dir)
    if not export_dir.exists():
        raise ExportError(f"export folder {export_dir} does not exist; give the folder `distill export` wrote "
                          "(by default <run folder>/export)")
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir} is a file, not an export folder; give the folder `distill export` wrote "
                          "(by default <run folder>/export)")
    folders = sorted(p.parent for p in export_dir.glob("*/card.json"))
    if not folders:
        if any((export_dir / "export").glob("*/card.json")):
            raise ExportError(f"{export_dir} is a run folder, not an export folder (no */card.json): did you mean "
                              f"{export_dir / 'export'}?")
        raise ExportError(f"{export_dir} is not an export folder: it holds no exported variant (no */card.json); "
                          "run `distill export` first")
    return folders


def read_variant_card(folder: Path) -> dict[str, Any]:
    """The ``card.json`` of one variant folder, checked for every field bench reads.

    Raises :class:`ExportError` naming the card when it is not JSON, not an object, or lacks a
    field (or holds one of the wrong type); re-exporting the variant writes a good one.
    """
    path = Path(folder) / "card.json"
    redo = f"export the variant again with `distill export`, or remove {Path(folder)}"
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"model card {path} is not readable JSON ({exc}); {redo}") from None
    if not isinstance(card, dict):
        raise ExportError(f"model card {path} holds a {type(card).__name__}, not a card object; {redo}")
    for keys, kind in CARD_FIELDS:
        value: Any = card
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, kind) or value == "":
            wanted = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ExportError(f"model card {path} has no valid {'.'.join(keys)!r} ({wanted} expected, found "
                              f"{value!r}); {redo}")
    return card


def check_source(card: dict[str, Any], folder: Path) -> Path:
    """The student checkpoint a variant's card names, if it still exists unchanged (sha256); else ExportError."""
    checkpoint = Path(card["source"]["checkpoint"])
    where = f"{folder / 'card.json'} names the student checkpoint {checkpoint}"
    if not checkpoint.is_file():
        raise ExportError(f"{where}, which does not exist (moved or deleted); put it back, or export the student again "
                          f"into a fresh folder")
    if file_sha256(checkpoint) != card["source"]["sha256"]:
        raise ExportError(f"{where}, which has changed since the export (its sha256 differs from the card's): the "
                          "variants were made from another model; export the current student again")
    return checkpoint


def check_artifact(folder: Path, card: dict[str, Any]) -> None:
    """Refuse a variant whose artifact files are missing or differ from the sha256 its card recorded."""
    names = [card["artifact"]["file"]]
    programs = card["runtime"].get("programs")  # static shapes: one file per batch size (mobile)
    if isinstance(programs, dict):
        names += list(programs.values())
    for name in names:
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise ExportError(f"{folder / 'card.json'} names the artifact {name!r}, which is not a file name inside "
                              "the variant folder; export the variant again")
    files = [folder / name for name in names]
    for path in files:
        if not path.is_file():
            raise ExportError(f"{folder}: the artifact {path.name} its card names is missing; re-export the variant")
    artifact = files[0]
    if file_sha256(artifact) != card["artifact"]["sha256"]:
        raise ExportError(f"{artifact} differs from the sha256 in {folder / 'card.json'} (a damaged or replaced "
                          "artifact); re-export the variant")


def target_of(folder: Path, card: dict[str, Any]) -> Target:
    """The registered target a variant's card names (its ``load`` runs the artifact); else ExportError."""
    if card["target"] not in TARGETS:
        raise ExportError(f"{folder / 'card.json'} names the target {card['target']!r}, which is not a registered "
                          f"export target (registered: {', '.join(TARGETS.names())}); register it before benching, "
                          "or re-export the variant")
    return TARGETS.get(card["target"])


def runner_for(folder: Path, card: dict[str, Any], threads: int):
    """The runtime runner of one variant (its target's ``load``); a runtime that cannot load it raises
    ExportError naming the folder."""
    target = target_of(folder, card)
    try:
        return target.load(folder, card, threads)
    except ExportError:
        raise
    except Exception as exc:  # runtimes raise their own exception types (onnxruntime's derive from Exception)
        raise ExportError(f"{folder}: {card['runtime']['name']} cannot load {card['artifact']['file']} "
                          f"({type(exc).__name__}: {exc}); re-export the variant") from exc


def bench(export_dir: Path, *, teacher: Path | None = None, threads: int = 1, repeats: int = 50,
          accuracy_samples: int | None = None, trust_code: bool = False) -> dict[str, Any]:
    """Rows ``{name, runtime, precision, bytes, accuracy, b1_ms, b64_per_sample_ms, status}``, teacher first
    (``accuracy`` None for a text student checked on unlabelled token batches).

    Every card, its source checkpoint and its artifact are checked before anything runs
    (:func:`read_variant_card`, :func:`check_source`, :func:`check_artifact`); all variants
    must come from the same checkpoint. Any failure is an :class:`ExportError` naming the file.
    Model files and cards may name only registered architectures and data sets unless ``trust_code``.
    """
    torch.set_num_threads(threads)
    folders = variant_folders(export_dir)
    cards = {folder: read_variant_card(folder) for folder in folders}
    first = next(iter(cards.values()))
    source = first["source"]
    for folder, card in cards.items():
        if card["source"]["sha256"] != source["sha256"]:
            raise ExportError(f"{folder} was exported from another checkpoint ({card['source']['checkpoint']}) than "
                              f"{folders[0]}; bench one student's export folder at a time")
        target_of(folder, card)
        check_artifact(folder, card)
    checkpoint = check_source(first, folders[0])
    from distill.data import DATASETS

    data_name = refuse_code_named_by_file(first["accuracy"]["dataset"], DATASETS, f"{folders[0] / 'card.json'} (dataset)",
                                          trust_code=trust_code)
    student = load_student(checkpoint, data=data_name, root=source.get("data_root") or None, trust_code=trust_code)
    test = student.dataset("test")
    count = len(test) if accuracy_samples is None else min(accuracy_samples, len(test))
    inputs = take_rows(test.inputs, 0, count)  # a text student's: {"input_ids", "attention_mask"}
    targets = None if test.targets is None or student.num_classes is None else test.targets[:count].numpy()
    sample = take_rows(as_numpy(inputs), 0, 1)
    rows: list[dict[str, Any]] = []

    def measure(name: str, runtime: str, precision: str, runner, size: int, status: str = "-") -> None:
        outputs = run_batched(runner, inputs)
        accuracy = None if targets is None else float((outputs.argmax(-1) == targets).mean())  # None: no labels
        rows.append({"name": name, "runtime": runtime, "precision": precision, "bytes": size, "accuracy": accuracy,
                     **latency(runner, sample, repeats=repeats), "status": status})

    teacher_path = Path(teacher) if teacher is not None else (Path(source["teacher_checkpoint"])
                                                               if source.get("teacher_checkpoint") else None)
    if teacher_path is not None:
        if not teacher_path.is_file():
            state = "is a folder, not a model file" if teacher_path.is_dir() else "does not exist"
            named = "given" if teacher is not None else "named by the student's recipe"
            raise ExportError(f"teacher checkpoint {teacher_path} ({named}) {state}; pass --teacher with the "
                              "teacher's model file")
        teacher_model, spec = load_model(teacher_path, trust_code=trust_code)
        measure(f"teacher ({spec['model']})", "pytorch-eager", "fp32", EagerRunner(teacher_model, threads),
                teacher_path.stat().st_size)
    measure(f"student ({student.spec['model']})", "pytorch-eager", "packed" if student.quantized else "fp32",
            EagerRunner(student.model, threads), student.checkpoint.stat().st_size)
    for folder, card in cards.items():
        measure(folder.name, card["runtime"]["name"], card["precision"], runner_for(folder, card, threads),
                card["artifact"]["bytes"], card["status"])
    base = rows[0]
    for row in rows:
        row["speedup_b1"] = base["b1_ms"] / row["b1_ms"]
        row["speedup_b64"] = base["b64_ms"] / row["b64_ms"]
    return {"threads": threads, "samples": count, "dataset": student.data_name, "baseline": base["name"],
            "rows": rows}
