"""On-policy (generalised) knowledge distillation for causal LMs (GKD).

Agarwal, Vieillard, Zhou, Stanczyk, Ramos, Geist & Bachem, 2024, "On-Policy Distillation of
Language Models: Learning from Self-Generated Mistakes", ICLR 2024, arXiv 2306.13649.

Supervised KD scores the student on fixed responses; at generation time it conditions on its own
tokens, which it never trained on (exposure bias). GKD trains a fraction λ of the batches on the
student's *own* samples: for each such batch the student samples a completion of every prompt
(no gradient), the teacher scores those tokens, and the chosen token loss (``jsd`` with ``beta``,
``kl``, ``reverse_kl`` ...; the terms of the run) is taken on the sampled tokens only: the prompt is
masked, and so is everything after the first EOS (the EOS itself is scored: the student learns to
stop). The rest of the batches are the data's own responses (supervised KD).

Through the Python API (or a recipe's ``on_policy:`` section)::

    distill.distil(teacher, student, prompt_response_data(examples, tokenizer), task="token",
                   losses=[{"name": "jsd", "beta": 0.5}],
                   on_policy={"fraction": 0.5, "max_new_tokens": 32, "temperature": 1.0})

**Seeded draws.** Whether micro-batch ``m`` (counted over the whole run: optimiser step x
``grad_accum`` + its place in the step) is sampled is drawn from a generator seeded by
``(seed, m)`` (the same on every process, so data-parallel ranks sample together); its tokens are
drawn from a ``torch.Generator`` seeded by ``(seed, m, rank)``: ranks draw different samples, and a
resumed run redraws exactly the samples of the uninterrupted one. No global random state is read
or changed, so ``fraction=0`` gives supervised KD exactly.

The training loop calls :meth:`OnPolicy.batches` on its batches before it counts the valid tokens
of an optimiser step, so the global token normalisation of :mod:`distill.tasks.token` counts the
sampled tokens.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distill.data.loader import derive_seed
from distill.tasks.token import LOSS_MASK

ON_POLICY_STREAM = 0x6B64  # a constant mixed into the seeds, so that no other stream of the run repeats them


# ----------------------------------------------------------------------------- sampling
def _token_ids(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def eos_ids_of(model: nn.Module) -> list[int]:
    """The EOS token ids a Hugging Face model names (``generation_config``, else ``config``); [] if none."""
    model = _language_model(model)[0]
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        ids = _token_ids(getattr(source, "eos_token_id", None))
        if ids:
            return ids
    return []


def _language_model(model: nn.Module) -> tuple[nn.Module, int | None]:
    """(the model that gives logits and a KV cache, the vocabulary to cut logits to) of ``model``
    (a :class:`distill.llm.ChunkedLM` gives its inner model and ``vocab_size``)."""
    from distill.llm.models import ChunkedLM

    if isinstance(model, ChunkedLM):
        return model.model, model.vocab_size
    return model, None


def _next_token(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    """(B,) the next token of (B, V) logits: the argmax at ``temperature == 0``, else a draw from
    ``softmax(logits / temperature)`` (cut to the ``top_k`` largest when given)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample_completions(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, *, max_new_tokens: int,
                       eos_token_id: int | Sequence[int], pad_token_id: int | None = None, temperature: float = 1.0,
                       top_k: int | None = None, generator: torch.Generator | None = None,
                       stop_early: bool = True) -> Tensor:
    """Completions of left-padded prompts by a causal LM, with its KV cache (eval mode, no gradient).

    Args:
        model: a Hugging Face causal LM (or a :class:`distill.llm.ChunkedLM`) taking ``input_ids``,
            ``attention_mask``, ``position_ids``, ``past_key_values`` and ``use_cache``.
        prompt_ids: (B, P) int64 prompts, *left*-padded; prompt_mask: (B, P), 0 on the padding
            (positions count from each row's first real token, as ``generate`` does).
        max_new_tokens: tokens to generate at most; eos_token_id: the id (or ids) that end a completion.
        pad_token_id: fills every position after a row's EOS (default: the first EOS id).
        temperature: 0 is greedy (argmax, equal to ``model.generate(do_sample=False)``); else sampling
            from ``softmax(logits / temperature)``, restricted to the ``top_k`` largest logits when given.
        generator: the ``torch.Generator`` (on the model's device) of the draws: seeded, they repeat.
        stop_early: stop once every row has ended (off under FSDP, whose forwards are collective and
            must run as often on every process).

    Returns (B, T) int64, ``T <= max_new_tokens``: each row's tokens up to and including its first
    EOS, then ``pad_token_id``. The model's train/eval mode is restored.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature!r}")
    eos = torch.tensor(_token_ids(eos_token_id), dtype=torch.int64, device=prompt_ids.device)
    if eos.numel() == 0:
        raise ValueError("sample_completions needs eos_token_id (the token that ends a completion)")
    pad = int(eos[0]) if pad_token_id is None else int(pad_token_id)
    if prompt_ids.ndim != 2 or prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"prompt_ids and prompt_mask must both be (B, P); got {tuple(prompt_ids.shape)} and "
                         f"{tuple(prompt_mask.shape)}")
    if bool((prompt_mask.sum(1) == 0).any()):
        raise ValueError("every prompt needs at least one token to condition on; some rows of prompt_mask are all 0")
    language_model, vocab_size = _language_model(model)
    parameters = inspect.signature(language_model.forward).parameters
    cache_keyword = "cache" if "cache" in parameters else "past_key_values"  # transformers >= 5.2 says cache
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}  # no (B, P, V) prompt logits
    was_training = language_model.training
    language_model.eval()
    try:
        mask = prompt_mask.to(torch.int64)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step_ids, cache = prompt_ids, None
        full_ids = prompt_ids
        tokens: list[Tensor] = []
        done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=prompt_ids.device)
        for _ in range(max_new_tokens):
            output = language_model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                                    use_cache=True, **{cache_keyword: cache}, **last_only)
            logits = output.logits[:, -1]
            if vocab_size is not None:
                logits = logits[:, :vocab_size]
            token = _next_token(logits, temperature, top_k, generator)
            token = torch.where(done, torch.full_like(token, pad), token)
            tokens.append(token)
            done = done | torch.isin(token, eos)
            if stop_early and bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
            next_position = positions[:, -1:] + 1
            cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
            full_ids = torch.cat([full_ids, token[:, None]], dim=1)
            if cache is None:  # a model without a KV cache: run the whole sequence again
                step_ids, positions = full_ids, torch.cat([positions, next_position], dim=1)
            else:
                step_ids, positions = token[:, None], next_position
    finally:
        language_model.train(was_training)
    return torch.stack(tokens, dim=1)


# ----------------------------------------------------------------------------- batches
def completion_mask(completions: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    """(B, T) bool: the tokens of each completion up to and including its first EOS (all of a row
    with no EOS). Whatever follows the first EOS is masked out, whatever it is."""
    eos = torch.tensor(_token_ids(eos_token_id), dtype=torch.int64, device=completions.device)
    is_eos = torch.isin(completions, eos).to(torch.int64)
    ended_before = is_eos.cumsum(1) - is_eos  # EOS tokens strictly before each position
    return ended_before == 0


def _packed_left(ids: Tensor, keep: Tensor, *, left: bool, pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """Move each row's kept tokens (in their order) to the right end (``left`` padding) or the left end;
    returns (ids, mask, the gather index) cut to the longest row."""
    order = torch.argsort(keep.to(torch.int8) if left else (~keep).to(torch.int8), dim=1, stable=True)
    width = int(keep.sum(1).max())
    order = order[:, -width:] if left else order[:, :width]
    kept = keep.gather(1, order)
    return torch.where(kept, ids.gather(1, order), pad), kept.to(torch.int64), order


def prompts_of(inputs: Mapping[str, Tensor], *, prompt_length: int | None = None,
               pad_token_id: int = 0) -> tuple[Tensor, Tensor]:
    """The prompts of a right-padded token batch, left-padded for generation: (ids (B, P), mask (B, P)).

    A row's prompt is what precedes its first ``loss_mask == 1`` position (prompt/response data:
    :func:`distill.llm.prompt_response_data`); batches without a ``loss_mask`` (packed text) take the
    first ``prompt_length`` tokens of each row. Refused, naming the field, when neither is there or a
    prompt would be empty."""
    ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else None
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        raise ValueError("on_policy: batches need 'input_ids' (B, L) to take prompts from")
    attention = inputs.get("attention_mask")
    attention = torch.ones_like(ids) if attention is None else attention
    real = attention.sum(1)
    loss_mask = inputs.get(LOSS_MASK)
    if loss_mask is not None:
        scored = loss_mask != 0
        first = torch.where(scored.any(1), scored.to(torch.int8).argmax(1), real)
        lengths = torch.minimum(first, real) if prompt_length is None else torch.minimum(first.clamp(max=prompt_length), real)
    elif prompt_length is not None:
        lengths = real.clamp(max=prompt_length)
    else:
        raise ValueError("on_policy: the batches have no 'loss_mask' telling prompt from response (packed text); "
                         "give on_policy.prompt_length (the first N tokens of each row are the prompt), or use "
                         "prompt/response data (distill.llm.prompt_response_data)")
    if bool((lengths == 0).any()):
        row = int((lengths == 0).nonzero()[0])
        raise ValueError(f"on_policy: row {row} of a batch has an empty prompt (its response starts at its first "
                         "token); the student needs at least one prompt token to sample from")
    keep = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
    prompt_ids, prompt_mask, _ = _packed_left(ids, keep, left=True, pad=pad_token_id)
    return prompt_ids, prompt_mask


def completion_batch(prompt_ids: Tensor, prompt_mask: Tensor, completions: Tensor, *,
                     eos_token_id: int | Sequence[int], pad_token_id: int) -> dict[str, Tensor]:
    """The token-task inputs of prompts (B, P, left-padded) and their completions (B, T): each row
    ``prompt + completion up to its first EOS`` right-padded to the longest row, as
    :func:`distill.llm.prompt_response_data` lays rows out (positions from 0 at the first prompt
    token, so the teacher and the student see the positions the sampler used).

    Returns ``{"input_ids", "attention_mask", "loss_mask"}`` (B, L): ``attention_mask`` 1 on the prompt
    and the completion up to its EOS, ``loss_mask`` 1 on the completion's tokens only; every token
    after the first EOS becomes padding, masked from the model and the loss."""
    valid = completion_mask(completions, eos_token_id)
    ids = torch.cat([prompt_ids, completions], dim=1)
    keep = torch.cat([prompt_mask != 0, valid], dim=1)
    scored = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), valid], dim=1)
    input_ids, attention, order = _packed_left(ids, keep, left=False, pad=pad_token_id)
    loss_mask = (scored.gather(1, order) & (attention != 0)).to(torch.int64)
    return {"input_ids": input_ids, "attention_mask": attention, LOSS_MASK: loss_mask}


@dataclass
class OnPolicy:
    """GKD's on-policy batches (Agarwal et al. 2024, arXiv 2306.13649): with probability ``fraction``
    (λ) a micro-batch's responses are replaced by the student's own samples (see the module docstring).

    Args:
        fraction: λ in [0, 1], the probability that a micro-batch is sampled from the student.
        max_new_tokens: tokens sampled per prompt at most; temperature: of the draws (0: greedy);
            top_k: sample among the ``top_k`` largest logits only (None: all).
        prompt_length: for batches without a ``loss_mask`` (packed text), the first N tokens of each row.
        eos_token_id: the id(s) ending a completion (default: the student's ``generation_config`` /
            ``config``); pad_token_id: what fills the rows after (default: the first EOS id; masked).
        seed: the run's seed; draws are a pure function of ``(seed, micro-batch, rank)``.
    """

    fraction: float = 0.5
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int | None = None
    prompt_length: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("fraction", isinstance(self.fraction, (int, float)) and not isinstance(self.fraction, bool)
             and 0 <= self.fraction <= 1, "a number in [0, 1]"),
            ("max_new_tokens", _positive_int(self.max_new_tokens), "an int >= 1"),
            ("temperature", isinstance(self.temperature, (int, float)) and not isinstance(self.temperature, bool)
             and 0 <= self.temperature < float("inf"), "a finite number >= 0 (0: greedy)"),
            ("top_k", self.top_k is None or _positive_int(self.top_k), "None or an int >= 1"),
            ("prompt_length", self.prompt_length is None or _positive_int(self.prompt_length), "None or an int >= 1"),
        ]
        for name, ok, right in checks:
            if not ok:
                raise ValueError(f"on_policy.{name} is {getattr(self, name)!r}; it must be {right}")

    def eos_ids(self, model: nn.Module) -> list[int]:
        """The EOS ids: ``eos_token_id``, else the student's; refused naming the field when neither names one."""
        ids = _token_ids(self.eos_token_id) or eos_ids_of(model)
        if not ids:
            raise ValueError("on_policy.eos_token_id is not set and the student's config names no eos_token_id; give "
                             "on_policy={'eos_token_id': tokenizer.eos_token_id, ...}")
        return ids

    def is_sampled(self, micro: int) -> bool:
        """Whether micro-batch ``micro`` of the run is sampled from the student (the same on every process)."""
        if self.fraction <= 0:
            return False
        if self.fraction >= 1:
            return True
        draw = torch.Generator().manual_seed(derive_seed(self.seed, ON_POLICY_STREAM, micro))
        return bool(torch.rand((), generator=draw) < self.fraction)

    def generator(self, micro: int, rank: int, device: torch.device | str) -> torch.Generator:
        """The generator of micro-batch ``micro``'s tokens on process ``rank``."""
        return torch.Generator(device=device).manual_seed(derive_seed(self.seed, ON_POLICY_STREAM, micro, rank))

    def sample_batch(self, batch: dict[str, Any], model: nn.Module, *, micro: int, rank: int = 0,
                     stop_early: bool = True) -> dict[str, Any]:
        """``batch`` with its responses replaced by ``model``'s samples of its prompts: inputs of
        :func:`completion_batch`, the rest of the batch (``index`` ...) kept, an input ``target`` dropped."""
        inputs = batch["input"]
        if not isinstance(inputs, Mapping):
            raise TypeError("on_policy: batches must be dicts of token tensors ({'input_ids', 'attention_mask', "
                             f"'loss_mask'}}), got {type(inputs).__name__}")
        eos = self.eos_ids(model)
        pad = eos[0] if self.pad_token_id is None else int(self.pad_token_id)
        prompt_ids, prompt_mask = prompts_of(inputs, prompt_length=self.prompt_length, pad_token_id=pad)
        completions = sample_completions(
            model, prompt_ids, prompt_mask, max_new_tokens=self.max_new_tokens, eos_token_id=eos, pad_token_id=pad,
            temperature=float(self.temperature), top_k=self.top_k,
            generator=self.generator(micro, rank, prompt_ids.device), stop_early=stop_early)
        sampled = {key: value for key, value in batch.items() if key not in ("input", "target")}
        sampled["input"] = completion_batch(prompt_ids, prompt_mask, completions, eos_token_id=eos, pad_token_id=pad)
        return sampled

    def batches(self, batches: Iterable[dict[str, Any]], model: nn.Module, *, first_micro: int, rank: int = 0,
                num_processes: int = 1) -> Iterator[dict[str, Any]]:
        """The loop's batches (micro-batches ``first_micro``, ``first_micro + 1``, ... of the run) with a
        ``fraction`` of them sampled from ``model`` (the bare student, not its DDP wrapper)."""
        for micro, batch in enumerate(batches, first_micro):
            if self.is_sampled(micro):
                batch = self.sample_batch(batch, model, micro=micro, rank=rank, stop_early=num_processes == 1)
            yield batch


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


__all__ = ["OnPolicy", "completion_batch", "completion_mask", "eos_ids_of", "prompts_of", "sample_completions"]
