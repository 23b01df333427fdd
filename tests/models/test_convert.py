"""Checkpoint conversion between PyTorch (.pth) and Jittor (.pkl)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CheckpointError
from core.serialization import read_checkpoint, write_checkpoint
from models import overlock_torch
from models.weights import check_state, convert, load_state_dict

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def torch_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = overlock_torch.overlock_xxt(num_classes=20)
    with torch.no_grad():  # make every buffer distinct from its init
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    return model.state_dict()


def _save_torch(state: dict, path: Path, wrap: str | None = None) -> Path:
    torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    return path


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_round_trip_is_bit_identical(torch_state, tmp_path: Path, wrap: str | None) -> None:
    src = _save_torch(torch_state, tmp_path / "src.pth", wrap)
    assert convert(src, tmp_path / "mid.pkl") == ("overlock_xxt", 20)
    assert convert(tmp_path / "mid.pkl", tmp_path / "back.pth") == ("overlock_xxt", 20)
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(back) == list(torch_state)
    for key, value in torch_state.items():
        assert back[key].dtype == value.dtype, key
        assert torch.equal(back[key], value), key


def test_pkl_is_jittor_loadable(torch_state, tmp_path: Path) -> None:
    from core.jittor_env import jt

    convert(_save_torch(torch_state, tmp_path / "w.pth"), tmp_path / "w.pkl")
    loaded = jt.load(str(tmp_path / "w.pkl"))
    assert set(loaded) == set(torch_state)
    key = "head.4.weight"
    np.testing.assert_array_equal(loaded[key], torch_state[key].numpy())


def test_jittor_model_loads_converted_weights(torch_state, tmp_path: Path) -> None:
    from models import overlock_jittor

    convert(_save_torch(torch_state, tmp_path / "w.pth"), tmp_path / "w.pkl")
    model = overlock_jittor.overlock_xxt(num_classes=20)
    model.load_state_dict(load_state_dict(tmp_path / "w.pkl"))
    got = {k: v.numpy() for k, v in model.state_dict().items()}
    assert set(got) == set(torch_state)
    for key, value in torch_state.items():
        np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)


def test_problems_are_listed_and_nothing_is_written(torch_state, tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in torch_state.items()}
    del state["head.1.running_mean"]
    state["extra.weight"] = torch.zeros(3)
    state["head.0.weight"] = torch.zeros(1, 2, 3, 4)
    src = _save_torch(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        convert(src, tmp_path / "out.pkl", model="overlock_xxt")
    message = str(info.value)
    assert "head.1.running_mean" in message and "missing" in message
    assert "extra.weight" in message and "unexpected" in message
    assert "head.0.weight (1, 2, 3, 4)" in message
    assert not (tmp_path / "out.pkl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.pth"]


def test_variant_is_recognised(tmp_path: Path) -> None:
    with torch.device("meta"):
        xt = overlock_torch.overlock_xt_reparam(num_classes=7)
    state = {k: np.zeros(v.shape, np.float32) for k, v in xt.state_dict().items()}
    assert check_state(state) == ("overlock_xt_reparam", 7)


def test_cli_errors_are_one_line(torch_state, tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    cases = [
        ([str(tmp_path / "junk.pth"), str(tmp_path / "o.pkl")], "not a readable checkpoint"),
        ([str(tmp_path / "missing.pth"), str(tmp_path / "o.pkl")], "no such file"),
        ([str(tmp_path / "junk.pth"), str(tmp_path / "o.txt")], "unknown extension"),
    ]
    for argv, expected in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "models.convert", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "o.pkl").exists()


def test_save_and_read_nested_checkpoint(tmp_path: Path) -> None:
    payload = {"model": {"w": np.arange(6, dtype=np.float32)}, "epoch": 2, "best": 51.5}
    for name in ("c.pth", "c.pkl"):
        write_checkpoint(payload, tmp_path / name)
        back = read_checkpoint(tmp_path / name)
        assert back["epoch"] == 2 and back["best"] == 51.5
        assert back["model"]["w"].dtype == np.float32
        assert back["model"]["w"].tolist() == list(range(6))
        assert load_state_dict(tmp_path / name)["w"].tolist() == list(range(6))


def test_written_files_have_normal_permissions(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        write_checkpoint({"w": np.zeros(2, np.float32)}, tmp_path / "c.pkl")
    finally:
        os.umask(umask)
    assert (tmp_path / "c.pkl").stat().st_mode & 0o777 == 0o644
