"""Token distillation under data parallel (2 gloo processes on CPU, launched by torchrun).

Sequences of different lengths (padding + attention_mask) give the two processes different counts
of valid tokens. The token losses divide by the step's count over *both* processes (the loop's
``token_normaliser``), so one SGD step of 2 processes x 4 sequences is exactly one step of 1
process x 8 sequences; with each process normalising by its own count it would not be.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers", reason="the token tests build tiny Hugging Face models (dev extra)")

from distill.distiller import LossTerm  # noqa: E402
from distill.tasks import build_task  # noqa: E402

GLOBAL_BATCH = 8
LR = 0.5
LOSSES = [{"name": "kl", "temperature": 1.0}]

# The models and data, shared by the test (one process) and the torchrun script (two processes).
TINY = textwrap.dedent('''
    import torch
    import transformers

    from distill.data import TensorData


    def gpt(layers, seed):
        torch.manual_seed(seed)
        config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=layers, n_head=2,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return transformers.GPT2LMHeadModel(config)


    def sentences(count=32, length=12, vocab=50, seed=3):
        """Token ids of varying lengths (2..length), padded with 0 and masked, as a tokenizer gives them."""
        generator = torch.Generator().manual_seed(seed)
        start = torch.randint(1, vocab, (count, 1), generator=generator)
        steps = torch.randint(1, 4, (count, length), generator=generator)
        ids = (start + steps.cumsum(1)) % (vocab - 1) + 1
        lengths = torch.randint(2, length + 1, (count,), generator=generator)
        mask = (torch.arange(length)[None] < lengths[:, None]).long()
        return TensorData({"input_ids": ids * mask, "attention_mask": mask}, name="sentences")


    def run(output_dir, chunked=False):
        student = gpt(1, seed=2)
        if chunked:  # hidden states + head: the fused chunked loss (its head tied to the embeddings)
            from distill.llm import ChunkedLM
            student = ChunkedLM(student)
        return distill.distil(gpt(2, seed=1), student, sentences(), task="token", steps=1,
                              batch_size=GLOBAL_BATCH, losses=LOSSES,
                              optimizer={"name": "sgd", "lr": LR, "momentum": 0.0}, schedule="constant",
                              threads=1, output_dir=output_dir, progress=False, measure_latency=False)


    def run_on_policy(output_dir):
        """GKD with every micro-batch the student's own samples (2-token prompts, 4 new tokens), 2 steps."""
        return distill.distil(gpt(2, seed=1), gpt(1, seed=2), sentences(), task="token", steps=2,
                              batch_size=GLOBAL_BATCH, losses=[{"name": "jsd", "beta": 0.5}],
                              on_policy={"fraction": 1.0, "max_new_tokens": 4, "prompt_length": 2, "temperature": 1.0},
                              optimizer={"name": "sgd", "lr": LR, "momentum": 0.0}, schedule="constant",
                              threads=1, output_dir=output_dir, progress=False, measure_latency=False)
''')

SCRIPT = textwrap.dedent('''
    import sys

    from tiny_token import run

    from safetensors.torch import save_file

    for output_dir, weights, chunked in ((sys.argv[1], sys.argv[2], False), (sys.argv[3], sys.argv[4], True)):
        result = run(output_dir, chunked=chunked)
        if result.model is not None:  # the main process
            model = result.model.model if chunked else result.model
            save_file({k: v.detach().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}, weights)

    # on-policy under DDP: each process samples its own share's completions (seeded by rank), no deadlock
    import json
    import os

    from tiny_token import run_on_policy

    from distill.llm.onpolicy import OnPolicy

    drawn, real = [], OnPolicy.sample_batch

    def recording(self, batch, model, **kwargs):
        out = real(self, batch, model, **kwargs)
        drawn.append({"rank": kwargs.get("rank"), "ids": out["input"]["input_ids"].tolist()})
        return out

    OnPolicy.sample_batch = recording
    result = run_on_policy(sys.argv[5])
    with open(f"{sys.argv[5]}-rank{os.environ['RANK']}.json", "w") as handle:
        json.dump(drawn, handle)
    if result.model is not None:
        save_file({k: v.detach().clone() for k, v in result.model.state_dict().items() if k != "lm_head.weight"},
                  sys.argv[6])
''')


def tiny_module(tmp_path: Path):
    header = f"import distill\nGLOBAL_BATCH = {GLOBAL_BATCH}\nLR = {LR}\nLOSSES = {LOSSES!r}\n"
    path = tmp_path / "tiny_token.py"
    path.write_text(header + TINY)
    spec = importlib.util.spec_from_file_location(f"tiny_token_{tmp_path.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def first_step_shares(data):
    """The first optimiser step's global batch, and each process's share of it, as the loop builds them."""
    from distill.data.sources import as_batch_source

    def first(rank, world_size):
        loader = as_batch_source(data, batch_size=GLOBAL_BATCH, shuffle=True, drop_last=True, seed=0,
                                 rank=rank, world_size=world_size)
        return next(iter(loader.epoch_batches(0)))

    return first(0, 1), [first(rank, 2) for rank in (0, 1)]


def sgd_step(student, teacher, shares, normalisers):
    """Weights after one SGD step on the mean over processes of each share's token KL, each share's
    loss divided by its normaliser (None: its own count of valid tokens): what DDP would do."""
    task, term = build_task("token"), LossTerm("kl", temperature=1.0)
    student.zero_grad()
    for batch, normaliser in zip(shares, normalisers):
        batch = dict(batch)
        if normaliser is not None:
            batch["token_normaliser"] = torch.tensor(float(normaliser))
        with torch.no_grad():
            teacher_logits = teacher(**batch["input"]).logits
        loss = task.term_value(term, student(**batch["input"]).logits, teacher_logits, batch)
        (loss / len(shares)).backward()
    return {name: (p - LR * p.grad).detach() for name, p in student.named_parameters()}


def assert_close_weights(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(right[name], left[name], rtol=1e-4, atol=1e-6, msg=name)


def differs(left: dict, right: dict) -> float:
    """How far beyond the test's tolerance the two sets of weights are (> 1: the weight check fails)."""
    return max(float(((left[k] - right[k]).abs() / (1e-6 + 1e-4 * right[k].abs())).max()) for k in right)


def train_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


@pytest.mark.slow  # 25-45 s on 2 cores, nearly all of it torchrun starting 2 processes
def test_two_processes_equal_one_process_on_token_data_of_varying_lengths(tmp_path):
    tiny = tiny_module(tmp_path)
    task = build_task("token")
    whole, shares = first_step_shares(tiny.sentences())
    counts = [task.count(share) for share in shares]
    total = task.count(whole)
    assert sum(counts) == total
    # the processes see different numbers of valid tokens: normalising by each one's own count is wrong
    assert counts[0] != counts[1], counts

    # in process: the global normaliser (total / 2 on each of the 2 shares) gives the one-batch step;
    # each share's own count gives a step that the weight check below tells apart
    teacher, student = tiny.gpt(2, seed=1).eval(), tiny.gpt(1, seed=2)
    big = sgd_step(student, teacher, [whole], [None])
    assert_close_weights(big, sgd_step(student, teacher, shares, [total / 2, total / 2]))
    assert differs(sgd_step(student, teacher, shares, [None, None]), big) > 10

    # one process, batch 8
    one = tiny.run(tmp_path / "one")
    reference = {k: v.detach() for k, v in one.model.state_dict().items()}
    start = tiny.gpt(1, seed=2).state_dict()
    assert max(float((reference[k] - start[k]).abs().max()) for k in reference) > 1e-3  # the step did something
    expected = {k: reference[k] for k in big}
    assert_close_weights(big, expected)  # the loop's step is the one computed above

    # two processes through torchrun, 4 sequences each
    (tmp_path / "ddp_token.py").write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(tmp_path / "ddp_token.py"), str(tmp_path / "two"), str(tmp_path / "two.safetensors"),
               str(tmp_path / "chunked"), str(tmp_path / "chunked.safetensors"),
               str(tmp_path / "on_policy"), str(tmp_path / "on_policy.safetensors")]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two = load_file(str(tmp_path / "two.safetensors"))
    reference = {k: v for k, v in reference.items() if k != "lm_head.weight"}  # tied to wte (safetensors keeps one)
    assert_close_weights(reference, two)
    # the same two processes with a ChunkedLM student (fused chunked loss, tied head): the same step
    assert_close_weights(reference, load_file(str(tmp_path / "chunked.safetensors")))
    # the logged loss (the mean over processes of each one's loss) is the global mean over every valid token
    assert train_losses(tmp_path / "two") == pytest.approx(train_losses(tmp_path / "one"), rel=1e-5)
    assert len(train_losses(tmp_path / "two")) == 1

    # on-policy (GKD, λ = 1) in the same two processes: both sampled every micro-batch, each with its rank's seed
    draws = [json.loads((tmp_path / f"on_policy-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [[d["rank"] for d in got] for got in draws] == [[0, 0], [1, 1]]  # 2 steps, each process its own draws
    prompts = {tuple(row[:2]) for row in tiny.sentences().inputs["input_ids"].tolist()}
    for got in draws:
        for draw in got:
            assert {tuple(row[:2]) for row in draw["ids"]} <= prompts  # the data's prompts, the student's completions
    assert draws[0][0]["ids"] != draws[1][0]["ids"]
    moved = load_file(str(tmp_path / "on_policy.safetensors"))
    assert all(torch.isfinite(v).all() for v in moved.values())
    assert differs(moved, {k: v for k, v in start.items() if k in moved}) > 0
