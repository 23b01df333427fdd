"""Block-by-block probe of a Jittor OverLoCK (twin of ``probe_torch.py``): the outputs of named
modules in the order the forward pass calls them, and every parameter's gradient of the training
loss, as numpy. ``analysis.divergence`` compares the two twins' probes to find the first block
where they part (``locate_divergence.py``).

Jittor's ``register_forward_hook`` replaces the ``__call__`` of the module's class for the rest
of the process; the probe instead wraps each recorded instance's ``execute`` (which Jittor's
``Module.__call__`` calls) and removes the wrapper afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from backends.base import StateDict
from backends.jittor_backend import cross_entropy, load_model, pick_device

# (block name -> its outputs, call by call, Vars of a tuple output in order;
#  parameter name -> gradient; the loss)
Probe = tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray], float]


def _vars(jt: Any, output: Any) -> list[Any]:
    """The Vars a module returned: itself, or those of a tuple (None entries left out)."""
    if isinstance(output, jt.Var):
        return [output]
    if isinstance(output, tuple | list):
        return [v for v in output if isinstance(v, jt.Var)]
    return []


def _record(jt: Any, module: Any, name: str, calls: dict[str, list[Any]]) -> None:
    original = module.execute

    def execute(*args: Any, **kwargs: Any) -> Any:
        output = original(*args, **kwargs)
        calls.setdefault(name, []).extend(_vars(jt, output))
        return output

    module.execute = execute  # shadows the class's method on this instance only


def block_probe(
    state: StateDict,
    model_name: str,
    num_classes: int,
    images: np.ndarray,
    labels: np.ndarray,
    blocks: Sequence[str],
    train: bool = True,
    aux_weight: float = 0.4,
    device: str = "cpu",
) -> Probe:
    """Run ``model_name`` with these weights on one batch and record what ``blocks`` (module
    names, as in the state dict) return. ``train``: training mode (BatchNorm on the batch's
    statistics), loss CE(main) + ``aux_weight`` * CE(aux) as a training step computes it;
    otherwise eval mode and CE(main). Blocks that the forward pass never calls are absent
    from the result (its insertion order is the order of their first calls).
    """
    pick_device(device)
    from core.jittor_env import jt

    model = load_model(state, model_name, num_classes)
    model.train()  # Jittor's eval() stops the parameters' gradients; train() restores them
    params = {n: p for n, p in model.named_parameters() if not p.is_stop_grad()}
    if not train:
        model.eval()
        for p in params.values():
            p.start_grad()
    modules = dict(model.named_modules())
    unknown = [b for b in blocks if b not in modules]
    if unknown:
        raise ValueError(f"{model_name} has no modules {unknown}")
    calls: dict[str, list[Any]] = {}
    for name in blocks:
        _record(jt, modules[name], name, calls)
    try:
        out = model(jt.array(images))
        y = jt.array(labels)
        loss = (
            cross_entropy(jt, out["main"], y) + aux_weight * cross_entropy(jt, out["aux"], y)
            if train
            else cross_entropy(jt, out, y)
        )
    finally:
        for name in blocks:
            del modules[name].execute
    grads = jt.grad(loss, list(params.values()))
    flat = [v for vs in calls.values() for v in vs]
    fetched = [np.asarray(v) for v in jt.fetch_sync([loss, *flat, *grads])]
    values = iter(fetched[1 : 1 + len(flat)])
    outputs = {n: [next(values) for _ in vs] for n, vs in calls.items()}
    return outputs, dict(zip(params, fetched[1 + len(flat) :], strict=True)), float(fetched[0])
