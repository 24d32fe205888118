"""Sequence-level KD (Kim & Rush 2016): the teacher's generations made once and stored (JSONL + manifest),
greedy equal to ``generate``, never written over a file distill did not make, and a student trained on
them comes to generate what the teacher generates."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers", reason="causal LMs need transformers (the llm extra)")

import distill  # noqa: E402
import distill.llm.sequence as sequence  # noqa: E402
from distill.llm import causal_lm_from_config, prompt_response_data, read_jsonl  # noqa: E402
from distill.llm.onpolicy import sample_completions  # noqa: E402
from distill.llm.sequence import TeacherDataError, generate_teacher_data, manifest_path  # noqa: E402

WORDS = ("the a cat dog bird fish sat ran flew swam on under over near mat tree sky sea red blue green big small "
         "old young quick slow and then").split()


@pytest.fixture(scope="module")
def tokenizer():
    """A word-level tokenizer (every id decodes to a whole word, so that text round-trips exactly whatever an
    untrained teacher emits; a byte-level BPE's single bytes would decode to U+FFFD)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(["<|endoftext|>", "<|pad|>", "<unk>", *WORDS])}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   unk_token="<unk>")


def prompts(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (int(length),), generator=generator))
            for length in torch.randint(1, 5, (count,), generator=generator)]


def lm(tokenizer, hidden, layers, seed, sharpen=1.0):
    model = causal_lm_from_config("gpt2", vocab_size=len(tokenizer), hidden_size=hidden, num_layers=layers,
                                  max_length=48, seed=seed, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
    return model


def test_greedy_generations_equal_generate_and_round_trip(tmp_path, tokenizer):
    teacher = lm(tokenizer, 32, 2, seed=0, sharpen=6.0).eval()
    texts = prompts(7)
    path = generate_teacher_data(teacher, tokenizer, texts, tmp_path / "teacher.jsonl", max_new_tokens=10,
                                 batch_size=3, progress=False)  # left-padded batches of 3, 3, 1
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["prompt"] for line in lines] == texts
    for line, text in zip(lines, texts):  # each prompt alone through transformers' own greedy search
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        generated = teacher.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                     do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        ended = tokenizer.eos_token_id in generated
        response = generated[:generated.index(tokenizer.eos_token_id)] if ended else generated
        assert line["response"] == tokenizer.decode(response)
        assert line["stop"] == ("eos" if ended else "length")
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["examples"] == 7 and manifest["settings"]["max_new_tokens"] == 10
    assert manifest["settings"]["temperature"] == 0.0 and len(manifest["teacher_fingerprint"]) == 16
    examples = read_jsonl(path)  # the training data: prompt masked
    data = prompt_response_data(examples, tokenizer, max_length=24)
    assert len(data) == 7 and int(data.inputs["loss_mask"][0].sum()) >= 1
    prompt_tokens = len(tokenizer(texts[0], add_special_tokens=False)["input_ids"])
    assert data.inputs["loss_mask"][0, :prompt_tokens].sum() == 0


def test_stored_generations_are_reused_and_never_written_over_a_foreign_file(tmp_path, tokenizer, monkeypatch):
    teacher = lm(tokenizer, 32, 1, seed=0, sharpen=4.0)
    path = tmp_path / "teacher.jsonl"
    settings = {"max_new_tokens": 6, "temperature": 1.0, "seed": 5, "batch_size": 4, "progress": False}
    generate_teacher_data(teacher, tokenizer, prompts(6), path, **settings)
    first = path.read_text()
    sampled = []
    real = sequence.sample_completions

    def counting(*args, **kwargs):
        sampled.append(kwargs["temperature"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sequence, "sample_completions", counting)
    calls = len(sampled)
    generate_teacher_data(teacher, tokenizer, prompts(6), path, **settings)  # the same: the stored file, no teacher run
    assert len(sampled) == calls and path.read_text() == first
    with pytest.raises(TeacherDataError, match="different settings"):
        generate_teacher_data(teacher, tokenizer, prompts(6), path, **{**settings, "seed": 6})
    again = generate_teacher_data(teacher, tokenizer, prompts(6), path, **{**settings, "seed": 6}, overwrite=True)
    assert len(sampled) > calls and again.read_text() != first  # other draws
    generate_teacher_data(teacher, tokenizer, prompts(6), path, **settings, overwrite=True)
    assert path.read_text() == first  # seeded: the same draws again
    path.write_text(first.replace("\"stop\"", "\"stop\" ", 1))  # edited by hand: not distill's file any more
    with pytest.raises(TeacherDataError, match="sha256"):
        generate_teacher_data(teacher, tokenizer, prompts(6), path, **settings)
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text("{\"prompt\": \"keep\", \"response\": \"me\"}\n")
    with pytest.raises(TeacherDataError, match="did not write it"):
        generate_teacher_data(teacher, tokenizer, prompts(6), foreign, **settings, overwrite=True)
    assert foreign.read_text() == "{\"prompt\": \"keep\", \"response\": \"me\"}\n"
    with pytest.raises(ValueError, match="batch_size"):
        generate_teacher_data(teacher, tokenizer, prompts(6), tmp_path / "x.jsonl", batch_size=0)


def test_a_student_trained_on_the_generations_generates_what_the_teacher_does(tmp_path, tokenizer):
    teacher = lm(tokenizer, 48, 2, seed=0, sharpen=6.0).eval()
    texts = prompts(64, seed=1)
    path = generate_teacher_data(teacher, tokenizer, texts, tmp_path / "teacher.jsonl", max_new_tokens=8,
                                 batch_size=16, progress=False)
    train = prompt_response_data(read_jsonl(path), tokenizer, max_length=24)
    student = lm(tokenizer, 24, 1, seed=1)

    def greedy_match(model) -> float:  # the share of the teacher's greedy tokens the model's greedy search repeats
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        width = max(map(len, ids))
        prompt = torch.tensor([[tokenizer.pad_token_id] * (width - len(row)) + row for row in ids])
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in ids])
        outputs = [sample_completions(m, prompt, mask, max_new_tokens=8, eos_token_id=tokenizer.eos_token_id,
                                      temperature=0.0, stop_early=False) for m in (model, teacher)]
        return float((outputs[0] == outputs[1]).float().mean())

    before = greedy_match(student)
    trained = distill.distil(None, student, train, task="token", losses=[{"name": "cross_entropy"}], epochs=30,
                             batch_size=16, lr=1e-2, output_dir=tmp_path / "student", progress=False,
                             measure_latency=False, threads=1).model
    after = greedy_match(trained)
    assert before < 0.2 and after > 0.8, (before, after)  # measured: 0.02 -> 0.98


def test_distill_teacher_text_writes_what_the_python_api_writes(tmp_path, tokenizer):
    from typer.testing import CliRunner

    from distill.cli import app
    from distill.llm import save_causal_lm

    teacher = lm(tokenizer, 32, 2, seed=0, sharpen=6.0).eval()
    folder = save_causal_lm(teacher, tokenizer, tmp_path / "teacher")
    texts = prompts(5)
    (tmp_path / "prompts.txt").write_text("\n".join(texts[:3]) + "\n\n" + "\n".join(texts[3:]) + "\n")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": t, "response": "ignored"}) + "\n"
                                                    for t in texts))
    expected = generate_teacher_data(teacher, tokenizer, texts, tmp_path / "python.jsonl", max_new_tokens=8,
                                     batch_size=2, progress=False).read_text()
    runner = CliRunner()
    for source in ("prompts.txt", "prompts.jsonl"):
        out = tmp_path / f"cli-{source}.jsonl"
        result = runner.invoke(app, ["teacher-text", str(folder), str(tmp_path / source), str(out),
                                     "--max-new-tokens", "8", "--batch-size", "2", "--no-progress"])
        assert result.exit_code == 0, result.output
        assert out.read_text() == expected and "5 responses" in result.output
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "the cat"}) + "\n" + json.dumps({"text": "x"}) + "\n")
    result = runner.invoke(app, ["teacher-text", str(folder), str(tmp_path / "bad.jsonl"), str(tmp_path / "o.jsonl")])
    message = " ".join((result.stderr or result.output).split())
    assert result.exit_code == 2 and f"{tmp_path / 'bad.jsonl'}:2" in message and "'prompt'" in message
    assert not (tmp_path / "o.jsonl").exists()
