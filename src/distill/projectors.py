"""Adapters from a student feature to the teacher's feature shape, built from probed shapes.

:func:`build_projector` takes the two shapes that :func:`distill.taps.probe` returns (batch dim
included, ignored) and returns a small trainable module mapping a student feature
``(B, *student_shape[1:])`` to ``(B, *teacher_shape[1:])``. Three kinds of feature, told apart
by their number of dims:

- **vector** ``(B, D)``: pooled features, an MLP's hidden layer;
- **map** ``(B, C, H, W)``: a CNN's feature map;
- **tokens** ``(B, N, D)``: a transformer's sequence, possibly headed by a CLS token.

Every projector first brings the student's *positions* to the teacher's (grid resize, token
resize, pooling), then mixes *channels* with a learned linear map (a ``Linear`` on the last dim
of vectors and tokens, a 1x1 ``Conv2d`` on maps; with ``hidden`` a two-layer MLP instead,
``Linear-GELU-Linear`` / ``Conv1x1-ReLU-Conv1x1``; resizing and a linear mixer commute, so the
order only matters with ``hidden``):

=================  =================  ======================================================
student            teacher            projector
=================  =================  ======================================================
equal shapes       equal shapes       :class:`IdentityProjector` (``kind="auto"``)
vector (B, Ds)     vector (B, Dt)     ``Linear(Ds, Dt)``                 :class:`VectorProjector`
map (B,Cs,Hs,Ws)   map (B,Ct,Ht,Wt)   resize grid, 1x1 conv (+BN)       :class:`MapProjector`
tokens (B,Ns,Ds)   tokens (B,Nt,Dt)   resize tokens, ``Linear(Ds, Dt)`` :class:`TokenProjector`
map                tokens             resize grid to the token grid, 1x1 conv, flatten
                                                                         :class:`MapToTokensProjector`
tokens             map                drop CLS, tokens -> grid, resize, 1x1 conv
                                                                         :class:`TokensToMapProjector`
map or tokens      vector             global average pool, ``Linear``   :class:`PoolProjector`
vector             map or tokens      ValueError (a vector has no positions to spread)
=================  =================  ======================================================

**Grid resize** (:func:`resize_grid`): to a grid no larger in either dim,
``adaptive_avg_pool2d`` (an average over each target cell: 8x8 -> 4x4 is 2x2 average
pooling); otherwise bilinear interpolation (``align_corners=False``).

**Token layout** (:func:`token_layout`): a sequence of N tokens is read as an optional CLS
token followed by patch tokens in row-major order (how ViT / DeiT / timm flatten their patch
grid). ``cls_token=None`` (auto) decides per side: N a perfect square -> no CLS, N x N grid;
else N - 1 a perfect square -> one CLS token then a sqrt(N-1) square grid; else no CLS and no
grid. ``cls_token=True`` / ``False`` forces the first token to be / not to be a CLS token on
every token side (the rest is a grid when its count is a perfect square). Only square grids are
recognised.

**Tokens -> tokens** with ``Ns != Nt``: the student's CLS (if any) is kept when the teacher has
one and dropped when it has not; a teacher CLS without a student CLS is matched by the mean of
the student's patch tokens. Patch tokens are resized as a 2-D grid when both sides have one,
otherwise along the token axis (``adaptive_avg_pool1d`` when shrinking, linear interpolation
when growing). With ``Ns == Nt`` only the channels are mixed.

**Map <-> tokens** (a CNN student and a ViT teacher, or the reverse): the token side must have a
square grid after the CLS rule. Map -> tokens: resize the map to the token grid, 1x1 conv to
``Dt``, flatten row-major to ``(B, h*w, Dt)``; if the teacher has a CLS token, it is matched by
the mean of the projected tokens, prepended. Tokens -> map: drop the student's CLS token,
reshape the patch tokens to ``(B, Ds, h, w)``, resize to ``(Ht, Wt)``, 1x1 conv to ``Ct``.

**To a vector**: a map is averaged over ``(H, W)``, tokens over all N tokens (CLS included),
then ``Linear`` (or the MLP). :func:`build_logit_head` (OFA) and :func:`build_embedding_head`
(CRD) are this projector with ``num_classes`` / ``dim`` outputs.

``kind``: ``"auto"`` is the identity for equal shapes (without ``hidden``), otherwise the
projector of the table; ``"identity"`` requires equal shapes; ``"linear"`` always builds the
learned projector, also for equal shapes (the FitNets regressor); ``"mlp"`` is ``"linear"``
with a hidden layer of ``hidden`` units (default: the teacher's channel count).

:class:`ProjectorSet` holds one projector per student/teacher feature pair. Its parameters
train with the student; a module that owns it as the attribute ``projectors`` saves its
weights under ``projectors.<pair name>.<parameter>`` in its ``state_dict`` (the checkpoint),
and :func:`strip_projectors` removes exactly those keys for export.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("auto", "identity", "linear", "mlp")
STATE_DICT_PREFIX = "projectors."
_FEATURE_KINDS = {2: "vector", 3: "tokens", 4: "map"}


# ----------------------------------------------------------------------------- shape helpers
def feature_kind(shape: Sequence[int]) -> str:
    """``"vector"`` (B, D), ``"tokens"`` (B, N, D) or ``"map"`` (B, C, H, W); else ValueError."""
    if len(shape) not in _FEATURE_KINDS:
        raise ValueError(f"a feature shape must be (B, D), (B, N, D) or (B, C, H, W) with the batch dim "
                         f"first, got {tuple(shape)}")
    return _FEATURE_KINDS[len(shape)]


def _square_side(count: int) -> int | None:
    side = math.isqrt(count) if count > 0 else 0
    return side if side > 0 and side * side == count else None


def token_layout(num_tokens: int, cls_token: bool | None = None) -> tuple[bool, tuple[int, int] | None]:
    """``(has_cls, grid)`` of a sequence of ``num_tokens`` tokens (see the module docstring).

    ``grid`` is ``(h, w)`` of the patch tokens, or None when their count is not a perfect square.
    """
    if cls_token is None:
        if _square_side(num_tokens):
            has_cls = False
        else:
            has_cls = _square_side(num_tokens - 1) is not None
    else:
        has_cls = bool(cls_token)
    patches = num_tokens - int(has_cls)
    if patches < 1:
        raise ValueError(f"a sequence of {num_tokens} token(s) with a CLS token has no patch tokens")
    side = _square_side(patches)
    return has_cls, ((side, side) if side else None)


def resize_grid(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``(B, C, H, W)`` to ``(B, C, *size)``: adaptive average pooling when no dim grows,
    bilinear interpolation (``align_corners=False``) otherwise; unchanged when already that size."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def resize_tokens(x: Tensor, num_tokens: int) -> Tensor:
    """Resize ``(B, N, D)`` along the token axis to ``(B, num_tokens, D)``: adaptive average pooling
    when shrinking, linear interpolation (``align_corners=False``) when growing."""
    if x.shape[1] == num_tokens:
        return x
    channels_first = x.transpose(1, 2)  # (B, D, N)
    if num_tokens < x.shape[1]:
        resized = F.adaptive_avg_pool1d(channels_first, num_tokens)
    else:
        resized = F.interpolate(channels_first, size=num_tokens, mode="linear", align_corners=False)
    return resized.transpose(1, 2)


def _linear_mixer(in_features: int, out_features: int, hidden: int | None) -> nn.Module:
    if hidden is None:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, out_features))


def _conv_mixer(in_channels: int, out_channels: int, hidden: int | None, batch_norm: bool) -> nn.Module:
    if hidden is None:
        layers = [nn.Conv2d(in_channels, out_channels, 1)]
    else:
        layers = [nn.Conv2d(in_channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, out_channels, 1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


# ----------------------------------------------------------------------------- projectors
class Projector(nn.Module):
    """Base class: maps ``(B, *student_shape[1:])`` to ``(B, *teacher_shape[1:])``.

    Stores its arguments verbatim (``student_shape``, ``teacher_shape`` as given, plus its own);
    ``extra_repr`` shows them, so ``repr`` reads as the call that built it.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]):
        super().__init__()
        self.student_shape = student_shape
        self.teacher_shape = teacher_shape

    def _options(self) -> dict:
        return {}

    def extra_repr(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self._options().items())
        return f"student_shape={tuple(self.student_shape)}, teacher_shape={tuple(self.teacher_shape)}{options}"

    def _check_input(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != tuple(self.student_shape[1:]):
            raise ValueError(f"{type(self).__name__} was built for student features (B, "
                             f"{', '.join(map(str, self.student_shape[1:]))}), got {tuple(x.shape)}")


class IdentityProjector(Projector):
    """Equal shapes: returns the student feature unchanged (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return x


class VectorProjector(Projector):
    """``(B, Ds) -> (B, Dt)``: ``Linear(Ds, Dt)``, or ``Linear-GELU-Linear`` with ``hidden``."""

    def __init__(self, student_shape, teacher_shape, *, hidden: int | None = None):
        super().__init__(student_shape, teacher_shape)
        self.hidden = hidden
        self.mix = _linear_mixer(student_shape[1], teacher_shape[1], hidden)

    def _options(self) -> dict:
        return {"hidden": self.hidden}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.mix(x)


class MapProjector(Projector):
    """``(B, Cs, Hs, Ws) -> (B, Ct, Ht, Wt)``: :func:`resize_grid`, then a 1x1 conv
    (``Conv-ReLU-Conv`` with ``hidden``), then ``BatchNorm2d(Ct)`` if ``batch_norm``."""

    def __init__(self, student_shape, teacher_shape, *, hidden: int | None = None, batch_norm: bool = False):
        super().__init__(student_shape, teacher_shape)
        self.hidden, self.batch_norm = hidden, batch_norm
        self.mix = _conv_mixer(student_shape[1], teacher_shape[1], hidden, batch_norm)

    def _options(self) -> dict:
        return {"hidden": self.hidden, "batch_norm": self.batch_norm}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.mix(resize_grid(x, self.teacher_shape[2:]))  # (B, Ct, Ht, Wt)


class TokenProjector(Projector):
    """``(B, Ns, Ds) -> (B, Nt, Dt)``: token resize with the CLS rule (module docstring), then
    ``Linear(Ds, Dt)`` on the channel dim (``Linear-GELU-Linear`` with ``hidden``)."""

    def __init__(self, student_shape, teacher_shape, *, hidden: int | None = None, cls_token: bool | None = None):
        super().__init__(student_shape, teacher_shape)
        self.hidden, self.cls_token = hidden, cls_token
        self.mix = _linear_mixer(student_shape[2], teacher_shape[2], hidden)
        self.student_layout = self.teacher_layout = None
        if student_shape[1] != teacher_shape[1]:
            self.student_layout = token_layout(student_shape[1], cls_token)
            self.teacher_layout = token_layout(teacher_shape[1], cls_token)

    def _options(self) -> dict:
        return {"hidden": self.hidden, "cls_token": self.cls_token}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.student_layout is not None:
            (s_cls, s_grid), (t_cls, t_grid) = self.student_layout, self.teacher_layout
            patches = x[:, int(s_cls):]  # (B, Ns - s_cls, Ds)
            t_patches = self.teacher_shape[1] - int(t_cls)
            if s_grid is not None and t_grid is not None:
                grid = patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], *s_grid)  # (B, Ds, hs, ws)
                resized = resize_grid(grid, t_grid).flatten(2).transpose(1, 2)  # (B, ht*wt, Ds)
            else:
                resized = resize_tokens(patches, t_patches)  # (B, Nt - t_cls, Ds)
            if t_cls:
                cls = x[:, :1] if s_cls else patches.mean(dim=1, keepdim=True)  # (B, 1, Ds)
                resized = torch.cat([cls, resized], dim=1)
            x = resized  # (B, Nt, Ds)
        return self.mix(x)  # (B, Nt, Dt)


class MapToTokensProjector(Projector):
    """``(B, Cs, Hs, Ws) -> (B, [1 +] h*w, Dt)``: resize the map to the teacher's token grid
    ``(h, w)``, 1x1 conv to ``Dt``, flatten row-major; a teacher CLS token is matched by the mean
    of the projected tokens."""

    def __init__(self, student_shape, teacher_shape, *, hidden: int | None = None, cls_token: bool | None = None):
        super().__init__(student_shape, teacher_shape)
        self.hidden, self.cls_token = hidden, cls_token
        self.teacher_layout = token_layout(teacher_shape[1], cls_token)
        if self.teacher_layout[1] is None:
            raise ValueError(_no_grid_message(student_shape, teacher_shape, "teacher", cls_token))
        self.mix = _conv_mixer(student_shape[1], teacher_shape[2], hidden, batch_norm=False)

    def _options(self) -> dict:
        return {"hidden": self.hidden, "cls_token": self.cls_token}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        has_cls, grid = self.teacher_layout
        tokens = self.mix(resize_grid(x, grid)).flatten(2).transpose(1, 2)  # (B, h*w, Dt)
        if has_cls:
            tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (B, 1 + h*w, Dt)
        return tokens


class TokensToMapProjector(Projector):
    """``(B, [1 +] h*w, Ds) -> (B, Ct, Ht, Wt)``: drop the CLS token, reshape the patch tokens
    (row-major) to ``(B, Ds, h, w)``, :func:`resize_grid` to ``(Ht, Wt)``, 1x1 conv to ``Ct``
    (+ ``BatchNorm2d`` if ``batch_norm``)."""

    def __init__(self, student_shape, teacher_shape, *, hidden: int | None = None, cls_token: bool | None = None,
                 batch_norm: bool = False):
        super().__init__(student_shape, teacher_shape)
        self.hidden, self.cls_token, self.batch_norm = hidden, cls_token, batch_norm
        self.student_layout = token_layout(student_shape[1], cls_token)
        if self.student_layout[1] is None:
            raise ValueError(_no_grid_message(student_shape, teacher_shape, "student", cls_token))
        self.mix = _conv_mixer(student_shape[2], teacher_shape[1], hidden, batch_norm)

    def _options(self) -> dict:
        return {"hidden": self.hidden, "cls_token": self.cls_token, "batch_norm": self.batch_norm}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        has_cls, grid = self.student_layout
        patches = x[:, int(has_cls):]  # (B, h*w, Ds)
        maps = patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)  # (B, Ds, h, w)
        return self.mix(resize_grid(maps, self.teacher_shape[2:]))  # (B, Ct, Ht, Wt)


class PoolProjector(Projector):
    """``(B, C, H, W)`` or ``(B, N, D)`` or ``(B, D)`` -> ``(B, Dt)``: global average over the
    positions (``H, W``, or all ``N`` tokens), then ``Linear`` (``Linear-GELU-Linear`` with
    ``hidden``)."""

    def __init__(self, student_shape, teacher_shape, *, hidden: int | None = None):
        super().__init__(student_shape, teacher_shape)
        self.hidden = hidden
        channels = student_shape[1] if len(student_shape) in (2, 4) else student_shape[2]
        self.mix = _linear_mixer(channels, teacher_shape[1], hidden)

    def _options(self) -> dict:
        return {"hidden": self.hidden}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))  # (B, C)
        elif x.dim() == 3:
            x = x.mean(dim=1)  # (B, D)
        return self.mix(x)  # (B, Dt)


def _shape_text(shape: Sequence[int]) -> str:
    return "(B, " + ", ".join(map(str, shape[1:])) + ")"


def _no_grid_message(student_shape, teacher_shape, side: str, cls_token) -> str:
    tokens = (student_shape if side == "student" else teacher_shape)[1]
    return (f"cannot bridge student {_shape_text(student_shape)} and teacher {_shape_text(teacher_shape)}: "
            f"the {side}'s {tokens} tokens form no square patch grid with cls_token={cls_token!r} "
            "(a map <-> tokens projector needs N or N - 1 tokens to be a perfect square); "
            "set cls_token, tap a module whose tokens form a square grid, or pool both sides to vectors")


# ----------------------------------------------------------------------------- builders
def build_projector(student_shape: Sequence[int], teacher_shape: Sequence[int], *, kind: str = "auto",
                    hidden: int | None = None, cls_token: bool | None = None,
                    batch_norm: bool = False) -> Projector:
    """The projector from student features ``student_shape`` to ``teacher_shape`` (see the module
    docstring for the rules). Shapes include the batch dim, which is ignored.

    Args:
        kind: ``"auto"``, ``"identity"``, ``"linear"`` or ``"mlp"`` (module docstring).
        hidden: hidden units of a two-layer channel MLP (implies ``kind="mlp"`` under ``"auto"``).
        cls_token: None (auto-detect per token side), True or False: see :func:`token_layout`.
        batch_norm: add ``BatchNorm2d`` after the 1x1 conv of a projector whose output is a map.

    Raises ``ValueError`` for shapes that no projector bridges (a vector student and a map or
    token teacher; token sides without a square grid against a map), naming both shapes and
    what would work.
    """
    if kind not in KINDS:
        raise ValueError(f"projector kind={kind!r} is not one of {KINDS}")
    student_kind, teacher_kind = feature_kind(student_shape), feature_kind(teacher_shape)
    equal = tuple(student_shape[1:]) == tuple(teacher_shape[1:])
    if kind == "identity":
        if not equal or hidden is not None:
            raise ValueError(f"projector kind='identity' needs equal shapes and no hidden layer, got student "
                             f"{_shape_text(student_shape)}, teacher {_shape_text(teacher_shape)}, hidden={hidden}; "
                             "use kind='auto'")
        return IdentityProjector(student_shape, teacher_shape)
    if kind == "auto" and equal and hidden is None:
        return IdentityProjector(student_shape, teacher_shape)
    if kind == "linear" and hidden is not None:
        raise ValueError(f"projector kind='linear' takes no hidden layer (hidden={hidden}); use kind='mlp'")
    if kind == "mlp" and hidden is None:
        hidden = teacher_shape[1] if teacher_kind in ("vector", "map") else teacher_shape[2]

    if teacher_kind == "vector":
        return PoolProjector(student_shape, teacher_shape, hidden=hidden) if student_kind != "vector" \
            else VectorProjector(student_shape, teacher_shape, hidden=hidden)
    if student_kind == "vector":
        raise ValueError(f"no projector bridges a vector student {_shape_text(student_shape)} to a {teacher_kind} "
                         f"teacher {_shape_text(teacher_shape)}: a vector has no positions to spread over the "
                         f"teacher's {'grid' if teacher_kind == 'map' else 'tokens'}. Tap a student module with "
                         f"a spatial output (a map (B, C, H, W) or tokens (B, N, D)), tap a pooled teacher "
                         f"feature (B, D), or use a loss that needs no projector (similarity_preserving, "
                         "rkd_distance, rkd_angle)")
    if student_kind == "map" and teacher_kind == "map":
        return MapProjector(student_shape, teacher_shape, hidden=hidden, batch_norm=batch_norm)
    if student_kind == "tokens" and teacher_kind == "tokens":
        return TokenProjector(student_shape, teacher_shape, hidden=hidden, cls_token=cls_token)
    if student_kind == "map":
        return MapToTokensProjector(student_shape, teacher_shape, hidden=hidden, cls_token=cls_token)
    return TokensToMapProjector(student_shape, teacher_shape, hidden=hidden, cls_token=cls_token,
                                batch_norm=batch_norm)


def build_logit_head(student_shape: Sequence[int], num_classes: int, *, hidden: int | None = None) -> Projector:
    """OFA's exit head: student feature (vector, map or tokens) -> ``(B, num_classes)`` logits by
    global average pooling and ``Linear`` (:class:`PoolProjector`). Hao et al. 2023, arXiv
    2310.19444, use deeper heads (conv / transformer stages); this is the small variant."""
    feature_kind(student_shape)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return PoolProjector(student_shape, (student_shape[0], num_classes), hidden=hidden)


def build_embedding_head(shape: Sequence[int], dim: int, *, hidden: int | None = None) -> Projector:
    """CRD's embedding head: a feature (vector, map or tokens) -> ``(B, dim)`` by global average
    pooling and ``Linear`` (:class:`PoolProjector`); the loss L2-normalises. Built for both the
    student and the teacher side (Tian et al. 2020, arXiv 1910.10699, train both heads)."""
    feature_kind(shape)
    if dim < 1:
        raise ValueError(f"embedding dim must be >= 1, got {dim}")
    return PoolProjector(shape, (shape[0], dim), hidden=hidden)


# ----------------------------------------------------------------------------- the set
class ProjectorSet(nn.ModuleDict):
    """One projector per feature pair, keyed by the pair's name.

    ``ProjectorSet.from_shapes(student_shapes, teacher_shapes, kind=..., hidden=...)`` builds one
    :func:`build_projector` per name present in both dicts (the dicts that :func:`probe` returns
    for the two models, with the pair names as keys). ``projectors(features)`` maps a dict
    ``name -> student feature`` to ``name -> projected feature``.

    Checkpoint convention: keep the set as the attribute ``projectors`` of the module that trains
    with the student, so its weights land under ``projectors.<name>.<parameter>`` next to the
    student's (``STATE_DICT_PREFIX``); :func:`strip_projectors` drops them for export. Pair names
    must not contain ``.`` (a ``ModuleDict`` rule) and must not be empty.
    """

    state_dict_prefix = STATE_DICT_PREFIX

    def __init__(self, projectors: Mapping[str, nn.Module] | None = None):
        super().__init__()
        for name, projector in (projectors or {}).items():
            self[name] = projector

    def __setitem__(self, name: str, module: nn.Module) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"projector pair name {name!r} must be a non-empty string without '.' "
                             "(e.g. 'stage2' or 'layer3_1'); module paths belong to the taps, not the names")
        super().__setitem__(name, module)

    @classmethod
    def from_shapes(cls, student_shapes: Mapping[str, Sequence[int]], teacher_shapes: Mapping[str, Sequence[int]],
                    **options) -> "ProjectorSet":
        """A projector per pair name; ``options`` go to :func:`build_projector`. The two dicts
        must have the same names; an unbridgeable pair raises ``ValueError`` naming the pair."""
        if set(student_shapes) != set(teacher_shapes):
            raise ValueError(f"student and teacher feature names differ: student {sorted(student_shapes)}, "
                             f"teacher {sorted(teacher_shapes)}")
        projectors = {}
        for name in student_shapes:
            try:
                projectors[name] = build_projector(student_shapes[name], teacher_shapes[name], **options)
            except ValueError as exc:
                raise ValueError(f"feature pair {name!r}: {exc}") from None
        return cls(projectors)

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: self[name](feature) for name, feature in features.items()}


def strip_projectors(state_dict: Mapping[str, Tensor], prefix: str = STATE_DICT_PREFIX) -> dict[str, Tensor]:
    """``state_dict`` without the keys under ``prefix`` (the projector weights), for export."""
    return {key: value for key, value in state_dict.items() if not key.startswith(prefix)}
