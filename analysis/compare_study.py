"""The runs of the alignment study (``compare.py``): which ones, where they live, how far each
got, the command that starts or resumes it, the ulp-shifted initial weights of the control run,
and running them one after the other as child processes of the training scripts.

Layout under the study folder (``ROOT``, default logs/compare)::

    study.json                  the settings (data, caps, training flags; seeds and epochs)
    seed<s>/torch/              train_torch.py --seed s (writes init.pth)
    seed<s>/jittor/             train.py --seed s --init seed<s>/torch/init.pth
    seed0/init_ulp.pth          seed 0's init.pth, every float entry moved up by one ulp
    seed0/torch_ulp/            train_torch.py --seed 0 --init seed0/init_ulp.pth
    seed<s>_erf.png, seed<s>_gradcam.png (+ .npz)   the maps of seed s's final checkpoints

``--seed`` sets the initial weights, the data order and the flips, so seeds differ in all three;
within a seed both frameworks share the weights (Jittor starts from PyTorch's init.pth) and the
batches. The control differs from seed 0's PyTorch run only in the last bit of each weight.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import STOP_SIGNALS, RunStoppedError, UsageError
from core.files import atomic_write_bytes
from engine.logs import LATEST

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPTS = {"torch": "train_torch.py", "jittor": "train.py"}
SUFFIXES = {"torch": ".pth", "jittor": ".pkl"}
STUDY_FILE = "study.json"
ULP_INIT = "seed0/init_ulp.pth"
MAP_KINDS = {"erf": "ERF", "gradcam": "Grad-CAM"}  # seed<s>_<kind>.png -> what it shows


def map_figures(seed: int) -> tuple[str, str]:
    """The file names of the seed's ERF and Grad-CAM figures."""
    erf, cam = (f"seed{seed}_{kind}.png" for kind in MAP_KINDS)
    return erf, cam


@dataclass(frozen=True)
class Run:
    """One training run of the study."""

    role: str  # "torch", "jittor" or "ulp" (PyTorch from the ulp-shifted init)
    seed: int

    @property
    def name(self) -> str:
        """Its folder under the study root."""
        return (
            f"seed{self.seed}/"
            + {"torch": "torch", "jittor": "jittor", "ulp": "torch_ulp"}[self.role]
        )

    @property
    def framework(self) -> str:
        return "jittor" if self.role == "jittor" else "torch"

    @property
    def label(self) -> str:
        return {"torch": "PyTorch", "jittor": "Jittor", "ulp": "PyTorch, ulp-shifted init"}[
            self.role
        ]

    @property
    def init(self) -> str | None:
        """The --init file, relative to the study root (None: the seed's own weights)."""
        return {"torch": None, "jittor": self.init_source, "ulp": ULP_INIT}[self.role]

    @property
    def init_source(self) -> str:
        """The seed's PyTorch init.pth: the --init file, or what it is made from."""
        return f"seed{self.seed}/torch/init.pth"


def plan(seeds: int) -> list[Run]:
    """The runs in the order they are trained: seed 0's pair and its control first, so a
    partial study already holds the comparison with the control, then the other seeds."""
    runs = [Run("torch", 0), Run("jittor", 0), Run("ulp", 0)]
    for s in range(1, seeds):
        runs += [Run("torch", s), Run("jittor", s)]
    return runs


def read_log(path: Path) -> list[dict[str, float]]:
    """The rows of a log.csv as floats ([] when the file is missing); a row that cannot be
    parsed ends the list (the file is rewritten whole after each epoch, so none should be)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                rows.append({k: float(v) for k, v in row.items() if k is not None})
            except (TypeError, ValueError):
                break
    return rows


@dataclass(frozen=True)
class RunStatus:
    """How far a run got: epochs logged, the target, and whether a checkpoint can resume it."""

    run: Run
    epochs_done: int
    target: int
    resumable: bool

    @property
    def state(self) -> str:
        if self.epochs_done >= self.target:
            return "complete"
        return "incomplete" if self.epochs_done or self.resumable else "missing"

    def describe(self) -> str:
        if self.state == "complete":
            return f"complete ({_epochs(self.target)})"
        if self.state == "incomplete":
            return f"incomplete ({self.epochs_done} of {_epochs(self.target)})"
        return "missing"


def run_status(root: Path, run: Run, epochs: int) -> RunStatus:
    """The status of ``run`` under the study folder ``root`` against ``epochs``."""
    out = root / run.name
    rows = read_log(out / "log.csv")
    done = int(max((r.get("epoch", 0) for r in rows), default=0))
    latest = out / f"{LATEST}{SUFFIXES[run.framework]}"
    return RunStatus(run, done, epochs, latest.is_file())


@dataclass
class StudySettings:
    """What the study was started with. ``data`` and ``train_args`` must stay the same for a
    study to continue; ``seeds`` and ``epochs`` may change (more seeds, longer runs)."""

    data: str | None  # absolute path, or None for the generated default dataset
    epochs: int
    seeds: int
    train_args: list[str] = field(default_factory=list)  # passed to both training scripts

    def fixed(self) -> dict[str, Any]:
        return {"data": self.data, "train_args": list(self.train_args)}


def load_settings(root: Path) -> StudySettings | None:
    """The settings saved in ``root/study.json``, or None when there are none."""
    path = root / STUDY_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        return StudySettings(
            saved["data"], int(saved["epochs"]), int(saved["seeds"]), list(saved["train_args"])
        )
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: not a study file of compare.py ({err})") from None


def save_settings(root: Path, settings: StudySettings) -> None:
    """Write ``root/study.json`` (atomically)."""
    text = json.dumps(asdict(settings), indent=2) + "\n"
    atomic_write_bytes(root / STUDY_FILE, text.encode())


def check_same_study(root: Path, saved: StudySettings, wanted: StudySettings) -> None:
    """A one-line UsageError when ``wanted`` changes what ``saved`` fixed (data, flags)."""
    before, now = saved.fixed(), wanted.fixed()
    changed = [f"{k}: {before[k]!r} -> {now[k]!r}" for k in before if before[k] != now[k]]
    if changed:
        raise UsageError(
            f"{root} holds a study with other settings ({'; '.join(changed)}); give the same "
            "ones to continue it, or choose another --out"
        )


def command(run: Run, root: Path, settings: StudySettings, resume: bool) -> list[str]:
    """The training command that starts ``run`` (or resumes it from its checkpoint)."""
    argv = [sys.executable, str(REPO / TRAIN_SCRIPTS[run.framework])]
    if settings.data is not None:
        argv += ["--data", settings.data]
    argv += ["--epochs", str(settings.epochs), "--seed", str(run.seed)]
    argv += ["--out", str(root / run.name), *settings.train_args]
    if resume:
        argv.append("--resume")
    elif run.init is not None:
        argv += ["--init", str(root / run.init)]
    return argv


def ulp_shift(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every floating-point entry moved up by one ulp of its own dtype (``np.nextafter``
    towards +inf; a zero becomes the smallest subnormal); integer entries unchanged."""
    shifted = {}
    for key, value in state.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            shifted[key] = np.nextafter(value, np.array(np.inf, dtype=value.dtype))
        else:
            shifted[key] = value.copy()
    return shifted


def write_ulp_init(source: Path, dest: Path) -> None:
    """``dest``: the weights of ``source`` moved by one ulp (``ulp_shift``), as a state dict."""
    from models.weights import load_state_dict, save_state_dict

    save_state_dict(ulp_shift(load_state_dict(source)), dest)


class ChildRunner:
    """Runs one training process at a time. A stop signal is passed on to it (except SIGINT:
    Ctrl-C reaches it from the terminal by itself, and a second one would abort it): it saves a
    resumable checkpoint and exits, and the study then stops with 128 + signal. Between runs a
    signal stops the study at once.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> ChildRunner:
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = self.received or signum
        if self.child is None:
            raise RunStoppedError(
                f"compare: stopped by {signal.Signals(signum).name} between runs; run it again "
                "to continue",
                128 + signum,
            )
        if signum != signal.SIGINT:  # the terminal sent Ctrl-C to the whole process group
            self.child.send_signal(signum)

    def run(self, argv: Sequence[str]) -> int:
        """Run ``argv`` to its end (PYTHONHASHSEED=0 as the Makefile sets); its exit status."""
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        self.child = subprocess.Popen(list(argv), env=env)
        try:
            return self.child.wait()
        finally:
            self.child = None


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def _stopped(run: Run, code: int, received: int | None) -> RunStoppedError:
    where = f"seed {run.seed} {run.label} ({TRAIN_SCRIPTS[run.framework]})"
    if received is not None:
        name = signal.Signals(received).name
        return RunStoppedError(
            f"compare: stopped by {name} during {where}; run it again to continue",
            128 + received,
        )
    status = 128 - code if code < 0 else code
    return RunStoppedError(
        f"compare: {where} ended with exit status {status} (its message is above); fix that and "
        "run compare again to continue",
        status or 1,
    )


def announce(line: str) -> None:
    """A progress line, flushed: it must come before the training process's own output."""
    print(line, flush=True)


def restore_init(
    root: Path, seed: int, settings: StudySettings, runner: ChildRunner, say: Callable[[str], None]
) -> None:
    """Write seed<s>/torch/init.pth again when it is gone but its run is logged (a new checkout
    holds the logs, not the weights): ``--seed`` draws the same initial weights, so a one-batch
    PyTorch run writes them; its first logged step must equal the logged run's, or nothing is
    kept."""
    source = Run("torch", seed)
    scratch = root / f"seed{seed}" / "init_restore"
    argv = command(source, root, settings, resume=False)
    argv += ["--epochs", "1", "--max-batches", "1", "--out", str(scratch)]  # last ones win
    say(f"compare: seed {seed}'s init.pth is not here: drawing it again ({scratch})")
    shutil.rmtree(scratch, ignore_errors=True)  # what a stopped earlier attempt left
    code = runner.run(argv)
    if code != 0 or runner.received is not None:
        raise _stopped(source, code, runner.received)
    try:
        logged, redrawn = (_first_step(d / "steps.csv") for d in (root / source.name, scratch))
        if logged is None or logged != redrawn:
            raise UsageError(
                f"compare: the redrawn init of seed {seed} starts with the step {redrawn}, the "
                f"logged run with {logged}; train {source.name} again (delete its folder) to "
                "continue"
            )
        os.replace(scratch / "init.pth", root / source.name / "init.pth")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _first_step(steps: Path) -> str | None:
    """The first data line of a steps.csv (None when there is none)."""
    try:
        lines = steps.read_text().splitlines()
    except OSError:
        return None
    return lines[1] if len(lines) > 1 else None


def _ensure_init(
    root: Path, run: Run, settings: StudySettings, runner: ChildRunner, say: Callable[[str], None]
) -> None:
    """The run's --init file: the ulp-shifted init is made from seed 0's init.pth, and an
    init.pth this checkout lacks is drawn again (``restore_init``)."""
    if (root / run.init).is_file():
        return
    if not (root / run.init_source).is_file():
        restore_init(root, run.seed, settings, runner, say)
    if run.role == "ulp":
        write_ulp_init(root / run.init_source, root / ULP_INIT)
        say(f"compare: wrote {root / ULP_INIT} (seed 0's init.pth + one ulp)")


def run_study(root: Path, settings: StudySettings, say: Callable[[str], None] = announce) -> None:
    """Train every run of the plan that is not complete, one after the other, resuming the
    unfinished ones; a run that starts from an --init file gets it made first if need be."""
    runs = plan(settings.seeds)
    with ChildRunner() as runner:
        for i, run in enumerate(runs, 1):
            tag = f"compare: [{i}/{len(runs)}] seed {run.seed} {run.label}"
            status = run_status(root, run, settings.epochs)
            if status.state == "complete":
                say(f"{tag}: complete ({_epochs(status.epochs_done)}), skipped")
                continue
            if run.init is not None and not status.resumable:
                _ensure_init(root, run, settings, runner, say)
            resume = status.resumable
            start = f"resuming after epoch {status.epochs_done}" if resume else "starting"
            say(f"{tag}: {start}, {_epochs(settings.epochs)} -> {root / run.name}")
            began = time.perf_counter()
            code = runner.run(command(run, root, settings, resume))
            if code != 0 or runner.received is not None:
                raise _stopped(run, code, runner.received)
            say(f"{tag}: finished in {_duration(time.perf_counter() - began)}")


def epochs_of(rows: Sequence[Mapping[str, float]], column: str, epochs: int) -> np.ndarray:
    """A log column as an array over epochs 1..``epochs`` (NaN where not logged)."""
    values = np.full(epochs, math.nan)
    for row in rows:
        e = int(row.get("epoch", 0))
        if 1 <= e <= epochs and column in row:
            values[e - 1] = row[column]
    return values
