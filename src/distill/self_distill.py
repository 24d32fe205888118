"""Self-distillation: the student's own deepest output teaches exits on its shallower layers.

Zhang et al. 2019, "Be Your Own Teacher: Improve the Performance of Convolutional Neural
Networks via Self Distillation", ICCV, arXiv 1905.08094. A small classifier (an *exit*: global
average pooling and ``Linear``, :func:`distill.projectors.build_logit_head`) is attached to each
chosen shallow layer; with final logits ``z`` (``(B, K)``, detached: the deepest classifier is the
teacher), exit logits ``z_e`` and temperature ``T``, the added objective is

    weight * mean_e T**2 KL(softmax(z / T) || softmax(z_e / T))  +  label_weight * mean_e CE(z_e, y)

(the paper sums over exits; the mean keeps ``weight`` independent of their number). The shared
shallow layers receive gradients from every exit, which is where the student gains; the exits
also give early-exit classifiers whose test accuracy the run reports. The exits live in
:class:`StudentWithExits` beside the student, train and are checkpointed with it, and are
stripped from the exported student. The student is read by forward hooks (:class:`distill.taps.Taps`),
never rewritten. The other self-distillation, a student's earlier checkpoint teaching its later
self ("born-again networks", Furlanello et al. 2018), needs nothing new: give that checkpoint as
``teacher.checkpoint`` (see docs/features.md).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.intermediate import stage_paths
from distill.losses.logits import cross_entropy, kl
from distill.projectors import build_logit_head
from distill.taps import Taps, probe, resolve_path


class StudentWithExits(nn.Module):
    """The student plus one exit head per tapped layer; what the optimiser and DDP see.

    ``forward(inputs)`` returns the student's logits ``(B, K)`` and leaves each exit's logits
    ``(B, K)`` in ``self.exit_logits`` (name -> tensor).
    """

    def __init__(self, student: nn.Module, paths: dict[str, str], exits: dict[str, nn.Module]) -> None:
        super().__init__()
        self.student = student
        self.exits = nn.ModuleDict(exits)
        self.taps = Taps(student, paths)
        self.exit_logits: dict[str, Tensor] = {}

    def forward(self, inputs: Tensor) -> Tensor:
        logits = self.student(inputs)
        features = self.taps.require_all()
        self.exit_logits = {name: head(features[name]) for name, head in self.exits.items()}
        return logits


class SelfDistillation:
    """Builds the exits for ``student`` and computes their loss terms.

    Args:
        student: the model being trained.
        layers: ``"auto"`` (every stage but the last, :func:`distill.intermediate.stage_paths`) or
            a list of module paths.
        sample_input: one batch ``(B, ...)`` for probing the layers' shapes; num_classes: K.
        weight, temperature, label_weight: see the module docstring; hidden: exit MLP width.

    Attributes: ``module`` (:class:`StudentWithExits`, to train instead of the bare student),
    ``paths`` (exit name -> module path).
    """

    def __init__(self, student: nn.Module, layers: list[str] | str, sample_input: Tensor, num_classes: int, *,
                 weight: float = 1.0, temperature: float = 3.0, label_weight: float = 0.3,
                 hidden: int | None = None) -> None:
        self.weight, self.temperature, self.label_weight = weight, temperature, label_weight
        if layers == "auto":
            layers = stage_paths(student)[:-1]
            if not layers:
                raise ValueError("the student has a single stage, so no shallower layer can be taught: list 'layers'")
        if not layers:
            raise ValueError("'layers' is empty: give module paths (see `distill inspect`) or 'auto'")
        for path in layers:
            resolve_path(student, path)
        self.paths = {f"exit{index}": path for index, path in enumerate(layers)}
        shapes = probe(student, sample_input, self.paths)
        exits = {}
        for name, path in self.paths.items():
            try:
                exits[name] = build_logit_head(shapes[name], num_classes, hidden=hidden)
            except ValueError as exc:
                raise ValueError(f"layer {path!r} (output {tuple(shapes[name])}): {exc}") from None
        self.module = StudentWithExits(student, self.paths, exits)

    def losses(self, final_logits: Tensor, target: Tensor | None) -> list[tuple[str, float, Tensor]]:
        """``(metric name, weight, value)``: ``self/kl`` and, with labels, ``self/ce``; each a mean over exits."""
        exit_logits = list(self.module.exit_logits.values())
        teacher_logits = final_logits.detach()
        out = [("self/kl", self.weight, torch.stack(
            [kl(logits, teacher_logits, temperature=self.temperature) for logits in exit_logits]).mean())]
        if self.label_weight > 0 and target is not None:
            out.append(("self/ce", self.label_weight, torch.stack(
                [cross_entropy(logits, target=target) for logits in exit_logits]).mean()))
        return out

    @torch.no_grad()
    def exit_accuracy(self, inputs: Tensor, target: Tensor, batch_size: int = 512) -> dict[str, float]:
        """Test accuracy of each exit, keyed by its module path (the student's own is ``final``).

        ``inputs`` ``(N, ...)`` on the student's device, ``target`` ``(N,)`` on the same device."""
        module = self.module
        module.taps.attach()
        was_training = module.training
        module.eval()
        correct = {name: 0 for name in [*self.paths, "final"]}
        try:
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start:start + batch_size]
                labels = target[start:start + batch_size]
                correct["final"] += int((module(batch).argmax(-1) == labels).sum())
                for name, logits in module.exit_logits.items():
                    correct[name] += int((logits.argmax(-1) == labels).sum())
        finally:
            module.train(was_training)
        return {self.paths.get(name, name): count / len(inputs) for name, count in correct.items()}

    def remove(self) -> None:
        """Take the hooks off the student."""
        self.module.taps.remove()
