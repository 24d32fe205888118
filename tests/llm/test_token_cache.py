"""Cached teacher token logits (top-k + tail per valid token): the stored rows equal the top-k
recomputed from the teacher, k = V gives the dense loss exactly, the k + 1 bucket loss follows its
formula, bytes per token are what the files hold, mismatches are refused, and a student trained
from the cache alone (the teacher never run) comes closer to the teacher on held-out text."""
from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("transformers", reason="causal LMs need transformers (the llm extra)")

import distill  # noqa: E402
from distill.api import open_teacher_cache  # noqa: E402
from distill.data import CacheError, TensorData, open_cache  # noqa: E402
from distill.data.token_cache import TokenTeacher, TokenTeacherCache, build_token_cache  # noqa: E402
from distill.losses import jsd, kl, reverse_kl, tvd  # noqa: E402
from distill.recipe import RecipeError  # noqa: E402
from distill.tasks.token import IGNORE_INDEX, TokenTask, chunked_token_loss, next_token_labels, token_labels  # noqa: E402
from distill.llm import causal_lm_from_config  # noqa: E402

VOCAB, LENGTH = 40, 12


def token_data(num: int, seed: int, split: str = "train") -> TensorData:
    """Random sequences with right padding (attention_mask 0) and a masked prompt (loss_mask 0)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (num, LENGTH), generator=generator)
    attention = torch.ones(num, LENGTH, dtype=torch.long)
    loss_mask = torch.ones(num, LENGTH, dtype=torch.long)
    for row in range(num):
        attention[row, LENGTH - row % 4:] = 0  # 0..3 pad tokens
        loss_mask[row, :row % 3] = 0  # a 0..2 token prompt
    return TensorData({"input_ids": ids, "attention_mask": attention, "loss_mask": loss_mask}, name="random-ids",
                      split=split)


def sharp_teacher(seed: int = 0, hidden: int = 32, layers: int = 2) -> torch.nn.Module:
    """A GPT-2 whose head is scaled up: peaked next-token distributions that depend on the context."""
    model = causal_lm_from_config("gpt2", vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, max_length=LENGTH,
                                  seed=seed, tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(25.0)
    return model.eval()


def teacher_logits(teacher, data: TensorData) -> torch.Tensor:
    with torch.no_grad():
        return teacher(input_ids=data.inputs["input_ids"], attention_mask=data.inputs["attention_mask"]).logits


def valid_positions(data: TensorData) -> torch.Tensor:
    return next_token_labels(token_labels({"input": data.inputs, "target": None})) != IGNORE_INDEX


def test_stored_rows_equal_the_recomputed_top_k_and_bytes_per_token_are_the_files(tmp_path):
    teacher, data = sharp_teacher(), token_data(10, seed=1)
    lines = []
    cache = build_token_cache(teacher, data, tmp_path / "cache", k=5, dtype="float32", shard_size=4, batch_size=3,
                              progress=False, report=lines.append)
    assert isinstance(cache, TokenTeacherCache) and cache.mode == "tail"
    logits, valid = teacher_logits(teacher, data), valid_positions(data)
    assert cache.num_tokens == int(valid.sum()) < 10 * LENGTH  # padding and prompts are not stored
    ids = [7, 0, 3, 9]  # across three shards, out of order
    stored = cache[torch.tensor(ids)]
    expected = TokenTeacher.from_logits(logits[ids], valid[ids], 5, temperature=1.0)
    assert stored.counts.tolist() == valid[ids].sum(1).tolist()
    torch.testing.assert_close(stored.sparse.values, expected.sparse.values, rtol=0, atol=1e-5)
    assert torch.equal(stored.sparse.indices, expected.sparse.indices)
    torch.testing.assert_close(stored.sparse.log_tail, expected.sparse.log_tail, rtol=0, atol=1e-5)
    # the top-k really are the teacher's k largest logits at the valid positions, in order
    top = logits[ids][valid[ids]].topk(5, dim=-1)
    assert torch.equal(stored.sparse.indices, top.indices)
    # bytes per token: vocabulary 40 -> uint8 ids; float32 values; float32 tail: 5 * (4 + 1) + 4 = 29
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["kind"] == "token" and manifest["index_dtype"] == "uint8"
    assert manifest["bytes_per_token_nominal"] == 29
    files = sum(path.stat().st_size for path in (tmp_path / "cache").glob("*.npy"))
    assert manifest["bytes_per_token"] == pytest.approx(files / cache.num_tokens) == pytest.approx(cache.bytes_per_token)
    assert 29 < cache.bytes_per_token < 29 + 60  # + offsets and .npy headers of a tiny cache
    assert f"{cache.bytes_per_token:.1f} bytes/token" in lines[0]
    half = build_token_cache(teacher, data, tmp_path / "half", k=5, dtype="float16", progress=False, report=None)
    assert json.loads((tmp_path / "half" / "manifest.json").read_text())["bytes_per_token_nominal"] == 5 * 3 + 4
    assert half.bytes_per_token < cache.bytes_per_token
    # open_cache reads it back as a token cache, and a matching build reuses it without the teacher
    assert isinstance(open_cache(tmp_path / "cache"), TokenTeacherCache)
    calls = []
    hook = teacher.register_forward_hook(lambda *args: calls.append(1))
    again = build_token_cache(teacher, data, tmp_path / "cache", k=5, dtype="float32", shard_size=4, progress=False,
                              report=None)
    hook.remove()
    assert calls == [] and again.num_tokens == cache.num_tokens


def test_cache_refuses_another_teacher_other_data_and_changed_bytes(tmp_path):
    teacher, data = sharp_teacher(), token_data(6, seed=2)
    cache = build_token_cache(teacher, data, tmp_path / "cache", k=4, progress=False, report=None)
    with pytest.raises(CacheError, match="teacher weights"):
        build_token_cache(sharp_teacher(seed=5), data, tmp_path / "cache", k=4, progress=False, report=None)
    with pytest.raises(CacheError, match="teacher weights"):
        open_cache(tmp_path / "cache", expect={"teacher_fingerprint": "0" * 16})
    with pytest.raises(RecipeError, match="dataset contents"):
        open_teacher_cache(tmp_path / "cache", None, token_data(6, seed=3), task="token")
    with pytest.raises(RecipeError, match="per-token"):
        open_teacher_cache(cache, None, data, task="classification")
    # stored rows that do not line up with the batch's masks are refused, naming the sequence
    stored = cache[torch.tensor([0, 1])]
    labels = token_labels({"input": {key: value[:2] for key, value in data.inputs.items()}, "target": None}).clone()
    labels[1, 5] = IGNORE_INDEX
    with pytest.raises(ValueError, match="sequence 1: .* stored tokens"):
        chunked_token_loss(kl, torch.randn(2, LENGTH, VOCAB), None, labels, teacher_logits=stored)
    # a shard file whose bytes changed is found at the first read
    fresh = open_cache(tmp_path / "cache")
    values = tmp_path / "cache" / "values-00000.npy"
    raw = bytearray(values.read_bytes())
    raw[-3] ^= 0xFF
    values.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="corrupted"):
        fresh[torch.tensor([0])]


def sparse_of(logits: torch.Tensor, valid: torch.Tensor, k: int, mode: str, temperature: float) -> TokenTeacher:
    return TokenTeacher.from_logits(logits, valid, k, temperature=temperature, mode=mode)


@pytest.mark.parametrize("mode", ["tail", "renormalized"])
@pytest.mark.parametrize("hidden", [False, True])
def test_k_equal_to_the_vocabulary_gives_the_dense_loss_exactly(mode, hidden):
    """Equal to the float32 rounding of the chunked loss (the buckets are the vocabulary, sorted)."""
    torch.manual_seed(0)
    batch, length, width = 3, 9, 16
    head = torch.nn.Linear(width, VOCAB, bias=False).double()
    states = torch.randn(batch, length, width, dtype=torch.float64, requires_grad=True)
    teacher = 3 * torch.randn(batch, length, VOCAB, dtype=torch.float64)
    labels = torch.randint(0, VOCAB, (batch, length))
    labels[0, :3] = IGNORE_INDEX
    labels[2, 6:] = IGNORE_INDEX
    valid = next_token_labels(labels) != IGNORE_INDEX
    for loss, params in ((kl, {}), (reverse_kl, {}), (jsd, {"beta": 0.3}), (tvd, {})):
        cached = sparse_of(teacher, valid, VOCAB, mode, 2.0)
        student = (states, head) if hidden else (head(states), None)
        dense = chunked_token_loss(loss, *student, labels, teacher_logits=teacher, temperature=2.0, chunk_size=4,
                                   **params)
        (dense_grad,) = torch.autograd.grad(dense, states)
        student = (states, head) if hidden else (head(states), None)
        stored = chunked_token_loss(loss, *student, labels, teacher_logits=cached, temperature=2.0, chunk_size=4,
                                    **params)
        (stored_grad,) = torch.autograd.grad(stored, states)
        # the chunked losses compute in float32; the k = V buckets are the vocabulary in another order
        torch.testing.assert_close(stored, dense.to(stored.dtype), rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(stored_grad, dense_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("hidden", [False, True])
def test_top_k_and_tail_loss_is_kl_over_k_plus_one_buckets(hidden):
    torch.manual_seed(1)
    k, temperature = 6, 1.5
    student_logits = torch.randn(2, 7, VOCAB, dtype=torch.float64)
    teacher = 2 * torch.randn(2, 7, VOCAB, dtype=torch.float64)
    labels = torch.randint(0, VOCAB, (2, 7))
    labels[1, :2] = IGNORE_INDEX
    valid = next_token_labels(labels) != IGNORE_INDEX
    cached = sparse_of(teacher, valid, k, "tail", temperature)
    if hidden:  # the identity head over "hidden states" that are the logits
        identity = torch.nn.Identity()
        value = chunked_token_loss(kl, student_logits, identity, labels, teacher_logits=cached,
                                   temperature=temperature, chunk_size=3)
    else:
        value = chunked_token_loss(kl, student_logits, None, labels, teacher_logits=cached, temperature=temperature,
                                   chunk_size=3)
    total = 0.0  # by hand: P = teacher's probabilities of its top-k and of the rest; Q = the student's of the same
    for b, i in valid.nonzero().tolist():
        p = torch.softmax(teacher[b, i] / temperature, -1)
        q = torch.softmax(student_logits[b, i] / temperature, -1)
        top = teacher[b, i].topk(k).indices
        p_buckets = torch.cat([p[top], (1 - p[top].sum()).reshape(1)])
        q_buckets = torch.cat([q[top], (1 - q[top].sum()).reshape(1)])
        total += float((p_buckets * (p_buckets.log() - q_buckets.log())).sum()) * temperature ** 2
    assert float(value) == pytest.approx(total, rel=1e-5)  # the chunked loss computes in float32


def test_a_student_trained_from_the_cache_alone_comes_closer_to_the_teacher(tmp_path):
    torch.manual_seed(0)
    teacher, train, held_out = sharp_teacher(), token_data(96, seed=4), token_data(24, seed=5, split="test")
    cache = build_token_cache(teacher, train, tmp_path / "cache", k=8, progress=False, report=None)
    held_out_teacher = teacher_logits(teacher, held_out)

    def held_out_kl(model) -> float:
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=held_out.inputs["input_ids"], attention_mask=held_out.inputs["attention_mask"]).logits
        return TokenTask().metrics(logits, held_out_teacher, None, inputs=held_out.inputs)["kl_to_teacher"]

    student = causal_lm_from_config("gpt2", vocab_size=VOCAB, hidden_size=32, num_layers=1, max_length=LENGTH, seed=1)
    before = held_out_kl(student)
    student.train()
    result = distill.distil(None, student, train, task="token", cache=tmp_path / "cache", eval=held_out, epochs=6,
                            lr=1e-2,
                            batch_size=16, output_dir=tmp_path / "run", progress=False, measure_latency=False,
                            threads=1)
    after = held_out_kl(result.model)
    assert after < 0.6 * before, (before, after)
    recipe = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "cache" in recipe and str(cache.path) in recipe
    assert math.isfinite(result.metrics["perplexity"])


def test_distil_builds_the_cache_with_the_teacher_and_runs_it_on_held_out_text_only(tmp_path):
    teacher, train, held_out = sharp_teacher(), token_data(32, seed=6), token_data(8, seed=7, split="test")
    spec = {"path": tmp_path / "cache", "k": 6}
    build_token_cache(teacher, train, **spec, progress=False, report=None)
    seen = []  # the rows of every input the teacher is run on from here on
    hook = teacher.register_forward_hook(
        lambda module, args, kwargs, out: seen.extend(map(tuple, kwargs["input_ids"].tolist())), with_kwargs=True)
    student = causal_lm_from_config("gpt2", vocab_size=VOCAB, hidden_size=16, num_layers=1, max_length=LENGTH, seed=2)
    result = distill.distil(teacher, student, train, eval=held_out, task="token", cache=spec, epochs=1,
                            batch_size=8, output_dir=tmp_path / "run", progress=False, measure_latency=False, threads=1)
    hook.remove()
    assert seen and set(seen) <= set(map(tuple, held_out.inputs["input_ids"].tolist()))  # never a training batch
    assert math.isfinite(result.metrics["kl_to_teacher"])
    with pytest.raises(RecipeError, match="top-k size"):  # a cache of other settings is refused, not reused
        open_teacher_cache({"path": tmp_path / "cache", "k": 4}, teacher, train, task="token")
