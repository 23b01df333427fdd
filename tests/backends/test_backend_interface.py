"""Both backends implement the whole ``backends.base.Backend`` interface, and their stage
outputs (``forward_intermediates``) are exactly the outputs of the last block of each stage,
with logits equal to the model's own forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from backends import jittor_backend
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
    assert backend.compile_times() == {} and backend.start_notes() == []


@pytest.fixture(scope="module")
def xxt_state() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    model = overlock_torch.overlock_xxt(num_classes=4).eval()
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _keep_output(caught: dict[str, Any], name: str) -> Callable[..., None]:
    def hook(module: Any, inputs: Any, output: Any) -> None:
        caught[name] = output[0] if isinstance(output, tuple) else output  # Focus: (x, ctx)

    return hook


def test_torch_stage_outputs_are_the_last_blocks_outputs(xxt_state) -> None:
    backend = TorchBackend("cpu")
    backend.load(xxt_state, "overlock_xxt", 4)
    images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    x = torch.from_numpy(images)
    caught: dict[str, torch.Tensor] = {}
    handles = [
        getattr(backend.model, n)[-1].register_forward_hook(_keep_output(caught, n))
        for n in STAGE_MODULES
    ]
    with torch.no_grad():
        plain = backend.model(x)
        for handle in handles:
            handle.remove()
        logits, stages = forward_stages(backend.model, x)
    torch.testing.assert_close(logits, plain, rtol=0, atol=0)
    assert len(stages) == len(STAGE_MODULES)  # one output per stage, strides 4 to 32
    for name, stage in zip(STAGE_MODULES, stages, strict=True):
        torch.testing.assert_close(stage, caught[name], rtol=0, atol=0)
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


def test_jittor_stage_outputs_are_the_last_blocks_outputs(xxt_state) -> None:
    backend = JittorBackend("cpu")
    backend.load(xxt_state, "overlock_xxt", 4)
    jt = backend.jt
    images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    caught: dict[str, Any] = {}
    blocks = [getattr(backend.model, n)[-1] for n in STAGE_MODULES]
    for name, block in zip(STAGE_MODULES, blocks, strict=True):
        block.register_forward_hook(_keep_output(caught, name))
    with jt.no_grad():
        plain = backend.model(jt.array(images)).numpy()
        hooked = {n: v.numpy() for n, v in caught.items()}
        for block in blocks:
            block.remove_forward_hook()
        logits, stages = jittor_backend.forward_stages(backend.model, jt.array(images))
        np.testing.assert_array_equal(logits.numpy(), plain)
        for name, stage in zip(STAGE_MODULES, stages, strict=True):
            np.testing.assert_array_equal(stage.numpy(), hooked[name], err_msg=name)


def test_one_hot_selects_one_class_per_image() -> None:
    np.testing.assert_array_equal(
        one_hot(np.array([2, 0]), 3), np.array([[0, 0, 1], [1, 0, 0]], np.float32)
    )
