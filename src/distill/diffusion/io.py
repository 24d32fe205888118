"""Diffusion model files: safetensors weights plus the JSON spec that rebuilds the model.

Metadata key ``distill_diffusion`` holds ``{"kind": "denoiser" | "consistency", "net": {"name":
..., "params": {...}}, "denoiser": Denoiser.spec(), "consistency": {sigma_data, sigma_min,
sigma_max} (consistency only), "data": name, "num_steps": default sampling steps}``. Loading
never unpickles anything.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from distill.artifacts import load_state, read_metadata, save_model
from distill.diffusion.consistency import ConsistencyModel
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import build_schedule
from distill.diffusion.training import frozen
from distill.models.unet import build_denoiser_net

METADATA_KEY = "distill_diffusion"


def net_spec(net: nn.Module) -> dict:
    names = {"TimeMLP": "time_mlp", "TinyUNet": "tiny_unet"}
    if type(net).__name__ not in names:
        raise ValueError(f"cannot save a {type(net).__name__}: only {', '.join(names)} networks rebuild from a spec")
    return {"name": names[type(net).__name__], "params": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in net.config.items()}}


def save_diffusion_model(model: Denoiser | ConsistencyModel, path: str | Path, **extra: Any) -> Path:
    """Write ``model`` (a Denoiser or a ConsistencyModel around one) and its spec to ``path``."""
    denoiser = model.denoiser if isinstance(model, ConsistencyModel) else model
    spec = {"kind": "consistency" if isinstance(model, ConsistencyModel) else "denoiser",
            "net": net_spec(denoiser.model), "denoiser": denoiser.spec(), **extra}
    if isinstance(model, ConsistencyModel):
        spec["consistency"] = {"sigma_data": model.sigma_data, "sigma_min": model.sigma_min, "sigma_max": model.sigma_max}
    return save_model(denoiser.model, path, spec, key=METADATA_KEY)


def read_spec(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no diffusion model file at {path}")
    metadata = read_metadata(path, what="diffusion model file")  # a clear error for a truncated or foreign file
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} is not a distill diffusion model file (no {METADATA_KEY!r} metadata; "
                         f"write one with distill.diffusion.io.save_diffusion_model)")
    try:
        return json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its {METADATA_KEY!r} metadata is not valid JSON ({exc}); the file is damaged") from None


def load_diffusion_model(path: str | Path) -> tuple[Denoiser | ConsistencyModel, dict]:
    """(frozen model, spec) from a file written by :func:`save_diffusion_model`."""
    spec = read_spec(path)
    net = build_denoiser_net(spec["net"]["name"], **spec["net"]["params"])
    net.load_state_dict(load_state(path, what="diffusion model file"))  # checks the digest save_model wrote
    options = dict(spec["denoiser"])
    denoiser = Denoiser(net, build_schedule(options.pop("schedule")), **options)
    model = ConsistencyModel(denoiser, **spec["consistency"]) if spec["kind"] == "consistency" else denoiser
    return frozen(model), spec
