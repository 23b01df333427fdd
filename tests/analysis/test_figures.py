"""The ERF and Grad-CAM commands (erf.py, gradcam.py and their _torch twins) end to end:

- the same random OverLoCK-XXT checkpoint gives the same ERF maps and CSV, and the same Grad-CAM
  classes, probabilities and maps, in Jittor and PyTorch (each reading the other's file);
- every figure script: --help is its manual; a missing checkpoint/log is one line, exit 2.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import erf_torch
import gradcam as gradcam_jittor
import gradcam_torch
from analysis.erf import run_erf
from analysis.gradcam import run_gradcam
from backends.jittor_backend import JittorBackend
from backends.torch_backend import TorchBackend
from data.synthetic import generate
from models import overlock_torch
from models.weights import save_state_dict

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("plot.py", "plot_torch.py", "erf.py", "erf_torch.py", "gradcam.py", "gradcam_torch.py")

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random XXT saved as .pth and as .pkl, and a tiny 64x64 validation set."""
    root = tmp_path_factory.mktemp("figures")
    torch.manual_seed(0)
    model = overlock_torch.overlock_xxt(num_classes=NUM_CLASSES)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move BN stats, norms and position biases off their init values
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=g))
            elif name.endswith("running_mean") or "rpb" in name or name.endswith("gamma"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    save_state_dict(state, root / "random.pth")
    save_state_dict(state, root / "random.pkl")
    data = root / "data"
    generate(data, NUM_CLASSES, 1, 1, 64, 5)  # classes, train and val per class, size, seed
    return {"pth": root / "random.pth", "pkl": root / "random.pkl", "data": data, "out": root}


def test_erf_is_the_same_in_jittor_and_torch(random_checkpoint) -> None:
    paths = random_checkpoint
    results, csvs = {}, {}
    # Each framework reads the other framework's file: the conversion happens on the fly.
    for framework, checkpoint, backend in (
        ("torch", paths["pkl"], TorchBackend),
        ("jittor", paths["pth"], JittorBackend),
    ):
        out = paths["out"] / f"erf_{framework}.png"
        argv = ["--checkpoint", str(checkpoint), "--data", str(paths["data"])]
        # One batch shape for all: every new shape costs Jittor and oneDNN a kernel warm-up.
        argv += ["--num-images", "2", "--batch-size", "2", "--out", str(out)]
        results[framework] = run_erf(argv, "", backend)
        with out.with_suffix(".csv").open() as handle:
            csvs[framework] = list(csv.DictReader(handle))
        assert out.is_file() and out.with_suffix(".npz").is_file()
    a, b = results["jittor"], results["torch"]
    assert a.num_images == b.num_images == 2
    assert a.feature_shapes == b.feature_shapes == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for s in range(4):
        assert b.maps[s].max() > 0
        rel = np.abs(a.maps[s] - b.maps[s]).max() / np.abs(b.maps[s]).max()
        assert rel <= 1e-4, f"stage {s + 1}: relative difference {rel:.2e}"
    assert csvs["jittor"] == csvs["torch"]
    assert len(csvs["torch"]) == 8 and {r["scale"] for r in csvs["torch"]} == {
        "raw",
        "log10(1+mean)",
    }
    # The deeper stage sees more: its 50 % square is at least as large as stage 1's.
    raw = [r for r in csvs["torch"] if r["scale"] == "raw"]
    assert float(raw[3]["area_t50"]) >= float(raw[0]["area_t50"])


def test_gradcam_is_the_same_in_jittor_and_torch(random_checkpoint) -> None:
    paths = random_checkpoint
    results = {}
    for module, framework, backend in (
        (gradcam_torch, "torch", TorchBackend),
        (gradcam_jittor, "jittor", JittorBackend),
    ):
        out = paths["out"] / f"gradcam_{framework}.png"
        argv = ["--checkpoint", str(paths["pth"]), "--data", str(paths["data"])]
        argv += ["--images", "0", "2", "--out", str(out)]
        results[framework] = run_gradcam(argv, "", backend)
        assert out.is_file()
        assert module.main(argv + ["--class", "nope"]) == 2  # an unknown class is one line
    a, b = results["jittor"], results["torch"]
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    for s in range(4):
        scale = max(np.abs(b.raw[s]).max(), 1e-30)
        assert np.abs(a.raw[s] - b.raw[s]).max() <= 1e-4 * scale, f"stage {s + 1}"


# ---------------------------------------------------------------------------------------------
# command lines
# ---------------------------------------------------------------------------------------------


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_bad_input(script: str, tmp_path: Path) -> None:
    helped = _run(script, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "writes" in helped.stdout.lower() and "visualization/" in helped.stdout
    missing = tmp_path / "missing"
    if script.startswith("plot"):
        bad = _run(script, "--logs", f"{missing}.csv", "--out", str(tmp_path / "x.png"))
    else:
        bad = _run(script, "--checkpoint", f"{missing}.pth", "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_erf_rejects_img_size_not_a_multiple_of_32(random_checkpoint, capsys) -> None:
    argv = ["--checkpoint", str(random_checkpoint["pth"]), "--img-size", "48"]
    assert erf_torch.main(argv) == 2
    assert "multiple of 32" in capsys.readouterr().err
    argv = ["--checkpoint", str(random_checkpoint["pth"]), "--images", "99"]
    argv += ["--data", str(random_checkpoint["data"])]
    assert gradcam_torch.main(argv) == 2
    assert "indices 0..3" in capsys.readouterr().err
