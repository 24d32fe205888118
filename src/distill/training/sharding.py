"""Fully sharded data parallel (``train.strategy: fsdp``) with PyTorch's own FSDP2.

``torch.distributed.fsdp.fully_shard`` is applied to each stage of the student (the units that
:func:`distill.intermediate.stage_paths` finds, or none) and then to the whole trainable module:
every process keeps 1/W of each parameter, gradient and optimiser state; a stage's full weights
are gathered for its forward and backward only, and gradients are reduce-scattered. It runs on
CPU (gloo) and GPU (nccl) alike; the teacher is never sharded (it is not trained).

Checkpoints hold *full* (unsharded) tensors: every process takes part in gathering them
(:func:`full_model_state`, :func:`full_optimizer_state`, collectives) and the main process writes
them. The optimiser state is stored by parameter name, so a checkpoint resumes under any number
of processes, sharded or not (:func:`optimizer_state_for` converts between the name-keyed form
and ``torch.optim``'s index-keyed one).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

from distill.taps import resolve_path

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)  # full tensors on the main process (rank 0)
_SCATTER = StateDictOptions(full_state_dict=True)  # every process passes the full state; each keeps its shard


def is_sharded(module: nn.Module) -> bool:
    """True when ``module`` (or a submodule) was sharded by ``fully_shard``."""
    return any(isinstance(child, FSDPModule) for child in module.modules())


def shard(module: nn.Module, units: list[str]) -> nn.Module:
    """``fully_shard`` each submodule named by path in ``units``, then ``module``; in place.

    Needs an initialised process group (``torch.distributed``). Build the optimiser afterwards:
    the parameters become ``DTensor`` shards.
    """
    for path in units:
        fully_shard(resolve_path(module, path))
    fully_shard(module)
    return module


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Collective: the full state dict as CPU tensors on the main process (empty on the others)."""
    return get_model_state_dict(module, options=_GATHER)


def load_full_model_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Collective: every process passes the same full state dict; each keeps its shard."""
    set_model_state_dict(module, state, options=_SCATTER)


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: the optimiser state keyed by parameter name, full tensors on the main process."""
    return get_optimizer_state_dict(module, optimizer, options=_GATHER)


def load_full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Collective: every process passes the same name-keyed full optimiser state."""
    set_optimizer_state_dict(module, optimizer, state, options=_SCATTER)


def _names_in_order(module: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimiser's own order (group by group): index i <-> name."""
    name_of = {id(param): name for name, param in module.named_parameters()}
    try:
        return [name_of[id(param)] for group in optimizer.param_groups for param in group["params"]]
    except KeyError:
        raise ValueError("the optimiser holds a parameter that is not in the module") from None


def optimizer_state_for(state: dict[str, Any], module: nn.Module, optimizer: torch.optim.Optimizer, *,
                        by_name: bool) -> dict[str, Any]:
    """``state`` (an optimiser state dict keyed by index or by parameter name) in the form asked for.

    ``by_name=True`` gives the form :func:`load_full_optimizer_state` takes; ``False`` the form
    ``optimizer.load_state_dict`` takes. The names are ``module``'s; the order is ``optimizer``'s.
    """
    keys = [key for group in state["param_groups"] for key in group["params"]]
    saved_by_name = bool(keys) and isinstance(keys[0], str)
    if saved_by_name == by_name:
        return state
    names = _names_in_order(module, optimizer)
    if by_name:
        convert = {index: names[index] for index in range(len(names))}
    else:
        convert = {name: index for index, name in enumerate(names)}
    missing = [key for key in keys if key not in convert]
    if missing:
        raise ValueError(f"the checkpoint's optimiser state names parameters this model lacks: {missing[:5]}")
    return {
        "state": {convert[key]: value for key, value in state["state"].items()},
        "param_groups": [{**group, "params": [convert[key] for key in group["params"]]} for group in state["param_groups"]],
    }
