"""A tiny GPT teacher trained on WordNet glosses by distill, and a tinier student (a ChunkedLM: hidden
states + head, losses in chunks) distilled from it with forward KL through distill.distil: held-out
KL to the teacher falls (below a student trained on the text alone), perplexity falls."""
from __future__ import annotations

import pytest
import torch

from shared_data import require_shared

pytest.importorskip("transformers", reason="causal LMs need transformers (the llm extra)")

import distill  # noqa: E402
from distill.llm import ChunkedLM, causal_lm_from_config, packed_text_data, read_text, train_bpe_tokenizer  # noqa: E402


def test_distilled_student_comes_to_the_teacher_on_held_out_text(tmp_path):
    glosses = require_shared("wordnet", "glosses.txt.gz")
    texts = read_text(glosses, limit=1300)
    tokenizer = train_bpe_tokenizer(texts[:1100], vocab_size=320)
    train = packed_text_data(texts[:1100], tokenizer, length=32)
    held_out = packed_text_data(texts[1100:], tokenizer, length=32, split="test")
    vocab = len(tokenizer)
    run = {"task": "token", "batch_size": 32, "progress": False, "measure_latency": False, "threads": 1}
    teacher = causal_lm_from_config("gpt2", vocab_size=vocab, hidden_size=64, num_layers=2, max_length=32, seed=0)
    trained = distill.distil(None, teacher, train, eval=held_out, epochs=2, lr=3e-3, output_dir=tmp_path / "teacher",
                             **run).metrics
    assert trained["perplexity"] < 0.6 * vocab  # it learnt something of the text

    def student():
        return ChunkedLM(causal_lm_from_config("gpt2", vocab_size=vocab, hidden_size=32, num_layers=1, max_length=32,
                                               seed=1))

    before = distill.distil(teacher, student(), train, eval=held_out, steps=1, lr=1e-9, output_dir=tmp_path / "before",
                            **run).metrics
    text_alone = distill.distil(teacher, student(), train, eval=held_out, epochs=1, lr=3e-3,
                                losses=[{"name": "cross_entropy"}], output_dir=tmp_path / "text", **run).metrics
    after = distill.distil(teacher, student(), train, eval=held_out, epochs=1, lr=3e-3, losses=[{"name": "kl"}],
                           output_dir=tmp_path / "after", **run).metrics
    assert after["kl_to_teacher"] < 0.5 * before["kl_to_teacher"]
    assert after["kl_to_teacher"] < 0.95 * text_alone["kl_to_teacher"]  # the teacher's distribution, not only the text's
    assert after["perplexity"] < 0.7 * before["perplexity"]

    # the run's report shows greedy continuations of held-out prompts by teacher and student
    import json

    from distill.report.html import section

    samples = json.loads((tmp_path / "after" / "generations.json").read_text(encoding="utf-8"))
    assert set(samples["generations"]) == {"teacher", "student"} and len(samples["prompts"]) == 4
    prompt = held_out.inputs["input_ids"][0, :16]  # packed text has no prompt mask: its first 16 tokens
    assert samples["prompts"][0] == tokenizer.decode(prompt.tolist(), skip_special_tokens=True)
    ids = prompt[None]
    with torch.no_grad():  # greedy decoding by hand: the teacher's continuation, token by token
        for _ in range(min(samples["max_new_tokens"], 32 - 16)):  # the model has 32 positions
            next_id = teacher.eval()(input_ids=ids).logits[0, -1].argmax()
            if int(next_id) == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    assert samples["generations"]["teacher"][0] == tokenizer.decode(ids[0, 16:].tolist(), skip_special_tokens=True)
    assert samples["generations"]["teacher"] != samples["generations"]["student"]
    assert "## Sample generations" in (tmp_path / "after" / "report.md").read_text(encoding="utf-8")
    page = section(tmp_path / "after")
    assert "Sample generations" in page and "held-out text" in page
