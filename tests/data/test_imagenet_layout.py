"""Tests of the ImageNet-layout dataset (data/imagenet.py) and the layout dispatch
(data/datasets.py): selection rules, layout detection, one-line errors, and the official
evaluation transform against timm's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from timm.data.transforms_factory import transforms_imagenet_eval

from data import synthetic
from data.augment import Augment
from data.datasets import detect_layout, open_dataset
from data.imagenet import ImageNet, eval_transform
from data.images import DatasetError
from data.loader import BatchLoader
from data.tinyimagenet import TinyImageNet

SIZES = [(40, 30), (30, 44), (37, 37)]  # (w, h): landscape, portrait, square


def write_imagenet(root: Path, classes: list[str], n_train: int, n_val: int) -> Path:
    """train/<class>/ and val/<class>/ of small noise JPEGs in the three SIZES."""
    rs = np.random.RandomState(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for k in range(n):
                w, h = SIZES[k % len(SIZES)]
                pixels = rs.randint(0, 256, (h, w, 3), np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{c}_{k}.JPEG")
    return root


@pytest.fixture(scope="module")
def inet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("inet"), ["n02", "n01", "n10"], 12, 3)


def test_classes_sorted_files_natural_order_and_caps(inet: Path) -> None:
    train = ImageNet(inet, "train", img_size=16)
    assert train.wnids == train.class_names == ["n01", "n02", "n10"] and train.num_classes == 3
    assert len(train) == 36 and train.train
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(3), 12))
    names = [Path(p).name for p in train.paths[:12]]
    assert names == [f"n01_{k}.JPEG" for k in range(12)]  # _2 before _10
    capped = ImageNet(inet, "val", num_classes=2, max_per_class=2, img_size=16)
    assert [Path(p).name for p in capped.paths] == ["n01_0.JPEG", "n01_1.JPEG"] + [
        "n02_0.JPEG",
        "n02_1.JPEG",  # fmt: skip
    ]
    assert not capped.train and capped.labels.tolist() == [0, 0, 1, 1]


def test_detect_layout_and_open_either_dataset(inet: Path, tmp_path: Path) -> None:
    tiny = synthetic.generate(tmp_path / "tiny", classes=2, train_per_class=2, val_per_class=1)
    assert detect_layout(tiny) == "tinyimagenet" and detect_layout(inet) == "imagenet"
    ds = open_dataset(tiny, "train", img_size=32)
    assert isinstance(ds, TinyImageNet) and ds.num_classes == 2 and ds.img_size == 32
    ds = open_dataset(inet, "val", num_classes=2, img_size=16, crop_pct=0.95)
    assert isinstance(ds, ImageNet) and ds.num_classes == 2 and ds.crop_pct == 0.95
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a TinyImageNet folder .* nor an ImageNet"):
        detect_layout(tmp_path / "empty")


def one_line_error(root: Path, **kwargs: object) -> str:
    with pytest.raises(DatasetError) as info:
        ImageNet(root, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_layouts_give_one_line_errors(inet: Path, tmp_path: Path) -> None:
    assert "dataset folder not found" in one_line_error(tmp_path / "missing")
    (tmp_path / "bare").mkdir()
    assert "neither train/ nor val/" in one_line_error(tmp_path / "bare")
    (tmp_path / "flat" / "train").mkdir(parents=True)
    assert "no class folders" in one_line_error(tmp_path / "flat")
    odd = write_imagenet(tmp_path / "odd", ["a", "b"], 1, 1)
    (odd / "val" / "c").mkdir()
    assert "different class folders ('c' only in val/)" in one_line_error(odd)
    (odd / "train" / "c").mkdir()
    assert "no images" in one_line_error(odd, split="val")
    assert "only 3 class folders" in one_line_error(inet, num_classes=4)


def test_eval_transform_sizes_and_timm_equality() -> None:
    rs = np.random.RandomState(1)
    for crop_pct, scale in [(0.875, 256), (0.9, 248), (0.925, 242), (0.95, 235), (0.975, 229)]:
        theirs = transforms_imagenet_eval(
            img_size=224, crop_pct=crop_pct, interpolation="bicubic", use_prefetcher=True
        )
        assert theirs.transforms[0].size == scale  # floor(224 / crop_pct)
        for w, h in [(300, 400), (500, 375), (249, 251)]:
            img = Image.fromarray(rs.randint(0, 256, (h, w, 3), np.uint8))
            ours = eval_transform(img, 224, crop_pct)
            assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
            np.testing.assert_array_equal(ours, np.asarray(theirs(img)).transpose(1, 2, 0))
    # 224 at crop_pct 0.9: a 300 x 400 image is resized to 248 x 330, then centre-cropped.
    img = Image.fromarray(rs.randint(0, 256, (400, 300, 3), np.uint8))
    resized = np.asarray(img.resize((248, 330), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(eval_transform(img, 224, 0.9), resized[53:277, 12:236])


def test_loader_serves_imagenet_plain_and_augmented(inet: Path) -> None:
    val = ImageNet(inet, "val", img_size=16, crop_pct=0.9)
    images, labels = next(iter(BatchLoader(val, 9).batches(0)))
    assert images.shape == (9, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    train = ImageNet(inet, "train", img_size=16)
    augment = Augment(random_resized_crop=True, auto_augment="rand-m9-mstd0.5-inc1", cutmix=1.0)
    images, targets = next(iter(BatchLoader(train, 8, seed=0, augment=augment).batches(0)))
    assert images.shape == (8, 3, 16, 16) and targets.shape == (8, 3)
