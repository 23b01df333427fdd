"""Data parallelism on CPU with 2 processes: train_torch.py under torchrun (DDP, gloo) and
train.py under mpirun (Jittor's MPI). Each run is a real launch of the script, as a user runs it.

Tolerances, measured: with --sync-bn a 2-process step equals a 1-process step of the same global
batch to float round-off, the same as between 1 and 2 threads in one process (gradients within
3e-4 of their largest value; updates within 1e-8 wherever the gradient is above round-off).
Where a gradient is zero in exact arithmetic (a bias before a BatchNorm), both runs hold round-off
noise and Adam's first step turns it into +-lr, so updates are compared where |g| is not noise.

``make test`` sets OVERLOCK_REQUIRE_MPI=1: there a missing OpenMPI fails instead of skipping.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from core.serialization import read_checkpoint
from engine.logs import LATEST, LOG_COLUMNS, STEP_COLUMNS

if TYPE_CHECKING:
    from tests.conftest import TinyData

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {"torch": "train_torch.py", "jittor": "train.py"}
SUFFIX = {"torch": ".pth", "jittor": ".pkl"}
TIMING = ("epoch_time_s", "train_images_per_s")
HAVE_MPI = shutil.which("mpirun") is not None and shutil.which("mpicc") is not None

if os.environ.get("OVERLOCK_REQUIRE_MPI") == "1" and not HAVE_MPI:
    raise RuntimeError("OVERLOCK_REQUIRE_MPI=1 but mpirun/mpicc are missing: run 'make setup'")

FRAMEWORKS = [
    "torch",
    pytest.param(
        "jittor",
        marks=pytest.mark.skipif(
            not HAVE_MPI, reason="OpenMPI (mpirun, mpicc) not installed; 'make setup' adds it"
        ),
    ),
]


@pytest.fixture(scope="module")
def tiny_data(make_tiny_data) -> TinyData:
    # 4 classes x 6 images, batch 8: 3 train batches per epoch (shards of 4); 8 val images.
    return make_tiny_data(train_per_class=6, val_per_class=2, seed=5)


def _launch(framework: str, nproc: int, program: list[str]) -> list[str]:
    """The engine's own launcher for ``nproc`` processes (none for one process)."""
    if nproc == 1:
        return [sys.executable, *program]
    if framework == "torch":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(nproc), *program]  # fmt: skip
    return ["mpirun", "--oversubscribe", "-np", str(nproc), sys.executable, *program]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # torchrun's default per process; the same for mpirun
        "OMPI_ALLOW_RUN_AS_ROOT": "1",  # CI runs as root
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }


def _run(framework: str, nproc: int, program: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        _launch(framework, nproc, program),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _train(framework: str, nproc: int, argv: list[str]) -> subprocess.CompletedProcess:
    proc = _run(framework, nproc, [SCRIPTS[framework], *argv])
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


def _rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(handle)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_processes_take_the_same_step_as_one(
    framework: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    """Global batch 8: one process with 8 images == two with 4 each (--sync-bn), first step."""
    argv = ["--epochs", "1", "--max-batches", "1", "--sync-bn"]
    one, two = tmp_path / "one", tmp_path / "two"
    _train(framework, 1, tiny_data.argv(one, *argv))
    proc = _train(framework, 2, tiny_data.argv(two, *argv))
    assert "2 processes sharing each batch of 8" in proc.stdout
    assert proc.stdout.count("epoch 1/1:") == 1, "only rank 0 prints"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())

    loss_one, loss_two = _rows(one / "steps.csv")[0], _rows(two / "steps.csv")[0]
    for column in STEP_COLUMNS[2:]:
        assert float(loss_two[column]) == pytest.approx(float(loss_one[column]), rel=1e-5)

    suffix = SUFFIX[framework]
    init = read_checkpoint(one / f"init{suffix}")
    assert all(
        np.array_equal(np.asarray(v), np.asarray(read_checkpoint(two / f"init{suffix}")[k]))
        for k, v in init.items()
    ), "both runs start from the same weights"
    a, b = read_checkpoint(one / f"{LATEST}{suffix}"), read_checkpoint(two / f"{LATEST}{suffix}")
    grads_a = {k: np.asarray(v, np.float64) for k, v in a["optimizer"]["exp_avg"].items()}
    grads_b = {k: np.asarray(v, np.float64) for k, v in b["optimizer"]["exp_avg"].items()}
    scale = max(np.abs(g).max() for g in grads_a.values())
    assert max(np.abs(grads_a[k] - grads_b[k]).max() for k in grads_a) <= 1e-3 * scale
    compared = 0
    for name, grad in grads_a.items():
        above_noise = np.abs(grad) > 1e-4 * scale
        update_a = np.asarray(a["model"][name], np.float64) - np.asarray(init[name], np.float64)
        update_b = np.asarray(b["model"][name], np.float64) - np.asarray(init[name], np.float64)
        assert np.abs(update_a - update_b)[above_noise].max(initial=0) <= 1e-6, name
        compared += int(above_noise.sum())
    assert compared > 0.5 * sum(g.size for g in grads_a.values())
    for name in a["model"]:
        if "running" in name:  # BatchNorm statistics of the global batch
            assert np.allclose(a["model"][name], b["model"][name], rtol=1e-4, atol=1e-5), name


def _interrupting_driver(framework: str, path: Path, at_step: int) -> Path:
    """A launcher entry point: the training script whose rank 1 gets SIGTERM after a step."""
    module, backend = {
        "torch": ("backends.torch_backend", "TorchBackend"),
        "jittor": ("backends.jittor_backend", "JittorBackend"),
    }[framework]
    path.write_text(
        textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from {module} import {backend} as Backend
        from core.cli import main_guard
        from engine.cli import build_parser
        from engine.loop import run_training

        class Interrupted(Backend):
            calls = 0

            def train_step(self, images, labels, loss_scale=1.0):
                losses = super().train_step(images, labels, loss_scale)
                type(self).calls += 1
                if self.rank == 1 and type(self).calls == {at_step}:
                    os.kill(os.getpid(), signal.SIGTERM)
                return losses

        args = build_parser({framework!r}, "").parse_args(sys.argv[1:])
        backend = Interrupted(args.device, args.lr, args.weight_decay, args.aux_weight)
        sys.exit(main_guard(lambda: run_training(args, backend)))
        """)
    )
    return path


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_distributed_run_logs_stops_and_resumes(
    framework: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    """Two epochs on 2 processes: the single-process log columns; a SIGTERM that reaches only
    rank 1 stops both after the same step with rank 0's save; --resume then equals the
    uninterrupted run (logs but timing, weights and optimiser state bit for bit).
    """
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _train(framework, 2, tiny_data.argv(whole, "--epochs", "2"))
    with (whole / "log.csv").open() as handle:
        assert next(csv.reader(handle)) == list(LOG_COLUMNS)
    assert [r["epoch"] for r in _rows(whole / "log.csv")] == ["1", "2"]
    assert len(_rows(whole / "steps.csv")) == 6

    driver = _interrupting_driver(framework, tmp_path / "driver.py", at_step=4)
    proc = _run(framework, 2, [str(driver), *tiny_data.argv(broken, "--epochs", "2")])
    assert proc.returncode != 0, "a stopped run does not report success"
    assert "stopped by SIGTERM in epoch 2 after batch 1/3" in proc.stderr, proc.stderr[-3000:]
    latest = broken / f"{LATEST}{SUFFIX[framework]}"
    assert read_checkpoint(latest)["epoch_progress"]["batches_done"] == 1

    _train(framework, 2, tiny_data.argv(broken, "--epochs", "2", "--resume"))
    assert _rows(broken / "log.csv", TIMING) == _rows(whole / "log.csv", TIMING)
    assert _rows(broken / "steps.csv") == _rows(whole / "steps.csv")
    a = read_checkpoint(whole / f"{LATEST}{SUFFIX[framework]}")
    b = read_checkpoint(latest)
    for name, value in a["model"].items():
        assert np.array_equal(np.asarray(value), np.asarray(b["model"][name])), name
    for moment in ("exp_avg", "exp_avg_sq"):
        for name, value in a["optimizer"][moment].items():
            assert np.array_equal(value, b["optimizer"][moment][name]), (moment, name)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ctrl_c_to_the_launcher_stops_every_process_with_a_save(
    framework: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    """Ctrl-C to the terminal's process group, where only the launcher is (each process runs in
    a group of its own): torchrun passes it on (SIGINT), mpirun passes it on as SIGTERM after
    odls_base_sigkill_timeout seconds and kills the processes as long after that (the start
    note asks for enough time). A warning about the data's text files comes once, not once per
    process.
    """
    data = dataclasses.replace(tiny_data, root=tmp_path / "data")
    shutil.copytree(tiny_data.root, data.root)
    with (data.root / "val" / "val_annotations.txt").open("a") as handle:
        handle.write("val_0.JPEG\tn09999999\t0\t0\t1\t1\n")  # a wnid wnids.txt does not list
    out = tmp_path / "out"
    command = _launch(framework, 2, [SCRIPTS[framework], *data.argv(out, "--epochs", "500")])
    if framework == "jittor":
        command[1:1] = ["--mca", "odls_base_sigkill_timeout", "15"]
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not (out / f"init{SUFFIX[framework]}").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stop = "SIGINT" if framework == "torch" else "SIGTERM"
    assert f"stopped by {stop} " in err and "continue with --resume" in err, err[-3000:]
    assert err.count("does not list (n09999999)") == 1, err[-3000:]
    saved = read_checkpoint(out / f"{LATEST}{SUFFIX[framework]}")
    assert saved["epoch"] >= 1 or saved["epoch_progress"]["batches_done"] >= 1
    with pytest.raises(ProcessLookupError):  # nothing outlived the launcher
        os.killpg(proc.pid, 0)


def test_a_batch_too_small_to_share_is_one_line(tiny_data: TinyData, tmp_path: Path) -> None:
    proc = _run("torch", 2, ["train_torch.py", *tiny_data.argv(tmp_path, "--batch-size", "1")])
    assert proc.returncode != 0
    assert "error: --batch-size 1 is the global batch and cannot be split over 2 processes" in (
        proc.stderr
    )
    assert "training.py" not in proc.stderr, "no traceback from the script (torchrun has its own)"
