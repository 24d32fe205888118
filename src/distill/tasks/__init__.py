"""Tasks: what kind of problem a run distils, and so how outputs are read, compared and scored.

A :class:`Task` owns the output contract (which tensor of a model's output the losses compare),
how a loss term is applied to a batch (per sample, or per token with a mask and a global token
count) and the held-out metrics. The one training loop runs every task:

- ``classification`` (images, token ids, features -> (B, K) logits): accuracy, agreement, KL;
- ``embedding`` (sentences / images -> (B, D) vectors; mean-pooled ``last_hidden_state`` as
  sentence-transformers does): cosine to the teacher;
- ``token`` (causal LMs -> (B, L, V) logits; labels masked with -100 or the attention mask):
  per-token losses normalised by the global number of valid tokens, token agreement, KL,
  perplexity.

>>> from distill.tasks import build_task
>>> build_task("token").name
'token'
"""
from __future__ import annotations

from distill.registry import Registry

TASKS: Registry = Registry("task")

from distill.tasks.base import Task  # noqa: E402  (the registry first)
from distill.tasks.classification import ClassificationTask  # noqa: E402
from distill.tasks.embedding import EmbeddingTask  # noqa: E402
from distill.tasks.token import TokenTask  # noqa: E402

TASKS.register("classification", ClassificationTask)
TASKS.register("embedding", EmbeddingTask)
TASKS.register("token", TokenTask)


def build_task(task: "str | Task | None" = None) -> Task:
    """A :class:`Task` from its registered name (or a Task itself); None gives classification."""
    if task is None:
        return ClassificationTask()
    if isinstance(task, Task):
        return task
    return TASKS.get(task)()


__all__ = ["TASKS", "Task", "ClassificationTask", "EmbeddingTask", "TokenTask", "build_task"]
