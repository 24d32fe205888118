"""Sample-quality metrics: MMD^2, sliced Wasserstein, Frechet distance, distance to the teacher, wall time.

- :func:`mmd2` -- unbiased squared maximum mean discrepancy (Gretton et al. 2012, eq. 3) with a
  sum of RBF kernels ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))`` over bandwidths ``h`` =
  ``scales`` x the median pairwise distance of the pooled samples (unless ``bandwidths`` given):
  ``MMD^2 = mean_{i!=j} k(x_i, x_j) + mean_{i!=j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)``. Can be
  slightly negative for equal distributions.
- :func:`sliced_wasserstein` -- ``SW_2 = sqrt(E_theta W_2^2(theta^T X, theta^T Y))`` over random unit
  directions (Bonneel et al. 2015), 1-D W_2 from matched quantiles.
- :func:`frechet_distance` -- ``|mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2)``
  between Gaussian fits (Heusel et al. 2017, FID), in float64; the features come from a classifier
  trained on the same data (:mod:`.feature_net`), so it is *not* comparable with Inception FID.
- :func:`distance_to_teacher` -- per sample root-mean-square difference between a student's sample
  and the teacher's ODE output for the same noise, averaged.
- :func:`time_per_sample` -- median over repeats of (seconds per batch) / batch size, after warm-up.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from distill.evaluation import median_time_ms


def _flat(x: Tensor) -> Tensor:
    return x.reshape(len(x), -1).double()


def mmd2(x: Tensor, y: Tensor, scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
         bandwidths: Sequence[float] | None = None) -> float:
    """Unbiased multi-bandwidth RBF MMD^2 between samples x (N, ...) and y (M, ...)."""
    x, y = _flat(x), _flat(y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"MMD needs at least 2 samples per set, got {len(x)} and {len(y)}")
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    if bandwidths is None:
        median = d2[torch.triu_indices(len(pooled), len(pooled), 1).unbind()].sqrt().median()
        bandwidths = [float(median) * s for s in scales]
    kernel = sum(torch.exp(-d2 / (2 * h ** 2)) for h in bandwidths)
    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                 - 2 * kxy.mean())


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance with ``num_projections`` seeded random directions."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    directions = torch.randn(x.shape[1], num_projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    levels = torch.linspace(0, 1, min(len(x), len(y)), dtype=torch.float64)
    qx = torch.quantile(x @ directions, levels, dim=0)
    qy = torch.quantile(y @ directions, levels, dim=0)
    return float((qx - qy).pow(2).mean().sqrt())


def gaussian_fit(features: Tensor) -> tuple[Tensor, Tensor]:
    features = _flat(features)
    return features.mean(0), torch.cov(features.T)


def frechet_distance(x_features: Tensor, y_features: Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets (N, D), (M, D)."""
    mu_x, cov_x = gaussian_fit(x_features)
    mu_y, cov_y = gaussian_fit(y_features)
    vals, vecs = torch.linalg.eigh(cov_x)
    sqrt_x = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(sqrt_x @ cov_y @ sqrt_x).clamp(min=0).sqrt().sum()
    return float((mu_x - mu_y).pow(2).sum() + cov_x.trace() + cov_y.trace() - 2 * cross)


def distance_to_teacher(student_samples: Tensor, teacher_samples: Tensor) -> float:
    """Mean over samples of the RMS difference between matched samples (same noise)."""
    if student_samples.shape != teacher_samples.shape:
        raise ValueError(f"matched samples must have one shape: {tuple(student_samples.shape)} vs {tuple(teacher_samples.shape)}")
    return float((_flat(student_samples) - _flat(teacher_samples)).pow(2).mean(1).sqrt().mean())


def time_per_sample(generate: Callable[[], Tensor], batch_size: int, repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds per sample of ``generate()`` (which makes ``batch_size`` samples), warm-up excluded."""
    return median_time_ms(generate, repeats=repeats, warmup=warmup) / 1e3 / batch_size
