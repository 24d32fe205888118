"""distill generate and save_causal_lm: a trained student (a ChunkedLM) saved as a transformers folder
loads back with AutoModelForCausalLM; `distill generate FOLDER` streams the same greedy text as
model.generate; sampling is seeded; a GGUF file generates too; a folder that is not a causal LM is
refused naming it."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers", reason="causal LMs need transformers (the llm extra)")

from typer.testing import CliRunner  # noqa: E402

from distill.cli import app  # noqa: E402
from distill.llm import ChunkedLM, causal_lm_from_config, train_bpe_tokenizer  # noqa: E402
from distill.llm.generate import GenerateError, generate, load_generator, save_causal_lm  # noqa: E402

runner = CliRunner()
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the bird sang in the tree", "cats and dogs play"] * 8
PROMPT = "the cat"


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS, vocab_size=300, min_frequency=1)


def tiny(tokenizer, family: str = "gpt2"):
    extra = {"eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.eos_token_id,
             "initializer_range": 0.3}  # larger random weights: greedy text that does not repeat one token
    return causal_lm_from_config(family, vocab_size=len(tokenizer), hidden_size=32, num_layers=2, max_length=64,
                                 seed=3, **extra).eval()


def greedy(model, tokenizer, new: int) -> str:
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_a_saved_student_loads_back_with_transformers(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny(tokenizer)
    folder = save_causal_lm(ChunkedLM(model).train(), tokenizer, tmp_path / "student")  # the wrapper is taken off
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    ids = tokenizer(TEXTS[:2], return_tensors="pt", padding=True)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert AutoTokenizer.from_pretrained(folder, local_files_only=True)(TEXTS[0])["input_ids"] == \
        tokenizer(TEXTS[0])["input_ids"]
    with pytest.raises(FileExistsError, match="already holds"):
        save_causal_lm(model, tokenizer, folder)
    save_causal_lm(model, tokenizer, folder, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        save_causal_lm(model, tokenizer, tmp_path / "other", overwrite=True)  # not a model folder: never replaced


def test_distill_generate_streams_the_greedy_text_of_model_generate(tmp_path, tokenizer):
    model = tiny(tokenizer)
    folder = save_causal_lm(model, tokenizer, tmp_path / "student")
    expected = greedy(model, tokenizer, 12)
    assert len(set(expected)) > 3
    result = runner.invoke(app, ["generate", str(folder), "--prompt", PROMPT, "--max-new-tokens", "12"])
    assert result.exit_code == 0, result.output
    assert result.stdout == PROMPT + expected + "\n"
    pieces = []  # streamed: several pieces, as they are decoded
    loaded, loaded_tokenizer = load_generator(folder)
    text = generate(loaded, loaded_tokenizer, PROMPT, max_new_tokens=12, on_text=pieces.append)
    assert text == expected == "".join(pieces) and len(pieces) > 1


def test_sampling_is_seeded(tmp_path, tokenizer):
    model = tiny(tokenizer)
    runs = {seed: generate(model, tokenizer, PROMPT, max_new_tokens=10, temperature=1.5, top_k=50, seed=seed)
            for seed in (0, 0, 1, 2)}
    again = generate(model, tokenizer, PROMPT, max_new_tokens=10, temperature=1.5, top_k=50, seed=0)
    assert again == runs[0]
    assert len(set(runs.values())) > 1  # other seeds, other samples
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tokenizer, PROMPT, temperature=-1.0)


def test_a_gguf_file_generates_the_llama_models_text(tmp_path, tokenizer):
    pytest.importorskip("gguf", reason="GGUF files need the gguf package (the llm extra)")
    from distill.llm import save_gguf

    model = tiny(tokenizer, "llama")
    tokenizer.save_pretrained(tmp_path)  # save_gguf writes no vocabulary: the tokenizer files beside it are used
    path = save_gguf(model, tmp_path / "tiny.gguf")
    result = runner.invoke(app, ["generate", str(path), "--prompt", PROMPT, "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert result.stdout == PROMPT + greedy(model, tokenizer, 8) + "\n"


def test_a_folder_that_is_not_a_causal_lm_is_refused_naming_it(tmp_path):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    result = runner.invoke(app, ["generate", str(encoder), "--prompt", "hi"])
    message = " ".join((result.stderr or result.output).split())
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(encoder) in message and "not a causal language model" in message and "BertModel" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenerateError, match="no config.json"):
        load_generator(empty)
    with pytest.raises(GenerateError, match="does not exist"):
        load_generator(tmp_path / "missing")


def test_sample_generations_continue_the_prompt_part_of_prompt_response_rows(tmp_path, tokenizer):
    from distill.llm import prompt_response_data, sample_generations
    from distill.report.markdown import read_generations

    model = tiny(tokenizer)
    data = prompt_response_data([{"prompt": "the cat", "response": " sat on the mat"},
                                 {"prompt": "a dog", "response": " ran in the park"}], tokenizer, max_length=16)
    samples = sample_generations({"student": model, "not an LM": torch.nn.Linear(2, 2)}, tokenizer, data,
                                 max_new_tokens=12)
    assert samples["prompts"] == ["the cat", "a dog"]  # the loss mask's boundary, not the first 16 tokens
    assert samples["references"] == [" sat on the mat", " ran in the park"]
    assert list(samples["generations"]) == ["student"]  # a module that cannot generate is left out
    assert samples["generations"]["student"][0] == greedy(model, tokenizer, 12)
    (tmp_path / "generations.json").write_text(json.dumps(samples))
    assert read_generations(tmp_path) == samples
    (tmp_path / "generations.json").write_text(json.dumps({**samples, "references": ["one"]}))
    assert read_generations(tmp_path) is None  # malformed: the report leaves the section out
