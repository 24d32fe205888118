"""Multi-layer perceptron on flattened pixels (the classic distillation teacher/student)."""
from __future__ import annotations

import math

import torch
from torch import nn

from distill.models import MODELS
from distill.models.utils import check_io, check_sizes

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@MODELS.register("mlp")
class MLP(nn.Module):
    """Flatten -> [Linear -> activation -> Dropout] per hidden size -> Linear head.

    (B, C, H, W) -> (B, C*H*W) -> (B, hidden[i]) ... -> (B, num_classes).
    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", sec. 3:
    the MNIST teacher is 784-1200-1200-10 with input dropout 0.2 and hidden dropout 0.5
    (``MLP((1, 28, 28), 10, hidden=(1200, 1200), dropout=0.5, input_dropout=0.2)``); the
    student 784-800-800-10. Module paths: ``layers.{i}`` (post-dropout hidden), ``head``.
    ``hidden`` is a list of widths >= 1 (an empty list: a linear classifier); other sizes raise
    ``ValueError`` naming the parameter.
    """

    def __init__(self, input_shape, num_classes, *, hidden=(1200, 1200), activation="relu",
                 dropout=0.0, input_dropout=0.0):
        super().__init__()
        self.config = dict(input_shape=input_shape, num_classes=num_classes, hidden=hidden,
                           activation=activation, dropout=dropout, input_dropout=input_dropout)
        check_io(input_shape, num_classes)
        hidden = check_sizes("hidden", hidden, "every hidden width must be an integer >= 1")
        widths = [math.prod(input_shape), *hidden]
        self.input_dropout = nn.Dropout(input_dropout)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(w_in, w_out), make_activation(activation), nn.Dropout(dropout))
            for w_in, w_out in zip(widths[:-1], widths[1:])
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x.flatten(1))  # (B, C*H*W)
        for layer in self.layers:
            x = layer(x)  # (B, hidden[i])
        return self.head(x)  # (B, num_classes)
