"""The numbers behind the report's figures: training-curve tables, ERF and Grad-CAM.

- plotting: final/best/gap tables on hand-made logs, unequal lengths, bad logs, the twins'
  primary run;
- ERF: the area-ratio metric on hand-made maps; the input gradient of a stack of positive 3x3
  convs is non-zero exactly inside the (2k+1)-square (both frameworks, the scripts' own code);
  the same random OverLoCK-XXT checkpoint gives the same maps and CSV in Jittor and PyTorch;
- Grad-CAM: a toy model whose evidence sits in a known patch peaks there (both frameworks);
  OverLoCK's maps agree across frameworks;
- every script: --help is its manual; a missing checkpoint/log is one line, exit 2.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as TF

import erf as erf_jittor
import erf_torch
import gradcam as gradcam_jittor
import gradcam_torch
import plot
import plot_torch
from analysis import erf as erf_utils
from analysis import gradcam as cam_utils
from analysis import plotting
from core.errors import UsageError
from data.synthetic import generate
from engine.loop import LOG_COLUMNS
from models import overlock_torch
from models.weights import save_state_dict

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("plot.py", "plot_torch.py", "erf.py", "erf_torch.py", "gradcam.py", "gradcam_torch.py")


# ---------------------------------------------------------------------------------------------
# plotting
# ---------------------------------------------------------------------------------------------


def _write_log(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(LOG_COLUMNS)).to_csv(path, index=False)
    return path


def _rows(val_loss, top1, top5=None, time_s=None) -> list[dict]:
    n = len(val_loss)
    top5 = top5 or [min(100.0, a + 20) for a in top1]
    time_s = time_s or [10.0] * n
    return [
        {
            "epoch": e + 1,
            "train_loss": 4.0 - 0.5 * e,
            "train_loss_main": 3.0 - 0.4 * e,
            "train_loss_aux": 2.5 - 0.25 * e,
            "val_loss": val_loss[e],
            "acc_top1": top1[e],
            "acc_top5": top5[e],
            "epoch_time_s": time_s[e],
            "train_images_per_s": 100.0,
            "lr": 1e-3,
        }
        for e in range(n)
    ]


def test_summary_table_final_and_best(tmp_path: Path) -> None:
    path = _write_log(
        tmp_path / "a" / "log.csv",
        _rows([2.0, 1.5, 1.7, 1.6], [10.0, 30.0, 30.0, 25.0], time_s=[100.0, 5.0, 7.0, 6.0]),
    )
    run = plotting.read_log(path)
    assert run.label == "a" and run.epochs == 4
    row = plotting.summary_table([run]).iloc[0]
    assert row["final val loss"] == 1.6 and row["final top-1 %"] == 25.0
    assert row["best top-1 %"] == 30.0 and row["best top-1 epoch"] == 2  # first of the tie
    assert row["min val loss"] == 1.5 and row["min val loss epoch"] == 2
    assert row["final train loss"] == pytest.approx(4.0 - 1.5)
    assert row["median epoch time s"] == 6.5 and row["total time s"] == 118.0


def test_gap_table_per_epoch(tmp_path: Path) -> None:
    a = plotting.read_log(_write_log(tmp_path / "jit" / "log.csv", _rows([2.0, 1.5], [10, 20])))
    b = plotting.read_log(_write_log(tmp_path / "tor" / "log.csv", _rows([2.25, 1.0], [15, 5])))
    gap = plotting.gap_table(a, b)
    assert gap.note == ""
    assert gap.table["epoch"].tolist() == [1, 2]
    assert gap.table["|Δ val loss|"].tolist() == [0.25, 0.5]
    assert gap.table["Δ top-1 %"].tolist() == [5.0, -15.0]  # second minus first
    assert gap.table["|Δ train loss|"].tolist() == [0.0, 0.0]
    assert gap.max_abs("Δ top-1 %") == 15.0
    report = plotting.report_markdown([a, b])
    assert (
        "| 2 | 3.5000 | 3.5000 | 0.00e+00 | 1.5000 | 1.0000 | 5.00e-01 | 20.00 | 5.00 |" in report
    )
    assert "max |Δ val loss| 5.00e-01" in report


def test_unequal_lengths_compare_common_epochs(tmp_path: Path) -> None:
    a = plotting.read_log(
        _write_log(tmp_path / "long" / "log.csv", _rows([3, 2, 1, 1, 1], [1] * 5))
    )
    b = plotting.read_log(_write_log(tmp_path / "short" / "log.csv", _rows([3, 2.5, 1], [2] * 3)))
    gap = plotting.gap_table(a, b)
    assert gap.table["epoch"].tolist() == [1, 2, 3]
    assert gap.table["|Δ val loss|"].tolist() == [0.0, 0.5, 0.0]
    assert "3 common epochs" in gap.note and "long: 5 epochs" in gap.note
    assert gap.note in plotting.report_markdown([a, b])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("epoch,train_loss\n1,2.0\n", "missing column(s) train_loss_main"),
        (",".join(LOG_COLUMNS) + "\n", "no epochs"),
        (",".join(LOG_COLUMNS) + "\n1,x" + ",1" * (len(LOG_COLUMNS) - 2) + "\n", "train_loss"),
    ],
)
def test_bad_logs_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(content)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plotting.read_log(path)
    with pytest.raises(UsageError, match="no such log file"):
        plotting.read_log(tmp_path / "missing.csv")


def test_log_spec_labels(tmp_path: Path) -> None:
    folder = tmp_path / "torch"
    _write_log(folder / "log.csv", _rows([1.0], [1.0]))
    assert plotting.parse_log_spec(f"{folder}:PyTorch run") == (folder / "log.csv", "PyTorch run")
    assert plotting.parse_log_spec(str(folder)) == (folder / "log.csv", None)
    runs = plotting.load_runs([str(folder), str(folder)])
    assert [r.label for r in runs] == ["torch", "torch#2"]


@pytest.mark.parametrize(("script", "primary"), [(plot, "jittor"), (plot_torch, "torch")])
def test_plot_twins_differ_only_in_primary(tmp_path, monkeypatch, capsys, script, primary) -> None:
    monkeypatch.chdir(tmp_path)  # the default logs are logs/jittor and logs/torch
    _write_log(Path("logs/jittor/log.csv"), _rows([2.0, 1.0, 0.5], [10, 20, 30]))
    _write_log(Path("logs/torch/log.csv"), _rows([2.0, 1.25], [10, 25]))
    assert script.main([]) == 0
    table = Path("visualization/training_metrics.md").read_text()
    assert capsys.readouterr().out.startswith(table)
    runs = [line for line in table.splitlines() if line.startswith("- **")]
    assert runs[0].startswith(f"- **{primary}**")
    assert f"Δ = {'torch' if primary == 'jittor' else 'jittor'} − {primary}" in table
    assert "2 common epochs" in table
    from PIL import Image

    with Image.open("visualization/training_metrics.png") as image:  # 12 x 7 in at 150 dpi
        assert image.size == (1800, 1050)


# ---------------------------------------------------------------------------------------------
# ERF: the metric
# ---------------------------------------------------------------------------------------------


def test_area_ratio_of_a_delta_is_one_pixel() -> None:
    delta = np.zeros((64, 64))
    delta[32, 32] = 5.0
    for t in erf_utils.THRESHOLDS:
        assert erf_utils.centred_square(delta, t) == (1, 1 / 64**2)


def test_area_ratio_of_a_uniform_map_is_t() -> None:
    uniform = np.ones((65, 65))
    for t in (0.2, 0.3, 0.5, 0.99):
        side, area = erf_utils.centred_square(uniform, t)
        # The smallest odd square holding t of the total: side^2 >= t * 65^2 > (side - 2)^2.
        assert side**2 >= t * 65**2 > (side - 2) ** 2
        assert area == side**2 / 65**2 and t <= area < t + 0.05
    assert erf_utils.centred_square(np.ones((10, 10)), 1.0) == (11, 1.0)  # clipped at the border
    side, area = erf_utils.centred_square(np.zeros((8, 8)), 0.5)
    assert side == 0 and np.isnan(area)


def test_area_ratio_of_a_known_square() -> None:
    scores = np.zeros((32, 32))
    scores[16 - 3 : 16 + 4, 16 - 3 : 16 + 4] = 1.0  # a 7x7 block of 49 units
    scores[16, 16] = 49.0  # the centre holds 49 of the total 97, just over half
    assert erf_utils.centred_square(scores, 0.5) == (1, 1 / 1024)
    assert erf_utils.centred_square(scores, 0.99) == (7, 49 / 1024)


def test_accumulate_sums_abs_over_images_and_channels() -> None:
    grads = np.zeros((2, 3, 4, 4), dtype=np.float32)
    grads[0, 0, 1, 1], grads[1, 2, 1, 1], grads[1, 1, 0, 3] = -2.0, 3.0, -0.5
    summed = erf_utils.accumulate(grads)
    assert summed.shape == (4, 4) and summed[1, 1] == 5.0 and summed[0, 3] == 0.5
    assert summed.sum() == 5.5


def test_display_scale_is_decades_below_peak() -> None:
    m = np.array([[1e-9, 1e-2], [1e-1, 1.0]]) * 7
    np.testing.assert_allclose(erf_utils.display_scale(m), [[-3, -2], [-1, 0]], atol=1e-12)


# ---------------------------------------------------------------------------------------------
# ERF: known receptive field, through the scripts' gradient code
# ---------------------------------------------------------------------------------------------

CONV_STACK = 3
SIZE = 17


def _positive_kernels(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(4, 3, 3, 3)] + [(4, 4, 3, 3)] * (CONV_STACK - 1)
    return [rng.uniform(0.1, 1.0, s).astype(np.float32) for s in shapes]


def _torch_conv_stack(kernels):
    weights = [torch.from_numpy(k) for k in kernels]

    def forward(x):
        maps = []
        for w in weights:
            x = TF.conv2d(x, w, padding=1)
            maps.append(x)
        return maps

    return lambda images: erf_torch.stage_input_grads(forward, images, torch.device("cpu"))


def _jittor_conv_stack(kernels):
    from core.jittor_env import jt

    weights = [jt.array(k) for k in kernels]

    def forward(x):
        maps = []
        for w in weights:
            x = jt.nn.conv2d(x, w, padding=1)
            maps.append(x)
        return maps

    return lambda images: erf_jittor.stage_input_grads(forward, images)


@pytest.mark.parametrize("framework", ["torch", "jittor"])
def test_erf_of_a_conv_stack_is_its_receptive_field(framework: str) -> None:
    make = _torch_conv_stack if framework == "torch" else _jittor_conv_stack
    input_grads = make(_positive_kernels())
    images = np.random.default_rng(1).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    result = erf_utils.compute_erf(input_grads, [images[:2], images[2:]])
    assert result.num_images == 3 and result.maps.shape == (CONV_STACK, SIZE, SIZE)
    c = SIZE // 2
    for k, contribution in enumerate(result.maps, start=1):
        expected = np.zeros((SIZE, SIZE), dtype=bool)
        expected[c - k : c + k + 1, c - k : c + k + 1] = True
        np.testing.assert_array_equal(contribution > 0, expected, err_msg=f"{k} convs")
    rows = {(r["stage"], r["scale"]): r for r in result.area_rows()}
    for k in range(1, CONV_STACK + 1):
        assert rows[(k, "raw")]["side_t99"] <= 2 * k + 1  # all mass inside the square
        assert rows[(k, "raw")]["area_t99"] <= (2 * k + 1) ** 2 / SIZE**2


# ---------------------------------------------------------------------------------------------
# OverLoCK: the same checkpoint gives the same ERF and Grad-CAM in both frameworks
# ---------------------------------------------------------------------------------------------

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
        ("torch", paths["pkl"], erf_torch.TorchBackend),
        ("jittor", paths["pth"], erf_jittor.JittorBackend),
    ):
        out = paths["out"] / f"erf_{framework}.png"
        argv = ["--checkpoint", str(checkpoint), "--data", str(paths["data"])]
        # One batch shape for all: every new shape costs Jittor and oneDNN a kernel warm-up.
        argv += ["--num-images", "2", "--batch-size", "2", "--out", str(out)]
        results[framework] = erf_utils.run_erf(argv, framework, ".pth", "", backend)
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
        (gradcam_torch, "torch", gradcam_torch.TorchCamBackend),
        (gradcam_jittor, "jittor", gradcam_jittor.JittorCamBackend),
    ):
        out = paths["out"] / f"gradcam_{framework}.png"
        argv = ["--checkpoint", str(paths["pth"]), "--data", str(paths["data"])]
        argv += ["--images", "0", "2", "--out", str(out)]
        results[framework] = cam_utils.run_gradcam(argv, framework, ".pth", "", backend)
        assert out.is_file()
        assert module.main(argv + ["--class", "nope"]) == 2  # an unknown class is one line
    a, b = results["jittor"], results["torch"]
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    for s in range(4):
        scale = max(np.abs(b.raw[s]).max(), 1e-30)
        assert np.abs(a.raw[s] - b.raw[s]).max() <= 1e-4 * scale, f"stage {s + 1}"


# ---------------------------------------------------------------------------------------------
# Grad-CAM: a toy model with its evidence in a known patch
# ---------------------------------------------------------------------------------------------

PATCH = (slice(6, 12), slice(20, 28))  # rows, columns of the bright patch in a 32x32 image
# Class 0 reads channels 0-1 (bright-patch detectors), class 1 reads them negatively.
CLASS_WEIGHTS = np.array([[1.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]], dtype=np.float32)


def _toy_images() -> np.ndarray:
    images = np.zeros((2, 3, 32, 32), dtype=np.float32)
    images[0][:, PATCH[0], PATCH[1]] = 1.0
    images[1][:, PATCH[0], PATCH[1]] = 0.5
    images += np.random.default_rng(2).uniform(0, 0.05, images.shape).astype(np.float32)
    return images


def _toy_kernel() -> np.ndarray:
    kernel = np.full((4, 3, 3, 3), 0.1, dtype=np.float32)
    kernel[2:] = -0.1  # channels 2-3 are dead (ReLU) on these images
    return kernel


def _torch_toy(x):
    a = TF.relu(TF.conv2d(x, torch.from_numpy(_toy_kernel()), padding=1))
    a = a.reshape(*a.shape[:2], 16, 2, 16, 2).mean(dim=(3, 5))  # 2x2 pooling: a 16x16 stage
    logits = a.mean(dim=(2, 3)) @ torch.from_numpy(CLASS_WEIGHTS).T
    return logits, [a]


def _jittor_toy(x):
    from core.jittor_env import jt

    a = jt.nn.relu(jt.nn.conv2d(x, jt.array(_toy_kernel()), padding=1))
    a = a.reshape(*a.shape[:2], 16, 2, 16, 2).mean(dims=(3, 5))
    logits = jt.matmul(a.mean(dims=(2, 3)), jt.array(CLASS_WEIGHTS.T.copy()))
    return logits, [a]


@pytest.mark.parametrize("framework", ["torch", "jittor"])
def test_gradcam_peaks_on_the_evidence(framework: str) -> None:
    images = _toy_images()
    if framework == "torch":
        run = lambda classes: gradcam_torch.activations_and_grads(  # noqa: E731
            _torch_toy, images, classes, torch.device("cpu")
        )
    else:
        run = lambda classes: gradcam_jittor.activations_and_grads(  # noqa: E731
            _jittor_toy, images, classes
        )
    logits, chosen, acts, grads = run(None)
    assert chosen.tolist() == [0, 0]  # predicted: the patch class
    assert acts[0].shape == grads[0].shape == (2, 4, 16, 16)
    cams = cam_utils.normalise(cam_utils.upsample(cam_utils.grad_cam(acts[0], grads[0]), (32, 32)))
    for cam in cams:
        row, col = cam_utils.peak_position(cam)
        assert PATCH[0].start - 2 <= row < PATCH[0].stop + 2
        assert PATCH[1].start - 2 <= col < PATCH[1].stop + 2
        inside = cam[PATCH[0], PATCH[1]].mean()
        assert inside > 0.5 and cam[20:, :10].max() < 0.1 * inside  # far from the patch: ~0
    # The other class has only negative evidence there: ReLU leaves nothing.
    _, chosen, acts, grads = run(np.array([1, 1]))
    assert chosen.tolist() == [1, 1]
    assert cam_utils.grad_cam(acts[0], grads[0]).max() == 0.0


def test_grad_cam_formula() -> None:
    acts = np.zeros((1, 2, 2, 2))
    acts[0, 0] = [[1, 0], [0, 0]]
    acts[0, 1] = [[0, 0], [0, 3]]
    grads = np.zeros((1, 2, 2, 2))
    grads[0, 0] = 2.0  # a_0 = 2
    grads[0, 1] = -4.0  # a_1 = -4
    np.testing.assert_array_equal(cam_utils.grad_cam(acts, grads)[0], [[2, 0], [0, 0]])


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
