"""The divergence locator names the block where the twins part: nothing on the plain twins; the
perturbed block when one parameter differs in Jittor only; the patched block when one block's
forward adds 1e-2 in PyTorch only (through locate_divergence.py, exit status 1)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import locate_divergence
from analysis.divergence_blocks import (
    ACTIVATION_TOL,
    GRAD_TOL,
    block_names,
    block_of,
    compare_probes,
    describe_block,
    locate,
)
from backends import probe_jittor, probe_torch
from models import overlock_torch
from models.weights import save_state_dict

CLASSES, BATCH, SIZE = 20, 4, 64


@pytest.fixture(scope="module")
def case() -> dict:
    torch.manual_seed(0)
    model = overlock_torch.overlock_xxt(num_classes=CLASSES)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    images = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, CLASSES, BATCH).astype(np.int64)
    args = ("overlock_xxt", CLASSES, images, labels, block_names(state))
    return {"state": state, "args": args, "torch": probe_torch.block_probe(state, *args)}


def test_block_names() -> None:
    assert block_of("blocks2.0.proj.1.weight") == "blocks2.0"
    assert block_of("patch_embed1.1.running_mean") == "patch_embed1"
    assert block_of("head.4.bias") == "head.4" and block_of("aux_head.2.weight") == "aux_head"
    assert describe_block("sub_blocks3.2") == "Focus-Net stage 3 block 2"
    assert describe_block("patch_embed1") == "stem"


def test_the_twins_agree(case: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint, table = tmp_path / "init.pth", tmp_path / "table.csv"
    save_state_dict(case["state"], checkpoint)
    argv = ["--checkpoint", str(checkpoint), "--random", "--batch-size", str(BATCH)]
    assert locate_divergence.main([*argv, "--out", str(table)]) == 0
    assert "agree on this batch" in capsys.readouterr().out
    rows = list(csv.DictReader(table.open()))
    order = [r["block"] for r in rows]
    assert order[0] == "patch_embed1" and order.index("blocks4.0") < order.index("sub_blocks3.0")
    assert set(order) == set(block_names(case["state"]))  # every block was called and compared
    assert max(float(r["act_rel"]) for r in rows) < ACTIVATION_TOL / 10
    assert max(float(r["grad_rel"]) for r in rows) < GRAD_TOL / 10


def test_a_parameter_changed_in_one_framework(case: dict) -> None:
    state = dict(case["state"])
    key = next(k for k in state if k.startswith("blocks2.0.") and state[k].ndim == 4)
    state[key] = state[key] + np.float32(1e-2)
    jittor = probe_jittor.block_probe(state, *case["args"])
    diffs = compare_probes(case["torch"], jittor)
    finding = locate(diffs, ACTIVATION_TOL, GRAD_TOL)
    assert finding.forward is not None and finding.forward.name == "blocks2.0", key
    before = diffs[: [d.name for d in diffs].index("blocks2.0")]
    assert before and all(d.act_rel < ACTIVATION_TOL for d in before)


def test_a_block_patched_in_one_framework(
    case: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = tmp_path / "init.pth"
    save_state_dict(case["state"], checkpoint)
    forward = overlock_torch.CTXDownsample.forward  # one instance: the Focus-Net downsample

    def shifted(self: torch.nn.Module, x: torch.Tensor, ctx: torch.Tensor) -> tuple:
        x, ctx = forward(self, x, ctx)
        return x + 1e-2, ctx

    monkeypatch.setattr(overlock_torch.CTXDownsample, "forward", shifted)
    argv = ["--checkpoint", str(checkpoint), "--random", "--batch-size", str(BATCH)]
    assert locate_divergence.main([*argv, "--out", str(tmp_path / "t.csv")]) == 1
    out = capsys.readouterr().out
    assert "first block above tolerance in forward order: patch_embedx" in out
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    outputs_differ = [r["block"] for r in rows if float(r["act_rel"]) > ACTIVATION_TOL]
    assert outputs_differ[0] == "patch_embedx"
    # everything after it inherits the difference, but the auxiliary head, which reads the
    # Overview-Net's context only
    assert {"sub_blocks4.0", "head.4"} <= set(outputs_differ) and "aux_head" not in outputs_differ
