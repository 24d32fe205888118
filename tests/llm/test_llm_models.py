"""Causal LMs: folders (safetensors only, no remote code), configs, layer-dropped students, vocabularies,
and ChunkedLM (hidden states + head: the same training step as full logits, no (B, L, V) tensor saved)."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="causal LMs need transformers (the llm extra)")

from distill.distiller import Distiller, LossTerm  # noqa: E402
from distill.llm.models import (ChunkedLM, causal_lm_from_config, load_causal_lm, shared_vocabulary_size,  # noqa: E402
                                student_from_teacher)
from distill.tasks.token import TokenTask  # noqa: E402

V = 61


def batch_of(seed=0, batch=3, length=10):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[0, :3] = -100  # a prompt
    return {"input": {"input_ids": ids, "attention_mask": mask}, "target": labels}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_chunked_lm_gives_the_same_loss_and_gradient_as_full_logits(family):
    teacher = causal_lm_from_config(family, vocab_size=V, hidden_size=32, num_layers=2, num_heads=2, seed=1)
    student = causal_lm_from_config(family, vocab_size=V, hidden_size=16, num_layers=1, num_heads=2, seed=2)
    batch = batch_of()
    results = []
    for model in (student, ChunkedLM(student)):
        model.train()
        student.zero_grad()
        distiller = Distiller(model, teacher, [LossTerm("kl", temperature=2.0), LossTerm("cross_entropy", weight=0.5)],
                              task=TokenTask(chunk_size=4))
        out = distiller(batch)
        out["loss"].backward()
        results.append((out["loss"].detach(), [p.grad.clone() for p in student.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_chunked_lm_saves_no_tensor_of_every_position_times_the_vocabulary():
    vocab = 500  # above the blocks' own activations (4 x 16 wide MLP)
    teacher = causal_lm_from_config("gpt2", vocab_size=vocab, hidden_size=32, num_layers=1, seed=1)
    student = causal_lm_from_config("gpt2", vocab_size=vocab, hidden_size=16, num_layers=1, seed=2)
    batch = batch_of(batch=4, length=12)
    positions = 4 * 11  # scored positions: each sequence but its last

    def largest(model, chunk_size):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            Distiller(model.train(), teacher, [LossTerm("kl")], task=TokenTask(chunk_size))(batch)["loss"].backward()
        return max(sizes)

    # at most one chunk of logits, or the head's (V, H) weight gradient that the fused path keeps for backward
    assert largest(ChunkedLM(student), 8) <= max(8 * vocab, vocab * 16) < positions * vocab / 2
    assert largest(student, None) >= positions * vocab  # the model's own head saves (B, L, V)-sized tensors


def test_chunked_lm_in_eval_gives_the_models_logits_cut_to_the_vocabulary():
    model = causal_lm_from_config("llama", vocab_size=V + 3, hidden_size=16, num_layers=1, seed=0).eval()
    ids = torch.randint(0, V, (2, 5))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        cut = ChunkedLM(model, vocab_size=V).eval()(input_ids=ids)
    torch.testing.assert_close(cut, full[..., :V])
    hidden = ChunkedLM(model, vocab_size=V).train()(input_ids=ids)
    assert hidden.size() == V and hidden.hidden.shape == (2, 5, 16)
    torch.testing.assert_close(hidden.head(hidden.hidden), model(input_ids=ids).logits[..., :V])


def test_student_from_teacher_keeps_the_teachers_blocks():
    teacher = causal_lm_from_config("llama", vocab_size=V, hidden_size=16, num_layers=4, seed=0).eval()
    student = student_from_teacher(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2 and len(teacher.model.layers) == 4
    torch.testing.assert_close(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    gpt = student_from_teacher(causal_lm_from_config("gpt2", vocab_size=V, num_layers=3, seed=0), [1])
    assert gpt.config.n_layer == 1 and len(gpt.transformer.h) == 1


def test_folder_round_trip_and_refusals(tmp_path):
    model = causal_lm_from_config("gpt2", vocab_size=V, hidden_size=16, num_layers=1, seed=0).eval()
    model.save_pretrained(tmp_path / "gpt")
    loaded = load_causal_lm(tmp_path / "gpt")
    ids = torch.randint(0, V, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tmp_path / "gpt" / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no safetensors weights .only pytorch_model.bin"):
        load_causal_lm(pickled)
    config = json.loads((tmp_path / "gpt" / "config.json").read_text())
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Y"}}))
    with pytest.raises(ValueError, match="remote code"):
        load_causal_lm(tmp_path / "gpt")


def word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token=words[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=words[0])


def test_shared_vocabulary_trims_padding_and_refuses_other_tokenizers():
    words = ["<unk>"] + [f"w{i}" for i in range(V - 1)]
    tokenizer = word_tokenizer(words)
    padded_teacher = causal_lm_from_config("gpt2", vocab_size=V + 3, hidden_size=16, num_layers=1, seed=0)
    student = causal_lm_from_config("gpt2", vocab_size=V, hidden_size=16, num_layers=1, seed=1)
    assert shared_vocabulary_size(padded_teacher, student, tokenizer) == V
    assert shared_vocabulary_size(padded_teacher, student, tokenizer, word_tokenizer(list(words))) == V
    other = word_tokenizer(words[:1] + list(reversed(words[1:])))
    with pytest.raises(ValueError, match="tokenizer .* and the student's .* different ids"):
        shared_vocabulary_size(padded_teacher, student, tokenizer, other)
    small = causal_lm_from_config("gpt2", vocab_size=V - 5, hidden_size=16, num_layers=1, seed=1)
    with pytest.raises(ValueError, match="student's output layer has 56 rows"):
        shared_vocabulary_size(padded_teacher, small, tokenizer)
    # the cut pair trains through the token task; the uncut one is refused naming both sizes
    batch = batch_of()
    terms = [LossTerm("kl")]
    value = Distiller(ChunkedLM(student).train(), ChunkedLM(padded_teacher, vocab_size=V), terms, task=TokenTask())(batch)
    assert torch.isfinite(value["loss"])
    with pytest.raises(ValueError, match="vocabulary has 64 entries and the student's 61"):
        Distiller(ChunkedLM(student).train(), padded_teacher, terms, task=TokenTask())(batch)


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_gguf_file_written_here_loads_back_with_the_same_logits(tmp_path, dtype):
    pytest.importorskip("gguf", reason="GGUF files need the gguf package (the llm extra)")
    from distill.llm.models import save_gguf

    model = causal_lm_from_config("llama", vocab_size=V, hidden_size=32, num_layers=2, num_heads=4,
                                  num_key_value_heads=2, seed=0, tie_word_embeddings=False).eval()
    path = save_gguf(model, tmp_path / "tiny.gguf", dtype=dtype)
    loaded = load_causal_lm(path)
    assert loaded.config.num_key_value_heads == 2 and loaded.config.num_hidden_layers == 2
    ids = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    torch.testing.assert_close(got, expected, **({"rtol": 0, "atol": 0} if dtype == "f32" else {"rtol": 1e-2, "atol": 1e-2}))
    with pytest.raises(ValueError, match="writes Llama models"):
        save_gguf(causal_lm_from_config("gpt2", vocab_size=V, seed=0), tmp_path / "gpt.gguf")
