"""Tests of the framework-free data pipeline (data/): layout, transforms, determinism, workers."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import synthetic
from data.images import CorruptImageError, DatasetError, normalize
from data.loader import BatchLoader, load_batch
from data.streams import epoch_order, flip_flags
from data.tinyimagenet import TinyImageNet

REPO = Path(__file__).resolve().parents[2]
REAL_DATA = REPO.parent / "shared" / "datasets" / "tiny-imagenet-20-32px"
SYN_OPTIONS = dict(classes=4, train_per_class=6, val_per_class=3, size=32, seed=1)


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset: 4 classes x (6 train + 3 val), 32 px."""
    return synthetic.generate(tmp_path_factory.mktemp("syn") / "ds", **SYN_OPTIONS)


@pytest.fixture
def syn_copy(syn: Path, tmp_path: Path) -> Path:
    """A private copy of ``syn`` that a test may damage."""
    return Path(shutil.copytree(syn, tmp_path / "ds"))


def write_layout(root: Path, wnids: list[str], n_train: int, n_val: int) -> Path:
    """A hand-made TinyImageNet layout of solid 8x8 JPEGs; wnids.txt in the given order."""
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for k in range(n_train):
            Image.new("RGB", (8, 8), (k, 0, 0)).save(
                root / "train" / w / "images" / f"{w}_{k}.JPEG"
            )
    rows = []
    for i in range(n_val * len(wnids)):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / "val" / "images" / f"val_{i}.JPEG")
        rows.append(f"val_{i}.JPEG\t{wnids[i % len(wnids)]}\t0\t0\t7\t7\n")
    (root / "val" / "val_annotations.txt").write_text("".join(rows))
    return root


def digest(batches) -> str:
    """sha256 over every image and label byte of a batch sequence."""
    h = hashlib.sha256()
    for images, labels in batches:
        h.update(images.tobytes())
        h.update(labels.tobytes())
    return h.hexdigest()


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.dtype == xb.dtype == np.float32 and ya.dtype == yb.dtype == np.int64
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def assert_no_new_children(before: set) -> None:
    """Every process the loader started has exited (others, e.g. Jittor's, may live on)."""
    leftover = [p for p in mp.active_children() if p not in before]
    assert leftover == [], leftover


# --- layout ---------------------------------------------------------------------------------
def test_layout_of_synthetic_dataset(syn: Path) -> None:
    train = TinyImageNet(syn, "train", num_classes=4, img_size=32)
    assert train.wnids == [f"n{c:08d}" for c in range(4)]
    assert train.class_names[0] == "red solid circle"
    assert len(train) == 24
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(4), 6))
    assert [Path(p).name for p in train.paths[:6]] == [f"n00000000_{k}.JPEG" for k in range(6)]
    val = TinyImageNet(syn, "val", num_classes=4, img_size=32)
    assert len(val) == 12 and np.bincount(val.labels).tolist() == [3, 3, 3, 3]
    ann = dict(
        line.split("\t")[:2]
        for line in (syn / "val/val_annotations.txt").read_text().split("\n")
        if line
    )
    for path, label in zip(val.paths, val.labels, strict=True):
        assert val.wnids[label] == ann[Path(path).name]
    assert train.load(0).shape == (32, 32, 3) and train.load(0).dtype == np.uint8


def test_classes_are_the_first_n_in_sorted_wnid_order(tmp_path: Path) -> None:
    root = write_layout(tmp_path, ["n3", "n1", "n2"], n_train=2, n_val=1)
    ds = TinyImageNet(root, "train", num_classes=2)
    assert ds.wnids == ["n1", "n2"]  # n3 is listed first but sorts last
    assert [Path(p).parent.parent.name for p in ds.paths] == ["n1", "n1", "n2", "n2"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    val = TinyImageNet(root, "val", num_classes=2)
    assert [val.wnids[y] for y in val.labels] == ["n1", "n2"]  # n3's val image is left out


def test_caps_take_the_first_files_in_natural_order(tmp_path: Path) -> None:
    root = write_layout(tmp_path, ["n1", "n2"], n_train=12, n_val=4)
    ds = TinyImageNet(root, "train", num_classes=2, max_per_class=3)
    # natural order: _2 before _10 (plain string order would pick _0, _1, _10)
    assert [Path(p).name for p in ds.paths] == [
        f"{w}_{k}.JPEG" for w in ("n1", "n2") for k in range(3)
    ]
    assert len(TinyImageNet(root, "train", num_classes=2)) == 24  # default cap 500: all
    val = TinyImageNet(root, "val", num_classes=2, max_per_class=2)
    assert [Path(p).name for p in val.paths] == [
        "val_0.JPEG",
        "val_1.JPEG",
        "val_2.JPEG",
        "val_3.JPEG",
    ]
    assert len(TinyImageNet(root, "val", num_classes=2, max_per_class=1)) == 2


def test_grayscale_cmyk_palette_and_alpha_images_become_rgb(tmp_path: Path) -> None:
    root = write_layout(tmp_path, ["n1"], n_train=1, n_val=1)
    folder = root / "train" / "n1" / "images"
    Image.new("L", (8, 8), 100).save(folder / "n1_1.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(folder / "n1_2.JPEG")
    pal = Image.new("P", (8, 8), 3)
    pal.putpalette([0, 0, 0] * 3 + [10, 200, 30] + [0, 0, 0] * 252)
    pal.save(folder / "n1_3.png")
    Image.new("RGBA", (8, 8), (40, 50, 60, 128)).save(folder / "n1_4.png")
    ds = TinyImageNet(root, "train", num_classes=1, img_size=8)
    assert len(ds) == 5
    images = [ds.load(i) for i in range(5)]
    assert all(im.shape == (8, 8, 3) and im.dtype == np.uint8 for im in images)
    np.testing.assert_array_equal(images[1], 100)  # L, lossless PNG
    red = images[2].reshape(-1, 3).mean(0)  # CMYK (0, 255, 255, 0) is red
    assert red[0] > 200 and red[1] < 40 and red[2] < 40
    np.testing.assert_array_equal(images[3], np.broadcast_to([10, 200, 30], (8, 8, 3)))
    np.testing.assert_array_equal(images[4], np.broadcast_to([40, 50, 60], (8, 8, 3)))


def test_normalisation_of_a_hand_checked_pixel(tmp_path: Path) -> None:
    # (255/255 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128/255 - 0.406) / 0.225
    expected = np.array([2.2489083, -2.0357143, 0.42649237], np.float32)
    pixel = np.array([255, 0, 128], np.uint8).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(normalize(pixel).ravel(), expected, rtol=1e-6)
    # Every uint8 value is within 1e-6 of the float64 formula.
    v = np.broadcast_to(np.arange(256, dtype=np.uint8), (1, 3, 1, 256))
    exact = (np.arange(256) / 255.0 - np.array([[0.485], [0.456], [0.406]])) / np.array(
        [[0.229], [0.224], [0.225]]
    )
    np.testing.assert_allclose(normalize(np.ascontiguousarray(v))[0, :, 0], exact, atol=1e-6)
    # End to end through a lossless file, resize 8 -> 16 and the loader.
    root = write_layout(tmp_path, ["n1"], n_train=1, n_val=1)
    Image.new("RGB", (8, 8), (255, 0, 128)).save(root / "val" / "images" / "val_0.JPEG", "PNG")
    (images, labels), *_ = BatchLoader(TinyImageNet(root, "val", 1, img_size=16)).batches(0)
    assert images.shape == (1, 3, 16, 16) and labels.tolist() == [0]
    np.testing.assert_allclose(images[0, :, 7, 9], expected, rtol=1e-6)


# --- determinism ------------------------------------------------------------------------------
def test_flips_are_deterministic_about_half_and_vary_by_epoch() -> None:
    idx = np.arange(10_000)
    f0 = flip_flags(idx, seed=0, epoch=0)
    np.testing.assert_array_equal(f0, flip_flags(idx, seed=0, epoch=0))
    assert 0.47 < f0.mean() < 0.53
    assert 0.45 < (f0 != flip_flags(idx, seed=0, epoch=1)).mean() < 0.55
    assert 0.45 < (f0 != flip_flags(idx, seed=1, epoch=0)).mean() < 0.55
    np.testing.assert_array_equal(flip_flags(idx[123:130], 0, 0), f0[123:130])  # per index


def test_batches_apply_the_flags_as_left_right_flips(syn: Path) -> None:
    ds = TinyImageNet(syn, "train", 4, img_size=32)
    loader = BatchLoader(ds, 24, seed=5)
    ((images, labels),) = loader.batches(epoch=2)
    indices, flips = loader.batch_plan(2, 0)
    assert 0 < flips.sum() < len(flips)
    np.testing.assert_array_equal(labels, ds.labels[indices])
    for row, (i, flip) in enumerate(zip(indices, flips, strict=True)):
        raw = ds.load(int(i))
        want = raw[:, ::-1] if flip else raw
        np.testing.assert_array_equal(
            images[row], normalize(want.transpose(2, 0, 1)[None].copy())[0]
        )


def test_identical_batches_in_a_separate_process(syn: Path) -> None:
    script = (
        "import hashlib, sys\n"
        "from data import BatchLoader, TinyImageNet\n"
        f"ds = TinyImageNet({str(syn)!r}, 'train', 4, img_size=32)\n"
        "h = hashlib.sha256()\n"
        "for images, labels in BatchLoader(ds, 5, seed=7).batches(epoch=3):\n"
        "    h.update(images.tobytes())\n"
        "    h.update(labels.tobytes())\n"
        "print(h.hexdigest())\n"
        "print(sorted({'torch', 'jittor'} & set(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    ds = TinyImageNet(syn, "train", 4, img_size=32)
    assert out[0] == digest(BatchLoader(ds, 5, seed=7).batches(epoch=3))
    assert out[0] != digest(BatchLoader(ds, 5, seed=8).batches(epoch=3))
    assert out[1] == "[]", "data/ must not import torch or jittor"


def test_resume_at_epoch_and_batch_gives_the_same_batches(syn: Path) -> None:
    ds = TinyImageNet(syn, "train", 4, img_size=32)
    full = BatchLoader(ds, 5, seed=3)
    for epoch in range(2):  # earlier epochs leave no state behind
        list(full.batches(epoch))
    epoch2 = list(full.batches(2))
    assert len(epoch2) == len(full) == 5  # 24 images: 4 x 5 + a last batch of 4
    assert epoch2[-1][0].shape[0] == 4
    resumed = BatchLoader(ds, 5, seed=3)  # a fresh "process" resuming at epoch 2, batch 3
    assert_same_batches(list(resumed.batches(2, start_batch=3)), epoch2[3:])
    assert_same_batches(list(resumed.batches(2)), epoch2)
    assert list(resumed.batches(2, start_batch=5)) == []
    assert len(BatchLoader(ds, 5, drop_last=True)) == 4


def test_epochs_have_different_orders(syn: Path) -> None:
    o0, o1 = epoch_order(1000, 0, 0), epoch_order(1000, 0, 1)
    np.testing.assert_array_equal(np.sort(o0), np.arange(1000))
    np.testing.assert_array_equal(np.sort(o1), np.arange(1000))
    assert (o0 != o1).mean() > 0.9
    np.testing.assert_array_equal(o0, epoch_order(1000, 0, 0))
    loader = BatchLoader(TinyImageNet(syn, "train", 4, img_size=32), 24, seed=0)
    ((_, y0),) = loader.batches(0)
    ((_, y1),) = loader.batches(1)
    assert sorted(y0) == sorted(y1) and not np.array_equal(y0, y1)


def test_val_is_in_fixed_order_without_flips(syn: Path) -> None:
    val = TinyImageNet(syn, "val", 4, img_size=32)
    loader = BatchLoader(val, 5, seed=0)
    assert not loader.train and len(loader) == 3
    batches = list(loader.batches(0))
    assert_same_batches(batches, list(loader.batches(9)))
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), val.labels)
    first = normalize(val.load(0).transpose(2, 0, 1)[None].copy())[0]
    np.testing.assert_array_equal(batches[0][0][0], first)


def test_workers_and_cache_give_the_same_batches(syn: Path) -> None:
    children_before = set(mp.active_children())  # Jittor keeps a compile pool
    ds = TinyImageNet(syn, "train", 4, img_size=32)
    want = [list(BatchLoader(ds, 5, seed=2).batches(e)) for e in (0, 1)]
    with BatchLoader(ds, 5, seed=2, num_workers=2, prefetch=3) as loader:
        for e in (0, 1):
            assert_same_batches(list(loader.batches(e)), want[e])
        assert_same_batches(list(loader.batches(1, start_batch=2)), want[1][2:])
        it = loader.batches(0)  # abandoned mid-epoch: later epochs are unaffected
        next(it)
        del it
        assert_same_batches(list(loader.batches(1)), want[1])
    for fill_workers in (0, 2):
        with BatchLoader(ds, 5, seed=2, cache=True, num_workers=fill_workers) as cached:
            assert cached.cached
            assert_same_batches(list(cached.batches(1)), want[1])
    assert_no_new_children(children_before)


def test_shards_partition_each_global_batch(syn: Path) -> None:
    ds = TinyImageNet(syn, "train", 4, img_size=32)
    world = 3
    full = BatchLoader(ds, 10, seed=4)
    shards = [BatchLoader(ds, 10, seed=4, rank=r, world_size=world) for r in range(world)]
    assert {len(s) for s in shards} == {len(full)} == {3}
    for b in range(len(full)):
        indices, flips = full.batch_plan(1, b)
        parts = [s.batch_plan(1, b) for s in shards]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), indices)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), flips)
        assert max(len(p[0]) for p in parts) - min(len(p[0]) for p in parts) <= 1
    global_batches = list(full.batches(1))
    shard_batches = [list(s.batches(1)) for s in shards]
    for b, (images, labels) in enumerate(global_batches):
        np.testing.assert_array_equal(np.concatenate([sb[b][0] for sb in shard_batches]), images)
        np.testing.assert_array_equal(np.concatenate([sb[b][1] for sb in shard_batches]), labels)
    with pytest.raises(ValueError):
        BatchLoader(ds, 10, rank=3, world_size=3)


# --- damaged data -----------------------------------------------------------------------------
def test_corrupt_images_are_substituted_reported_and_strict_raises(syn_copy: Path) -> None:
    children_before = set(mp.active_children())  # Jittor keeps a compile pool
    folder = syn_copy / "train" / "n00000001" / "images"
    truncated, garbage = folder / "n00000001_2.JPEG", folder / "n00000001_4.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    garbage.write_bytes(b"not a jpeg at all")
    ds = TinyImageNet(syn_copy, "train", 4, img_size=32)
    bad = sorted([str(truncated), str(garbage)])
    for workers in (0, 2):
        with BatchLoader(ds, 24, seed=0, num_workers=workers) as loader:
            with pytest.warns(RuntimeWarning, match="n00000001_[24].JPEG"):
                ((images, labels),) = loader.batches(0)
            assert sorted(loader.corrupt_files) == bad
            rows = [k for k, i in enumerate(loader.batch_plan(0, 0)[0]) if ds.paths[i] in bad]
            assert np.abs(images[rows]).max() < 0.02  # the mean-colour stand-in
            assert images.shape == (24, 3, 32, 32) and np.abs(np.delete(images, rows, 0)).max() > 1
        strict = BatchLoader(ds, 24, seed=0, num_workers=workers, strict=True)
        with strict, pytest.raises(CorruptImageError, match="n00000001_[24].JPEG"):
            list(strict.batches(0))
    with pytest.raises(CorruptImageError, match="n00000001_2.JPEG"):
        load_batch(ds, np.array([ds.paths.index(str(truncated))]), np.array([False]), strict=True)
    assert_no_new_children(children_before)


@pytest.mark.parametrize(
    ("damage", "split", "message"),
    [
        (lambda r: (r / "wnids.txt").unlink(), "train", r"wnids.txt not found: .*ds/wnids.txt"),
        (
            lambda r: (r / "val/val_annotations.txt").unlink(),
            "val",
            r"val_annotations.txt not found: .*ds/val/val_annotations.txt",
        ),
        (
            lambda r: shutil.rmtree(r / "train/n00000002"),
            "train",
            r"training folder not found: .*n00000002/images",
        ),
        (lambda r: (r / "val/images/val_3.JPEG").unlink(), "val", r"not found: .*val_3.JPEG"),
        (lambda r: shutil.rmtree(r), "train", r"dataset folder not found: .*ds"),
    ],
)
def test_bad_layout_gives_a_clear_one_line_error(
    syn_copy: Path, damage, split: str, message: str
) -> None:
    damage(syn_copy)
    with pytest.raises(DatasetError, match=message) as info:
        TinyImageNet(syn_copy, split, 4)
    assert "\n" not in str(info.value)


def test_too_few_classes_says_how_many_were_found(syn: Path) -> None:
    with pytest.raises(DatasetError, match=r"asked for 20 classes but .*wnids.txt lists only 4"):
        TinyImageNet(syn, "train", num_classes=20)


# --- workers stop cleanly -------------------------------------------------------------------
def test_exception_in_the_training_loop_stops_the_workers(syn: Path) -> None:
    children_before = set(mp.active_children())  # Jittor keeps a compile pool
    ds = TinyImageNet(syn, "train", 4, img_size=32)
    with pytest.raises(KeyboardInterrupt), BatchLoader(ds, 2, num_workers=2) as loader:
        for _ in loader.batches(0):
            raise KeyboardInterrupt
    assert_no_new_children(children_before)


def test_ctrl_c_stops_the_process_and_its_workers(syn: Path) -> None:
    script = (
        "import time\n"
        "from data import BatchLoader, TinyImageNet\n"
        f"ds = TinyImageNet({str(syn)!r}, 'train', 4, img_size=32)\n"
        "with BatchLoader(ds, 2, num_workers=2) as loader:\n"
        "    for epoch in range(10**6):\n"
        "        for i, _ in enumerate(loader.batches(epoch)):\n"
        "            if epoch == 0 and i == 0:\n"
        "                print('ready', flush=True)\n"
        "            time.sleep(0.01)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even if we ignore it
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole group gets SIGINT
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert err.count("Traceback") == 1, err  # the main process's only: workers ignore SIGINT
    assert "BrokenProcessPool" not in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # no process of the group may outlive the main one
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("worker processes outlived the interrupted main process")


# --- synthetic generator ----------------------------------------------------------------------
def expected_files(classes: int, n_train: int, n_val: int) -> set[str]:
    names = {"wnids.txt", "words.txt", "synthetic.json", "val/val_annotations.txt"}
    for c in range(classes):
        w = f"n{c:08d}"
        names.add(f"train/{w}/{w}_boxes.txt")
        names |= {f"train/{w}/images/{w}_{k}.JPEG" for k in range(n_train)}
    return names | {f"val/images/val_{i}.JPEG" for i in range(classes * n_val)}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_synthetic_generator_is_deterministic_in_the_exact_layout(
    syn: Path, tmp_path: Path
) -> None:
    again = tree(synthetic.generate(tmp_path / "again", **SYN_OPTIONS))
    assert again == tree(syn)
    assert set(again) == expected_files(4, 6, 3)
    assert tree(synthetic.generate(tmp_path / "other", **{**SYN_OPTIONS, "seed": 2})) != again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]  # no temp leftovers
    with Image.open(syn / "train/n00000003/images/n00000003_5.JPEG") as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (32, 32))
    boxes = (syn / "train/n00000000/n00000000_boxes.txt").read_text().splitlines()
    assert len(boxes) == 6 and boxes[0].split("\t")[0] == "n00000000_0.JPEG"
    x0, y0, x1, y1 = map(int, boxes[0].split("\t")[1:])
    assert 0 <= x0 < x1 < 32 and 0 <= y0 < y1 < 32
    ann = [line.split("\t") for line in (syn / "val/val_annotations.txt").read_text().splitlines()]
    assert len(ann) == 12 and all(len(row) == 6 for row in ann)
    assert [row[1] for row in ann] != sorted(row[1] for row in ann)  # classes interleaved
    ds = TinyImageNet(syn, "train", 4, img_size=32)
    assert len(ds) == 24 and ds.load(23).shape == (32, 32, 3)
    with pytest.raises(FileExistsError):
        synthetic.generate(syn, **SYN_OPTIONS)


def test_interrupted_generation_leaves_no_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_draw = synthetic.draw_image

    def draw_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real_draw(*args, **kwargs)

    monkeypatch.setattr(synthetic, "draw_image", draw_then_fail)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "ds", **SYN_OPTIONS)
    assert list(tmp_path.iterdir()) == []


def test_default_dataset_is_generated_once_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert synthetic.default_dataset_dir() == REPO / "data" / "generated" / "tiny-synthetic-20"
    target = tmp_path / "generated" / "tiny-synthetic-20"
    monkeypatch.setattr(synthetic, "default_dataset_dir", lambda: target)
    monkeypatch.setattr(synthetic, "DEFAULTS", {**SYN_OPTIONS, "classes": 2})
    assert synthetic.ensure_default_dataset() == target
    assert "generating the default synthetic dataset" in capsys.readouterr().err
    stamp = (target / "wnids.txt").stat().st_mtime_ns
    assert synthetic.ensure_default_dataset() == target
    assert capsys.readouterr().err == "" and (target / "wnids.txt").stat().st_mtime_ns == stamp
    monkeypatch.setattr(synthetic, "DEFAULTS", {**SYN_OPTIONS, "classes": 3})  # stale: regenerate
    synthetic.ensure_default_dataset()
    assert len(TinyImageNet(target, "train", 3)) == 18


def test_cli_help_and_generation(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "data.synthetic"]
    helped = subprocess.run([*run, "--help"], cwd=REPO, env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stderr == ""
    for option in (
        "--out",
        "--classes",
        "--train-per-class",
        "--val-per-class",
        "--size",
        "--seed",
    ):
        assert option in helped.stdout
    args = ["--out", str(tmp_path / "cli"), "--classes", "4", "--train-per-class", "6"]
    args += ["--val-per-class", "3", "--size", "32", "--seed", "1"]
    made = subprocess.run([*run, *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert tree(tmp_path / "cli") == tree(synthetic.generate(tmp_path / "api", **SYN_OPTIONS))
    again = subprocess.run([*run, *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr


# --- the real data ----------------------------------------------------------------------------
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data not present at {REAL_DATA}")
def test_real_tinyimagenet_20() -> None:
    train = TinyImageNet(REAL_DATA, "train", num_classes=20, img_size=64)
    val = TinyImageNet(REAL_DATA, "val", num_classes=20, img_size=64)
    assert train.wnids == sorted((REAL_DATA / "wnids.txt").read_text().split())
    assert len(train) == 10_000 and np.bincount(train.labels).tolist() == [500] * 20
    assert len(val) == 1_000 and np.bincount(val.labels).tolist() == [50] * 20
    with Image.open(train.paths[0]) as img:
        assert img.size == (32, 32)
    loader = BatchLoader(train, 64, seed=0)
    assert len(loader) == 157
    images, labels = next(loader.batches(0))
    assert images.shape == (64, 3, 64, 64) and images.dtype == np.float32
    assert labels.dtype == np.int64 and len(set(labels.tolist())) > 10
    assert -2.2 < images.mean() < 2.7 and images.std() > 0.3
