"""Classification of any modality: (B, K) logits, scored by accuracy, agreement and KL."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from distill.core.io import logits_of
from distill.tasks.base import Task


class ClassificationTask(Task):
    """Outputs: logits (B, K) (a tensor, a tuple's first item, or ``ModelOutput.logits``)."""

    name = "classification"

    def read(self, output: Any, batch: dict[str, Any], *, who: str) -> Tensor:
        return logits_of(output, who=who)

    def check_pair(self, student: Tensor, teacher: Tensor) -> None:
        if teacher.shape[-1] != student.shape[-1]:
            raise ValueError(
                f"the teacher and the student disagree on the number of classes: the teacher gives "
                f"{teacher.shape[-1]} logits per sample ({tuple(teacher.shape)}), the student "
                f"{student.shape[-1]} ({tuple(student.shape)}); build the student with the teacher's class count")

    def metrics(self, student: Tensor, teacher: Tensor | None, targets: Tensor | None, inputs=None) -> dict[str, float]:
        from distill.evaluation import compare_to_teacher, expected_calibration_error

        record: dict[str, float] = {}
        if targets is not None:
            record["accuracy"] = float((student.argmax(-1) == targets).float().mean())
            record["ece"] = expected_calibration_error(student, targets)
        if teacher is not None:
            record.update(compare_to_teacher(student, teacher))
        return record
