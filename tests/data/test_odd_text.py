"""Damaged text and data as a user meets them: non-UTF-8 bytes in the dataset's text files,
val annotations of unknown wnids, undecodable images; each reported as one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from data import DatasetError, DataWarning, open_dataset, synthetic
from data.loader import BatchLoader
from data.tinyimagenet import TinyImageNet

REPO = Path(__file__).resolve().parents[2]
LATIN1_E = b"\xe9"  # "é" in latin-1: never valid UTF-8 on its own


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes x (2 train + 2 val) of 32 px: one batch of 8 per split."""
    root = tmp_path_factory.mktemp("clean") / "ds"
    return synthetic.generate(root, classes=4, train_per_class=2, val_per_class=2, size=32, seed=7)


@pytest.fixture
def ds(clean: Path, tmp_path: Path) -> Path:
    """A private copy of ``clean`` that a test may damage."""
    return Path(shutil.copytree(clean, tmp_path / "ds"))


def latin1_wnids(root: Path) -> None:
    """wnids.txt with a blank line 2 and one latin-1 byte in line 3 (after 8 characters)."""
    lines = (root / "wnids.txt").read_bytes().splitlines()
    lines.insert(1, b"")
    lines[2] = lines[2][:8] + LATIN1_E + lines[2][8:]
    (root / "wnids.txt").write_bytes(b"\n".join(lines) + b"\n")


def latin1_annotations(root: Path) -> None:
    """val_annotations.txt whose line 2 names a file with a latin-1 byte."""
    ann = root / "val" / "val_annotations.txt"
    lines = ann.read_bytes().splitlines(keepends=True)
    lines[1] = b"caf" + LATIN1_E + b"_" + lines[1]
    ann.write_bytes(b"".join(lines))


def add_unlisted_annotations(root: Path) -> None:
    """Three annotations of two wnids that wnids.txt does not list (images that exist)."""
    with (root / "val" / "val_annotations.txt").open("a", encoding="utf-8") as ann:
        ann.write("val_0.JPEG\tn09999999\t0\t0\t9\t9\nval_1.JPEG\tn09999999\t0\t0\t9\t9\n")
        ann.write("val_2.JPEG\tn08888888\t0\t0\t9\t9\n")


def one_line(warning: warnings.WarningMessage) -> str:
    """The warning as Python shows it on stderr."""
    return warnings.formatwarning(
        warning.message, warning.category, warning.filename, warning.lineno, warning.line
    )


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )


def train_args(root: Path, out: Path) -> list[str]:
    return [
        "--data", str(root), "--num-classes", "4", "--img-size", "32", "--batch-size", "8",
        "--epochs", "1", "--max-batches", "1", "--workers", "0", "--out", str(out),
    ]  # fmt: skip


# --- data API ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("damage", "split", "where"),
    [
        (latin1_wnids, "train", r"ds/wnids.txt:3: not UTF-8 text \(byte 0xe9 at column 9\)"),
        (latin1_wnids, "val", r"ds/wnids.txt:3: not UTF-8 text \(byte 0xe9 at column 9\)"),
        (latin1_annotations, "val", r"val_annotations.txt:2: not UTF-8 text \(byte 0xe9 at col"),
    ],
)
def test_an_undecodable_byte_in_a_naming_file_is_one_line_naming_the_line(
    ds: Path, damage, split: str, where: str
) -> None:
    damage(ds)
    for num_classes in (4, None):  # None: open_dataset counts the wnids first
        with pytest.raises(DatasetError, match=where + r".*save the file as UTF-8") as info:
            open_dataset(ds, split, num_classes, img_size=32)
        assert "\n" not in str(info.value)


def test_words_txt_is_for_display_so_an_undecodable_byte_is_replaced(ds: Path, clean: Path) -> None:
    words = ds / "words.txt"
    words.write_bytes(words.read_bytes().replace(b"red solid circle", b"caf" + LATIN1_E + b" red"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing to warn about
        train = TinyImageNet(ds, "train", 4, img_size=32)
    assert train.class_names[0] == "caf\ufffd red"
    assert train.class_names[1:] == TinyImageNet(clean, "train", 4).class_names[1:]
    assert train.class_names[1] == "red solid square"


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_wnid(ds: Path, clean: Path) -> None:
    for name in ("wnids.txt", "words.txt", "val/val_annotations.txt"):
        (ds / name).write_bytes(b"\xef\xbb\xbf" + (ds / name).read_bytes())
    for split in ("train", "val"):
        damaged, plain = TinyImageNet(ds, split, 4), TinyImageNet(clean, split, 4)
        assert damaged.wnids == plain.wnids and damaged.class_names == plain.class_names
        assert [Path(p).name for p in damaged.paths] == [Path(p).name for p in plain.paths]
        np.testing.assert_array_equal(damaged.labels, plain.labels)


def test_annotations_of_unlisted_wnids_are_skipped_with_one_line(ds: Path, clean: Path) -> None:
    add_unlisted_annotations(ds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        val = TinyImageNet(ds, "val", 4, img_size=32)
    assert [w.category for w in caught] == [DataWarning]
    assert one_line(caught[0]) == (
        f"warning: {ds / 'val/val_annotations.txt'}: skipping 3 annotations of 2 wnids that "
        f"{ds / 'wnids.txt'} does not list (n08888888, n09999999)\n"
    )
    assert val.paths == [
        p.replace(str(clean), str(ds)) for p in TinyImageNet(clean, "val", 4).paths
    ]


def test_annotations_of_listed_but_unchosen_classes_are_skipped_silently(ds: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TinyImageNet-20 of the 200-class val/ must not warn
        val = TinyImageNet(ds, "val", 2, img_size=32)
    assert set(val.labels.tolist()) == {0, 1} and len(val) == 4


def test_an_undecodable_image_warns_in_one_line_naming_the_flag(ds: Path) -> None:
    val = TinyImageNet(ds, "val", 4, img_size=32)
    Path(val.paths[0]).write_bytes(b"not a jpeg")
    with warnings.catch_warnings(record=True) as caught, BatchLoader(val, 8) as loader:
        warnings.simplefilter("always")
        list(loader.batches(0))
    assert [w.category for w in caught] == [DataWarning]
    assert one_line(caught[0]) == (
        f"warning: undecodable image {val.paths[0]} replaced by a mean-colour image "
        "(--strict-data stops instead)\n"
    )
    assert issubclass(DataWarning, RuntimeWarning)  # filters on RuntimeWarning still apply
    other = warnings.formatwarning("plain", UserWarning, "x.py", 3, "")
    assert other == "x.py:3: UserWarning: plain\n"  # Python's own format for everything else


def test_a_damaged_default_dataset_manifest_is_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "generated" / "tiny-synthetic-20"
    monkeypatch.setattr(synthetic, "default_dataset_dir", lambda: target)
    small = {"classes": 2, "size": 16, "train_per_class": 2, "val_per_class": 1}
    monkeypatch.setattr(synthetic, "DEFAULTS", {**synthetic.DEFAULTS, **small})
    synthetic.ensure_default_dataset()
    for damaged in (b'{"format_version": "caf\xe9"}', b"{not json", None):
        if damaged is None:  # a folder where the manifest should be
            (target / "synthetic.json").unlink()
            (target / "synthetic.json").mkdir()
        else:
            (target / "synthetic.json").write_bytes(damaged)
        capsys.readouterr()
        assert synthetic.ensure_default_dataset() == target
        assert "generating the default synthetic dataset" in capsys.readouterr().err
        assert len(TinyImageNet(target, "train", 2)) == 4


# --- the training scripts, as a user runs them --------------------------------------------------
@pytest.mark.parametrize("script", ["train_torch.py", "train.py"])
@pytest.mark.parametrize("damage", [latin1_wnids, latin1_annotations])
def test_training_on_non_utf8_names_exits_2_with_one_line(
    ds: Path, tmp_path: Path, script: str, damage
) -> None:
    damage(ds)
    out = tmp_path / "run"
    proc = run_script(script, *train_args(ds, out))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    where = "wnids.txt:3" if damage is latin1_wnids else "val_annotations.txt:2"
    assert f"{where}: not UTF-8 text (byte 0xe9" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists() or not any(out.iterdir())  # nothing written, not even in part


def test_training_reports_odd_but_usable_data_in_one_line_each(ds: Path, tmp_path: Path) -> None:
    words = ds / "words.txt"
    words.write_bytes(words.read_bytes().replace(b"red solid circle", b"caf" + LATIN1_E))
    add_unlisted_annotations(ds)
    with pytest.warns(DataWarning):
        first_val = Path(TinyImageNet(ds, "val", 4, img_size=32).paths[0])  # in --max-batches 1
    first_val.write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    proc = run_script("train_torch.py", *train_args(ds, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "checkpoint_latest.pth").is_file() and (out / "log.csv").is_file()
    stderr_lines = proc.stderr.replace("\r", "\n").splitlines()
    warned = [line for line in stderr_lines if line.startswith("warning: ")]
    assert warned == [
        f"warning: {ds / 'val/val_annotations.txt'}: skipping 3 annotations of 2 wnids that "
        f"{ds / 'wnids.txt'} does not list (n08888888, n09999999)",
        f"warning: undecodable image {first_val} replaced by a mean-colour image "
        "(--strict-data stops instead)",
    ]
    assert "Warning:" not in proc.stderr and "warnings.warn" not in proc.stderr
    assert "strict=True" not in proc.stderr + proc.stdout
