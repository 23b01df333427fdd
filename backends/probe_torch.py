"""Block-by-block probe of a PyTorch OverLoCK (twin of ``probe_jittor.py``): the outputs of named
modules in the order the forward pass calls them, and every parameter's gradient of the training
loss, as numpy. ``analysis.divergence`` compares the two twins' probes to find the first block
where they part (``locate_divergence.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from backends.base import StateDict
from backends.torch_backend import cross_entropy, load_model, pick_device

# (block name -> its outputs, call by call, tensors of a tuple output in order;
#  parameter name -> gradient; the loss)
Probe = tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray], float]


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors a module returned: itself, or those of a tuple (None entries left out)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, tuple | list):
        return [t for t in output if isinstance(t, torch.Tensor)]
    return []


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
    where = pick_device(device)
    model = load_model(state, model_name, num_classes, where)
    model.train(train)
    modules = dict(model.named_modules())
    unknown = [b for b in blocks if b not in modules]
    if unknown:
        raise ValueError(f"{model_name} has no modules {unknown}")
    calls: dict[str, list[torch.Tensor]] = {}

    def recorder(name: str) -> Any:
        return lambda module, inputs, output: calls.setdefault(name, []).extend(_tensors(output))

    handles = [modules[b].register_forward_hook(recorder(b)) for b in blocks]
    try:
        out = model(torch.from_numpy(images).to(where))
        y = torch.from_numpy(labels).to(where)
        loss = (
            cross_entropy(out["main"], y) + aux_weight * cross_entropy(out["aux"], y)
            if train
            else cross_entropy(out, y)
        )
        model.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    outputs = {n: [t.detach().cpu().numpy() for t in ts] for n, ts in calls.items()}
    grads = {
        n: (p.grad if p.grad is not None else torch.zeros_like(p)).cpu().numpy()
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    return outputs, grads, float(loss.item())
