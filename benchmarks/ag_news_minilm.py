"""Benchmark: AG News text classification, a fine-tuned MiniLM teacher distilled into small students,
side by side in one run (accuracy over seeds, CPU throughput, size on disk).

    python benchmarks/ag_news_minilm.py [--seeds 0 1 2] [--threads 1] [--students cnn gru layerdrop static]

Data (../shared/data/ag_news): 5,990 labelled train texts, the official 7,600 test texts, 8,771
unlabelled texts; all tokenised with MiniLM's WordPiece tokenizer, truncated at ``--max-length``
tokens (the counts of truncated texts are reported).

- **teacher**: the packaged all-MiniLM-L6-v2 encoder + mean pooling + a linear head
  (:class:`distill.models.hf_classifier.SentenceClassifier`), fine-tuned on the labelled train set
  (cross-entropy, AdamW, warm-up + cosine, word-embedding table frozen). Cached in
  ``--out``/cache (a folder marked as distill's) with its logits on train, unlabelled and test:
  a rerun with the same settings starts from there.
- **students**, each trained three ways: on the labels alone (cross-entropy); distilled on the
  labelled set (``kl`` at ``--temperature`` x 0.9 + cross-entropy x 0.1); distilled on labelled +
  unlabelled texts (``kl`` alone: ``distill.distil`` cannot mix labelled and unlabelled rows in one
  data set, so the labels are not used there; see docs/text.md):
  (a) ``token_cnn`` over MiniLM token ids, (b) ``token_gru`` (a BiGRU) over the same ids, (c) the
  teacher with 4 of its 6 blocks dropped (blocks ``--keep``, initialised from the fine-tuned
  teacher), (d) a static (Model2Vec-style) table + linear head. CNN, GRU and static tables start
  from the same PCA-reduced token vectors of MiniLM (every token embedded alone; label-free), in
  every variant, so "labels alone" and "distilled" differ only in the objective.
- The distilled runs read the teacher's cached logits (a frozen lookup module), so no run
  repeats the teacher's forward passes; batches are cut to their longest text.

Throughput: texts/s on the first ``--timing-texts`` test texts, batch 64, one process, ``--threads``
torch threads, tokenisation included, median of ``--repeats`` timed passes after a warm-up; all
models timed in the same process, one after another. Size: the saved safetensors file.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, precision_words, require_data, write_result  # noqa: E402

import distill  # noqa: E402
from distill.data import sentence_data, text_classification_data  # noqa: E402
from distill.data.sources import TensorData  # noqa: E402
from distill.models.hf import SentenceEncoder, minilm_folder  # noqa: E402
from distill.models.hf_classifier import (SentenceClassifier, fine_tune, layer_dropped, predict_logits,  # noqa: E402
                                          save_classifier, trimmed_loader)
from distill.safety import mark_owned  # noqa: E402

log = lambda message: print(f"[ag_news] {message}", file=sys.stderr, flush=True)  # noqa: E731


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------

def load_data(tokenizer, max_length: int, limit: int | None):
    folder = require_data("ag_news")
    train = text_classification_data(folder / "train.csv", tokenizer=tokenizer, max_length=max_length)
    test = text_classification_data(folder / "test.csv", tokenizer=tokenizer, max_length=max_length, split="test")
    lines = gzip.open(folder / "unlabeled.txt.gz", "rt", encoding="utf-8").read().splitlines()
    texts = [line.strip() for line in lines if line.strip()]
    unlabelled = sentence_data(texts, tokenizer, max_length=max_length, name="unlabeled")
    unlabelled.empty_lines = len(lines) - len(texts)
    if limit:  # smoke runs
        train, test, unlabelled = (subset(d, limit) for d in (train, test, unlabelled))
    from distill.data.text import read_text_classification

    test_texts = read_text_classification(folder / "test.csv")[0]
    return train, test, unlabelled, test_texts


def subset(data: TensorData, count: int) -> TensorData:
    out = TensorData({k: v[:count] for k, v in data.inputs.items()},
                     None if data.targets is None else data.targets[:count], name=data.name, classes=data.classes,
                     split=data.split)
    out.num_truncated = data.num_truncated
    return out


def union(labelled: TensorData, unlabelled: TensorData) -> TensorData:
    """Both sets' inputs, padded to the same width, without targets (distillation loss only)."""
    width = max(labelled.inputs["input_ids"].shape[1], unlabelled.inputs["input_ids"].shape[1])
    inputs = {}
    for key in ("input_ids", "attention_mask"):
        parts = [torch.nn.functional.pad(d.inputs[key], (0, width - d.inputs[key].shape[1])) for d in (labelled, unlabelled)]
        inputs[key] = torch.cat(parts)
    return TensorData(inputs, None, name="train+unlabeled")


# ---------------------------------------------------------------------------------------------------
# the teacher, cached
# ---------------------------------------------------------------------------------------------------

class LogitTable(nn.Module):
    """A frozen teacher that returns stored logits: each row's valid token ids (its attention mask) are the key.

    Built from the real teacher's outputs on every text a run will show it; an unknown row is an error."""

    def __init__(self, datasets: list[TensorData], logits: list[torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.cat(logits).float())
        self.rows: dict[bytes, int] = {}
        offset = 0
        for data in datasets:
            for i, key in enumerate(self._keys(data.inputs["input_ids"], data.inputs["attention_mask"])):
                self.rows.setdefault(key, offset + i)
            offset += len(data)

    @staticmethod
    def _keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[bytes]:
        lengths = attention_mask.sum(1).tolist()
        return [row[:n].numpy().tobytes() for row, n in zip(input_ids.to(torch.int64), lengths)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        try:
            index = [self.rows[key] for key in self._keys(input_ids.cpu(), attention_mask.cpu())]
        except KeyError:
            raise KeyError("LogitTable: a text the teacher's logits were not computed for") from None
        return self.logits[torch.as_tensor(index)]


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def teacher_stage(args, train, test, unlabelled, cache: Path):
    """(teacher classifier, tokenizer, {split: logits}, record), from the cache when it holds these settings."""
    settings = teacher_settings(args, train, test, unlabelled)
    folder = cache / f"teacher-{settings_key(settings)}"
    logits_file = folder / "logits.safetensors"
    from safetensors.torch import load_file, save_file

    if logits_file.is_file():
        teacher, tokenizer = SentenceClassifier.from_folder(folder)
        record = json.loads((folder / "record.json").read_text())
        log(f"teacher from the cache {folder} (test accuracy {record['accuracy']:.4f})")
        return teacher, tokenizer, load_file(str(logits_file)), record
    teacher, tokenizer = SentenceClassifier.from_folder(minilm_folder(), num_classes=4)
    torch.manual_seed(0)
    teacher.train()
    log(f"fine-tuning the teacher: {args.teacher_epochs} epochs on {len(train)} texts")
    run = fine_tune(teacher, train, epochs=args.teacher_epochs, lr=args.teacher_lr, batch_size=32, seed=0,
                    output_dir=cache / "teacher-run", overwrite=True, progress=args.progress, threads=args.threads,
                    mixed_precision=args.precision)
    teacher.eval()
    started = time.perf_counter()
    logits = {name: predict_logits(teacher, data) for name, data in (("test", test), ("train", train),
                                                                     ("unlabeled", unlabelled))}
    inference = time.perf_counter() - started
    accuracy = float((logits["test"].argmax(1) == test.targets).float().mean())
    record = {"accuracy": accuracy, "train_seconds": run.train_seconds, "logit_seconds": inference,
              "train_accuracy": float((logits["train"].argmax(1) == train.targets).float().mean()), **settings}
    save_classifier(teacher, tokenizer, folder, classes=train.classes)
    save_file(logits, str(logits_file))
    (folder / "record.json").write_text(json.dumps(record, indent=2))
    log(f"teacher: test accuracy {accuracy:.4f}, trained in {run.train_seconds:.0f} s, logits in {inference:.0f} s")
    return teacher, tokenizer, logits, record


# ---------------------------------------------------------------------------------------------------
# students
# ---------------------------------------------------------------------------------------------------

VARIANTS = ("labels", "distilled", "distilled+unlabelled")
NAMES = {"cnn": "token_cnn", "gru": "token_gru", "layerdrop": "MiniLM, blocks {keep}", "static": "static table + head"}


def token_table(cache: Path, dim: int) -> torch.Tensor:
    """MiniLM's token vectors (every token alone through the pretrained encoder), PCA to ``dim``; cached."""
    from distill.models.text import teacher_token_table

    path = cache / f"token-table-{dim}.pt"
    if not path.is_file():
        encoder, tokenizer = SentenceEncoder.from_folder(minilm_folder())
        started = time.perf_counter()
        torch.save(teacher_token_table(encoder, tokenizer, dim), path)
        log(f"token table ({dim} columns) in {time.perf_counter() - started:.0f} s")
    return torch.load(path, weights_only=True)


def build_student(kind: str, args, tokenizer, cache: Path) -> nn.Module:
    from distill.models.text import StaticClassifier, TokenCNN, TokenGRU, load_token_table

    vocab = len(tokenizer)
    if kind == "cnn":
        model = TokenCNN((args.max_length,), 4, vocab_size=vocab, embed_dim=args.embed_dim, channels=128,
                         kernel_sizes=(3, 4, 5), dropout=0.3)
    elif kind == "gru":
        model = TokenGRU((args.max_length,), 4, vocab_size=vocab, embed_dim=args.embed_dim, hidden=96, dropout=0.3)
    elif kind == "static":
        model = StaticClassifier((args.max_length,), 4, vocab_size=vocab, dim=args.embed_dim,
                                 ignore_ids=sorted(set(tokenizer.all_special_ids)), dropout=0.1)
    elif kind == "layerdrop":  # the pretrained (not fine-tuned) MiniLM's blocks, a new head: same start in every variant
        model = layered_student(args)
        model.encoder.model.get_input_embeddings().weight.requires_grad_(False)
        return model
    else:
        raise ValueError(kind)
    return load_token_table(model, token_table(mark_owned(args.out / "cache", "cache"), args.embed_dim))  # data-free


def layered_student(args) -> nn.Module:
    encoder, _ = SentenceEncoder.from_folder(minilm_folder())
    return layer_dropped(SentenceClassifier(encoder, 4), args.keep)


STUDENT_SETTINGS = {"cnn": {"lr": 2e-3, "batch_size": 64}, "gru": {"lr": 2e-3, "batch_size": 64},
                    "static": {"lr": 1e-2, "batch_size": 64}, "layerdrop": {"lr": 1e-4, "batch_size": 32}}


def train_student(kind: str, variant: str, seed: int, args, data, teacher_table, tokenizer, cache: Path) -> dict:
    """One run (cached by its settings): the trained student's test accuracy, agreement and its file."""
    settings = {"kind": kind, "variant": variant, "seed": seed, "temperature": args.temperature,
                "steps": args.layerdrop_steps if kind == "layerdrop" else args.steps, "keep": args.keep,
                "embed_dim": args.embed_dim, "teacher": args.teacher_key, **STUDENT_SETTINGS[kind],
                **precision_key(args)}
    folder = cache / "runs" / f"{kind}-{variant.replace('+', '-')}-seed{seed}-{settings_key(settings)}"
    record_file = folder / "result.json"
    if record_file.is_file():
        return json.loads(record_file.read_text())
    train, test, unlabelled, test_logits = data
    torch.manual_seed(seed)
    student = build_student(kind, args, tokenizer, cache).train()
    if variant == "labels":
        teacher, source = None, train
        losses = [{"name": "cross_entropy"}]
    elif variant == "distilled":
        teacher, source = teacher_table, train
        losses = [{"name": "kl", "temperature": args.temperature, "weight": 0.9}, {"name": "cross_entropy", "weight": 0.1}]
    else:
        teacher, source = teacher_table, union(train, unlabelled)
        losses = [{"name": "kl", "temperature": args.temperature}]
    loader = trimmed_loader(source, settings["batch_size"], shuffle=True, seed=seed)
    result = distill.distil(teacher, student, loader, losses=losses, steps=settings["steps"], lr=settings["lr"],
                            weight_decay=0.01, schedule={"name": "cosine", "warmup_steps": settings["steps"] // 10},
                            seed=seed, output_dir=folder / "run", overwrite=True, progress=args.progress,
                            threads=args.threads, measure_latency=False, mixed_precision=args.precision)
    logits = predict_logits(result.model, test)
    record = {**settings, "accuracy": float((logits.argmax(1) == test.targets).float().mean()),
              "agreement": float((logits.argmax(1) == test_logits.argmax(1)).float().mean()),
              "train_seconds": result.train_seconds, "model_path": str(result.model_path),
              "bytes": result.model_path.stat().st_size, "parameters": sum(p.numel() for p in result.model.parameters()),
              "epochs_seen": settings["steps"] * settings["batch_size"] / len(source)}
    record_file.write_text(json.dumps(record, indent=2))
    log(f"{kind} {variant} seed {seed}: accuracy {record['accuracy']:.4f} (agreement {record['agreement']:.4f}), "
        f"{record['train_seconds']:.0f} s")
    return record


# ---------------------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------------------

def texts_per_second(model: nn.Module, tokenizer, texts: list[str], max_length: int, repeats: int) -> float:
    """Texts/s, tokenisation included, batch 64: the median of ``repeats`` timed passes after a warm-up."""
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                batch = tokenizer(texts[start:start + 64], padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt")
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return len(texts) / statistics.median(times)


def load_student(kind: str, record: dict, args) -> nn.Module:
    if kind == "layerdrop":
        return distill.load_model(record["model_path"], model=layered_student(args))
    return distill.load_model(record["model_path"])


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--layerdrop-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--students", nargs="+", default=["cnn", "gru", "static", "layerdrop"])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps of every CNN / GRU / static run")
    parser.add_argument("--layerdrop-steps", type=int, default=190)
    parser.add_argument("--keep", type=int, nargs="+", default=[0, 5], help="the layer-dropped student's blocks")
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timing-texts", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="smoke runs: the first N texts of each set")
    parser.add_argument("--teacher-only", action="store_true")
    parser.add_argument("--no-report", action="store_true", help="train (and cache) runs, write no results")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--precision", default="no", choices=["no", "auto", "bf16"],
                        help="train.mixed_precision of every run (no: fp32, as the recorded results)")
    parser.add_argument("--export-only", action="store_true",
                        help="train (or take from the cache) the seed-0 'distilled + unlabelled' run of each student, "
                        "export it to ONNX (cpu fp32, int8-dynamic) and check parity; writes ag_news_minilm_export")
    parser.add_argument("--export-texts", type=int, default=2000, help="test texts the exports are checked on")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "ag_news_minilm")
    args = parser.parse_args()
    started = time.time()
    torch.set_num_threads(args.threads)
    cache = mark_owned(args.out / ("cache" if not args.limit else f"cache-limit{args.limit}"), "cache")
    _, tokenizer = SentenceEncoder.from_folder(minilm_folder())
    train, test, unlabelled, test_texts = load_data(tokenizer, args.max_length, args.limit)
    truncated = {"train": train.num_truncated, "test": test.num_truncated, "unlabeled": unlabelled.num_truncated}
    log(f"{len(train)} train / {len(test)} test / {len(unlabelled)} unlabelled texts; truncated at {args.max_length} "
        f"tokens: {truncated}")
    teacher, tokenizer, logits, teacher_record = teacher_stage(args, train, test, unlabelled, cache)
    if args.teacher_only:
        return
    args.teacher_key = teacher_record["train"] + f"{teacher_record['accuracy']:.6f}"
    table = LogitTable([train, unlabelled], [logits["train"], logits["unlabeled"]])
    data = (train, test, unlabelled, logits["test"])
    if args.export_only:
        export_students(args, data, table, tokenizer, cache, test, started, teacher_record)
        return
    runs: dict[str, dict[str, list[dict]]] = {}
    for kind in args.students:
        seeds = args.layerdrop_seeds if kind == "layerdrop" else args.seeds
        runs[kind] = {variant: [train_student(kind, variant, seed, args, data, table, tokenizer, cache)
                                for seed in seeds] for variant in VARIANTS}
    if args.no_report:
        return

    texts = test_texts[:args.timing_texts]
    speed = {"teacher": texts_per_second(teacher, tokenizer, texts, args.max_length, max(3, args.repeats // 2))}
    teacher_bytes = sum(f.stat().st_size for f in (cache / f"teacher-{settings_key(teacher_settings(args, train, test, unlabelled))}").glob("*.safetensors")
                        if f.name != "logits.safetensors")
    log(f"teacher: {speed['teacher']:.1f} texts/s")
    for kind in runs:
        record = runs[kind]["distilled"][0]
        speed[kind] = texts_per_second(load_student(kind, record, args), tokenizer, texts, args.max_length, args.repeats)
        log(f"{kind}: {speed[kind]:.1f} texts/s")

    from common import fmt_mean_std, mean_std

    name = lambda kind: NAMES[kind].format(keep=args.keep)  # noqa: E731
    lines = ["| model | labels alone | distilled | distilled + unlabelled | texts/s | speed-up | parameters | size |",
             "|---|---|---|---|---|---|---|---|",
             f"| teacher: MiniLM-L6 + head, fine-tuned | {100 * teacher_record['accuracy']:.2f} | - | - | "
             f"{speed['teacher']:,.0f} | 1.0x | {sum(p.numel() for p in teacher.parameters()):,} | "
             f"{teacher_bytes / 1e6:.1f} MB |"]
    numbers = {"teacher": {**teacher_record, "texts_per_s": speed["teacher"], "bytes": teacher_bytes}, "students": {},
               "truncated": truncated, "args": {k: v for k, v in vars(args).items() if k != "out"}}
    for kind, variants in runs.items():
        cells = []
        for variant in VARIANTS:
            accuracies = [100 * r["accuracy"] for r in variants[variant]]
            cells.append(fmt_mean_std(accuracies, "{:.2f}") + (f" (n={len(accuracies)})" if len(accuracies) < 3 else ""))
        record = variants["distilled"][0]
        lines.append(f"| {name(kind)} | {' | '.join(cells)} | {speed[kind]:,.0f} | {speed[kind] / speed['teacher']:.0f}x | "
                     f"{record['parameters']:,} | {record['bytes'] / 1e6:.1f} MB |")
        numbers["students"][kind] = {"runs": variants, "texts_per_s": speed[kind],
                                     "mean_accuracy": {v: mean_std([r["accuracy"] for r in variants[v]])[0] for v in VARIANTS}}
    goals = []
    if "cnn" in runs:
        cnn = numbers["students"]["cnn"]["mean_accuracy"]
        best = max(("distilled", "distilled+unlabelled"), key=lambda v: cnn[v])
        gap = 100 * (teacher_record["accuracy"] - cnn[best])
        ratio = speed["cnn"] / speed["teacher"]
        goals.append(f"distilled CNN ({best}) {100 * cnn[best]:.2f} vs teacher {100 * teacher_record['accuracy']:.2f}: "
                     f"{gap:.2f} points behind (goal <= 2: {'met' if gap <= 2 else 'missed'}) at {ratio:.0f}x the "
                     f"teacher's throughput (goal >= 20x: {'met' if ratio >= 20 else 'missed'}); ahead of the same CNN "
                     f"on labels alone ({100 * cnn['labels']:.2f}): {'met' if cnn[best] > cnn['labels'] else 'missed'}")
    markdown = (
        f"AG News (5,990 labelled train texts, 8,771 unlabelled, the official 7,600 test texts), MiniLM WordPiece "
        f"tokens, truncated at {args.max_length} (train / test / unlabelled texts truncated: {truncated['train']} / "
        f"{truncated['test']} / {truncated['unlabeled']}). Teacher: all-MiniLM-L6-v2 + mean pooling + linear head, "
        f"fine-tuned {args.teacher_epochs} epochs (lr {args.teacher_lr:g}, one seed, cached). Students: test accuracy "
        f"x 100, mean ± std over seeds {args.seeds} (layer-dropped student: seeds {args.layerdrop_seeds}); every run "
        f"of a student has the same optimiser steps ({args.steps}; layer-dropped: {args.layerdrop_steps}) and the same "
        f"start; distilled = KL at T={args.temperature:g} x 0.9 + CE x 0.1 on the labelled set; + unlabelled = KL alone "
        f"on labelled + unlabelled texts (labels unused: distil takes no mixed sets). CNN / GRU / static tables start "
        f"from MiniLM's token vectors (PCA to {args.embed_dim}). Throughput: {len(texts)} test texts, batch 64, "
        f"{args.threads} thread(s), tokenisation included, median of {args.repeats} passes (teacher: "
        f"{max(3, args.repeats // 2)}); speed-up vs the teacher measured in the same process. Size: the safetensors "
        f"file. Training precision: {precision_words(args.precision)}.\n\n"
        + "\n".join(lines) + "\n\nGoals: " + "; ".join(goals) + ".")
    write_result("ag_news_minilm", numbers, markdown, started)
    print(markdown)


def precision_key(args) -> dict:
    """The cache-key entry of ``--precision``: none for fp32, so that earlier fp32 runs' caches stay valid."""
    return {"precision": args.precision} if args.precision != "no" else {}


def export_students(args, data, table, tokenizer, cache: Path, test: TensorData, started: float,
                    teacher_record: dict) -> None:
    """ONNX export + parity of the seed-0 'distilled + unlabelled' student of each kind (ag_news_minilm_export)."""
    from common import export_text_student, text_export_table

    count = min(args.export_texts, len(test))
    inputs = {key: test.inputs[key][:count] for key in ("input_ids", "attention_mask")}
    tokenizer_json = minilm_folder() / "tokenizer.json"
    rows, students = [], {}
    for kind in args.students:
        record = train_student(kind, "distilled+unlabelled", 0, args, data, table, tokenizer, cache)
        model = load_student(kind, record, args).eval()
        name = NAMES[kind].format(keep=args.keep)
        done = export_text_student(model, name, args.out / "export" / kind, inputs=inputs, max_length=args.max_length,
                                   tokenizer_json=tokenizer_json, targets=test.targets[:count], classes=list(test.classes),
                                   threads=args.threads)
        rows += done
        students[kind] = {"accuracy": record["accuracy"], "bytes": record["bytes"], "parameters": record["parameters"]}
        log(f"exported {kind}: {[(row['variant'], row['status']) for row in done]}")
    markdown = (f"The seed-0 'distilled + unlabelled' student of each kind in `ag_news_minilm` (the same settings and "
                f"start; training precision {precision_words(args.precision)}), exported with `distill.export.Exporter` "
                f"(target cpu; int8-dynamic per output channel) and checked against eager PyTorch on the first {count:,} "
                f"official test texts (truncated at {args.max_length}); agreement: top-1 class equal to eager's; accuracy "
                f"on those texts; batch-1 latency at {args.max_length} tokens, {args.threads} thread(s).\n\n"
                + text_export_table(rows) + f"\n\nTeacher (fine-tuned in this run or taken from its cache): "
                f"{100 * teacher_record['accuracy']:.2f} on the full test set. Full-test accuracy and safetensors size of "
                "the students: "
                + "; ".join(f"{NAMES[k].format(keep=args.keep)} {100 * v['accuracy']:.2f}, {v['bytes'] / 1e6:.1f} MB"
                            for k, v in students.items()) + ".")
    write_result("ag_news_minilm_export", {"exports": rows, "students": students, "teacher": teacher_record,
                                           "args": {k: v for k, v in vars(args).items() if k != "out"}}, markdown, started)
    print(markdown)


def teacher_settings(args, train, test, unlabelled) -> dict:
    return {"epochs": args.teacher_epochs, "lr": args.teacher_lr, "batch_size": 32, "max_length": args.max_length,
            "seed": 0, "train": train.fingerprint(), "unlabeled": unlabelled.fingerprint(), "test": test.fingerprint(),
            **precision_key(args)}


if __name__ == "__main__":
    main()
