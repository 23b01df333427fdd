"""The ImageNet recipe's framework-side ingredients in both training scripts: option resolution,
the learning-rate schedule, weight-decay groups, EMA, gradient clipping, soft-target loss, drop
path, mixed precision and gradient checkpointing, each against a hand-checked case or the numpy
reference of ``engine.recipe``, and the two frameworks against each other.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from PIL import Image

import train
import train_torch
from backends import jittor_backend, torch_backend
from backends.base import Backend
from backends.jittor_backend import JittorBackend
from backends.torch_backend import TorchBackend
from core.serialization import read_checkpoint
from data.augment import mixup_target
from engine.cli import build_parser
from engine.logs import EMA_COLUMNS, LATEST, LOG_COLUMNS
from engine.loop import run_training
from engine.options import PROTOCOL, augment_of, recipe_report
from engine.recipe import ema_update, soft_target_cross_entropy

if TYPE_CHECKING:
    from tests.conftest import TinyData

BACKENDS = {"torch": TorchBackend, "jittor": JittorBackend}
SUFFIX = {"torch": ".pth", "jittor": ".pkl"}


@pytest.fixture(scope="module")
def tiny_data(make_tiny_data) -> TinyData:
    return make_tiny_data(train_per_class=8, val_per_class=3, seed=7)


def _train(framework: str, argv: list[str]) -> Backend:
    args = build_parser(framework, "").parse_args(argv)
    backend = BACKENDS[framework](
        "cpu", args.lr, args.weight_decay, args.aux_weight, args.clip_grad, args.amp
    )
    run_training(args, backend)
    return backend


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 3, 32, 32)).astype(np.float32), np.array([0, 1, 2, 3])


def _built(framework: str, **build: object) -> Backend:
    step = {k: build.pop(k) for k in ("clip_grad",) if k in build}
    backend = BACKENDS[framework]("cpu", 1e-3, 0.05, 0.4, **step)
    backend.build("overlock_xxt", 4, seed=0, **build)
    return backend


# --- options ---------------------------------------------------------------------------------
def test_options_default_to_the_protocol() -> None:
    args = build_parser("torch", "").parse_args([])
    for name, value in PROTOCOL.items():
        if name != "crop_pct":
            assert getattr(args, name) == value, name
    assert args.crop_pct == 0.9 and args.recipe_changes == [] and recipe_report(args, "torch") == []
    assert not augment_of(args).enabled


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_recipe_sets_the_official_values(framework: str) -> None:
    args = build_parser(framework, "").parse_args(["--recipe", "imagenet", "--model", "t"])
    assert (args.epochs, args.batch_size, args.num_classes, args.img_size) == (310, 2048, 1000, 224)
    assert args.lr == pytest.approx(2e-3) and args.base_lr == 1e-3  # --auto-lr: 1e-3 x 2048/1024
    assert (args.weight_decay, args.decay_1d, args.sched) == (0.05, False, "cosine")
    assert (args.warmup_epochs, args.cooldown_epochs, args.min_lr) == (5, 10, 1e-5)
    assert (args.drop_path, args.ema_decay, args.clip_grad, args.crop_pct) == (
        0.15,
        0.9999,
        5,
        0.95,
    )
    assert args.amp is (framework == "torch")  # Jittor 1.3.11: no autocast, float32
    assert (args.train_per_class, args.val_per_class, args.seed) == (None, None, 42)
    augment = augment_of(args)
    assert augment.random_resized_crop and augment.auto_augment == "rand-m9-mstd0.5-inc1"
    assert (augment.mixup, augment.cutmix, augment.smoothing, augment.reprob) == (0.8, 1, 0.1, 0.25)

    changed = build_parser(framework, "").parse_args(
        ["--recipe", "imagenet", "--model", "t", "--epochs", "5", "--no-amp"]
    )
    report = recipe_report(changed, framework)
    assert report[0] == "recipe imagenet for overlock_t (official)"
    assert "--epochs 5 (official 310)" in report[-1]
    assert ("--amp False (official True)" in report[-1]) is (framework == "torch")


def test_bad_recipe_options_are_one_line(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    cases = {
        ("--sched", "cosine", "--epochs", "2", "--cooldown-epochs", "2"): "leaves no cosine epochs",
        ("--ema-decay", "1.5"): "--ema-decay must be in [0, 1)",
        ("--aa", "rand-m9"): "auto_augment is part of the random-resized-crop transform",
        ("--random-resized-crop", "--cache"): "--cache cannot serve random resized crops",
    }
    for extra, message in cases.items():
        argv = tiny_data.argv(tmp_path / "bad", "--epochs", "1", *extra)
        assert train_torch.main(argv) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


# --- schedule --------------------------------------------------------------------------------
@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_lr_follows_warmup_cosine_and_cooldown(
    framework: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    argv = tiny_data.argv(tmp_path, "--epochs", "4", "--max-batches", "1", "--sched", "cosine",
        "--warmup-epochs", "1", "--cooldown-epochs", "1", "--warmup-lr", "1e-5", "--min-lr", "1e-4",
    )  # fmt: skip
    backend = _train(framework, argv)
    # Cosine over 3 epochs from 1e-3 to 1e-4, evaluated at the absolute epoch (timm).
    expected = [1e-5, 1e-4 + 0.45e-3 * (1 + math.cos(math.pi / 3)), 1e-4 + 0.45e-3 * 0.5, 1e-4]
    assert [float(r["lr"]) for r in _rows(tmp_path / "log.csv")] == pytest.approx(expected)
    if framework == "torch":
        assert [g["lr"] for g in backend.optimizer.param_groups] == pytest.approx([1e-4])
    else:
        assert backend.optimizer.lr == pytest.approx(1e-4)


# --- weight decay groups, EMA, clipping, loss ------------------------------------------------
@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_weight_decay_skips_biases_and_1d_parameters(framework: str) -> None:
    backend = _built(framework, decay_1d=False)
    groups = backend.optimizer.param_groups
    name_of = {id(p): n for n, p in backend.params.items()}
    undecayed = {
        name_of[id(p)] for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]
    }
    expected = {n for n, p in backend.params.items() if len(p.shape) <= 1 or n.endswith(".bias")}
    assert undecayed == expected and 0 < len(expected) < len(backend.params)
    assert len(_built(framework).optimizer.param_groups) == 1  # the protocol: one group


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_ema_follows_timm_model_ema_v2(framework: str) -> None:
    backend = _built(framework, ema_decay=0.9)
    reference = {k: np.array(v) for k, v in backend.model_state().items()}
    assert all(np.array_equal(reference[k], v) for k, v in backend.ema_state().items())
    images, labels = _batch()
    for _ in range(3):
        backend.train_step(images, labels)
        ema_update(reference, backend.model_state(), 0.9)
    ema, trained = backend.ema_state(), backend.model_state()
    assert all(not np.array_equal(trained[n], ema[n]) for n in backend.params), "no update"
    for name, value in reference.items():
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(ema[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
        else:  # num_batches_tracked: float32 formula truncated, as timm's copy_
            np.testing.assert_array_equal(np.reshape(ema[name], -1), np.reshape(value, -1), name)
    logits = backend.eval_logits(images, ema=True)
    assert logits.shape == (4, 4) and not np.allclose(logits, backend.eval_logits(images))


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_clipping_bounds_the_gradient_norm(framework: str) -> None:
    """AdamW's first moment after one step is 0.1 x the (clipped) gradient."""
    images, labels = _batch()
    norms = {}
    for clip in (0.0, 1e-3):
        backend = _built(framework, clip_grad=clip)
        backend.train_step(images, labels)
        moments = backend.optimizer_state()["exp_avg"].values()
        norms[clip] = math.sqrt(sum(float((np.asarray(m, np.float64) ** 2).sum()) for m in moments))
    assert norms[0.0] > 10 * 0.1 * 1e-3, "the test needs a gradient above the clip"
    assert norms[1e-3] == pytest.approx(0.1 * 1e-3, rel=1e-4)


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_soft_target_loss_matches_the_reference(framework: str) -> None:
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5)).astype(np.float32) * 3
    labels = np.array([0, 1, 2, 3, 4, 0])
    soft = mixup_target(labels, 5, lam=0.7, smoothing=0.1)
    one_hot = mixup_target(labels, 5)
    if framework == "torch":

        def loss(y: np.ndarray) -> float:
            return float(torch_backend.cross_entropy(torch.tensor(logits), torch.tensor(y)))
    else:
        jt = JittorBackend("cpu", 1e-3, 0.0, 0.4).jt

        def loss(y: np.ndarray) -> float:
            return float(jittor_backend.cross_entropy(jt, jt.array(logits), jt.array(y)).item())

    assert loss(soft) == pytest.approx(soft_target_cross_entropy(logits, soft), rel=1e-6)
    assert loss(one_hot) == pytest.approx(loss(labels), rel=1e-6)
    assert loss(one_hot) == pytest.approx(soft_target_cross_entropy(logits, one_hot), rel=1e-6)


# --- the ingredients together, across frameworks ---------------------------------------------
RECIPE_ON = (
    "--epochs", "3", "--max-batches", "2", "--sched", "cosine", "--warmup-epochs", "1",
    "--cooldown-epochs", "1", "--weight-decay", "0.05", "--no-decay-1d", "--clip-grad", "0.5",
    "--ema-decay", "0.5", "--random-resized-crop", "--aa", "rand-m9-mstd0.5-inc1",
    "--mixup", "0.8", "--cutmix", "1.0", "--smoothing", "0.1", "--reprob", "0.25",
)  # fmt: skip


def test_recipe_ingredients_agree_across_frameworks(tiny_data: TinyData, tmp_path: Path) -> None:
    """Everything but drop path (each framework's own RNG) and AMP (PyTorch only), from one
    init on the same augmented batches: the same schedule and nearly the same losses.
    """
    torch_out, jittor_out = tmp_path / "torch", tmp_path / "jittor"
    _train("torch", tiny_data.argv(torch_out, *RECIPE_ON))
    _train(
        "jittor",
        tiny_data.argv(jittor_out, *RECIPE_ON, "--init", str(torch_out / "init.pth")),
    )
    t_steps, j_steps = _rows(torch_out / "steps.csv"), _rows(jittor_out / "steps.csv")
    assert len(t_steps) == len(j_steps) == 6
    drift = [
        abs(float(j["loss"]) / float(t["loss"]) - 1) for t, j in zip(t_steps, j_steps, strict=True)
    ]
    print("relative loss drift per step:", " ".join(f"{d:.1e}" for d in drift))
    assert drift[0] <= 1e-5 and max(drift) <= 5e-3
    t_log, j_log = _rows(torch_out / "log.csv"), _rows(jittor_out / "log.csv")
    assert list(t_log[0]) == list(LOG_COLUMNS + EMA_COLUMNS) == list(j_log[0])
    assert [r["lr"] for r in t_log] == [r["lr"] for r in j_log]
    for t, j in zip(t_log, j_log, strict=True):
        assert float(j["ema_val_loss"]) == pytest.approx(float(t["ema_val_loss"]), rel=1e-3)


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_drop_path_runs_repeat_and_resume_exactly(
    framework: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    """Drop path draws from the framework's RNG, reseeded from (seed, epoch, batch) each step."""
    common = ("--max-batches", "2", "--drop-path", "0.3", "--ema-decay", "0.5")
    whole, split = tmp_path / "whole", tmp_path / "split"
    _train(framework, tiny_data.argv(whole, "--epochs", "2", *common))
    _train(framework, tiny_data.argv(split, "--epochs", "1", *common))
    _train(framework, tiny_data.argv(split, "--epochs", "2", "--resume", *common))
    assert _rows(split / "steps.csv") == _rows(whole / "steps.csv")
    a = read_checkpoint(whole / f"{LATEST}{SUFFIX[framework]}")
    b = read_checkpoint(split / f"{LATEST}{SUFFIX[framework]}")
    for part in ("model", "model_ema"):
        for name, value in a[part].items():
            assert np.array_equal(np.asarray(value), np.asarray(b[part][name])), (part, name)
    plain = tmp_path / "plain"
    _train(framework, tiny_data.argv(plain, "--epochs", "1", "--max-batches", "2"))
    assert _rows(plain / "steps.csv")[0] != _rows(whole / "steps.csv")[0], "drop path had no effect"


# --- PyTorch-only memory and speed options ---------------------------------------------------
def test_amp_trains_in_bfloat16_on_cpu_and_jittor_refuses(
    tiny_data: TinyData, tmp_path: Path, capsys
) -> None:
    base = ("--epochs", "1", "--max-batches", "1")
    _train("torch", tiny_data.argv(tmp_path / "fp32", *base))
    _train("torch", tiny_data.argv(tmp_path / "amp", *base, "--amp"))
    fp32, amp = _rows(tmp_path / "fp32/steps.csv")[0], _rows(tmp_path / "amp/steps.csv")[0]
    assert fp32["loss"] != amp["loss"], "autocast changed nothing"
    assert float(amp["loss"]) == pytest.approx(float(fp32["loss"]), rel=2e-2)
    capsys.readouterr()
    assert train.main(tiny_data.argv(tmp_path / "j", *base, "--amp")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --amp: Jittor 1.3.11 has no autocast") and err.count("\n") == 1


def test_grad_checkpoint_keeps_the_gradients(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    """Recomputation gives the same losses, gradients and weights; as in the official code, the
    recomputed blocks' BatchNorms see each batch twice (running statistics updated twice).
    """
    base = ("--epochs", "1", "--max-batches", "2")
    checkpointed = ("--grad-checkpoint", "1", "1", "2", "1")
    _train("torch", tiny_data.argv(tmp_path / "plain", *base))
    _train("torch", tiny_data.argv(tmp_path / "ckpt", *base, *checkpointed))
    assert _rows(tmp_path / "ckpt/steps.csv") == _rows(tmp_path / "plain/steps.csv")
    a = read_checkpoint(tmp_path / f"plain/{LATEST}.pth")
    b = read_checkpoint(tmp_path / f"ckpt/{LATEST}.pth")
    for name, value in a["optimizer"]["exp_avg"].items():
        assert np.array_equal(value, b["optimizer"]["exp_avg"][name]), name
        assert np.array_equal(a["model"][name], b["model"][name]), name
    counts = {k: int(b["model"][k]) for k in b["model"] if k.endswith("num_batches_tracked")}
    assert set(counts.values()) == {2, 4}  # 2 steps; 4 in the recomputed blocks
    assert counts["blocks1.0.proj.1.origin_bn.num_batches_tracked"] == 4
    argv = tiny_data.argv(tmp_path / "j", *base, "--grad-checkpoint", "1", "0", "0", "0")
    assert train.main(argv) == 2
    assert "error: --grad-checkpoint: Jittor 1.3.11 has no activation recomputation" in (
        capsys.readouterr().err
    )


# --- the ImageNet folder layout --------------------------------------------------------------
@pytest.fixture(scope="module")
def imagenet_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/<class>/*.png (4 x 4) and val/<class>/*.png (4 x 2), non-square images."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for c in range(4):
            folder = root / split / f"n0000000{c}"
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{k}.png")
    return root


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_recipe_trains_on_the_imagenet_layout(
    framework: str, imagenet_layout: Path, tmp_path: Path, capsys
) -> None:
    argv = [
        "--data", str(imagenet_layout), "--recipe", "imagenet", "--num-classes", "4",
        "--img-size", "32", "--batch-size", "8", "--epochs", "2", "--warmup-epochs", "0",
        "--cooldown-epochs", "0", "--workers", "0", "--drop-path", "0", "--out", str(tmp_path),
    ]  # fmt: skip
    main = {"torch": train_torch.main, "jittor": train.main}[framework]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "recipe imagenet for overlock_xxt" in out and "16 train / 8 val images" in out
    rows = _rows(tmp_path / "log.csv")
    assert len(rows) == 2 and list(rows[0]) == list(LOG_COLUMNS + EMA_COLUMNS)
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)


def test_evaluate_scores_the_ema_weights(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    """evaluate*.py --ema reproduces the run's ema_* validation columns; a checkpoint without
    an EMA is a one-line error.
    """
    import json

    import evaluate
    import evaluate_torch

    run = tmp_path / "run"
    _train(
        "torch",
        tiny_data.argv(run, "--epochs", "1", "--max-batches", "2", "--ema-decay", "0.5"),
    )
    row = _rows(run / "log.csv")[-1]
    assert row["ema_acc_top1"] != row["acc_top1"] or row["ema_val_loss"] != row["val_loss"]
    argv = ["--data", str(tiny_data.root), "--img-size", "32", "--num-classes", "4"]
    argv += ["--workers", "0"]
    for main in (evaluate_torch.main, evaluate.main):
        out = tmp_path / f"{main.__module__}.json"
        checkpoint = str(run / f"{LATEST}.pth")
        assert main(["--checkpoint", checkpoint, "--ema", "--out", str(out), *argv]) == 0
        result = json.loads(out.read_text())
        assert result["top1"] == pytest.approx(float(row["ema_acc_top1"]), abs=1e-3)
        assert result["loss"] == pytest.approx(float(row["ema_val_loss"]), rel=1e-4)
    capsys.readouterr()
    plain = tmp_path / "plain"
    _train("torch", tiny_data.argv(plain, "--epochs", "1", "--max-batches", "1"))
    capsys.readouterr()
    assert evaluate_torch.main(["--checkpoint", str(plain / f"{LATEST}.pth"), "--ema", *argv]) == 2
    assert capsys.readouterr().err.startswith("error: --ema: ")
