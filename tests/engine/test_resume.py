"""Reliability of the training scripts: interruption and resume, diverged losses, determinism,
and bad input. The loop is shared (engine/), so most checks run in-process on both backends;
the real-signal checks run the scripts as a terminal or a job scheduler would.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import train
import train_torch
from backends.base import Backend
from backends.jittor_backend import JittorBackend
from backends.torch_backend import TorchBackend
from core.errors import RunStoppedError
from core.serialization import read_checkpoint
from engine.cli import build_parser
from engine.logs import LATEST
from engine.loop import run_training
from engine.signals import StopSignals
from models.weights import save_state_dict

if TYPE_CHECKING:
    from tests.conftest import TinyData

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 2
TIMING = ("epoch_time_s", "train_images_per_s")  # the only columns allowed to differ
BACKENDS = {"torch": TorchBackend, "jittor": JittorBackend}


@pytest.fixture(scope="module")
def tiny_data(make_tiny_data) -> TinyData:
    # 4 classes x 6 images, batch 8: 3 train batches per epoch, the last one full.
    return make_tiny_data(train_per_class=6, val_per_class=2, seed=5)


def _argv(data: TinyData, out: Path, *extra: str) -> list[str]:
    return data.argv(out, "--epochs", str(EPOCHS), *extra)


def _args(framework: str, data: TinyData, out: Path, *extra: str) -> argparse.Namespace:
    return build_parser(framework, "").parse_args(_argv(data, out, *extra))


def _backend(framework: str, cls: type[Backend] | None = None) -> Backend:
    return (cls or BACKENDS[framework])("cpu", 1e-3, 0.01, 0.4)


def _rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(handle)]


def _signal_at(framework: str, at_step: int, signum: int) -> type[Backend]:
    """The backend, sending itself ``signum`` right after its ``at_step``-th train step."""

    class Interrupted(BACKENDS[framework]):
        calls = 0

        def train_step(self, images: np.ndarray, labels: np.ndarray, loss_scale: float = 1.0):
            losses = super().train_step(images, labels, loss_scale)
            type(self).calls += 1
            if type(self).calls == at_step:
                os.kill(os.getpid(), signum)
            return losses

    return Interrupted


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def baseline(request, tiny_data: TinyData, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run per framework: what every interrupted run must reproduce."""
    out = tmp_path_factory.mktemp(f"baseline_{request.param}")
    run_training(_args(request.param, tiny_data, out), _backend(request.param))
    return request.param, out


def _assert_same_run(out: Path, reference: Path, suffix: str) -> None:
    assert _rows(out / "log.csv", TIMING) == _rows(reference / "log.csv", TIMING)
    assert _rows(out / "steps.csv") == _rows(reference / "steps.csv")
    got = read_checkpoint(out / f"{LATEST}{suffix}")
    want = read_checkpoint(reference / f"{LATEST}{suffix}")
    assert got["epoch"] == want["epoch"] == EPOCHS and got["epoch_progress"] is None
    assert got["optimizer"]["step"] == want["optimizer"]["step"]
    for name, value in want["model"].items():
        np.testing.assert_array_equal(got["model"][name], value, err_msg=name)
    for moment in ("exp_avg", "exp_avg_sq"):
        for name, value in want["optimizer"][moment].items():
            np.testing.assert_array_equal(got["optimizer"][moment][name], value, err_msg=name)


def test_same_seed_gives_an_identical_run(baseline, tiny_data: TinyData, tmp_path: Path) -> None:
    """Determinism on CPU: every logged number, the weights and the optimiser state repeat."""
    framework, reference = baseline
    run_training(_args(framework, tiny_data, tmp_path), _backend(framework))
    _assert_same_run(tmp_path, reference, _backend(framework).suffix)


@pytest.mark.parametrize(
    ("at_step", "signum", "saved_epoch", "saved_batches"),
    [
        (2, signal.SIGTERM, 0, 2),  # mid epoch 1: nothing completed yet
        (3, signal.SIGINT, 1, 0),  # after the last batch of epoch 1: it is validated first
        (4, signal.SIGINT, 1, 1),  # mid epoch 2
    ],
)
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(
    baseline, tiny_data: TinyData, tmp_path: Path, at_step, signum, saved_epoch, saved_batches
) -> None:
    framework, reference = baseline
    backend = _backend(framework, _signal_at(framework, at_step, signum))
    with pytest.raises(RunStoppedError) as stopped:
        run_training(_args(framework, tiny_data, tmp_path), backend)
    assert stopped.value.exit_code == 128 + signum
    message = str(stopped.value)
    assert message.startswith(f"stopped by {signal.Signals(signum).name}") and "--resume" in message
    assert "\n" not in message
    saved = read_checkpoint(tmp_path / f"{LATEST}{backend.suffix}")
    assert saved["epoch"] == saved_epoch
    progress = saved["epoch_progress"]
    assert (progress["batches_done"] if progress else 0) == saved_batches
    assert saved["optimizer"]["step"] == at_step
    log = tmp_path / "log.csv"
    assert (len(_rows(log)) if log.exists() else 0) == saved_epoch

    run_training(_args(framework, tiny_data, tmp_path, "--resume"), _backend(framework))
    _assert_same_run(tmp_path, reference, backend.suffix)


def test_a_stop_before_the_first_step_saves_and_resumes(
    baseline, tiny_data: TinyData, tmp_path: Path
) -> None:
    """A signal while the model is built and the data opened: AdamW has taken no step yet (its
    moments do not exist in PyTorch), and the saved state still resumes into the same run.
    """
    framework, reference = baseline

    class StoppedEarly(BACKENDS[framework]):
        def build(self, *args: object, **kwargs: object) -> None:
            super().build(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)

    backend = _backend(framework, StoppedEarly)
    with pytest.raises(RunStoppedError) as stopped:
        run_training(_args(framework, tiny_data, tmp_path), backend)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert str(stopped.value).startswith("stopped by SIGTERM before epoch 1: saved ")
    saved = read_checkpoint(tmp_path / f"{LATEST}{backend.suffix}")
    progress = saved["epoch_progress"]
    assert saved["epoch"] == 0 and (progress["batches_done"] if progress else 0) == 0
    assert saved["optimizer"]["step"] == 0
    assert all(not np.any(m) for m in saved["optimizer"]["exp_avg"].values())

    run_training(_args(framework, tiny_data, tmp_path, "--resume"), _backend(framework))
    _assert_same_run(tmp_path, reference, backend.suffix)


def test_stop_signals_second_ctrl_c_aborts() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.received == signal.SIGINT and stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_nan_loss_stops_and_names_the_last_good_checkpoint(
    framework: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    class Poisoned(BACKENDS[framework]):
        calls = 0

        def train_step(self, images: np.ndarray, labels: np.ndarray, loss_scale: float = 1.0):
            type(self).calls += 1
            if type(self).calls == 5:  # epoch 2, batch 2
                images = np.full_like(images, np.nan)
            return super().train_step(images, labels, loss_scale)

    backend = _backend(framework, Poisoned)
    latest = tmp_path / f"{LATEST}{backend.suffix}"
    with pytest.raises(RunStoppedError) as stopped:
        run_training(_args(framework, tiny_data, tmp_path), backend)
    assert stopped.value.exit_code == 3
    message = str(stopped.value)
    assert message.startswith("loss became nan at epoch 2, step 2")
    assert f"last good checkpoint: {latest} (epoch 1)" in message
    saved = read_checkpoint(latest)  # still the good epoch-1 state, not the poisoned one
    assert saved["epoch"] == 1 and saved["optimizer"]["step"] == 3
    assert all(np.isfinite(v).all() for v in saved["model"].values())
    assert _rows(tmp_path / "steps.csv")[-1]["loss"] == "nan"  # the bad step is on record


def test_a_stop_in_the_last_step_completes_the_run_and_exits_128_plus_signal(
    baseline, tiny_data: TinyData, tmp_path: Path
) -> None:
    """A SIGTERM during the run's last step: the run finishes (validation, checkpoint) as an
    uninterrupted one, then says so and exits 143, not 0: a scheduler sees the stop."""
    framework, reference = baseline
    backend = _backend(framework, _signal_at(framework, 3 * EPOCHS, signal.SIGTERM))
    with pytest.raises(RunStoppedError) as stopped:
        run_training(_args(framework, tiny_data, tmp_path), backend)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    latest = tmp_path / f"{LATEST}{backend.suffix}"
    assert str(stopped.value) == (
        f"stopped by SIGTERM at the end of the run: all {EPOCHS} epochs are done and saved in "
        f"{latest}"
    )
    _assert_same_run(tmp_path, reference, backend.suffix)


def test_resuming_a_finished_run_changes_nothing(
    baseline, tiny_data: TinyData, tmp_path: Path, capsys
) -> None:
    framework, out = baseline
    done = Path(shutil.copytree(out, tmp_path / "done"))
    before = {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()}
    assert run_training(_args(framework, tiny_data, done, "--resume"), _backend(framework)) == {}
    assert f"has finished all {EPOCHS} epochs of this run: nothing to do" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()} == before


# --- bad input: one line, exit 2, nothing written -----------------------------------------------
@pytest.fixture(scope="module")
def other_variant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models import overlock_torch

    path = tmp_path_factory.mktemp("ckpt") / "xt.pth"
    model = overlock_torch.overlock_xt(num_classes=4)
    save_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, path)
    return path


BAD_INPUT = [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--img-size", "16"], "--img-size 16 is too small"),
    (["--data", "{tmp}/nowhere"], "nowhere"),
    (["--init", "{tmp}/garbage.pth"], "garbage.pth"),
    (["--init", "{xt}"], "overlock_xxt"),
    (["--out", "{tmp}/garbage.pth"], "is not writable"),
    (["--resume", "--out", "{tmp}/empty"], "--resume"),
    (["--allow-changes"], "--allow-changes only applies with --resume"),
]


@pytest.mark.parametrize("framework", sorted(BACKENDS))
@pytest.mark.parametrize(("extra", "expected"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    framework, extra, expected, tiny_data: TinyData, other_variant: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    extra = [e.format(tmp=tmp_path, xt=other_variant) for e in extra]
    out = tmp_path / "out"
    argv = _argv(tiny_data, out, *extra)
    if "--out" in extra:  # the later --out wins
        argv = argv[: argv.index("--out")] + argv[argv.index("--out") + 2 :]
    script = train_torch if framework == "torch" else train
    assert script.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert expected in err, err
    assert not list(out.glob(f"{LATEST}*")), "a checkpoint was written for a failed start"


def test_fewer_images_than_asked_are_reported(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    argv = _argv(tiny_data, tmp_path, "--epochs", "1", "--max-batches", "1")
    argv += ["--train-per-class", "5", "--val-per-class", "50"]
    assert train_torch.main(argv) == 0
    out = capsys.readouterr().out
    assert "note: train" not in out  # 6 images per class: the cap of 5 is met
    assert (
        "note: val: 4 of 4 classes have fewer than the 50 images asked for (2 to 2 per class" in out
    )


def test_a_corrupt_jpeg_is_reported_and_counted_or_stops_a_strict_run(
    tiny_data: TinyData, tmp_path: Path, capsys
) -> None:
    import shutil

    data = dataclasses.replace(tiny_data, root=tmp_path / "data")
    shutil.copytree(tiny_data.root, data.root)
    bad = sorted((data.root / "train").glob("*/images/*.JPEG"))[0]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    argv = _argv(data, tmp_path / "out", "--epochs", "1")
    with pytest.warns(RuntimeWarning, match=bad.name):
        assert train_torch.main(argv) == 0
    assert f"warning: 1 unreadable images were replaced: {bad}" in capsys.readouterr().out

    assert train_torch.main([*argv, "--strict-data", "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and bad.name in err and "\n" not in err, err


# --- nothing half-written ---------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_a_run_killed_while_saving_leaves_the_previous_checkpoint(tmp_path: Path, suffix) -> None:
    path = tmp_path / f"{LATEST}{suffix}"
    script = (
        "import os, signal, numpy as np\n"
        "from core.serialization import write_checkpoint\n"
        "import core.files as files\n"
        f"path = {str(path)!r}\n"
        "write_checkpoint({'epoch': 1, 'w': np.arange(4.0)}, path)\n"
        "real = files.os.replace\n"
        "def killed(*args):  # SIGKILL after the new file is written, before it replaces the old\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "files.os.replace = killed\n"
        "write_checkpoint({'epoch': 2, 'w': np.zeros(10**6)}, path)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = read_checkpoint(path)
    assert saved["epoch"] == 1 and list(saved["w"]) == [0.0, 1.0, 2.0, 3.0]


def test_a_failing_write_is_one_line(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    (out / "log.csv").mkdir(parents=True)  # log.csv cannot be replaced: it is a folder
    assert train_torch.main(_argv(tiny_data, out, "--epochs", "1", "--max-batches", "1")) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error: ") and "log.csv" in last and "Traceback" not in err, err
