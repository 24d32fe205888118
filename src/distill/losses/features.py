"""Feature losses: pure functions comparing intermediate student and teacher features.

Uniform signature (student first, teacher second, target third, as the logit losses)::

    fn(student_features, teacher_features, target=None, *, reduction="mean", **its_own_params)

Shapes: features are ``(B, ...)`` with the batch first: vectors ``(B, D)``, tokens
``(B, N, D)``, maps ``(B, C, H, W)``. What each loss needs of the two shapes is in
``FEATURE_LOSS_NEEDS`` (:mod:`distill.losses`): ``hint`` and ``cosine`` compare element by
element, so the student feature must first be projected to the teacher's shape
(:mod:`distill.projectors`); ``attention_transfer``, ``similarity_preserving``, ``rkd_distance``
and ``rkd_angle`` compare per-sample summaries or batch relations and take any two shapes with
the same batch size; ``crd`` takes embeddings made by two small heads; ``ofa`` takes logits that
a small head computes from a student feature.

``reduction``: ``"mean"`` (default) averages the per-sample values over the batch, ``"sum"``
sums them, ``"none"`` returns them, shape ``(B,)``. For the losses defined over the batch
(similarity-preserving, RKD, CRD) a sample's value is its row of the relation (its share of the
batch loss) and ``"mean"`` is the published batch loss.

Precision: inputs are upcast to float32 inside and the loss is float32 (float64 stays float64).
``teacher_features`` are detached (the teacher is frozen), except in ``crd``, whose teacher
embeddings come out of a trainable head (see there).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
COSINE_OVER = ("sample", "position")
_EPS = 1e-12


# ----------------------------------------------------------------------------- shared helpers
def _prepare(name: str, student: Tensor, teacher: Tensor, reduction: str, *, same_shape: bool = False,
             min_batch: int = 1, dims: tuple[int, ...] | None = None, detach_teacher: bool = True):
    """Validate; return fp32 (fp64 kept) student and (detached) teacher features."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction={reduction!r} is not one of {REDUCTIONS}")
    for side, tensor in (("student", student), ("teacher", teacher)):
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point() or tensor.dim() < 2:
            raise ValueError(f"{name}: {side} features must be a floating tensor (B, ...), got "
                             f"{getattr(tensor, 'dtype', type(tensor).__name__)} "
                             f"shape {tuple(getattr(tensor, 'shape', ()))}")
        if dims is not None and tensor.dim() not in dims:
            wanted = " or ".join({2: "(B, D)", 3: "(B, N, D)", 4: "(B, C, H, W)"}[d] for d in dims)
            raise ValueError(f"{name}: {side} features must be {wanted}, got shape {tuple(tensor.shape)}")
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"{name}: batch sizes differ, student {tuple(student.shape)} vs "
                         f"teacher {tuple(teacher.shape)}")
    if same_shape and student.shape != teacher.shape:
        raise ValueError(f"{name} compares features element by element: student {tuple(student.shape)} != teacher "
                         f"{tuple(teacher.shape)}; project the student feature to the teacher's shape first "
                         "(distill.projectors.build_projector)")
    if student.shape[0] < min_batch:
        raise ValueError(f"{name} relates samples of a batch and needs at least {min_batch}, got B={student.shape[0]}")
    dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    teacher = teacher.detach() if detach_teacher else teacher
    return student.to(dtype), teacher.to(dtype)


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def _smooth_l1(a: Tensor, b: Tensor) -> Tensor:
    """Huber with delta = 1 (PyTorch's smooth L1, beta = 1), elementwise."""
    return F.smooth_l1_loss(a, b, reduction="none", beta=1.0)


def _resize_map(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> (B, C, *size): adaptive average pool when no dim grows, else bilinear."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances ``||x_i - x_j||`` (B, B) of rows of ``x`` (B, D), 0 on the diagonal.

    From the Gram matrix of the batch-centred rows (distances do not change, and centring keeps
    the subtraction ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` accurate); clamped at 1e-12 before the
    square root so that the gradient stays finite for coincident points.
    """
    x = x - x.mean(dim=0, keepdim=True)
    squared_norms = x.square().sum(dim=1)
    squared = (squared_norms.unsqueeze(1) + squared_norms.unsqueeze(0) - 2.0 * x @ x.T).clamp(min=_EPS)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.where(eye, 0.0, squared.sqrt())


# ----------------------------------------------------------------------------- the losses
def hint(student_features: Tensor, teacher_features: Tensor, target: Tensor | None = None, *,
         reduction: str = "mean") -> Tensor:
    """FitNets hint loss: mean squared error ``mean_k (s_k - t_k)**2`` per sample.

    ``s`` is the (projected) student feature, ``t`` the teacher's, same shape ``(B, ...)``; the
    per-sample value averages over all feature elements, so ``"mean"`` equals
    ``F.mse_loss(s, t)``. The paper's ``1/2 ||u_h - r(v_g)||^2`` is a sum with a factor 1/2; the
    mean used here (as in public FitNets code) keeps the scale independent of the feature size.
    Romero, Ballas, Kahou, Chassang, Gatta & Bengio, 2015, "FitNets: Hints for Thin Deep Nets",
    arXiv 1412.6550. Result: scalar, or ``(B,)`` for ``reduction="none"``.
    """
    student, teacher = _prepare("hint", student_features, teacher_features, reduction, same_shape=True)
    return _reduce((student - teacher).square().flatten(1).mean(dim=1), reduction)


def cosine(student_features: Tensor, teacher_features: Tensor, target: Tensor | None = None, *,
           reduction: str = "mean", over: str = "sample", eps: float = 1e-8) -> Tensor:
    """Cosine distance ``1 - cos(s, t)``, ``cos = s.t / max(|s| |t|, eps)``.

    ``over="sample"``: one cosine per sample over the flattened feature. ``over="position"``:
    one cosine per position along the channel dim (tokens ``(B, N, D)``: per token over D;
    maps ``(B, C, H, W)``: per pixel over C; vectors: as ``"sample"``), averaged over positions
    per sample. Needs equal shapes (project the student first). Scale-invariant, in [0, 2].
    Used for feature distillation e.g. by Sanh, Debut, Chaumond & Wolf, 2019, "DistilBERT",
    arXiv 1910.01108 (cosine loss on hidden states). Result: scalar, or ``(B,)`` for ``"none"``.
    """
    if over not in COSINE_OVER:
        raise ValueError(f"cosine: over={over!r} is not one of {COSINE_OVER}")
    student, teacher = _prepare("cosine", student_features, teacher_features, reduction, same_shape=True)
    if over == "sample" or student.dim() == 2:
        return _reduce(1.0 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1, eps=eps), reduction)
    channel_dim = 1 if student.dim() == 4 else -1
    per_position = 1.0 - F.cosine_similarity(student, teacher, dim=channel_dim, eps=eps)
    return _reduce(per_position.flatten(1).mean(dim=1), reduction)


def spatial_attention(features: Tensor, p: float = 2.0) -> Tensor:
    """Attention map of a feature map (B, C, H, W): ``mean_c |F_c|**p``, shape (B, 1, H, W)."""
    return features.abs().pow(p).mean(dim=1, keepdim=True)


def attention_transfer(student_features: Tensor, teacher_features: Tensor, target: Tensor | None = None, *,
                       reduction: str = "mean", p: float = 2.0) -> Tensor:
    """Activation-based attention transfer: ``|| a_s / |a_s| - a_t / |a_t| ||_2`` per sample.

    For a map ``F`` (B, C, H, W), ``a = vec(mean_c |F_c|**p)`` (H*W values, p = 2), L2-normalised
    per sample. Channel counts may differ (no projector). When the grids differ the student's
    attention map (not its features) is resized to the teacher's grid before normalising:
    adaptive average pooling when it shrinks, bilinear interpolation otherwise.
    Zagoruyko & Komodakis, 2017, "Paying More Attention to Attention", arXiv 1612.03928:
    ``beta/2 * sum_j || Q_s/|Q_s| - Q_t/|Q_t| ||_p`` with p = 2. Implemented: the norm itself (not
    squared) per sample, averaged over the batch, without ``beta/2`` (that is the recipe weight).
    The authors' code instead averages the squared difference over the H*W positions (=
    ``norm**2 / (H*W)``) and weights it by ``beta = 1000``. Maps only: tokens must be projected
    to a map first. Result: scalar, or ``(B,)`` for ``reduction="none"``.
    """
    student, teacher = _prepare("attention_transfer", student_features, teacher_features, reduction, dims=(4,))
    student_attention = _resize_map(spatial_attention(student, p), tuple(teacher.shape[-2:]))
    a_s = F.normalize(student_attention.flatten(1), dim=1, eps=_EPS)  # (B, Ht*Wt)
    a_t = F.normalize(spatial_attention(teacher, p).flatten(1), dim=1, eps=_EPS)
    difference = a_s - a_t
    # the norm with a gradient of 0 (not NaN) where the difference is exactly 0
    squared = difference.square().sum(dim=1)
    norm = torch.where(squared > 0, squared.clamp(min=_EPS**2).sqrt(), 0.0)
    return _reduce(norm, reduction)


def similarity_preserving(student_features: Tensor, teacher_features: Tensor, target: Tensor | None = None, *,
                          reduction: str = "mean") -> Tensor:
    """Similarity-preserving KD: ``|| G_s - G_t ||_F**2 / B**2``.

    ``G = normalize_rows(F F^T)`` (B, B), ``F`` the features flattened per sample (B, K), each row
    of the Gram matrix divided by its L2 norm. Any shapes with the same batch size (no
    projector). The per-sample value is ``|| G_s[i] - G_t[i] ||**2 / B``, so ``"mean"`` is the
    paper's loss. Tung & Mori, 2019, "Similarity-Preserving Knowledge Distillation",
    arXiv 1907.09682 (the sum over layer pairs is the recipe's). Result: scalar, or
    ``(B,)`` for ``reduction="none"``.
    """
    student, teacher = _prepare("similarity_preserving", student_features, teacher_features, reduction)
    student, teacher = student.flatten(1), teacher.flatten(1)
    g_s = F.normalize(student @ student.T, dim=1, eps=_EPS)
    g_t = F.normalize(teacher @ teacher.T, dim=1, eps=_EPS)
    return _reduce((g_s - g_t).square().sum(dim=1) / student.shape[0], reduction)


def rkd_distance(student_features: Tensor, teacher_features: Tensor, target: Tensor | None = None, *,
                 reduction: str = "mean") -> Tensor:
    """Distance-wise relational KD: ``mean_{i,j} huber(d_s(i,j) / mu_s, d_t(i,j) / mu_t)``.

    ``d(i, j) = ||f_i - f_j||_2`` over features flattened per sample, ``mu`` the mean distance
    over pairs ``i != j`` (each network normalised by its own scale), ``huber`` the smooth L1
    with delta = 1. Averaged over all ``B**2`` ordered pairs, diagonal (0 = 0) included, as in
    the authors' code; the per-sample value is its row's mean. Needs B >= 2; any shapes.
    Park, Kim, Lu & Cho, 2019, "Relational Knowledge Distillation", arXiv 1904.05068
    (paper weight 25 for distance, 50 for angle: recipe weights). Result: scalar, or ``(B,)``.
    """
    student, teacher = _prepare("rkd_distance", student_features, teacher_features, reduction, min_batch=2)
    batch = student.shape[0]
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=student.device)

    def normalised(features: Tensor) -> Tensor:
        distances = _pairwise_distances(features.flatten(1))
        return distances / distances[off_diagonal].mean().clamp(min=_EPS)

    return _reduce(_smooth_l1(normalised(student), normalised(teacher)).mean(dim=1), reduction)


def _angles(features: Tensor) -> Tensor:
    """``cos`` of the angle at vertex i between j and k: ``<e_ij, e_ik>``, ``e_ij`` the unit vector
    from ``f_i`` to ``f_j`` (0 when j == i); shape (B, B, B), indexed [i, j, k].

    ``<f_j - f_i, f_k - f_i> = G_jk - G_ij - G_ik + G_ii`` from the Gram matrix G of the centred
    rows, so memory is B**3, not B**2 * D.
    """
    x = features - features.mean(dim=0, keepdim=True)
    gram = x @ x.T  # (B, B)
    diagonal = gram.diagonal()
    # dot[i, j, k] = G_jk - G_ij - G_ik + G_ii
    dot = gram.unsqueeze(0) - gram.unsqueeze(2) - gram.unsqueeze(1) + diagonal.view(-1, 1, 1)
    distances = _pairwise_distances(features)  # (B, B), [i, j] = |f_j - f_i|
    denominator = (distances.unsqueeze(2) * distances.unsqueeze(1)).clamp(min=_EPS)
    eye = torch.eye(features.shape[0], dtype=torch.bool, device=features.device)
    degenerate = eye.unsqueeze(2) | eye.unsqueeze(1)  # j == i or k == i
    return torch.where(degenerate, 0.0, dot / denominator)


def rkd_angle(student_features: Tensor, teacher_features: Tensor, target: Tensor | None = None, *,
              reduction: str = "mean") -> Tensor:
    """Angle-wise relational KD: ``mean_{i,j,k} huber(cos_s(i,j,k), cos_t(i,j,k))``.

    ``cos(i, j, k) = <e_ij, e_ik>`` with ``e_ij = (f_j - f_i) / ||f_j - f_i||`` (the angle at
    ``f_i``; 0 when j == i or k == i), features flattened per sample, ``huber`` the smooth L1
    with delta = 1, averaged over all ``B**3`` triplets as in the authors' code; the per-sample
    value is the mean over the triplets with vertex i. Needs B >= 3; any shapes.
    Park, Kim, Lu & Cho, 2019, "Relational Knowledge Distillation", arXiv 1904.05068.
    Result: scalar, or ``(B,)`` for ``reduction="none"``.
    """
    student, teacher = _prepare("rkd_angle", student_features, teacher_features, reduction, min_batch=3)
    per_triplet = _smooth_l1(_angles(student.flatten(1)), _angles(teacher.flatten(1)))
    return _reduce(per_triplet.flatten(1).mean(dim=1), reduction)


def attention_relation(student_features: Tensor, teacher_features: Tensor, target: Tensor | None = None, *,
                       reduction: str = "mean", heads: int = 12, mask: Tensor | None = None) -> Tensor:
    """Multi-head self-attention relation distillation (MiniLMv2): ``mean_{r, i} KL(R_t[r, i] || R_s[r, i])``.

    Features are token vectors ``(B, N, D)``, typically a layer's query, key or value projection
    (``...attention.self.query``). Each side is split into ``heads`` relation heads of size
    ``d = D / heads`` (D may differ between student and teacher; ``heads`` must divide both) and
    ``R[r] = softmax(X_r X_r^T / sqrt(d))`` (B, heads, N, N) relates every token to every other.
    The KL over keys is averaged over heads and valid query tokens. ``mask`` (B, N), 1 = a real
    token: padding is excluded as a key (its relation is -inf) and as a query; a longer mask whose
    extra columns are padding alone is cut to N (a model that trims padding columns). Pairing Q-Q,
    K-K and V-V of the teacher's last layer with the student's is the paper's recipe.
    Wang, Bao, Huang, Dong & Wei, 2021, "MiniLMv2: Multi-Head Self-Attention Relation Distillation
    for Compressing Pretrained Transformers", ACL Findings (arXiv 2012.15828); the value relation
    alone is MiniLM's (Wang et al. 2020, arXiv 2002.10957). Result: scalar, or ``(B,)`` for
    ``reduction="none"``.
    """
    student, teacher = _prepare("attention_relation", student_features, teacher_features, reduction, dims=(3,))
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(f"attention_relation relates the same tokens on both sides: student {tuple(student.shape)} "
                         f"and teacher {tuple(teacher.shape)} differ in length")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"attention_relation: heads must be a positive int, got {heads!r}")
    for side, tensor in (("student", student), ("teacher", teacher)):
        if tensor.shape[-1] % heads:
            raise ValueError(f"attention_relation: heads={heads} does not divide the {side}'s width "
                             f"{tensor.shape[-1]}; choose a common divisor of both widths")
    batch, length = student.shape[:2]
    if mask is None:
        valid = torch.ones(batch, length, dtype=torch.bool, device=student.device)
    else:
        valid = mask.to(student.device).bool()
        if valid.shape[0] != batch or valid.ndim != 2 or valid.shape[1] < length or valid[:, length:].any():
            raise ValueError(f"attention_relation: mask {tuple(mask.shape)} does not match the tokens "
                             f"{tuple(student.shape[:2])} (a longer mask may only add padding columns)")
        valid = valid[:, :length]

    def relations(features: Tensor) -> Tensor:  # (B, heads, N, N) log-probabilities over keys
        per_head = features.view(batch, length, heads, -1).transpose(1, 2)  # (B, heads, N, d)
        scores = per_head @ per_head.transpose(-1, -2) / per_head.shape[-1] ** 0.5
        return torch.log_softmax(scores.masked_fill(~valid[:, None, None, :], float("-inf")), dim=-1)

    log_s, log_t = relations(student), relations(teacher)
    keys = valid[:, None, None, :]
    per_query = torch.where(keys, log_t.exp() * (log_t - log_s), 0.0).sum(-1).mean(1)  # (B, N)
    queries = valid.to(per_query.dtype)
    per_sample = (per_query * queries).sum(1) / queries.sum(1).clamp(min=1)
    return _reduce(per_sample, reduction)


def crd(student_embeddings: Tensor, teacher_embeddings: Tensor, target: Tensor | None = None, *,
        reduction: str = "mean", nce_t: float = 0.07) -> Tensor:
    """Contrastive representation distillation, in-batch InfoNCE (no memory bank).

    ``z_s = normalize(student_embeddings)``, ``z_t = normalize(teacher_embeddings)`` (B, D);
    ``S = z_s z_t^T / nce_t``; with the matching sample as the positive and the other B - 1
    samples of the batch as negatives, per sample ``i``:
    ``CE(S[i], i) + CE(S^T[i], i)`` (student anchor against teacher embeddings, plus teacher
    anchor against student embeddings: CRD's two symmetric terms).
    Tian, Krishnan & Isola, 2020, "Contrastive Representation Distillation", arXiv 1910.10699.
    SIMPLIFICATION: the paper draws 16384 negatives per sample from a momentum memory bank and
    uses an NCE critic with a normalising constant; here the negatives are the other samples of
    the batch and the critic is a softmax over them (InfoNCE), so the loss is bounded below by 0
    and its lower-bound on mutual information is at most ``log B``.
    The embeddings are produced outside by two trainable heads
    (:func:`distill.projectors.build_embedding_head`), one on the student feature and one on
    the (frozen) teacher feature; ``teacher_embeddings`` is therefore NOT detached here so that
    the teacher-side head trains (as in the paper). The teacher's own features must carry no
    graph (computed under ``no_grad``; ``.clone()`` an ``inference_mode`` tensor before the head).
    Needs B >= 2. Result: scalar, or ``(B,)`` for ``reduction="none"``.
    """
    if not nce_t > 0:
        raise ValueError(f"crd: nce_t must be > 0, got {nce_t!r}")
    student, teacher = _prepare("crd", student_embeddings, teacher_embeddings, reduction, dims=(2,),
                                min_batch=2, detach_teacher=False)
    if student.shape != teacher.shape:
        raise ValueError(f"crd: embeddings must share the shape (B, D), got student {tuple(student.shape)} and "
                         f"teacher {tuple(teacher.shape)}; give both embedding heads the same dim")
    z_s, z_t = F.normalize(student, dim=1, eps=_EPS), F.normalize(teacher, dim=1, eps=_EPS)
    scores = z_s @ z_t.T / nce_t  # (B, B): [i, j] = student i against teacher j
    positives = torch.arange(student.shape[0], device=student.device)
    per_sample = (F.cross_entropy(scores, positives, reduction="none")
                  + F.cross_entropy(scores.T, positives, reduction="none"))
    return _reduce(per_sample, reduction)


def ofa(student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None, *,
        reduction: str = "mean", eps: float = 1.0, temperature: float = 1.0) -> Tensor:
    """One-for-All (OFA) loss on logits from an intermediate student feature.

    With ``p = softmax(teacher_logits / T)``, ``log q = log_softmax(student_logits / T)`` and the
    one-hot target ``y``: ``- sum_c ((p_c + y_c)**eps - y_c) log q_c`` per sample, that is
    ``-((1 + p_y)**eps - 1) log q_y - sum_{c != y} p_c**eps log q_c``. With ``eps = 1`` it is the
    cross-entropy ``-sum_c p_c log q_c`` (= KL(p || q) + H(p), minimal, not zero, at q = p);
    ``eps > 1`` raises the weight of the target class where the teacher is confident.
    ``student_logits`` (B, C) come from a small head on a student feature
    (:func:`distill.projectors.build_logit_head`); ``teacher_logits`` (B, C) are the teacher's
    final logits (detached); ``target`` (B,) int64 class ids (required).
    Hao, Guo, Han, Tang, Hu, Wang & Xu, 2023, "One-for-All: Bridge the Gap Between
    Heterogeneous Architectures in Knowledge Distillation", arXiv 2310.19444 (adaptive target
    enhancement), following the authors' ``ofa_loss`` (github.com/Hao840/OFAKD): no ``T**2``
    factor, as there (T = 1 by default; the authors' ResNet-18 example uses eps = 1.5);
    ``log q`` from ``log_softmax`` rather than ``log(softmax)`` (same value, no underflow).
    Shapes: logits ``(..., C)``, target ``(...)``; result scalar, or ``(...)`` for ``"none"``.
    """
    if not temperature > 0:
        raise ValueError(f"ofa: temperature must be > 0, got {temperature!r}")
    if not eps > 0:
        raise ValueError(f"ofa: eps must be > 0, got {eps!r}")
    student, teacher = _prepare("ofa", student_logits, teacher_logits, reduction, same_shape=True)
    if target is None:
        raise ValueError(f"ofa needs target (int64 class ids of shape {tuple(student.shape[:-1])}), got None")
    if target.shape != student.shape[:-1] or target.is_floating_point():
        raise ValueError(f"ofa: target must be integer class ids of shape {tuple(student.shape[:-1])}, got "
                         f"dtype {target.dtype} shape {tuple(target.shape)}")
    classes = student.shape[-1]
    if ((target < 0) | (target >= classes)).any():
        raise ValueError(f"ofa: target has class ids outside [0, {classes})")
    one_hot = F.one_hot(target.long(), classes).to(student.dtype)
    p_teacher = F.softmax(teacher / temperature, dim=-1)
    log_q = F.log_softmax(student / temperature, dim=-1)
    weight = (p_teacher + one_hot).pow(eps) - one_hot
    return _reduce(-(weight * log_q).sum(dim=-1), reduction)


__all__ = ["attention_transfer", "cosine", "crd", "hint", "ofa", "rkd_angle", "rkd_distance",
           "similarity_preserving", "spatial_attention", "REDUCTIONS"]
