"""The Task contract (see :mod:`distill.tasks`)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from distill.core.io import Inputs, batch_size_of, call_model, select


class Task:
    """One kind of problem. Subclasses override what differs; the defaults are classification's.

    - :meth:`read` turns a model's raw output into the tensor the losses compare.
    - :meth:`term_value` applies one loss term to a batch.
    - :meth:`count` is what a batch holds of what losses average over (samples, or valid tokens);
      :attr:`token_level` tasks get a global count per optimiser step from the loop.
    - :meth:`metrics` scores held-out outputs.
    """

    name = "task"
    token_level = False  # losses average over tokens counted across micro-batches and processes

    def read(self, output: Any, batch: dict[str, Any], *, who: str) -> Tensor:
        raise NotImplementedError

    def term_value(self, term, student: Tensor, teacher: Tensor | None, batch: dict[str, Any]) -> Tensor:
        """``term.fn(student, teacher, target, temperature=..., **params)`` (batch mean)."""
        return term.fn(student, teacher, batch.get("target"), temperature=term.temperature, **term.params)

    def count(self, batch: dict[str, Any]) -> int:
        """How many units the losses of this batch average over (samples)."""
        return batch_size_of(batch["input"])

    def check_pair(self, student: Tensor, teacher: Tensor) -> None:
        """Refuse student and teacher outputs that cannot be compared, naming both shapes."""
        if student.shape[-1] != teacher.shape[-1]:
            raise ValueError(f"{self.name} task: the teacher's outputs are {tuple(teacher.shape)} and the student's "
                             f"{tuple(student.shape)}; their last dimensions must agree")

    @torch.inference_mode()
    def predict(self, model: nn.Module, inputs: Inputs, batch_size: int = 512, *, who: str = "the model") -> Tensor:
        """:meth:`read` outputs of ``model`` for all ``inputs`` (N, ...), in eval mode, as float32."""
        was_training = model.training
        model.eval()
        try:
            count = batch_size_of(inputs)
            chunks = []
            for start in range(0, count, batch_size):
                part = select(inputs, slice(start, start + batch_size))
                chunks.append(self.read(call_model(model, part), {"input": part}, who=who).float())
        finally:
            model.train(was_training)
        outputs = torch.cat(chunks)
        if not bool(torch.isfinite(outputs).all()):
            from distill.safety import NonFiniteError

            raise NonFiniteError(f"{who} produced NaN or infinite outputs on the evaluation data")
        return outputs

    def metrics(self, student: Tensor, teacher: Tensor | None, targets: Tensor | None,
                inputs: Inputs | None = None) -> dict[str, float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
