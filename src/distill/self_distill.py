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
never rewritten. Exits combine with feature terms: then one module holds the exits and the
feature heads, behind one set of taps (:func:`distill.intermediate.join_heads`). The other
self-distillation, a student's earlier checkpoint teaching its later self ("born-again networks",
Furlanello et al. 2018), needs nothing new: give that checkpoint as ``teacher.checkpoint`` (see
docs/features.md).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.core.io import Inputs, batch_size_of, forward_logits, select
from distill.intermediate import StudentWithHeads, stage_paths
from distill.losses.logits import cross_entropy, kl
from distill.projectors import build_logit_head
from distill.taps import probe, resolve_path


class StudentWithExits(StudentWithHeads):
    """The student plus one exit head per tapped layer: a :class:`distill.intermediate.StudentWithHeads`
    with exits only (``exits.<exit>`` in its state dict).

    ``forward(inputs)`` returns the student's output (logits ``(B, K)``) and leaves each exit's logits
    ``(B, K)`` in ``self.exit_logits`` (name -> tensor).
    """

    def __init__(self, student: nn.Module, paths: dict[str, str], exits: dict[str, nn.Module]) -> None:
        super().__init__(student, {}, {}, {}, exit_paths=paths, exits=exits)


class SelfDistillation:
    """Builds the exits for ``student`` and computes their loss terms.

    Args:
        student: the model being trained.
        layers: ``"auto"`` (every stage but the last, :func:`distill.intermediate.stage_paths`) or
            a list of module paths.
        sample_input: one batch ``(B, ...)`` for probing the layers' shapes; num_classes: K.
        weight, temperature, label_weight: see the module docstring; hidden: exit MLP width.

    Attributes: ``module`` (:class:`StudentWithExits`, to train instead of the bare student; with
    feature terms too, the one :class:`distill.intermediate.StudentWithHeads` holding every head,
    see :func:`distill.intermediate.join_heads`), ``paths`` (exit name -> module path).
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
        missing = [name for name in self.paths if name not in self.module.exit_logits]
        if missing:
            raise ValueError(f"exits {missing} have no logits from the latest forward: train the module with its "
                             "taps attached (taps.attach())")
        exit_logits = [self.module.exit_logits[name] for name in self.paths]
        teacher_logits = final_logits.detach()
        out = [("self/kl", self.weight, torch.stack(
            [kl(logits, teacher_logits, temperature=self.temperature) for logits in exit_logits]).mean())]
        if self.label_weight > 0 and target is not None:
            out.append(("self/ce", self.label_weight, torch.stack(
                [cross_entropy(logits, target=target) for logits in exit_logits]).mean()))
        return out

    @torch.no_grad()
    def exit_accuracy(self, inputs: Inputs, target: Tensor, batch_size: int = 512) -> dict[str, float]:
        """Test accuracy of each exit, keyed by its module path (the student's own is ``final``).

        ``inputs`` ``(N, ...)`` (or a mapping of such tensors) on the student's device, ``target``
        ``(N,)`` on the same device. The taps are attached for these forwards and left as they were
        found (removed again when they were off), also when a forward fails."""
        module = self.module
        was_attached, was_training = module.taps.attached, module.training
        module.taps.attach()
        module.eval()
        count = batch_size_of(inputs)
        correct = {name: 0 for name in [*self.paths, "final"]}
        try:
            for start in range(0, count, batch_size):
                batch = select(inputs, slice(start, start + batch_size))
                labels = target[start:start + batch_size]
                final = forward_logits(module, batch, who="the student")
                correct["final"] += int((final.argmax(-1) == labels).sum())
                for name in self.paths:
                    correct[name] += int((module.exit_logits[name].argmax(-1) == labels).sum())
        finally:
            module.train(was_training)
            if not was_attached:
                module.taps.remove()
        return {self.paths.get(name, name): hits / count for name, hits in correct.items()}

    def remove(self) -> None:
        """Take the hooks off the student."""
        self.module.taps.remove()
