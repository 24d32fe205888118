"""Causal-LM distillation (see docs/llm.md): token-level losses computed in chunks so the full
(batch, length, vocabulary) fp32 tensor is never held, and vocabulary checks between teacher and student."""
from distill.llm.losses import chunked_token_loss, shared_vocabulary

__all__ = ["chunked_token_loss", "shared_vocabulary"]
