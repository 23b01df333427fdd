"""The Jittor model's CUDA forms, run on the CPU (OVERLOCK_JITTOR_CUDA_FORMS=1): Jittor's own ops
and the plain expressions in place of the project's CPU kernels (na2d by reindex, BatchNorm,
LayerNorm, GELU, softmax as expressions, Jittor's depthwise convolution and batched matmul).
With every CPU kernel made to fail, the twins still agree: no line that runs on a GPU is
untested here. (Jittor's own CUDA kernels and the PyTorch twin's device set-up need a GPU.)"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.jittor_env import CUDA_FORMS_VARIABLE, cuda_forms
from models import depthwise_jittor, fused_jittor, matmul_jittor, na2d_jittor
from tests.models.test_models import _check, _parity

REPO = Path(__file__).resolve().parents[2]


def _no_cpu_kernel(*args: object, **kwargs: object) -> None:
    raise AssertionError("a CPU kernel ran in the CUDA forms")


@pytest.fixture
def cuda_forms_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUDA_FORMS_VARIABLE, "1")
    for module in (depthwise_jittor, fused_jittor, matmul_jittor, na2d_jittor):
        monkeypatch.setattr(module, "jittor_code", _no_cpu_kernel)
    assert cuda_forms()


@pytest.mark.parametrize("variant", ["overlock_xxt", "overlock_xt"])
def test_parity_in_the_cuda_forms(variant: str, cuda_forms_on: None) -> None:
    """Eval, train, gradients, BN statistics; reparam: eval, train logits and gradients."""
    _check(variant, 64, _parity(variant, 64, grads=True, reparam=True, reparam_grads=True))


def test_training_in_the_cuda_forms_follows_the_cpu_kernels(make_tiny_data, tmp_path) -> None:
    """train.py for two steps in each form, from one init: the same losses up to rounding."""
    data = make_tiny_data(train_per_class=4, val_per_class=2, seed=5)
    losses = {}
    for forms in ("0", "1"):
        out = tmp_path / f"forms{forms}"
        init = ["--init", str(tmp_path / "forms0" / "init.pkl")] if forms == "1" else []
        done = subprocess.run(
            [sys.executable, str(REPO / "train.py"), *data.argv(out, "--epochs", "1"), *init],
            cwd=REPO,
            env={**os.environ, CUDA_FORMS_VARIABLE: forms},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        with (out / "steps.csv").open(newline="") as handle:
            losses[forms] = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses["0"]) == len(losses["1"]) == 2
    assert losses["1"] == pytest.approx(losses["0"], rel=1e-4)
