"""Tests of engine/recipe.py: the official preset table and the numpy references of the training
step (schedule, EMA, gradient clipping, soft-target loss) against hand values, timm and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV2

from data.augment import Augment, mixup_target
from engine.recipe import (
    SOURCES,
    clip_grad_norm,
    ema_update,
    format_recipe,
    lr_at,
    recipe_for,
    soft_target_cross_entropy,
)

OFFICIAL = dict(base_lr=2e-3, epochs=300, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5)


def test_lr_at_hand_checked_epochs() -> None:
    assert lr_at(0, **OFFICIAL) == 1e-6
    assert lr_at(1, **OFFICIAL) == pytest.approx(1e-6 + (2e-3 - 1e-6) / 5, rel=1e-15)
    assert lr_at(5, **OFFICIAL) == pytest.approx(
        1e-5 + 0.5 * (2e-3 - 1e-5) * (1 + math.cos(math.pi / 60)), rel=1e-15
    )
    assert lr_at(150, **OFFICIAL) == pytest.approx((2e-3 + 1e-5) / 2, rel=1e-15)
    assert lr_at(300, **OFFICIAL) == lr_at(309, **OFFICIAL) == 1e-5  # the cool-down


def test_lr_at_equals_timm_cosine_scheduler_stepped_per_epoch() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=2e-3)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=300, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6, t_in_epochs=True
    )
    for epoch in range(310):
        scheduler.step(epoch)
        assert optimizer.param_groups[0]["lr"] == lr_at(epoch, **OFFICIAL), epoch


def test_official_preset_table() -> None:
    table = {v: recipe_for(f"overlock_{v}") for v in ("xt", "t", "s", "b")}
    assert {v: r.drop_path for v, r in table.items()} == {"xt": 0.1, "t": 0.15, "s": 0.4, "b": 0.5}
    assert {v: r.crop_pct for v, r in table.items()} == {
        "xt": 0.925,
        "t": 0.95,
        "s": 0.95,
        "b": 0.975,  # fmt: skip
    }
    t = table["t"]
    assert t.official and t.batch_size * t.world_size == 2048
    assert t.lr(2048) == 2e-3 and t.lr(256) == 2.5e-4
    assert t.total_epochs == 310 and t.lr_at(0, 2048) == 1e-6
    assert (t.weight_decay, t.ema_decay, t.clip_grad, t.smoothing) == (0.05, 0.9999, 5.0, 0.1)
    assert (t.mixup, t.cutmix, t.reprob, t.auto_augment) == (0.8, 1.0, 0.25, "rand-m9-mstd0.5-inc1")
    assert t.augment() == Augment(
        random_resized_crop=True, auto_augment="rand-m9-mstd0.5-inc1", mixup=0.8, cutmix=1.0,
        smoothing=0.1, reprob=0.25,
    )  # fmt: skip
    assert not recipe_for("xxt").official
    with pytest.raises(ValueError, match="no ImageNet recipe"):
        recipe_for("resnet50")


def test_format_lists_every_value_with_its_source() -> None:
    lines = format_recipe(recipe_for("s"), global_batch=2048)
    assert lines[0] == "recipe imagenet for overlock_s (official)"
    assert "lr (peak) = 0.002" in lines[1] and "310 epochs" in lines[1]
    body = {line.split()[0]: line for line in lines[2:]}
    assert body.keys() == SOURCES.keys()
    assert "0.4" in body["drop_path"] and "scripts/train_s_model.sh:11" in body["drop_path"]
    changed = format_recipe(recipe_for("xxt").with_overrides(batch_size=64))
    assert "not official" in changed[0]
    assert "CHANGED" in next(line for line in changed if "batch_size" in line)
    with pytest.raises(ValueError, match="unknown recipe fields"):
        recipe_for("t").with_overrides(batchsize=64)


def tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def test_ema_update_after_k_steps_equals_timm_model_ema_v2_and_the_formula() -> None:
    model = tiny_module()
    ema_torch = ModelEmaV2(model, decay=0.9)
    ema = state(model)
    start = state(model)
    for _ in range(3):
        with torch.no_grad():  # an "optimizer step" and a BatchNorm update
            for p in model.parameters():
                p.add_(0.5)
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(1)
        ema_torch.update(model)
        ema_update(ema, state(model), 0.9)
    theirs = state(ema_torch.module)
    for name in theirs:
        np.testing.assert_array_equal(ema[name], theirs[name], err_msg=name)
    # Constant step s per update from e_0 = p_0: e_k = p_0 + s * sum_j 0.1 * 0.9^(k-j) j.
    weighted = sum(0.1 * 0.9 ** (3 - j) * j for j in (1, 2, 3))
    np.testing.assert_allclose(ema["0.weight"], start["0.weight"] + 0.5 * weighted, rtol=1e-5)
    assert ema["1.num_batches_tracked"] == 0  # truncated back to an integer, as timm does


def test_clip_grad_norm_equals_torch() -> None:
    rs = np.random.RandomState(0)
    grads = [rs.standard_normal(s).astype(np.float32) for s in [(4, 3, 3, 3), (4,), (10, 7)]]
    for max_norm in (5.0, 100.0):  # total ~ 12.9: clipped, then left alone
        params = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g.copy())
        total_torch = torch.nn.utils.clip_grad_norm_(params, max_norm)
        clipped, total = clip_grad_norm(grads, max_norm)
        assert total == pytest.approx(float(total_torch), rel=1e-6)
        for p, g in zip(params, clipped, strict=True):
            np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-6, atol=1e-7)
    assert np.sqrt(sum((g**2).sum() for g in clip_grad_norm(grads, 5.0)[0])) == pytest.approx(
        5.0, rel=1e-5
    )


def test_soft_target_cross_entropy_equals_timm_and_torch_label_smoothing() -> None:
    rs = np.random.RandomState(0)
    logits = rs.standard_normal((6, 5)).astype(np.float32) * 3
    labels = np.array([0, 4, 2, 2, 1, 3])
    mixed = mixup_target(labels, 5, lam=0.3, smoothing=0.1)
    want = SoftTargetCrossEntropy()(torch.from_numpy(logits), torch.from_numpy(mixed))
    assert soft_target_cross_entropy(logits, mixed) == pytest.approx(float(want), rel=1e-6)
    smooth = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    want = smooth(torch.from_numpy(logits), torch.from_numpy(labels))
    got = soft_target_cross_entropy(logits, mixup_target(labels, 5, smoothing=0.1))
    assert got == pytest.approx(float(want), rel=1e-6)
