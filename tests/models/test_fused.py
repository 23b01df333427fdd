"""The fused Jittor CPU kernels (models/fused_jittor.py) against torch: values and gradients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from core.jittor_env import jt
from models import fused_jittor as fused
from models import overlock_jittor as J
from models import torch_compat_jittor as compat

# float64 checks the arithmetic (the kernels run in the input's type); float32 the real use.
TOLERANCE = {"float64": 1e-12, "float32": 2e-5}


def _compare(
    jittor_fn: Callable,
    torch_fn: Callable,
    inputs: list[np.ndarray],
    dtype: str,
    seed: int = 0,
) -> None:
    """Outputs and gradients (of a random projection of the first output) agree."""
    rng = np.random.default_rng(seed)
    t_in = [torch.tensor(a, dtype=getattr(torch, dtype), requires_grad=True) for a in inputs]
    j_in = [jt.array(a, dtype=dtype) for a in inputs]
    t_out, j_out = torch_fn(*t_in), jittor_fn(*j_in)
    t_out = t_out if isinstance(t_out, tuple) else (t_out,)
    j_out = j_out if isinstance(j_out, tuple) else (j_out,)
    grad = rng.standard_normal(tuple(t_out[0].shape))
    t_grads = torch.autograd.grad(t_out[0], t_in, torch.tensor(grad, dtype=t_out[0].dtype))
    j_grads = jt.grad((j_out[0] * jt.array(grad, dtype=dtype)).sum(), j_in)
    assert len(j_out) == len(t_out)
    for got, want in zip(list(j_out) + list(j_grads), list(t_out) + list(t_grads), strict=True):
        want = want.detach().numpy()
        assert got.shape == want.shape and str(got.dtype) == dtype
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=TOLERANCE[dtype] * scale)


def _torch_batch_norm(x, weight, bias):
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    y = TF.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)
    return y, mean.detach(), var.detach()


# (N, C, H, W): the model's planes (16x16 .. 2x2), one channel, odd sizes, a single image.
MAPS = [(4, 24, 16, 16), (3, 5, 7, 3), (2, 1, 4, 4), (1, 6, 2, 2), (5, 8, 1, 9)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", MAPS, ids=[str(s) for s in MAPS])
def test_batch_norm_train_equals_torch(shape, dtype) -> None:
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape) * 3 + 5  # an offset mean: the variance is centred
    weight, bias = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    _compare(
        lambda x, w, b: fused.batch_norm_train(x, w, b, 1e-5),
        _torch_batch_norm,
        [x, weight, bias],
        dtype,
    )


def test_one_element_inputs_reach_the_kernels_after_a_training_run(
    make_tiny_data, tmp_path
) -> None:
    """Jittor 1.3.11 fuses a fresh one-element array into its consumer as a constant: after a
    training run in the same process a kernel read garbage for a one-channel BatchNorm's weight
    (core.jittor_env.code computes such inputs first)."""
    import train

    data = make_tiny_data(train_per_class=4, val_per_class=2, seed=3)
    argv = data.argv(tmp_path, "--recipe", "imagenet", "--epochs", "2", "--warmup-epochs", "0",
                     "--cooldown-epochs", "0", "--drop-path", "0")  # fmt: skip
    assert train.main(argv) == 0
    for shape in MAPS:
        test_batch_norm_train_equals_torch(shape, "float64")


# Over one channel a LayerNorm's output is its bias and the input gradient is rounding noise.
CHANNEL_MAPS = [shape for shape in MAPS if shape[1] > 1]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", CHANNEL_MAPS, ids=[str(s) for s in CHANNEL_MAPS])
def test_layer_norm_channels_equals_torch(shape, dtype) -> None:
    rng = np.random.default_rng(sum(shape) + 1)
    x = rng.standard_normal(shape) * 2 + 3
    weight, bias = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])

    def reference(x, w, b):
        y = TF.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, eps=1e-6)
        return y.permute(0, 3, 1, 2)

    layer_norm = lambda x, w, b: fused.layer_norm_channels(x, w, b, 1e-6)  # noqa: E731
    _compare(layer_norm, reference, [x, weight, bias], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gelu_equals_torch(dtype) -> None:
    x = np.concatenate([np.linspace(-8, 8, 401), np.random.default_rng(2).standard_normal(999)])
    _compare(fused.gelu, TF.gelu, [x.reshape(7, 200)], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 81), (6, 9), (3, 1), (2, 49)])
def test_softmax_last_equals_torch(shape, dtype) -> None:
    x = np.random.default_rng(len(shape)).standard_normal(shape) * 4
    _compare(fused.softmax_last, lambda t: torch.softmax(t, dim=-1), [x], dtype)


def test_bad_shapes_get_one_clear_error() -> None:
    x = jt.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match="batch_norm_train"):
        fused.batch_norm_train(x, jt.ones(4), jt.zeros(3), 1e-5)
    with pytest.raises(ValueError, match="layer_norm_channels"):
        fused.layer_norm_channels(x.reshape(2, 3, 16), jt.ones(3), jt.zeros(3), 1e-6)


def test_batch_norm_module_tracks_torch_running_statistics() -> None:
    """Three training steps then eval: running mean/var (unbiased) and outputs as torch's."""
    rng = np.random.default_rng(5)
    j_bn, t_bn = compat.BatchNorm2d(6), torch.nn.BatchNorm2d(6)
    for _ in range(3):
        x = rng.standard_normal((4, 6, 5, 3)).astype(np.float32) * 2 + 1
        y = j_bn(jt.array(x))
        np.testing.assert_allclose(y.numpy(), t_bn(torch.tensor(x)).detach().numpy(), atol=2e-5)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(
            getattr(j_bn, name).numpy(), getattr(t_bn, name).numpy(), rtol=1e-5, atol=1e-6
        )
    assert int(j_bn.num_batches_tracked.numpy()[0]) == 3
    j_bn.eval(), t_bn.eval()
    x = rng.standard_normal((2, 6, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(
        j_bn(jt.array(x)).numpy(), t_bn(torch.tensor(x)).detach().numpy(), atol=2e-5
    )


USERS = (J, compat)  # the modules that call the kernels by their imported names


def test_the_model_uses_the_kernels() -> None:
    """The Jittor model routes its GELUs, norms and softmaxes through these kernels on the CPU."""
    calls = {"batch_norm_train": 0, "layer_norm_channels": 0, "gelu": 0, "softmax_last": 0}
    model = J.overlock_xxt(num_classes=3)
    model.train()
    originals = {name: getattr(fused, name) for name in calls}
    try:
        for name in calls:

            def counting(*args, _name=name, **kwargs):
                calls[_name] += 1
                return originals[_name](*args, **kwargs)

            setattr(fused, name, counting)
            for user in USERS:
                if hasattr(user, name):
                    setattr(user, name, counting)
        model(jt.array(np.random.default_rng(0).standard_normal((2, 3, 64, 64)), dtype="float32"))
    finally:
        for name, fn in originals.items():
            setattr(fused, name, fn)
            for user in USERS:
                if hasattr(user, name):
                    setattr(user, name, fn)
    assert all(count > 0 for count in calls.values()), calls
