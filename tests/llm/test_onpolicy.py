"""On-policy / generalised KD (Agarwal et al. 2024): the student's samples scored by the teacher, every
token after the first EOS masked, seeded draws that a resumed run repeats, fraction 0 = supervised KD."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="causal LMs need transformers (the llm extra)")

import distill  # noqa: E402
from distill.data import TensorData  # noqa: E402
from distill.distiller import Distiller, LossTerm  # noqa: E402
from distill.llm import ChunkedLM, causal_lm_from_config  # noqa: E402
from distill.llm.onpolicy import (OnPolicy, completion_batch, completion_mask, prompts_of,  # noqa: E402
                                  sample_completions)
from distill.recipe import RecipeError  # noqa: E402
from distill.training.loop import StopTraining  # noqa: E402

VOCAB, EOS, PAD = 48, 0, 1
RUN = {"task": "token", "progress": False, "measure_latency": False, "threads": 1}


def tiny_lm(hidden=32, layers=1, seed=0, sharpen=1.0):
    model = causal_lm_from_config("gpt2", vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, max_length=48,
                                  seed=seed, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)  # a peaked teacher: its distribution is worth learning
    return model


def prompt_data(teacher, count=96, prompt=4, new=12, seed=0):
    """Prompts of random tokens; responses sampled from ``teacher``: right-padded rows with a loss_mask."""
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, VOCAB, (count, prompt), generator=generator)
    completions = sample_completions(teacher, prompts, torch.ones_like(prompts), max_new_tokens=new, eos_token_id=EOS,
                                     pad_token_id=PAD, generator=generator, stop_early=False)
    return TensorData(completion_batch(prompts, torch.ones_like(prompts), completions, eos_token_id=EOS,
                                       pad_token_id=PAD), name="prompts")


def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    unequal = [key for key, tensor in first.items() if not torch.equal(second[key], tensor)]
    assert not unequal, unequal


def stop_at(step):
    def callback(state):
        if state.step == step:
            raise StopTraining
    return callback


def test_completion_batch_masks_everything_after_the_first_eos():
    prompt_ids = torch.tensor([[PAD, 5, 6], [7, 8, 9]])  # left-padded
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    completions = torch.tensor([[10, EOS, 11, 12], [13, 14, 15, 16]])  # row 1 never ends
    assert completion_mask(completions, EOS).tolist() == [[True, True, False, False], [True] * 4]
    batch = completion_batch(prompt_ids, prompt_mask, completions, eos_token_id=EOS, pad_token_id=PAD)
    # right-padded as prompt_response_data lays rows out; the EOS is scored, what follows it is padding
    assert batch["input_ids"].tolist() == [[5, 6, 10, EOS, PAD, PAD, PAD], [7, 8, 9, 13, 14, 15, 16]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]]


@pytest.mark.parametrize("loss", [{"name": "jsd", "beta": 0.5}, {"name": "reverse_kl"}, {"name": "kl"}])
def test_tokens_after_eos_do_not_change_the_loss(loss):
    teacher, student = tiny_lm(seed=0, sharpen=3.0), tiny_lm(hidden=16, seed=1).train()
    name, params = loss["name"], {k: v for k, v in loss.items() if k != "name"}
    distiller = Distiller(student, teacher, [LossTerm(name, params=params)], task="token")
    prompt_ids, prompt_mask = torch.tensor([[3, 4, 5], [PAD, 6, 7]]), torch.tensor([[1, 1, 1], [0, 1, 1]])

    def loss_of(completions):
        inputs = completion_batch(prompt_ids, prompt_mask, torch.tensor(completions), eos_token_id=EOS,
                                  pad_token_id=PAD)
        return distiller({"input": inputs})["loss"]

    reference = loss_of([[9, 10, EOS, 20, 21], [11, EOS, 30, 31, 32]])
    assert torch.equal(loss_of([[9, 10, EOS, 40, 2], [11, EOS, EOS, 5, 47]]), reference)
    assert not torch.equal(loss_of([[9, 12, EOS, 20, 21], [11, EOS, 30, 31, 32]]), reference)  # before EOS counts
    # the loss is the chosen loss on the sampled tokens only: the mean over the completions' 5 tokens
    inputs = completion_batch(prompt_ids, prompt_mask, torch.tensor([[9, 10, EOS, 20, 21], [11, EOS, 30, 31, 32]]),
                              eos_token_id=EOS, pad_token_id=PAD)
    logits_s, logits_t = student(**{k: inputs[k] for k in ("input_ids", "attention_mask")}).logits, \
        teacher(**{k: inputs[k] for k in ("input_ids", "attention_mask")}).logits
    predicts = inputs["loss_mask"][:, 1:].bool()  # position i predicts token i + 1
    fn = distill.losses.LOGIT_LOSSES[name]
    expected = fn(logits_s[:, :-1][predicts], logits_t[:, :-1][predicts], reduction="mean", **params)
    assert int(predicts.sum()) == 5
    torch.testing.assert_close(reference, expected, rtol=1e-5, atol=1e-6)


def test_prompts_are_taken_before_the_response_and_left_padded():
    inputs = {"input_ids": torch.tensor([[3, 4, 5, 6, PAD], [7, 8, 9, 10, 11]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
              "loss_mask": torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]])}
    ids, mask = prompts_of(inputs, pad_token_id=PAD)
    assert ids.tolist() == [[PAD, 3, 4], [7, 8, 9]] and mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    packed = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with pytest.raises(ValueError, match="on_policy.prompt_length"):
        prompts_of(packed, pad_token_id=PAD)
    ids, mask = prompts_of(packed, prompt_length=2, pad_token_id=PAD)
    assert ids.tolist() == [[3, 4], [7, 8]]
    inputs["loss_mask"][0] = torch.tensor([1, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="row 0 .* empty prompt"):
        prompts_of(inputs, pad_token_id=PAD)


def test_draws_are_seeded_by_seed_micro_batch_and_rank_and_leave_global_rng_alone():
    student = tiny_lm(seed=1)
    batch = {"input": prompt_data(tiny_lm(seed=0, sharpen=3.0), count=8).inputs, "index": torch.arange(8)}
    sampler = OnPolicy(fraction=1.0, max_new_tokens=10, temperature=1.0, seed=3)
    state = torch.get_rng_state()
    first = sampler.sample_batch(batch, student, micro=5)["input"]["input_ids"]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(sampler.sample_batch(batch, student, micro=5)["input"]["input_ids"], first)
    for other in (sampler.sample_batch(batch, student, micro=6), sampler.sample_batch(batch, student, micro=5, rank=1),
                  OnPolicy(fraction=1.0, max_new_tokens=10, seed=4).sample_batch(batch, student, micro=5)):
        assert not torch.equal(other["input"]["input_ids"], first)
    assert torch.equal(sampler.sample_batch(batch, student, micro=5)["index"], batch["index"])
    # which micro-batches are sampled: a seeded Bernoulli(fraction), the same on every rank
    half = OnPolicy(fraction=0.5, seed=3)
    chosen = [half.is_sampled(micro) for micro in range(2000)]
    assert abs(sum(chosen) / 2000 - 0.5) < 0.04 and chosen == [half.is_sampled(m) for m in range(2000)]
    assert not any(OnPolicy(fraction=0.0).is_sampled(m) for m in range(100))


def test_greedy_sampling_equals_generate():
    model = tiny_lm(seed=2, sharpen=2.0)
    prompt_ids, prompt_mask = torch.tensor([[PAD, PAD, 5, 6], [7, 8, 9, 10]]), torch.tensor([[0, 0, 1, 1], [1] * 4])
    ours = sample_completions(model, prompt_ids, prompt_mask, max_new_tokens=9, eos_token_id=EOS, pad_token_id=PAD,
                              temperature=0.0)
    theirs = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=9, do_sample=False,
                            eos_token_id=EOS, pad_token_id=PAD)
    assert torch.equal(ours, theirs[:, prompt_ids.shape[1]:])


def test_fraction_zero_is_supervised_kd_exactly(tmp_path):
    teacher = tiny_lm(seed=0, sharpen=3.0)
    train = prompt_data(teacher, count=32)

    def run(folder, **kwargs):
        return distill.distil(teacher, tiny_lm(hidden=16, seed=1), train, steps=3, batch_size=8, lr=3e-3,
                              losses=[{"name": "jsd", "beta": 0.5}], output_dir=tmp_path / folder, **RUN,
                              **kwargs).model.state_dict()

    assert_same_weights(run("supervised"), run("zero", on_policy={"fraction": 0.0, "max_new_tokens": 8}))


def test_a_resumed_on_policy_run_redraws_the_same_samples(tmp_path):
    teacher = tiny_lm(seed=0, sharpen=3.0)
    train = prompt_data(teacher, count=32)
    settings = {"fraction": 0.5, "max_new_tokens": 8, "temperature": 1.0}

    def run(folder, **kwargs):
        return distill.distil(teacher, tiny_lm(hidden=16, seed=1), train, steps=6, batch_size=8, grad_accum=2, lr=3e-3,
                              checkpoint_every=2, on_policy=settings, output_dir=tmp_path / folder, **RUN, **kwargs)

    whole = run("whole")
    with pytest.raises(StopTraining):  # stopped after step 3 (mid-way between checkpoints), then resumed
        run("parts", callbacks=[stop_at(3)])
    resumed = run("parts", resume=True)
    assert resumed.state.step == 6
    assert_same_weights(whole.model.state_dict(), resumed.model.state_dict())
    other_seed = distill.distil(teacher, tiny_lm(hidden=16, seed=1), train, steps=6, batch_size=8, grad_accum=2,
                                lr=3e-3, on_policy=settings, seed=1, output_dir=tmp_path / "seed1", **RUN)
    assert not torch.equal(other_seed.model.lm_head.weight, whole.model.lm_head.weight)


def test_on_policy_run_brings_a_tinier_student_to_the_teacher(tmp_path, monkeypatch):
    """GKD with λ = 0.5 and JSD(0.5); the student a ChunkedLM (losses from hidden states, sampling from its model)."""
    teacher = tiny_lm(hidden=48, layers=2, seed=0, sharpen=10.0)
    train, held_out = prompt_data(teacher, count=192, seed=0), prompt_data(teacher, count=48, seed=1)
    sampled = []
    real = OnPolicy.sample_batch

    def counting(self, batch, model, **kwargs):
        sampled.append(kwargs["micro"])
        return real(self, batch, model, **kwargs)

    monkeypatch.setattr(OnPolicy, "sample_batch", counting)

    def run(folder, **kwargs):
        return distill.distil(teacher, ChunkedLM(tiny_lm(hidden=16, seed=1)), train, eval=held_out, batch_size=16,
                              losses=[{"name": "jsd", "beta": 0.5}], output_dir=tmp_path / folder, **RUN,
                              **kwargs).metrics

    before = run("before", steps=1, lr=1e-9)
    after = run("after", epochs=3, lr=1e-2, on_policy={"fraction": 0.5, "max_new_tokens": 12, "temperature": 1.0})
    assert 8 <= len(sampled) <= 28  # about half of the 36 micro-batches were the student's own samples
    assert after["kl_to_teacher"] < 0.5 * before["kl_to_teacher"]  # measured: 0.77 -> 0.27
    assert after["agreement"] > before["agreement"]


def test_bad_on_policy_settings_are_refused_naming_the_field(tmp_path):
    teacher = tiny_lm(seed=0)
    train = prompt_data(teacher, count=16)

    def run(**kwargs):
        return distill.distil(teacher, tiny_lm(hidden=16, seed=1), train, steps=1, batch_size=8,
                              output_dir=tmp_path / "bad", **{**RUN, **kwargs})

    with pytest.raises(RecipeError, match="on_policy.fraction"):
        run(on_policy={"fraction": 1.5})
    with pytest.raises(RecipeError, match="max_new_tokenz"):
        run(on_policy={"max_new_tokenz": 8})
    with pytest.raises(RecipeError, match="task 'token'"):
        distill.distil(teacher, tiny_lm(hidden=16, seed=1), train, steps=1, output_dir=tmp_path / "bad",
                       progress=False, on_policy={"fraction": 0.5})
    with pytest.raises(RecipeError, match="teacher.precompute"):
        run(on_policy={"fraction": 0.5}, precompute_teacher=True)
    with pytest.raises(ValueError, match="on_policy.temperature"):
        OnPolicy(temperature=-1.0)
