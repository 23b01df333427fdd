"""The alignment study's runs without training them: the ulp-shifted init (every float entry one
ulp up, integers untouched, loadable as train_torch.py --init loads it), the plan and commands,
run statuses, the saved settings, and the signal hand-over to the training process."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import compare
from analysis.compare import split_argv
from analysis.compare_study import (
    ChildRunner,
    Run,
    StudySettings,
    check_same_study,
    command,
    load_settings,
    plan,
    restore_init,
    run_status,
    save_settings,
    ulp_shift,
    write_ulp_init,
)
from backends.torch_backend import TorchBackend
from core.errors import RunStoppedError, UsageError
from models import overlock_torch
from models.weights import check_state, load_state_dict, save_state_dict


@pytest.fixture(scope="module")
def init_state() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    model = overlock_torch.overlock_xxt(num_classes=20)
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_ulp_shift_moves_every_float_by_exactly_one_ulp(init_state: dict) -> None:
    shifted = ulp_shift(init_state)
    assert set(shifted) == set(init_state)
    floats = 0
    for key, before in init_state.items():
        after = shifted[key]
        assert after.dtype == before.dtype and after.shape == before.shape, key
        if before.dtype.kind == "f":
            floats += 1
            assert (after > before).all(), key
            assert (np.nextafter(after, -np.inf) == before).all(), key  # exactly one step
            positive = before > 0  # the bit patterns of positive floats count ulps
            steps = (
                after.view(np.int32)[positive].astype(np.int64) - before.view(np.int32)[positive]
            )
            assert (steps == 1).all(), key
        else:
            np.testing.assert_array_equal(after, before, err_msg=key)  # num_batches_tracked
    assert floats > 100 and any(v.dtype.kind == "i" for v in init_state.values())


def test_ulp_init_loads_as_train_torch_init_does(init_state: dict, tmp_path: Path) -> None:
    save_state_dict(init_state, tmp_path / "init.pth")
    write_ulp_init(tmp_path / "init.pth", tmp_path / "init_ulp.pth")
    state = load_state_dict(tmp_path / "init_ulp.pth")  # engine.state.start_run's steps
    check_state(state, "overlock_xxt", 20)
    backend = TorchBackend("cpu")
    backend.build("overlock_xxt", 20, seed=1)
    backend.load_model_state(state)
    loaded = backend.model_state()
    for key, value in ulp_shift(init_state).items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_plan_and_commands(tmp_path: Path) -> None:
    runs = plan(2)
    assert [r.name for r in runs] == [
        "seed0/torch", "seed0/jittor", "seed0/torch_ulp", "seed1/torch", "seed1/jittor",
    ]  # fmt: skip
    settings = StudySettings("/data/tin", 20, 2, ["--workers", "0"])
    fresh = command(Run("jittor", 1), tmp_path, settings, resume=False)
    assert fresh[0] == sys.executable and fresh[1].endswith("train.py")
    assert fresh[2:] == [
        "--data", "/data/tin", "--epochs", "20", "--seed", "1", "--out",
        str(tmp_path / "seed1/jittor"), "--workers", "0", "--init",
        str(tmp_path / "seed1/torch/init.pth"),
    ]  # fmt: skip
    resumed = command(Run("ulp", 0), tmp_path, StudySettings(None, 5, 1), resume=True)
    assert resumed[1].endswith("train_torch.py") and resumed[-1] == "--resume"
    assert "--init" not in resumed and "--data" not in resumed
    plain = command(Run("ulp", 0), tmp_path, StudySettings(None, 5, 1), resume=False)
    assert plain[-2:] == ["--init", str(tmp_path / "seed0/init_ulp.pth")]


def test_run_status(tmp_path: Path) -> None:
    run = Run("torch", 0)
    assert run_status(tmp_path, run, 3).state == "missing"
    folder = tmp_path / run.name
    folder.mkdir(parents=True)
    (folder / "log.csv").write_text("epoch,acc_top1\n1,5\n2,7\n")
    status = run_status(tmp_path, run, 3)
    assert (status.state, status.epochs_done, status.resumable) == ("incomplete", 2, False)
    (folder / "checkpoint_latest.pth").write_bytes(b"")
    assert run_status(tmp_path, run, 3).resumable
    assert run_status(tmp_path, run, 2).describe() == "complete (2 epochs)"


def test_settings_are_kept_and_checked(tmp_path: Path) -> None:
    assert load_settings(tmp_path) is None
    saved = StudySettings("/data/a", 20, 3, ["--train-per-class", "8"])
    save_settings(tmp_path, saved)
    assert load_settings(tmp_path) == saved
    check_same_study(tmp_path, saved, StudySettings("/data/a", 30, 5, ["--train-per-class", "8"]))
    with pytest.raises(UsageError, match="other settings.*data"):
        check_same_study(tmp_path, saved, StudySettings("/data/b", 20, 3, saved.train_args))
    (tmp_path / "study.json").write_text("{}")
    with pytest.raises(UsageError, match="not a study file"):
        load_settings(tmp_path)
    assert split_argv(["--seeds", "2", "--", "--workers", "0"]) == (
        ["--seeds", "2"],
        ["--workers", "0"],
    )


CHILD = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda s, f: (out.joinpath("got").write_text(str(s)), sys.exit(143)))
out.joinpath("ready").write_text("")
time.sleep(float(sys.argv[2]))
out.joinpath("finished").write_text("")
"""


def _signal_when_ready(folder: Path, signum: int) -> threading.Thread:
    def send() -> None:
        while not (folder / "ready").exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_stop_signal_reaches_the_training_process(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with ChildRunner() as runner:
        thread = _signal_when_ready(tmp_path, signal.SIGTERM)
        code = runner.run([sys.executable, "-c", CHILD, str(tmp_path), "30"])
        thread.join()
        assert (code, runner.received) == (143, signal.SIGTERM)
        assert (tmp_path / "got").read_text() == str(int(signal.SIGTERM))
        with pytest.raises(RunStoppedError, match="between runs") as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert stopped.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before  # restored on exit


def test_ctrl_c_is_left_to_the_terminal(tmp_path: Path) -> None:
    # Ctrl-C reaches the training process from the terminal itself: passing it on again would
    # count as a second Ctrl-C there and abort the save.
    with ChildRunner() as runner:
        thread = _signal_when_ready(tmp_path, signal.SIGINT)
        code = runner.run([sys.executable, "-c", CHILD, str(tmp_path), "1"])
        thread.join()
    assert (code, runner.received) == (0, signal.SIGINT)
    assert (tmp_path / "finished").exists() and not (tmp_path / "got").exists()


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "study")]
    assert compare.main(["--seeds", "0", *out]) == 2
    assert compare.main(["--data", str(tmp_path / "nowhere"), *out]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --seeds must be at least 1 (got 0)",
                   f"error: --data {tmp_path / 'nowhere'}: no such folder"]  # fmt: skip
    run = tmp_path / "study/seed0/torch"
    run.mkdir(parents=True)
    save_settings(tmp_path / "study", StudySettings(None, 2, 2, ["--workers", "0"]))
    (run / "log.csv").write_text("epoch,acc_top1\n1,5\n")  # a study that has trained
    assert compare.main([*out, "--", "--workers", "2"]) == 2
    assert "holds a study with other settings" in capsys.readouterr().err
    assert not (tmp_path / "study/seed0/jittor").exists()  # nothing was started


class _FakeTorchRun:
    """Stands in for the ChildRunner: 'trains' by writing the --out folder's init.pth and a
    steps.csv whose first step is ``first``."""

    received = None

    def __init__(self, first: str) -> None:
        self.first, self.argv = first, []

    def run(self, argv: list[str]) -> int:
        self.argv = argv
        out = Path(argv[-1])  # restore_init's --out comes last (the test checks argv's tail)
        out.mkdir(parents=True)
        (out / "init.pth").write_bytes(b"weights")
        (out / "steps.csv").write_text(f"epoch,step,loss\n{self.first}\n")
        return 0


def test_a_missing_init_is_drawn_again_and_checked(tmp_path: Path) -> None:
    logged = tmp_path / "seed1/torch"
    logged.mkdir(parents=True)
    (logged / "steps.csv").write_text("epoch,step,loss\n1,1,4.22399\n1,2,4.13264\n")
    settings = StudySettings(None, 20, 2, ["--workers", "0"])
    lines: list[str] = []
    runner = _FakeTorchRun("1,1,4.22399")
    restore_init(tmp_path, 1, settings, runner, lines.append)
    assert (logged / "init.pth").read_bytes() == b"weights"
    assert not (tmp_path / "seed1/init_restore").exists()
    assert runner.argv[runner.argv.index("--seed") + 1] == "1"
    assert runner.argv[-6:] == ["--epochs", "1", "--max-batches", "1", "--out",
                                str(tmp_path / "seed1/init_restore")]  # fmt: skip
    assert "seed 1's init.pth is not here: drawing it again" in lines[0]

    (logged / "init.pth").unlink()
    with pytest.raises(UsageError, match="starts with the step 1,1,4.5, the logged run with 1,1,4"):
        restore_init(tmp_path, 1, settings, _FakeTorchRun("1,1,4.5"), lines.append)
    assert not (logged / "init.pth").exists()  # a different init is not kept
    assert not (tmp_path / "seed1/init_restore").exists()
