"""evaluate.py (Jittor) and evaluate_torch.py (PyTorch): top-1 / top-5 / loss of a checkpoint.

- the twins give the same top-1/top-5 (loss within 1e-4) on one random XXT saved as .pth and as
  .pkl, on ImageNet-layout (official eval transform) and TinyImageNet-layout folders; --out JSON;
- the result equals a hand computation with the torch model on ``eval_transform``-ed images
  (default crop_pct = the variant's table value; --crop-pct, --num-classes, --max-per-class);
- --reparam and a deploy-form (``*_reparam``) checkpoint give the plain model's result;
- a training checkpoint written by train_torch.py is accepted (variant from its model_name) and
  reproduces the validation row of its log.csv;
- bad input is one line on stderr and exit status 2; --help is the manual.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import evaluate_torch
from analysis.evaluate import run_evaluation
from backends.jittor_backend import JittorBackend
from backends.torch_backend import TorchBackend
from data import IMAGENET_MEAN, IMAGENET_STD
from data.imagenet import eval_transform
from data.synthetic import generate
from models import overlock_torch
from models.weights import load_state_dict, save_state_dict

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 8  # more than 5, so top-5 is not always a hit
PER_CLASS = 2
SIZE = 32
BACKENDS = {"torch": TorchBackend, "jittor": JittorBackend}


def _random_xxt(seed: int = 0) -> torch.nn.Module:
    """A random XXT whose predictions depend on the image. At its init the signal fades with
    depth (logits vary by ~1e-6 across images), so BatchNorm's running statistics are set from one
    training-mode pass over noise, and position biases and layer scales move off their init.
    """
    torch.manual_seed(seed)
    model = overlock_torch.overlock_xxt(num_classes=NUM_CLASSES)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if "rpb" in name or name.endswith("gamma"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # running stats = the statistics of the one batch
                module.reset_running_stats()
        model.train()
        model(torch.randn(16, 3, SIZE, SIZE, generator=g))
        model.head[4].weight.mul_(10.0)  # logits spread by ~1.6: no near-ties between frameworks
    return model.eval()


def _imagenet_folder(root: Path, classes: int, per_class: int) -> Path:
    """val/<class>/ with images of varied sizes and formats, so the transform resizes and crops."""
    rng = np.random.default_rng(7)
    for c in range(classes):
        folder = root / "val" / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(28, 72, 2))
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            img.save(folder / f"ILSVRC2012_val_{c}{i}.{'JPEG' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    model = _random_xxt()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    save_state_dict(state, root / "xxt.pth")
    save_state_dict(state, root / "xxt.pkl")
    deploy = _random_xxt().reparam()
    save_state_dict({k: v.numpy() for k, v in deploy.state_dict().items()}, root / "deploy.pth")
    # One class more than the head: the first NUM_CLASSES (sorted) are evaluated, as in training.
    generate(root / "tiny", NUM_CLASSES + 1, 1, PER_CLASS, SIZE, 3)  # train/val per class, seed
    _imagenet_folder(root / "imagenet", NUM_CLASSES, PER_CLASS)
    _imagenet_folder(root / "fewer", NUM_CLASSES - 1, 1)
    return {
        "root": root,
        "pth": root / "xxt.pth",
        "pkl": root / "xxt.pkl",
        "deploy": root / "deploy.pth",
        "tiny": root / "tiny",
        "imagenet": root / "imagenet",
        "fewer": root / "fewer",
    }


def _evaluate(framework: str, checkpoint: Path, data: Path, *extra: str) -> dict:
    argv = ["--checkpoint", str(checkpoint), "--data", str(data), "--img-size", str(SIZE)]
    argv += ["--batch-size", "8", "--workers", "0", *extra]
    return run_evaluation(argv, "", BACKENDS[framework])


@pytest.mark.parametrize("layout", ["imagenet", "tiny"])
def test_twins_agree_on_pth_and_pkl(setup, layout: str) -> None:
    reports = {}
    for framework in BACKENDS:
        for suffix in ("pth", "pkl"):
            out = setup["root"] / f"{layout}_{framework}_{suffix}.json"
            reports[framework, suffix] = _evaluate(
                framework, setup[suffix], setup[layout], "--out", str(out)
            )
            assert json.loads(out.read_text()) == reports[framework, suffix]
    ref = reports["torch", "pth"]
    n = NUM_CLASSES * PER_CLASS
    assert ref["images"] == n and ref["classes"] == NUM_CLASSES and ref["model"] == "overlock_xxt"
    assert ref["crop_pct"] == (0.9 if layout == "imagenet" else None)  # xxt's variant value
    assert 0 < ref["correct_top1"] < ref["correct_top5"] < n  # neither trivial nor hopeless
    for key, report in reports.items():
        assert (report["correct_top1"], report["correct_top5"]) == (
            ref["correct_top1"],
            ref["correct_top5"],
        ), key
        assert abs(report["loss"] - ref["loss"]) <= 1e-4, key
    # The .pkl holds the same bits as the .pth: within one framework nothing differs.
    assert reports["torch", "pkl"]["loss"] == ref["loss"]
    assert reports["jittor", "pkl"]["loss"] == reports["jittor", "pth"]["loss"]


def _by_hand(
    state_path: Path, data: Path, crop_pct: float, classes: int, per_class: int
) -> tuple[int, int, float, int]:
    """(top-1 hits, top-5 hits, mean CE, images) straight from the torch model."""
    model = overlock_torch.overlock_xxt(num_classes=NUM_CLASSES)
    state = load_state_dict(state_path)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.eval()
    images, labels = [], []
    for label, folder in enumerate(sorted((data / "val").iterdir())[:classes]):
        for path in sorted(folder.iterdir())[:per_class]:
            with Image.open(path) as img:
                pixels = eval_transform(img.convert("RGB"), SIZE, crop_pct) / 255.0
            images.append((pixels - IMAGENET_MEAN) / IMAGENET_STD)
            labels.append(label)
    x = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).astype(np.float32))
    y = torch.tensor(labels)
    with torch.no_grad():
        logits = model(x).double()
    top5 = logits.topk(min(5, NUM_CLASSES), dim=1).indices
    hits1 = int((top5[:, 0] == y).sum())
    hits5 = int((top5 == y[:, None]).any(dim=1).sum())
    return hits1, hits5, float(F.cross_entropy(logits, y)), len(labels)


@pytest.mark.parametrize(
    ("crop_pct", "classes", "per_class"), [(None, None, None), (1.0, 3, 1), (0.5, 6, 2)]
)
def test_equals_a_hand_computation(setup, crop_pct, classes, per_class) -> None:
    extra = []
    for flag, value in (("--crop-pct", crop_pct), ("--num-classes", classes)):
        extra += [flag, str(value)] if value is not None else []
    extra += ["--max-per-class", str(per_class)] if per_class else []
    report = _evaluate("torch", setup["pth"], setup["imagenet"], *extra)
    expected_crop = crop_pct or 0.9  # xxt's crop_pct in models/variants.py
    classes, per_class = classes or NUM_CLASSES, per_class or PER_CLASS
    hits1, hits5, loss, n = _by_hand(
        setup["pth"], setup["imagenet"], expected_crop, classes, per_class
    )
    assert report["crop_pct"] == expected_crop and report["images"] == n
    assert (report["correct_top1"], report["correct_top5"]) == (hits1, hits5)
    assert report["loss"] == pytest.approx(loss, abs=1e-5)
    assert report["top1"] == pytest.approx(100 * hits1 / n)


@pytest.mark.parametrize("framework", ["torch", "jittor"])
def test_reparam_gives_the_plain_result(setup, framework: str) -> None:
    plain = _evaluate(framework, setup["pth"], setup["imagenet"])
    merged = _evaluate(framework, setup["pth"], setup["imagenet"], "--reparam")
    assert merged["reparam"] and not plain["reparam"]
    # A file saved after reparam() is recognised as the deploy variant, with or without --model.
    deploy = _evaluate(framework, setup["deploy"], setup["imagenet"], "--model", "xxt")
    assert deploy["model"] == "overlock_xxt_reparam" and deploy["reparam"]
    for report in (merged, deploy):
        assert report["correct_top1"] == plain["correct_top1"]
        assert report["correct_top5"] == plain["correct_top5"]
        assert abs(report["loss"] - plain["loss"]) <= 1e-5


def test_training_checkpoint_reproduces_its_validation(setup, tmp_path: Path) -> None:
    """train_torch.py's checkpoint: variant from model_name; same numbers as its log.csv row."""
    out = tmp_path / "run"
    args = ["--data", str(setup["tiny"]), "--num-classes", str(NUM_CLASSES), "--img-size"]
    args += [str(SIZE), "--batch-size", "8", "--workers", "0", "--epochs", "1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "train_torch.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "log.csv").open(newline="") as handle:
        row = next(csv.DictReader(handle))
    report = _evaluate("torch", out / "checkpoint_latest.pth", setup["tiny"])
    assert report["model"] == "overlock_xxt" and report["images"] == NUM_CLASSES * PER_CLASS
    assert report["top1"] == pytest.approx(float(row["acc_top1"]), abs=1e-6)
    assert report["top5"] == pytest.approx(float(row["acc_top5"]), abs=1e-6)
    assert report["loss"] == pytest.approx(float(row["val_loss"]), abs=1e-5)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("garbage", "not a readable checkpoint"),
        ("extension", "unknown extension"),
        ("variant", "holds overlock_xxt weights, not overlock_t"),
        ("layout", "neither a TinyImageNet folder"),
        ("few classes", f"the data has {NUM_CLASSES - 1} classes but {NUM_CLASSES} are"),
        ("num classes", f"--num-classes 99: the checkpoint's head has {NUM_CLASSES} outputs"),
        ("crop", "--crop-pct must be in (0, 1]"),
        ("tiny crop", "--crop-pct applies to ImageNet-layout data"),
        ("img size", "--img-size 16 is too small"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(setup, tmp_path: Path, capsys, case, message) -> None:
    (tmp_path / "garbage.pth").write_text("not a checkpoint")
    (tmp_path / "empty").mkdir()
    ckpt, data, extra = setup["pth"], setup["imagenet"], []
    if case in ("missing", "garbage"):
        ckpt = tmp_path / f"{case}.pth"
    elif case == "extension":
        ckpt = tmp_path / "weights.bin"
        ckpt.write_bytes(b"x")
    elif case == "variant":
        extra = ["--model", "t"]
    elif case == "layout":
        data = tmp_path / "empty"
    elif case == "few classes":
        data = setup["fewer"]
    else:
        extra = {
            "num classes": ["--num-classes", "99"],
            "crop": ["--crop-pct", "1.5"],
            "tiny crop": ["--crop-pct", "0.9"],
            "img size": ["--img-size", "16"],
        }[case]
        data = setup["tiny"] if case == "tiny crop" else data
    argv = ["--checkpoint", str(ckpt), "--data", str(data), "--workers", "0", *extra]
    assert evaluate_torch.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize("script", ["evaluate.py", "evaluate_torch.py"])
def test_help_and_missing_checkpoint(script: str, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / script), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    for text in ("top-1", "--checkpoint", "--reparam", "--crop-pct", "head output i"):
        assert text in helped.stdout, text
    bad = run("--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "r.json"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.pth" in lines[0]
    assert not (tmp_path / "r.json").exists()
