"""BatchNorm over the global batch of all processes for the PyTorch twin, on any device.

torch's own ``nn.SyncBatchNorm`` refuses CPU tensors (and DDP refuses it on CPU modules); this one
works wherever ``torch.distributed`` does. The Jittor twin's counterpart lives in
``models/torch_compat_jittor.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed
from torch import nn


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all processes (``nn.SyncBatchNorm``'s role).

    torch's SyncBatchNorm refuses CPU tensors (and DDP refuses it on CPU modules), so this one
    takes the global sum and centred sum of squares from two differentiable all-reduces
    (``torch.distributed.nn``), on any device and exact for shards of any size. In eval mode or
    in one process it is BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        local = torch.cat([x.sum(dims), x.new_tensor([x.numel() // x.shape[1]])])
        total = _AllReduceSum.apply(local)
        count = total[-1]
        mean = total[:-1] / count
        xc = x - mean[None, :, None, None]
        var = _AllReduceSum.apply((xc * xc).sum(dims)) / count
        with torch.no_grad():
            unbiased = var * (count / (count - 1).clamp(min=1))
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
            self.num_batches_tracked.add_(1)
        scale = self.weight / torch.sqrt(var + self.eps)
        return xc * scale[None, :, None, None] + self.bias[None, :, None, None]


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each input is the sum of the outputs' gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        torch.distributed.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a SyncBatchNorm with the same state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync.to(child.weight.device))
        else:
            convert_sync_batchnorm(child)
    return module
