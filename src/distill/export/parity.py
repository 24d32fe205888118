"""Parity of an exported variant with eager PyTorch, and the per-precision tolerances.

A variant passes when its logits on real held-out samples stay within ``max_abs_diff`` of the
eager reference (where a bound is set) and its top-1 prediction agrees on at least
``min_agreement`` of the samples. Default bounds per precision (see :data:`DEFAULT_TOLERANCES`):

- ``fp32`` and the packed ``int4`` / ``int2`` (the same integer codes, run by ``MatMulNBits``):
  the reference computes the same function, so only float rounding differs: |diff| <= 1e-3,
  agreement >= 99.9%.
- ``fp16``: half-precision weights and activations: |diff| <= 0.1, agreement >= 99%.
- ``int8-dynamic`` / ``int8-static`` and mobile ``8da4w``: the runtime rounds weights (and
  activations), so logits move by more than any fixed bound; agreement >= 98% / 97% / 97%,
  the max difference is reported.

For a text model that gives (B, D) embeddings rather than class scores (``kind="embedding"``),
"agreement" is the fraction of rows whose cosine similarity with the eager row is at least
:data:`EMBEDDING_MIN_COSINE` (the mean cosine is reported too); the bounds are the same.

The user lowers (or raises) the bar explicitly with ``--tolerance`` / ``--min-agreement``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Tolerance:
    max_abs_diff: float | None  # None: reported, not checked
    min_agreement: float

    def with_overrides(self, max_abs_diff: float | None = None, min_agreement: float | None = None) -> "Tolerance":
        return Tolerance(self.max_abs_diff if max_abs_diff is None else max_abs_diff,
                         self.min_agreement if min_agreement is None else min_agreement)


DEFAULT_TOLERANCES = {
    "fp32": Tolerance(1e-3, 0.999),
    "int4": Tolerance(1e-3, 0.999),
    "int2": Tolerance(1e-3, 0.999),
    "fp16": Tolerance(0.1, 0.99),
    "int8-dynamic": Tolerance(None, 0.98),
    "int8-static": Tolerance(None, 0.97),
    "8da4w": Tolerance(None, 0.97),
}


EMBEDDING_MIN_COSINE = 0.99


def parity(variant_logits: np.ndarray, reference_logits: np.ndarray, tolerance: Tolerance, kind: str = "logits") -> dict:
    """Max |diff|, mean |diff| and top-1 agreement of (N, K) logits, and whether they pass ``tolerance``
    (``kind="embedding"``: agreement = rows with cosine >= :data:`EMBEDDING_MIN_COSINE`)."""
    import numpy as np  # here, not at the top: the target registry imports this module for its tolerances

    variant_logits = np.asarray(variant_logits, dtype=np.float32)
    reference_logits = np.asarray(reference_logits, dtype=np.float32)
    if variant_logits.shape != reference_logits.shape:
        raise ValueError(f"variant logits {variant_logits.shape} and eager logits {reference_logits.shape} differ in shape")
    diff = np.abs(variant_logits - reference_logits)
    extra = {}
    if kind == "embedding":
        norms = np.linalg.norm(variant_logits, axis=-1) * np.linalg.norm(reference_logits, axis=-1)
        cosine = (variant_logits * reference_logits).sum(-1) / np.maximum(norms, 1e-12)
        agreement = float((cosine >= EMBEDDING_MIN_COSINE).mean())
        extra = {"kind": "embedding", "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
                 "agreement_rule": f"cosine >= {EMBEDDING_MIN_COSINE}"}
    elif kind == "logits":
        agreement = float((variant_logits.argmax(-1) == reference_logits.argmax(-1)).mean())
    else:
        raise ValueError(f"parity kind must be 'logits' or 'embedding', not {kind!r}")
    max_abs = float(diff.max()) if diff.size else 0.0
    failures = []
    if not np.isfinite(variant_logits).all():
        failures.append("non-finite logits")
    if tolerance.max_abs_diff is not None and not max_abs <= tolerance.max_abs_diff:
        failures.append(f"max |diff| {max_abs:.3g} > {tolerance.max_abs_diff:g}")
    if agreement < tolerance.min_agreement:
        failures.append(f"top-1 agreement {agreement:.4f} < {tolerance.min_agreement:g}")
    return {"samples": int(len(variant_logits)), "max_abs_diff": max_abs, "mean_abs_diff": float(diff.mean()),
            "agreement": agreement, "tolerance": asdict(tolerance), "passed": not failures, "failures": failures,
            **extra}
