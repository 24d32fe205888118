"""``causal_lm``: a Hugging Face causal LM named in a recipe (task ``token``), so that LLM distillation
runs from YAML as from Python:

.. code-block:: yaml

    task: token
    data: {name: causal_lm_text, root: data, params: {tokenizer: runs/teacher-hf, length: 64}}
    teacher: {model: causal_lm, params: {path: runs/teacher-hf}}              # pretrained: no checkpoint
    student: {model: causal_lm, params: {path: runs/teacher-hf, keep_layers: [0, 3], chunked: true}}
    # or a fresh one: {model: causal_lm, params: {config: {vocab_size: 2048, hidden_size: 64, num_layers: 2}}}

Loading is :func:`distill.llm.load_causal_lm` (local files only, never remote code, safetensors or
GGUF); a fresh model is :func:`distill.llm.causal_lm_from_config`. Needs the ``llm`` extra.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from torch import nn

from distill.models import MODELS


@MODELS.register("causal_lm")
def causal_lm(input_shape: Sequence[int], num_classes: Optional[int] = None, *, path: Optional[str] = None,
              gguf_file: Optional[str] = None, config: Optional[dict[str, Any]] = None,
              keep_layers: Optional[Sequence[int]] = None, chunked: bool = False) -> nn.Module:
    """A causal LM for (B, L) token ids -> (B, L, V) next-token logits.

    Args:
        input_shape: ``(L,)``, the data's sequence length: refused when the model has fewer positions.
        num_classes: unused (token data has none); kept for the recipe's model interface.
        path: a Hugging Face causal-LM folder or a ``.gguf`` file (``gguf_file``: the file inside ``path``).
            Its weights are the model's, so a teacher needs no ``checkpoint``.
        config: instead of ``path``, a fresh model: ``family`` ("gpt2" or "llama", default "gpt2"),
            ``vocab_size`` (required), ``hidden_size``, ``num_layers``, ``num_heads``, ``max_length``,
            ``seed`` and any other field of the family's config.
        keep_layers: with ``path``, a student of only these blocks, initialised from the model's own
            weights (layer dropping, :func:`distill.llm.student_from_teacher`).
        chunked: wrap in :class:`distill.llm.ChunkedLM` (losses from hidden states in chunks: the
            (B, L, V) logits are never held; for a student).
    """
    from distill.llm.models import ChunkedLM, causal_lm_from_config, load_causal_lm, student_from_teacher

    if (path is None) == (config is None):
        raise ValueError("causal_lm: give 'path' (a causal-LM folder or .gguf file) or 'config' (a fresh model), "
                         "not both")
    if path is not None:
        model = load_causal_lm(path, gguf_file=gguf_file)
        if keep_layers is not None:
            model = student_from_teacher(model, list(keep_layers))
    else:
        if keep_layers is not None:
            raise ValueError("causal_lm: 'keep_layers' drops blocks of a loaded model; it needs 'path', not 'config'")
        options = dict(config)
        if "vocab_size" not in options:
            raise ValueError("causal_lm: 'config' needs 'vocab_size' (the tokenizer's size: len(tokenizer))")
        model = causal_lm_from_config(options.pop("family", "gpt2"), **options)
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    length = int(input_shape[0]) if len(input_shape) else 0
    if isinstance(positions, int) and length > positions:
        raise ValueError(f"causal_lm: the data's rows are {length} tokens but the model has {positions} positions; "
                         f"give the data a length <= {positions} (data.params.length) or a model with more")
    model.train()
    return ChunkedLM(model) if chunked else model


causal_lm.weights_in_params = ("path",)  # a teacher given 'path' has its weights: no checkpoint needed

__all__ = ["causal_lm"]
