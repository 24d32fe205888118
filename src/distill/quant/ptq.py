"""Post-training quantization baseline: round to nearest, with clipping calibrated on the weights.

``quantize_rtn(model, config, calibration_batches)`` is :func:`prepare` with no training
after it: each weight group gets the step (and zero point) of its init and is rounded to
nearest. With ``clip_search=True`` (default) the init is the ``mse`` search (per channel or
group, the clipping ratio in [0.1, 1] with the smallest squared rounding error on the weights
themselves); with ``clip_search=False`` plain min/max (``minmax``). Layer overrides that set
``weight_init`` themselves keep it. Learned activation ranges are calibrated as the min/max
over ``calibration_batches`` (model in eval mode, no gradients); dynamic ranges need none.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn

from distill.quant.api import QuantConfig, prepare
from distill.quant.fake import ActivationQuantizer


def batch_inputs(batch: Any) -> Tensor:
    """The model input of a batch: a tensor, ``batch["input"]`` or the first item of a tuple/list."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, dict):
        if "input" not in batch:
            raise ValueError(f"a calibration batch dict needs an 'input' key, got keys {sorted(batch)}")
        return batch["input"]
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise TypeError(f"cannot take model inputs from a batch of type {type(batch).__name__}")


def learned_activation_quantizers(model: nn.Module) -> list[ActivationQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer) and m.mode == "learned"]


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Any]) -> int:
    """Set every learned activation range to the min/max seen over ``batches``; returns the batch count.

    Previous observations are discarded. Runs the model in eval mode without gradients and
    restores its training mode afterwards.
    """
    quantizers = learned_activation_quantizers(model)
    was_training = model.training
    for quantizer in quantizers:
        quantizer.observed_batches.zero_()
        quantizer.observing = True
    count = 0
    try:
        model.eval()
        for batch in batches:
            model(batch_inputs(batch))
            count += 1
    finally:
        for quantizer in quantizers:
            quantizer.observing = False
        model.train(was_training)
    if quantizers and count == 0:
        raise ValueError("calibrate() got no batches")
    return count


def quantize_rtn(model: nn.Module, config: QuantConfig | dict[str, Any],
                 calibration_batches: Iterable[Any] | None = None, *, clip_search: bool = True) -> nn.Module:
    """Post-training round-to-nearest: prepare ``model`` in place and calibrate it; returns ``model``.

    The result is a prepared (fake-quantized) model: evaluate it as is, or :func:`convert` it.
    ``calibration_batches`` is required when activations use learned ranges.
    """
    config = QuantConfig.coerce(config).model_copy(update={"weight_init": "mse" if clip_search else "minmax"})
    prepare(model, config)
    if learned_activation_quantizers(model):
        if calibration_batches is None:
            raise ValueError("activation_mode 'learned' needs calibration_batches for post-training quantization")
        calibrate(model, calibration_batches)
    return model
