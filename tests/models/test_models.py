"""The PyTorch and Jittor OverLoCK twins are the same network, and both load official checkpoints.

- Keys and shapes: both frameworks' state_dicts equal the official model's
  (tests/fixtures/official_keys.json, generated from the official models/overlock.py with
  num_classes=1000), plain and reparameterised.
- Relative position bias: our index equals the official ``apply_rpb``'s
  (tests/fixtures/official_rpb_index.json, generated from the official code).
- Parity: random PyTorch weights (BN running stats, LayerScale, GRN and relative position biases
  moved away from their init so they matter) loaded into Jittor give the same logits in eval and
  train mode, the same parameter gradients of CE(main) + 0.4 * CE(aux), the same BN running stats
  after a training step, and the same again after ``reparam()``, which itself must not change the
  eval output. At 64x64 input the stage-3/4 maps (4x4, 2x2) are smaller than the ContMix kernels,
  so the official upsample-then-pool path is exercised; 224x224 (xt) runs the plain path.

Run with ``-s`` to see the measured differences per variant. ``OVERLOCK_TEST_DEVICE=cuda`` runs
the PyTorch twin of the parity checks on the GPU (``make gpu-check``; Jittor takes the GPU by
itself when it has one).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as TF
from torch import nn as tnn

from core.jittor_env import jt
from models import overlock_jittor as J
from models import overlock_torch as T
from models import torch_compat_jittor as compat
from models.variants import MODEL_NAMES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LOGIT_ATOL = 1e-4
GRAD_RTOL = 1e-3
# Per-parameter gradient error is relative to max|g_torch| of that parameter, but never to less
# than GRAD_FLOOR * (largest gradient in the model): some gradients are zero by construction
# (e.g. a conv bias or BN bias followed by a train-mode BatchNorm) and hold only rounding noise.
GRAD_FLOOR = 1e-3
# Running stats inherit the activations' float32 error (~1e-5 relative in the deep variants);
# a biased-vs-unbiased variance slip is >= 2e-4 relative even at stage 1 (n = 2*16*16).
BN_STATS_RTOL = 1e-4
NUM_CLASSES = 10
TORCH_DEVICE = torch.device(os.environ.get("OVERLOCK_TEST_DEVICE", "cpu"))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _randomise(model: tnn.Module, seed: int, size: int) -> None:
    """Random weights far from their init, with BN running stats that matter.

    The network must stay well conditioned, or float32 rounding alone (torch vs torch-float64)
    exceeds the 1e-4 logit tolerance in the deep variants: residual depthwise convs and the last
    conv of each residual branch get smaller gains, LayerScale stays near 1 (in [0.8, 1.2]), and
    the BN running stats are calibrated on a separate 16-image batch (then moved by ~10%), so that
    eval-mode activations are normalised yet differ from train mode (batch stats) on the test batch.
    """
    g = torch.Generator().manual_seed(seed)

    def randn(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g)

    def rand(t: torch.Tensor) -> torch.Tensor:
        return torch.rand(t.shape, generator=g)

    branch_out = set()  # last conv of each residual branch
    for m in model.modules():
        if isinstance(m, T.RepConvBlock):
            branch_out.add(m.proj[8])
        elif isinstance(m, T.DynamicConvBlock):
            branch_out.update([m.proj[1], m.mlp[4]])
    bns = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tnn.Conv2d):
                gain = 0.2 if isinstance(m, T.ResDWConv) else 0.5 if m in branch_out else 1.0
                m.weight.copy_(gain * randn(m.weight) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * randn(m.bias))
            elif isinstance(m, (tnn.BatchNorm2d, tnn.LayerNorm)):
                m.weight.copy_(1 + 0.2 * randn(m.weight))
                m.bias.copy_(0.1 * randn(m.bias))
                if isinstance(m, tnn.BatchNorm2d):
                    bns.append(m)
            elif isinstance(m, T.LayerScale):
                m.weight.copy_(0.8 + 0.4 * rand(m.weight))
                m.bias.copy_(0.1 * randn(m.bias))
            elif isinstance(m, T.GRN):
                m.gamma.copy_(0.5 * randn(m.gamma))
                m.beta.copy_(0.1 * randn(m.beta))
            elif isinstance(m, T.DynamicConvBlock):
                m.rpb1.copy_(0.5 * randn(m.rpb1))
                m.rpb2.copy_(0.5 * randn(m.rpb2))
        for m in bns:  # momentum 1: running stats := the calibration batch's stats
            m.momentum = 1.0
        model.train()
        model(torch.randn(16, 3, size, size, generator=g))
        for m in bns:
            m.momentum = 0.1
            m.running_var.mul_(0.9 + 0.2 * rand(m.running_var))
            m.running_mean.add_(0.1 * m.running_var.sqrt() * randn(m.running_mean))
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def _jittor_shape(shape: list[int]) -> tuple[int, ...]:
    # Jittor has no 0-d Vars: torch's scalar num_batches_tracked is shape (1,) there.
    return tuple(shape) if shape else (1,)


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _to_jittor(jmodel: J.OverLoCK, tmodel: T.OverLoCK) -> None:
    """Copy torch weights and buffers into the Jittor twin, requiring identical keys/shapes."""
    state = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    jshapes = _shapes(jmodel)
    assert set(state) == set(jshapes)
    for k, v in state.items():
        assert _jittor_shape(list(v.shape)) == jshapes[k], k
    jmodel.load_state_dict({k: v.reshape(jshapes[k]) for k, v in state.items()})


def _on_device(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).to(TORCH_DEVICE)


def _host(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def _grad_errors(tmodel: T.OverLoCK, jgrads: dict[str, np.ndarray]) -> tuple[float, float]:
    """(worst floored relative error over parameters, largest torch gradient)."""
    tgrads = {k: _host(p.grad) for k, p in tmodel.named_parameters()}
    assert set(tgrads) == set(jgrads)
    scale = max(float(np.abs(g).max()) for g in tgrads.values())
    assert scale > 0
    worst = 0.0
    for k, gt in tgrads.items():
        denom = max(float(np.abs(gt).max()), GRAD_FLOOR * scale)
        worst = max(worst, _max_abs(jgrads[k], gt) / denom)
    return worst, scale


def _train_step(
    tmodel: T.OverLoCK, jmodel: J.OverLoCK, x: np.ndarray, y: np.ndarray, grads: bool
) -> dict[str, float]:
    """One train-mode forward (+ backward) in both frameworks; returns the differences."""
    tmodel.train()
    jmodel.train()
    tmodel.zero_grad(set_to_none=True)
    out_t = tmodel(_on_device(x))
    out_j = jmodel(jt.array(x))
    assert isinstance(out_t, T.TrainOutput) and isinstance(out_j, J.TrainOutput)
    assert set(out_t.keys()) == set(out_j.keys()) == {"main", "aux"}
    res = {
        "train_main": _max_abs(out_j["main"].numpy(), _host(out_t["main"])),
        "train_aux": _max_abs(out_j["aux"].numpy(), _host(out_t["aux"])),
    }
    if grads:
        yt = _on_device(y)
        loss_t = TF.cross_entropy(out_t["main"], yt) + 0.4 * TF.cross_entropy(out_t["aux"], yt)
        loss_t.backward()
        yj = jt.array(y)
        loss_j = jt.nn.cross_entropy_loss(out_j["main"], yj) + 0.4 * jt.nn.cross_entropy_loss(
            out_j["aux"], yj
        )
        names = [k for k, _ in tmodel.named_parameters()]
        jstate = jmodel.state_dict()
        jgrads = jt.grad(loss_j, [jstate[k] for k in names])
        res["grad_rel"], _ = _grad_errors(
            tmodel, {k: g.numpy() for k, g in zip(names, jgrads, strict=True)}
        )
    # Running statistics (and num_batches_tracked) after the step.
    jstate = {k: v.numpy() for k, v in jmodel.state_dict().items()}
    res["bn_stats"] = max(  # relative to max(1, |torch value|): running_var reaches ~100s
        float(
            (np.abs(jstate[k].reshape(v.shape) - _host(v)) / np.maximum(1, np.abs(_host(v)))).max()
        )
        for k, v in tmodel.state_dict().items()
        if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    return res


def _eval_logits(tmodel: T.OverLoCK, jmodel: J.OverLoCK, x: np.ndarray) -> np.ndarray:
    tmodel.eval()
    jmodel.eval()
    with torch.no_grad():
        out_t = tmodel(_on_device(x))
    out_j = jmodel(jt.array(x))
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (x.shape[0], NUM_CLASSES)
    return out_j.numpy(), _host(out_t)


def _parity(
    variant: str, size: int, grads: bool, reparam: bool, reparam_grads: bool = False, seed: int = 0
) -> dict:
    torch.manual_seed(seed)
    tmodel = getattr(T, variant)(num_classes=NUM_CLASSES)
    jmodel = getattr(J, variant)(num_classes=NUM_CLASSES)
    _randomise(tmodel, seed, size)
    _to_jittor(jmodel, tmodel)
    tmodel.to(TORCH_DEVICE)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=2)

    res = {}
    out_j, out_t = _eval_logits(tmodel, jmodel, x)
    res["eval"] = _max_abs(out_j, out_t)
    res["logit_scale"] = float(np.abs(out_t).max())
    # Eval must use the running stats: train mode (batch stats) gives clearly other logits.
    saved = copy.deepcopy(tmodel.state_dict())
    tmodel.train()
    with torch.no_grad():
        res["eval_vs_train"] = _max_abs(_host(tmodel(_on_device(x))["main"]), out_t)
    tmodel.load_state_dict(saved)  # undo that forward's running-stat update

    res.update(_train_step(tmodel, jmodel, x, y, grads))

    if reparam:
        before, _ = _eval_logits(tmodel, jmodel, x)
        tmodel.reparam()
        jmodel.reparam()
        deploy = getattr(T, f"{variant}_reparam")(num_classes=NUM_CLASSES)
        assert _shapes(tmodel) == _shapes(deploy)
        assert _shapes(jmodel) == _shapes(getattr(J, f"{variant}_reparam")(num_classes=NUM_CLASSES))
        out_j, out_t = _eval_logits(tmodel, jmodel, x)
        res["reparam_eval"] = _max_abs(out_j, out_t)
        res["reparam_vs_unmerged"] = _max_abs(out_t, before)
        if reparam_grads:  # the merged kernels train like any conv
            step = _train_step(tmodel, jmodel, x, y, grads=True)
            res["reparam_train_main"] = step["train_main"]
            res["reparam_grad_rel"] = step["grad_rel"]
    return res


def _check(variant: str, size: int, res: dict, grad_rtol: float = GRAD_RTOL) -> None:
    print(f"\n{variant} {size}x{size}: " + ", ".join(f"{k}={v:.3g}" for k, v in res.items()))
    assert res["eval_vs_train"] > 1000 * LOGIT_ATOL, "BN running stats do not matter here"
    for key in ("eval", "train_main", "train_aux", "reparam_eval", "reparam_train_main"):
        if key in res:
            assert res[key] <= LOGIT_ATOL, f"{key}: {res[key]:.3g}"
    if "reparam_vs_unmerged" in res:
        assert res["reparam_vs_unmerged"] <= LOGIT_ATOL
    for key in ("grad_rel", "reparam_grad_rel"):
        if key in res:
            assert res[key] <= grad_rtol, f"{key}: {res[key]:.3g}"
    assert res["bn_stats"] <= BN_STATS_RTOL


# ---------------------------------------------------------------------------------------------
# checkpoint compatibility with the official model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_keys() -> dict[str, dict[str, list[int]]]:
    return json.loads((FIXTURES / "official_keys.json").read_text())


@pytest.mark.parametrize("name", ["xt", "t", "s", "b"])
@pytest.mark.parametrize("suffix", ["", "_reparam"])
def test_state_dict_matches_official(official_keys, name: str, suffix: str) -> None:
    variant = f"overlock_{name}{suffix}"
    want = {k: tuple(v) for k, v in official_keys[variant].items()}
    got_t = _shapes(getattr(T, variant)())
    assert got_t == want
    got_j = _shapes(getattr(J, variant)())
    assert got_j == {k: _jittor_shape(list(v)) for k, v in want.items()}


def test_rpb_index_matches_official() -> None:
    cases = json.loads((FIXTURES / "official_rpb_index.json").read_text())
    assert len(cases) >= 5
    for c in cases:
        want = np.array(c["index"])
        for module in (T, J):
            got = module.rpb_index(c["height"], c["width"], c["kernel_size"])
            np.testing.assert_array_equal(got, want)
        # What the PyTorch twin runs: the same index by tensor arithmetic (traceable).
        got = T._relative_position_index(
            c["height"], c["width"], c["kernel_size"], torch.device("cpu")
        )
        np.testing.assert_array_equal(got.numpy(), want)


# ---------------------------------------------------------------------------------------------
# Jittor replacements for built-ins that differ from PyTorch (models/torch_compat_jittor.py)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_in", "size_out"), [(9, 4), (7, 2), (9, 7), (14, 7), (7, 7), (10, 3), (5, 1)]
)
def test_adaptive_avg_pool2d(size_in: int, size_out: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, size_in, size_in + 1)).astype(np.float32)
    want = TF.adaptive_avg_pool2d(torch.from_numpy(x), (size_out, size_out)).numpy()
    got = compat.AdaptiveAvgPool2d(size_out)(jt.array(x)).numpy()
    assert _max_abs(got, want) <= 1e-6


@pytest.mark.parametrize(("size_in", "size_out"), [(4, 9), (2, 7), (2, 4), (7, 14), (9, 4), (3, 3)])
def test_bilinear_interpolate(size_in: int, size_out: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, size_in, size_in + 1)).astype(np.float32)
    size = (size_out, size_out + 2)
    want = TF.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False)
    got = compat.interpolate(jt.array(x), size).numpy()
    assert _max_abs(got, want.numpy()) <= 1e-6


def test_batchnorm_matches_torch() -> None:
    rng = np.random.default_rng(0)
    x = (3 + 2 * rng.standard_normal((4, 5, 3, 3))).astype(np.float32)
    tbn, jbn = tnn.BatchNorm2d(5), compat.BatchNorm2d(5)
    for step in range(2):
        tbn.train()
        jbn.train()
        want = tbn(torch.from_numpy(x + step)).detach().numpy()
        assert _max_abs(jbn(jt.array(x + step)).numpy(), want) <= 1e-5
    for k, v in tbn.state_dict().items():
        got = jbn.state_dict()[k].numpy()
        assert _max_abs(got.reshape(v.shape).astype(np.float64), v.numpy()) <= 1e-6, k
    tbn.eval()
    jbn.eval()
    want = tbn(torch.from_numpy(x)).detach().numpy()
    assert _max_abs(jbn(jt.array(x)).numpy(), want) <= 1e-5


def test_drop_path() -> None:
    x = jt.ones((64, 2, 3, 3))
    dp = compat.DropPath(0.25)
    dp.train()
    y = dp(x).numpy()
    per_sample = np.unique(y.reshape(64, -1), axis=1)
    assert per_sample.shape[1] == 1  # one decision per sample
    kept = per_sample[:, 0] != 0
    np.testing.assert_allclose(per_sample[kept], 1 / 0.75, rtol=1e-6)  # scaled by 1/keep_prob
    assert 0 < kept.sum() < 64
    dp.eval()
    assert (dp(x).numpy() == 1).all()


# ---------------------------------------------------------------------------------------------
# model parity
# ---------------------------------------------------------------------------------------------


# At 64x64 the stage-3/4 maps (4x4, 2x2) are smaller than the ContMix kernels: the official
# upsample -> na2d -> adaptive-pool path. Every variant gets eval, train, gradient, BN-stat
# and reparam checks; the big ones (marked heavy) run in a pytest process of their own.


def test_parity_xxt() -> None:
    """Eval, train, gradients, BN stats; reparam: eval, then train logits and gradients."""
    res = _parity("overlock_xxt", 64, grads=True, reparam=True, reparam_grads=True)
    _check("overlock_xxt", 64, res)


def test_parity_xt() -> None:
    """Eval, train, gradients, BN stats; reparam: eval, then train logits and gradients."""
    _check(
        "overlock_xt", 64, _parity("overlock_xt", 64, grads=True, reparam=True, reparam_grads=True)
    )


def test_parity_xt_224() -> None:
    """224x224, where stage-3/4 maps (14, 7) are >= the kernels: eval, train and BN stats."""
    _check("overlock_xt", 224, _parity("overlock_xt", 224, grads=False, reparam=False, seed=1))


@pytest.mark.heavy
@pytest.mark.parametrize("variant", ["overlock_t", "overlock_s", "overlock_b"])
def test_parity_large(variant: str) -> None:
    """The same full checks as xxt for the larger variants."""
    # overlock_b's deepest chains (sub_depth 20) measured a floored gradient error of 1.6e-3 on
    # an Intel Xeon machine (1e-3 held on the AMD EPYC of earlier runs); its forward passes
    # agree to 8e-6 there. The other variants keep GRAD_RTOL.
    grad_rtol = 2e-3 if variant == "overlock_b" else GRAD_RTOL
    _check(
        variant,
        64,
        _parity(variant, 64, grads=True, reparam=True, reparam_grads=True),
        grad_rtol=grad_rtol,
    )


# ---------------------------------------------------------------------------------------------
# stage maps (timm's forward_intermediates / features_only) in both frameworks
# ---------------------------------------------------------------------------------------------


def _twins_with_one_set_of_weights(variant: str, size: int, seed: int):
    torch.manual_seed(seed)
    tmodel = getattr(T, variant)(num_classes=NUM_CLASSES)
    jmodel = getattr(J, variant)(num_classes=NUM_CLASSES)
    _randomise(tmodel, seed, size)
    _to_jittor(jmodel, tmodel)
    x = np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32)
    return tmodel, jmodel, x


# 64: stage-3/4 maps smaller than the ContMix windows (upsample-then-pool); 224: the plain path.
@pytest.mark.parametrize(("variant", "size"), [("overlock_xxt", 64), ("overlock_xxt", 224)])
def test_stage_maps_match_between_frameworks(variant: str, size: int) -> None:
    """Same weights, the same four stage maps and final map, in eval and in train mode."""
    tmodel, jmodel, x = _twins_with_one_set_of_weights(variant, size, seed=2)
    assert tmodel.feature_info == jmodel.feature_info
    assert (tmodel.num_features, tmodel.head_hidden_size) == (
        jmodel.num_features,
        jmodel.head_hidden_size,
    )
    for train in (False, True):
        tmodel.train(train)
        if train:  # Jittor's train() takes no mode
            jmodel.train()
        else:
            jmodel.eval()
        with torch.no_grad():
            final_t, maps_t = tmodel.forward_intermediates(torch.from_numpy(x))
        final_j, maps_j = jmodel.forward_intermediates(jt.array(x))
        for info, map_t, map_j in zip(tmodel.feature_info, maps_t, maps_j, strict=True):
            assert map_t.shape[1] == info["num_chs"] and map_t.shape[2] == size // info["reduction"]
            error = _max_abs(map_j.numpy(), map_t.numpy())
            assert error <= LOGIT_ATOL, (train, info["module"], error)
        assert _max_abs(final_j.numpy(), final_t.numpy()) <= LOGIT_ATOL
        picked = jmodel.forward_intermediates(jt.array(x), indices=[-3, 3], intermediates_only=True)
        assert _max_abs(picked[0].numpy(), maps_t[1].numpy()) <= LOGIT_ATOL
        assert _max_abs(picked[1].numpy(), maps_t[3].numpy()) <= LOGIT_ATOL


def test_inference_without_gradients_merges_the_dilated_branches(monkeypatch) -> None:
    """Under jt.no_grad() each DilatedReparamBlock runs as one merged conv (as reparam() would
    make it); the logits still equal PyTorch's. With gradients the branches run."""
    tmodel, jmodel, x = _twins_with_one_set_of_weights("overlock_xxt", 64, seed=4)
    tmodel.eval()
    jmodel.eval()
    merged = []
    merge = J.DilatedReparamBlock._merged_kernel
    monkeypatch.setattr(
        J.DilatedReparamBlock, "_merged_kernel", lambda block: merged.append(block) or merge(block)
    )
    with torch.no_grad():
        want = tmodel(torch.from_numpy(x)).numpy()
    with jt.no_grad():
        got = jmodel(jt.array(x)).numpy()
    blocks = [m for m in jmodel.modules() if isinstance(m, J.DilatedReparamBlock)]
    assert len(merged) == len(blocks) > 0
    assert _max_abs(got, want) <= LOGIT_ATOL
    merged.clear()
    assert _max_abs(jmodel(jt.array(x)).numpy(), want) <= LOGIT_ATOL and not merged


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 3)])
def test_features_only_matches_between_frameworks(out_indices) -> None:
    """timm's features_only model and the Jittor factory's, given the same weights."""
    full, _, x = _twins_with_one_set_of_weights("overlock_xxt", 64, seed=3)
    tfeat = timm.create_model("overlock_xxt", features_only=True, out_indices=out_indices).eval()
    jfeat = J.overlock_xxt(features_only=True, out_indices=out_indices)
    jfeat.eval()
    assert jfeat.out_indices == list(out_indices)
    kept = set(tfeat.model.state_dict())
    assert set(jfeat.state_dict()) == kept and not any(k.startswith("head.") for k in kept)
    state = {k: v for k, v in full.state_dict().items() if k in kept}
    tfeat.model.load_state_dict(state)
    _to_jittor(jfeat, tfeat.model)
    with torch.no_grad():
        maps_t = tfeat(torch.from_numpy(x))
    maps_j = jfeat(jt.array(x))
    assert [m.shape[1] for m in maps_j] == tfeat.feature_info.channels()
    for map_t, map_j in zip(maps_t, maps_j, strict=True):
        assert _max_abs(map_j.numpy(), map_t.numpy()) <= LOGIT_ATOL


def test_jittor_heads_follow_timms_interface() -> None:
    model = J.overlock_xxt(num_classes=NUM_CLASSES)
    model.eval()
    x = jt.array(np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32))
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.get_classifier() is model.head[4]
    model.reset_classifier(0, "")
    assert model(x).shape == (2, model.head_hidden_size, 2, 2)
    model.reset_classifier(11, "avg")
    assert model(x).shape == (2, 11)
    model.train()
    assert model(x)["aux"].shape == (2, 11)
    with pytest.raises(NotImplementedError, match="recomputation"):
        model.set_grad_checkpointing()


# ---------------------------------------------------------------------------------------------
# constructors
# ---------------------------------------------------------------------------------------------


def test_timm_registry() -> None:
    for variant in MODEL_NAMES:
        assert timm.is_model(variant) and timm.is_model(f"{variant}_reparam")
    model = timm.create_model("overlock_xxt", num_classes=20)
    assert isinstance(model, T.OverLoCK) and model.head[-1].out_channels == 20
    deploy = timm.create_model("overlock_xxt_reparam", num_classes=20)
    assert not hasattr(deploy.blocks1[0].proj[1], "origin_bn")
    with pytest.raises(ValueError, match="local checkpoint"):
        timm.create_model("overlock_xxt", pretrained=True)
    with pytest.raises(ValueError, match="local checkpoint"):
        J.overlock_xxt(pretrained=True)


def test_no_classifier() -> None:
    for module in (T, J):
        model = module.overlock_xxt(num_classes=0)
        assert not any(k.startswith(("head.4", "aux_head.2")) for k in model.state_dict())


def test_checkpointing() -> None:
    """torch: use_checkpoint recomputes without changing gradients; Jittor: refused loudly."""
    with pytest.raises(NotImplementedError, match="recomputation"):
        J.overlock_xxt(use_checkpoint=[1, 0, 1, 0])
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for use_checkpoint in ([0, 0, 0, 0], [1, 1, 2, 1]):
        torch.manual_seed(0)
        model = T.overlock_xxt(num_classes=NUM_CLASSES, use_checkpoint=use_checkpoint)
        out = model(x)
        (out["main"].logsumexp(1).sum() + out["aux"].logsumexp(1).sum()).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, rtol=1e-5, atol=1e-7)


def test_sync_batchnorm_under_distributed(tmp_path: Path) -> None:
    """As the official model: built inside a torch.distributed job, every BN is a SyncBatchNorm."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = T.overlock_xxt(num_classes=NUM_CLASSES)
        plain = T.overlock_xxt(num_classes=NUM_CLASSES, sync_bn=False)  # what --sync-bn leaves off
    finally:
        dist.destroy_process_group()
    bns = [m for m in model.modules() if isinstance(m, tnn.modules.batchnorm._BatchNorm)]
    assert bns and all(type(m) is T.SyncBatchNorm for m in bns)
    assert not any(type(m) is T.SyncBatchNorm for m in plain.modules())
    assert _shapes(model) == _shapes(T.overlock_xxt(num_classes=NUM_CLASSES))
    # Jittor's twin: the same classes, chosen the same way (under MPI, or when asked).
    jmodel = J.overlock_xxt(num_classes=NUM_CLASSES, sync_bn=True)
    jbns = [m for m in jmodel.modules() if isinstance(m, J.BatchNorm2d)]
    assert len(jbns) == len(bns) and all(type(m) is J.SyncBatchNorm for m in jbns)
    assert not any(
        type(m) is J.SyncBatchNorm for m in J.overlock_xxt(num_classes=NUM_CLASSES).modules()
    )
