"""Both backends implement the whole ``backends.base.Backend`` interface, and the stage hooks
catch the four stage outputs without changing the model's forward or staying behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.base import STAGE_MODULES, Backend, one_hot
from backends.jittor_backend import JittorBackend
from backends.torch_backend import TorchBackend, forward_stages
from models import overlock_torch


@pytest.mark.parametrize(
    ("cls", "name", "suffix"),
    [(TorchBackend, "torch", ".pth"), (JittorBackend, "jittor", ".pkl")],
)
def test_each_backend_implements_the_interface(cls: type[Backend], name: str, suffix: str) -> None:
    assert issubclass(cls, Backend) and not cls.__abstractmethods__
    assert (cls.name, cls.suffix) == (name, suffix)
    backend = cls("cpu")  # evaluation and figures pass the device only
    assert backend.device == "cpu" and (backend.rank, backend.world_size) == (0, 1)
    assert backend.describe()["framework"] == name


def test_stage_hooks_catch_the_stage_outputs_and_leave() -> None:
    torch.manual_seed(0)
    model = overlock_torch.overlock_xxt(num_classes=4).eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    backend = TorchBackend("cpu")
    backend.load(state, "overlock_xxt", 4)
    images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        logits, stages = forward_stages(backend.model, torch.from_numpy(images))
        plain = backend.model(torch.from_numpy(images))
    torch.testing.assert_close(logits, plain, rtol=0, atol=0)
    assert len(stages) == len(STAGE_MODULES)  # one output per stage, strides 4 to 32
    assert [(s.shape[0], *s.shape[2:]) for s in stages] == [
        (2, 16, 16),
        (2, 8, 8),
        (2, 4, 4),
        (2, 2, 2),
    ]
    assert all(not m._forward_hooks for m in backend.model.modules()), "a hook stayed behind"
    np.testing.assert_array_equal(backend.eval_logits(images), plain.numpy())
    grads, shapes = backend.stage_input_grads(images)
    assert shapes == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert [g.shape for g in grads] == [images.shape] * 4


def test_one_hot_selects_one_class_per_image() -> None:
    np.testing.assert_array_equal(
        one_hot(np.array([2, 0]), 3), np.array([[0, 0, 1], [1, 0, 0]], np.float32)
    )
