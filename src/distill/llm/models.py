"""Causal LMs as teacher and student: loading, building, layer-dropped students, vocabularies.

- :func:`load_causal_lm` reads a Hugging Face model folder (safetensors weights only, local files
  only, never remote code) or a GGUF file (``from_pretrained(folder, gguf_file=...)``, which
  dequantises to torch; needs the ``gguf`` package);
- :func:`save_gguf` writes a Llama model as a GGUF file (llama.cpp's names and q/k row order);
- :func:`causal_lm_from_config` builds a GPT-2 or Llama model of any (tiny) size;
- :func:`student_from_teacher` keeps some of the teacher's blocks (:func:`distill.models.layer_drop.drop_layers`)
  and its tokenizer;
- :func:`shared_vocabulary_size` decides whether two models can be distilled token by token: one
  tokenizer (embedding tables padded to different sizes are cut to the tokenizer's ids), or refused;
- :class:`ChunkedLM` wraps a causal LM so that in training it gives its final hidden states and
  head (:class:`distill.tasks.token.TokenHidden`): the token task then builds logits chunk by chunk
  and the student's (B, L, V) logits never exist.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from distill.tasks.token import LOSS_MASK, TokenHidden, head_size

ModelPath = str | os.PathLike


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the llm extra
        raise ImportError("causal LMs need transformers: pip install 'distill[llm]'") from exc
    return transformers


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    config = json.loads((folder / "config.json").read_text())
    if "auto_map" in config:
        raise ValueError(f"{folder}/config.json names remote code (auto_map {config['auto_map']}); distill loads "
                         "only models transformers implements itself and never runs a model folder's code")
    weights = sorted(path.name for path in folder.iterdir() if path.suffix == ".safetensors"
                     or path.name == "model.safetensors.index.json")
    if not weights:
        others = sorted(path.name for path in folder.iterdir() if path.suffix in {".bin", ".pt", ".pth", ".ckpt"})
        raise ValueError(f"{folder} holds no safetensors weights" + (f" (only {', '.join(others)}: pickled files, "
                         "which can run code when loaded; convert them to safetensors)" if others else ""))


def load_causal_lm(path: ModelPath, *, gguf_file: str | None = None, dtype: torch.dtype | str | None = None) -> nn.Module:
    """A Hugging Face causal LM from ``path`` (eval mode): a model folder (``config.json`` and
    safetensors weights), a ``.gguf`` file, or a folder with ``gguf_file`` naming the file in it.

    Always ``local_files_only=True`` and ``trust_remote_code=False``; ``auto_map`` configs and
    pickled weights are refused with the reason. ``dtype``: as ``from_pretrained``'s (default fp32)."""
    transformers = _transformers()
    path = Path(path)
    if path.suffix == ".gguf" and gguf_file is None:
        path, gguf_file = path.parent, path.name
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    options: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if dtype is not None:
        options["dtype"] = dtype
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise FileNotFoundError(f"{path / gguf_file} does not exist")
        try:
            import gguf  # noqa: F401
        except ImportError as exc:
            raise ImportError("GGUF files need the gguf package: pip install 'distill[llm]' (or pip install gguf)") from exc
        model = transformers.AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, **options)
    else:
        _check_folder(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **options)
    return model.eval()


def save_gguf(model: nn.Module, path: ModelPath, *, dtype: str = "f32") -> Path:
    """Write a Llama-family causal LM (``LlamaForCausalLM``) as a GGUF file (``dtype`` ``"f32"`` or
    ``"f16"``; no tokenizer inside), with llama.cpp's tensor names and its query/key row order, so
    that :func:`load_causal_lm` (transformers' GGUF reader) and llama.cpp read it back."""
    try:
        import gguf
        import numpy as np
    except ImportError as exc:
        raise ImportError("GGUF files need the gguf package: pip install 'distill[llm]' (or pip install gguf)") from exc
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        raise ValueError(f"save_gguf writes Llama models; got model_type {getattr(config, 'model_type', None)!r}")
    if dtype not in ("f32", "f16"):
        raise ValueError(f"save_gguf: dtype must be 'f32' or 'f16', got {dtype!r}")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(getattr(config, "name_or_path", "") or "distill-student")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)

    def llama_cpp_order(weight, count: int):  # llama.cpp's rotary layout of q/k rows (transformers undoes it)
        return weight.reshape(count, 2, weight.shape[0] // count // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)

    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # GGUF ties by leaving output.weight out
    for key, tensor in state.items():
        array = tensor.detach().float().cpu().numpy()
        if key.endswith("self_attn.q_proj.weight"):
            array = llama_cpp_order(array, heads)
        elif key.endswith("self_attn.k_proj.weight"):
            array = llama_cpp_order(array, kv_heads)
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"save_gguf: no GGUF name for tensor {key!r}")
        if dtype == "f16" and array.ndim > 1:
            array = array.astype(np.float16)
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def load_tokenizer(path: ModelPath, *, gguf_file: str | None = None):
    """The tokenizer saved with a model (folder, or the vocabulary inside a ``.gguf`` file), local files only."""
    transformers = _transformers()
    path = Path(path)
    if path.suffix == ".gguf" and gguf_file is None:
        path, gguf_file = path.parent, path.name
    options: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if gguf_file is not None:
        options["gguf_file"] = gguf_file
    return transformers.AutoTokenizer.from_pretrained(path, **options)


def causal_lm_from_config(family: str = "gpt2", *, vocab_size: int, hidden_size: int = 64, num_layers: int = 2,
                          num_heads: int = 2, max_length: int = 128, intermediate_size: int | None = None,
                          seed: int | None = None, **config: Any) -> nn.Module:
    """A freshly initialised causal LM: ``family`` ``"gpt2"`` (GPT2LMHeadModel, dropout off) or
    ``"llama"`` (LlamaForCausalLM); ``config`` passes any other field of the family's config."""
    transformers = _transformers()
    if seed is not None:
        torch.manual_seed(seed)
    if family == "gpt2":
        settings = {"vocab_size": vocab_size, "n_positions": max_length, "n_embd": hidden_size, "n_layer": num_layers,
                    "n_head": num_heads, "n_inner": intermediate_size, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                    "attn_pdrop": 0.0, **config}
        for field in ("bos_token_id", "eos_token_id"):  # GPT-2's 50256 lies outside a small vocabulary
            settings.setdefault(field, min(50256, vocab_size - 1))
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(**settings))
    if family == "llama":
        settings = {"vocab_size": vocab_size, "max_position_embeddings": max_length, "hidden_size": hidden_size,
                    "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
                    "num_key_value_heads": config.pop("num_key_value_heads", num_heads),
                    "intermediate_size": intermediate_size or 4 * hidden_size, **config}
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings))
    raise ValueError(f"causal_lm_from_config: family {family!r} is not one of 'gpt2', 'llama'")


def student_from_teacher(teacher: nn.Module, keep: Sequence[int]) -> nn.Module:
    """A copy of ``teacher`` with only the blocks at ``keep`` (GPT-2 ``transformer.h``, Llama / Mistral /
    Qwen ``model.layers``), initialised from the teacher's own weights, in training mode. The
    tokenizer is the teacher's, unchanged."""
    from distill.models.layer_drop import drop_layers

    return drop_layers(teacher, keep).train()


def _tokenizer_name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__


def _same_tokenizer(first: Any, second: Any) -> bool:
    if first is second:
        return True
    if len(first) != len(second):
        return False
    return first.get_vocab() == second.get_vocab()


def shared_vocabulary_size(teacher: nn.Module, student: nn.Module, teacher_tokenizer: Any,
                           student_tokenizer: Any | None = None) -> int:
    """The number of token ids teacher and student share: ``len(tokenizer)`` when both use one tokenizer
    (the same token -> id map) and both embedding tables have at least that many rows (tables are often
    padded, e.g. to a multiple of 64: the extra rows are ids no token maps to, and are cut off).

    Refused with ``ValueError`` naming both tokenizers when their vocabularies differ (a
    cross-tokenizer loss such as ULD would be needed), or naming the model whose table is too small."""
    student_tokenizer = teacher_tokenizer if student_tokenizer is None else student_tokenizer
    if not _same_tokenizer(teacher_tokenizer, student_tokenizer):
        raise ValueError(f"the teacher's tokenizer ({_tokenizer_name(teacher_tokenizer)}, {len(teacher_tokenizer):,} "
                         f"tokens) and the student's ({_tokenizer_name(student_tokenizer)}, {len(student_tokenizer):,} "
                         "tokens) map tokens to different ids: token-level distillation needs one tokenizer")
    size = len(teacher_tokenizer)
    for who, model in (("teacher", teacher), ("student", student)):
        rows = head_size(model.get_output_embeddings())
        if rows is not None and rows < size:
            raise ValueError(f"the {who}'s output layer has {rows:,} rows for a tokenizer of {size:,} tokens: "
                             "not the model this tokenizer belongs to")
    return size


class _CutHead(nn.Module):
    """An output layer whose logits are cut to the first ``vocab_size`` ids (N, H) -> (N, vocab_size); a module,
    so the token task sees (and gives gradients to) the head's parameters."""

    def __init__(self, head: nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.head, self.vocab_size = head, vocab_size
        self.out_features = vocab_size

    def forward(self, hidden: Tensor) -> Tensor:
        bias = getattr(self.head, "bias", None)
        return nn.functional.linear(hidden, self.head.weight[:self.vocab_size],
                                    None if bias is None else bias[:self.vocab_size])


class ChunkedLM(nn.Module):
    """A causal LM whose training forward gives its final hidden states and output head
    (:class:`distill.tasks.token.TokenHidden`) instead of (B, L, V) logits, so the token task computes
    its losses chunk by chunk from them (``distill.distil(teacher, ChunkedLM(student), ..., task="token")``).

    In eval mode, or without gradients, it returns the model's own output (full logits, for metrics
    and generation). ``vocab_size`` cuts logits to the first ids (a table padded beyond the
    tokenizer: :func:`shared_vocabulary_size`); wrap the teacher too with the same ``vocab_size``.
    Models that transform logits after the head (``final_logit_softcapping``, ``logit_scale``) are
    refused. The trained model is ``.model`` (``save_pretrained`` it)."""

    def __init__(self, model: nn.Module, vocab_size: int | None = None) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        for field in ("final_logit_softcapping", "logit_scale"):
            if getattr(config, field, None) not in (None, 1.0):
                raise ValueError(f"ChunkedLM: {type(model).__name__} applies {field}={getattr(config, field)} to its "
                                 "logits after the head; distil it without ChunkedLM")
        if model.get_output_embeddings() is None:
            raise ValueError(f"ChunkedLM: {type(model).__name__} has no output embeddings (get_output_embeddings())")
        self.model = model
        self.vocab_size = vocab_size

    def head(self, hidden: Tensor) -> Tensor:
        """Logits (N, V) of hidden states (N, H), cut to ``vocab_size`` ids when given."""
        head = self.model.get_output_embeddings()
        return (head if self.vocab_size is None else _CutHead(head, self.vocab_size))(hidden)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, **inputs: Any):
        inputs.pop(LOSS_MASK, None)  # the token task's, not the model's
        if self.training and torch.is_grad_enabled():
            base = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, **inputs)
            head = self.model.get_output_embeddings()
            if self.vocab_size is not None:
                head = _CutHead(head, self.vocab_size)
            return TokenHidden(base.last_hidden_state, head, self.vocab_size)
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        if self.vocab_size is not None:
            return output.logits[..., :self.vocab_size]
        return output


__all__ = ["ChunkedLM", "causal_lm_from_config", "load_causal_lm", "load_tokenizer", "save_gguf",
           "shared_vocabulary_size", "student_from_teacher"]
