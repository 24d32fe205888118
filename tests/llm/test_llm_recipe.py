"""LLM distillation from a recipe (task token): a causal-LM teacher folder named by path (no checkpoint), a
fresh or layer-dropped causal_lm student, causal_lm_text data; the recipe run equals the same run from
Python, a token cache that keeps every id (k = V, float32) gives the live teacher's run, `distill cache`
builds it, and the student file rebuilds."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("transformers", reason="causal LMs need transformers (the llm extra)")

import yaml  # noqa: E402

import distill  # noqa: E402
from distill.cli import app  # noqa: E402
from distill.llm import ChunkedLM, causal_lm_from_config, load_causal_lm, save_causal_lm, train_bpe_tokenizer  # noqa: E402
from distill.llm.data import causal_lm_text  # noqa: E402
from distill.recipe import RecipeError, load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402

WORDS = "the a cat dog bird sat ran flew on under mat tree sky red blue big small and then".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_recipe")
    generator = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (int(n),), generator=generator))
             for n in torch.randint(3, 9, (160,), generator=generator)]
    (root / "train.txt").write_text("\n".join(lines[:128]) + "\n")
    (root / "test.txt").write_text("\n".join(lines[128:]) + "\n")
    tokenizer = train_bpe_tokenizer(lines, vocab_size=280, min_frequency=1)
    teacher = causal_lm_from_config("gpt2", vocab_size=len(tokenizer), hidden_size=32, num_layers=2, max_length=32,
                                    seed=0, initializer_range=0.3)
    save_causal_lm(teacher, tokenizer, root / "teacher")
    return root, len(tokenizer)


def recipe_tree(root, vocab, out, **extra):
    return {"name": "llm", "seed": 0, "output_dir": str(out), "task": "token",
            "data": {"name": "causal_lm_text", "root": str(root), "batch_size": 16, "eval_batch_size": 64,
                     "params": {"tokenizer": "teacher", "length": 16}},
            "teacher": {"model": "causal_lm", "params": {"path": str(root / "teacher")}, **extra},
            "student": {"model": "causal_lm", "params": {"config": {"vocab_size": vocab, "hidden_size": 16,
                                                                    "num_layers": 1, "max_length": 32, "seed": 1},
                                                         "chunked": True}},
            "losses": [{"name": "kl"}], "optimizer": {"name": "adamw", "lr": 0.01}, "schedule": {"name": "constant"},
            "train": {"epochs": 2, "threads": 1}}


def test_a_recipe_run_equals_the_same_run_from_python(setup, tmp_path):
    root, vocab = setup
    result = run_recipe(load_recipe(recipe_tree(root, vocab, tmp_path / "recipe")), progress=False,
                        measure_latency=False)
    train = causal_lm_text("train", root, tokenizer="teacher", length=16)
    held_out = causal_lm_text("test", root, tokenizer="teacher", length=16)
    student = ChunkedLM(causal_lm_from_config("gpt2", vocab_size=vocab, hidden_size=16, num_layers=1, max_length=32,
                                              seed=1))
    python = distill.distil(load_causal_lm(root / "teacher"), student, train, eval=held_out, task="token",
                            losses=[{"name": "kl"}], lr=0.01, schedule="constant", epochs=2, batch_size=16,
                            eval_batch_size=64, seed=0, threads=1, output_dir=tmp_path / "python", progress=False,
                            measure_latency=False)
    for key in ("kl_to_teacher", "perplexity", "agreement"):
        assert result.metrics[key] == pytest.approx(python.metrics[key], rel=1e-5), key
    untrained = run_recipe(load_recipe(recipe_tree(root, vocab, tmp_path / "untrained"),
                                       ["train.steps=1", "optimizer.lr=1e-9"]), progress=False, measure_latency=False)
    assert result.metrics["kl_to_teacher"] < 0.7 * untrained.metrics["kl_to_teacher"]
    samples = json.loads((result.run_dir / "generations.json").read_text())
    assert set(samples["generations"]) == {"teacher", "student"}  # the data carried its tokenizer
    rebuilt = distill.load_model(result.run_dir / "model.safetensors")
    ids = train.inputs["input_ids"][:2]
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(input_ids=ids).logits, result.model.eval()(input_ids=ids).logits)


def test_a_token_cache_from_the_recipe_gives_the_live_teachers_run(setup, tmp_path):
    root, vocab = setup
    live = run_recipe(load_recipe(recipe_tree(root, vocab, tmp_path / "live")), progress=False, measure_latency=False)
    cache = {"path": str(tmp_path / "cache"), "k": vocab, "dtype": "float32"}  # every id kept: the dense loss
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe_tree(root, vocab, tmp_path / "cached", cache=cache)))
    built = CliRunner().invoke(app, ["cache", str(tmp_path / "recipe.yaml"), "--no-progress"])
    assert built.exit_code == 0, built.output
    assert "bytes" in built.output and (tmp_path / "cache").is_dir()
    cached = run_recipe(load_recipe(tmp_path / "recipe.yaml"), progress=False, measure_latency=False)
    assert cached.metrics["kl_to_teacher"] == pytest.approx(live.metrics["kl_to_teacher"], rel=1e-4)
    with pytest.raises(RecipeError, match="teacher.cache.k"):
        run_recipe(load_recipe(recipe_tree(root, vocab, tmp_path / "dense", cache={"path": str(tmp_path / "c2")})),
                   progress=False, measure_latency=False)


def test_bad_llm_recipes_are_refused_naming_the_field(setup, tmp_path):
    root, vocab = setup
    tree = recipe_tree(root, vocab, tmp_path / "bad")
    tree["teacher"] = {"model": "causal_lm", "params": {"config": {"vocab_size": vocab}}}
    with pytest.raises(RecipeError, match="params.path"):  # a fresh teacher has no trained weights
        run_recipe(load_recipe(tree), progress=False, measure_latency=False)
    tree = recipe_tree(root, vocab, tmp_path / "bad2")
    tree["data"]["params"]["length"] = 64  # longer than the models' 32 positions
    with pytest.raises(RecipeError, match="32 positions"):
        run_recipe(load_recipe(tree), progress=False, measure_latency=False)
    tree = recipe_tree(root, vocab, tmp_path / "bad3")
    tree["data"]["params"]["train_file"] = "missing.txt"
    with pytest.raises((RecipeError, FileNotFoundError), match="missing.txt"):
        run_recipe(load_recipe(tree), progress=False, measure_latency=False)
