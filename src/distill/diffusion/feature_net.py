"""The feature space of the Frechet distance: a small CNN classifier trained here on the same data.

Inception features mean nothing on 8x8 digits or MNIST, so (like the FID protocols of small
image benchmarks) the Frechet distance is taken in the penultimate layer (global-average-pooled
conv features) of :class:`distill.models.CNN` trained on the real training images. Its numbers
are comparable only with each other, and with the data-vs-data floor: the same distance between
two disjoint halves of real images (:func:`data_floor`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from distill.diffusion.metrics import frechet_distance
from distill.diffusion.training import Objective, Trainee, frozen, train_objective
from distill.models import build_model


class ClassifierObjective(Objective):
    """Cross-entropy of the trainee's logits on ``{"input": images, "target": labels}`` batches."""

    def loss(self, batch):
        return F.cross_entropy(self.student(batch["input"]), batch["target"])


def train_feature_net(images: Tensor, labels: Tensor, num_classes: int = 10, *, num_steps: int = 600,
                      batch_size: int = 128, lr: float = 3e-3, seed: int = 0, channels=(32, 64)) -> nn.Module:
    """A CNN classifier trained on (images, labels) on the shared loop; returned frozen."""
    from distill.data.sources import TensorData

    torch.manual_seed(seed)
    net = build_model("cnn", input_shape=tuple(images.shape[1:]), num_classes=num_classes, channels=list(channels))
    net.train()
    train_objective(ClassifierObjective(), Trainee(net), TensorData(images, labels, name="feature_net"),
                    num_steps=num_steps, batch_size=batch_size, lr=lr, seed=seed, progress=False)
    return frozen(net)


@torch.no_grad()
def features(net: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """(N, channels[-1]) global-average-pooled features of the last conv stage."""
    out = []
    for chunk in images.split(batch_size):
        x = chunk
        for stage in net.stages:
            x = stage(x)
        out.append(x.mean(dim=(2, 3)))
    return torch.cat(out)


@torch.no_grad()
def accuracy(net: nn.Module, images: Tensor, labels: Tensor) -> float:
    return float((torch.cat([net(c) for c in images.split(1000)]).argmax(1) == labels).float().mean())


def data_floor(net: nn.Module, images: Tensor, seed: int = 0) -> tuple[float, Tensor, Tensor]:
    """(FD between two disjoint random halves of ``images``, features of half A, indices of half A)."""
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    half = len(images) // 2
    a, b = perm[:half], perm[half:2 * half]
    feats_a = features(net, images[a])
    return frechet_distance(features(net, images[b]), feats_a), feats_a, a


