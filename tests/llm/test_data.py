"""LLM data: a byte-level BPE tokenizer trained here, packed text, prompt/response and chat examples
whose prompts and padding are masked, and what distill's token task makes of them."""
from __future__ import annotations

import gzip
import json

import pytest
import torch

pytest.importorskip("transformers", reason="the LLM data tests use transformers tokenizers (the llm extra)")

from distill.distiller import Distiller, LossTerm  # noqa: E402
from distill.llm.data import (TextDataError, packed_text_data, prompt_response_data, read_jsonl, read_text,  # noqa: E402
                              train_bpe_tokenizer)
from distill.llm.models import ChunkedLM, causal_lm_from_config  # noqa: E402
from distill.tasks.token import IGNORE_INDEX, TokenTask, token_labels  # noqa: E402

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song", "café naïve — unicode too"] * 8


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS, vocab_size=300, min_frequency=1)


def test_bpe_tokenizer_round_trips_any_text_and_has_eos_and_pad(tokenizer, tmp_path):
    assert tokenizer.eos_token_id == 0 and tokenizer.pad_token_id == 1
    for text in ["the cat sat", "unseen wörds ✓ 123"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer("the cat sat on the mat")["input_ids"]) < len("the cat sat on the mat")  # merges learnt
    tokenizer.save_pretrained(tmp_path / "tok")
    from distill.llm.models import load_tokenizer

    assert load_tokenizer(tmp_path / "tok")("the cat")["input_ids"] == tokenizer("the cat")["input_ids"]


def test_read_text_and_packing(tokenizer, tmp_path):
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("the cat sat\n\n a dog ran\nthe bird\n")
    texts = read_text(path)
    assert texts == ["the cat sat", " a dog ran", "the bird"]
    data = packed_text_data(texts, tokenizer, length=4)
    ids, mask = data.inputs["input_ids"], data.inputs["attention_mask"]
    stream = sum((tokenizer(t, add_special_tokens=False)["input_ids"] + [0] for t in texts), [])
    assert data.num_tokens == len(stream) and ids.shape[1] == 4
    assert ids.flatten()[:len(stream)].tolist() == stream and int(mask.sum()) == len(stream)
    assert mask[-1].tolist() == [1] * (len(stream) - 4 * (len(ids) - 1)) + [0] * (4 * len(ids) - len(stream))
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff broken\n")
    with pytest.raises(TextDataError, match="bad.txt:2: not UTF-8"):
        read_text(tmp_path / "bad.txt")


def test_prompt_response_masks_the_prompt_and_padding(tokenizer, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "the cat", "response": " sat on the mat"}) + "\n\n"
                    + json.dumps({"prompt": "a dog ran in the park and the bird sang", "response": " a song"}) + "\n")
    examples = read_jsonl(path)
    data = prompt_response_data(examples, tokenizer, max_length=8)
    prompt = tokenizer("the cat", add_special_tokens=False)["input_ids"]
    response = tokenizer(" sat on the mat", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert data.num_dropped == 1 and len(data.inputs["input_ids"]) == 1  # the second: all prompt within 8 tokens
    labels = token_labels({"input": {key: value for key, value in data.inputs.items()}})
    expected = [IGNORE_INDEX] * len(prompt) + response
    expected = expected[:8] + [IGNORE_INDEX] * (8 - len(expected))
    assert labels[0].tolist() == expected
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(TextDataError, match="bad.jsonl:1: expected keys 'prompt' \\+ 'response'"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_chat_messages_through_the_chat_template(tokenizer, tmp_path):
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "the cat"},
                                             {"role": "assistant", "content": "sat"}]}) + "\n")
    data = prompt_response_data(read_jsonl(path), tokenizer, max_length=64)
    ids, loss_mask = data.inputs["input_ids"][0], data.inputs["loss_mask"][0].bool()
    assert tokenizer.decode(ids[loss_mask]) == "sat\n"
    assert tokenizer.decode(ids[data.inputs["attention_mask"][0].bool() & ~loss_mask]) == "<user>the cat\n<assistant>"
    (tmp_path / "user_last.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(TextDataError, match="must be role 'assistant'"):
        read_jsonl(tmp_path / "user_last.jsonl")


def test_prompt_and_pad_tokens_do_not_change_the_token_loss(tokenizer):
    """With right padding a causal LM's scored positions never see the padding, and the prompt's own
    predictions are not scored: other pad ids, or other logits at prompt positions, give the same loss."""
    examples = [{"prompt": "the cat", "response": " sat on the mat"}, {"prompt": "a", "response": " dog"}]
    data = prompt_response_data(examples, tokenizer, max_length=12)
    vocab = len(tokenizer)
    teacher = causal_lm_from_config("gpt2", vocab_size=vocab, hidden_size=16, num_layers=1, seed=1)
    student = causal_lm_from_config("gpt2", vocab_size=vocab, hidden_size=16, num_layers=1, seed=2)

    def loss(inputs):
        distiller = Distiller(ChunkedLM(student).train(), teacher, [LossTerm("kl"), LossTerm("cross_entropy")],
                              task=TokenTask(chunk_size=4))
        return distiller({"input": inputs})["loss"]

    inputs = dict(data.inputs)
    before = loss(inputs)
    padded = dict(inputs, input_ids=torch.where(inputs["attention_mask"].bool(), inputs["input_ids"], 7))
    torch.testing.assert_close(loss(padded), before)
    unmasked = dict(inputs, loss_mask=inputs["attention_mask"])  # the prompt scored too: another loss
    assert not torch.allclose(loss(unmasked), before)
