"""Each variant is defined once, in models/variants.py, and both twins are built from that table;
the twins define the same classes, in the same order, with the same parameter and buffer names.

Cheap: torch models are built on the meta device, Jittor's are lazy (nothing is computed).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from models import overlock_common
from models import overlock_jittor as J
from models import overlock_torch as T
from models.variants import ALL_MODEL_NAMES, VARIANTS, variant_of

MODELS = Path(__file__).resolve().parents[2] / "models"
TWINS = (T, J)
NUM_CLASSES = 3


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _build_torch(factory, **kwargs):
    with torch.device("meta"):
        return factory(num_classes=NUM_CLASSES, **kwargs)


@pytest.mark.parametrize("name", ALL_MODEL_NAMES)
def test_every_table_entry_builds_the_same_network_in_both_twins(name: str) -> None:
    torch_model = _build_torch(getattr(T, name))
    jittor_model = getattr(J, name)(num_classes=NUM_CLASSES)
    torch_shapes, jittor_shapes = _shapes(torch_model), _shapes(jittor_model)
    assert list(torch_shapes) == list(jittor_shapes)  # same names, same order
    for key, shape in torch_shapes.items():
        # Jittor has no 0-d Vars: torch's scalar num_batches_tracked is shape (1,) there.
        assert jittor_shapes[key] == (shape or (1,)), key
    assert torch_model.head[-1].out_channels == NUM_CLASSES


@pytest.mark.parametrize("name", ALL_MODEL_NAMES)
def test_the_network_follows_its_table_entry(name: str) -> None:
    variant, deploy = variant_of(name)
    for model in (_build_torch(getattr(T, name)), getattr(J, name)(num_classes=NUM_CLASSES)):
        assert [len(model.blocks1), len(model.blocks2), len(model.blocks3), len(model.blocks4)] == (
            list(variant.depth)
        )
        assert [len(model.sub_blocks3), len(model.sub_blocks4)] == list(variant.sub_depth)
        assert list(model.embed_dim) == list(variant.embed_dim)
        assert model.head[0].out_channels == variant.projection
        assert model.blocks1[0].proj[1].lk_origin.kernel_size[0] == variant.kernel_size[0]
        assert model.sub_blocks4[0].num_heads == 2 * variant.sub_num_heads[1]
        assert hasattr(model.blocks1[0].proj[1], "origin_bn") != deploy
        assert model.default_cfg["crop_pct"] == variant.crop_pct
        assert model.default_cfg["input_size"] == variant.input_size
        assert model.pretrained_cfg is model.default_cfg


@pytest.mark.parametrize("name", list(VARIANTS))
def test_reparam_gives_the_deploy_form(name: str) -> None:
    model = _build_torch(getattr(T, f"overlock_{name}"))
    with torch.device("meta"):
        model.reparam()
    assert _shapes(model) == _shapes(_build_torch(getattr(T, f"overlock_{name}_reparam")))


def test_factories_are_generated_from_the_table_with_one_signature() -> None:
    for twin in TWINS:
        defined = {name for name in dir(twin) if name.startswith("overlock_")}
        assert defined == set(ALL_MODEL_NAMES), twin.__name__
        for name in ALL_MODEL_NAMES:
            factory = getattr(twin, name)
            assert factory.__name__ == name and factory.__module__ == twin.__name__
            params = inspect.signature(factory).parameters
            assert list(params) == ["pretrained", "num_classes", "kwargs"]
            assert params["pretrained"].default is False and params["num_classes"].default == 1000
            assert inspect.signature(factory).return_annotation is twin.OverLoCK
            assert name in twin.__all__


def test_timm_registers_every_model_with_its_config() -> None:
    assert timm.list_models("overlock*") == sorted(ALL_MODEL_NAMES)
    for name in ALL_MODEL_NAMES:
        variant, _ = variant_of(name)
        cfg = timm.get_pretrained_cfg(name)
        assert (cfg.crop_pct, cfg.input_size) == (variant.crop_pct, variant.input_size)
    with torch.device("meta"):
        model = timm.create_model("overlock_xt", num_classes=10)
    assert isinstance(model, T.OverLoCK) and model.head[-1].out_channels == 10
    assert model.default_cfg["crop_pct"] == VARIANTS["xt"].crop_pct


def test_normalisation_constants_are_timms() -> None:
    assert tuple(IMAGENET_DEFAULT_MEAN) == overlock_common.IMAGENET_MEAN
    assert tuple(IMAGENET_DEFAULT_STD) == overlock_common.IMAGENET_STD


def test_a_new_variant_is_one_table_entry() -> None:
    """A new entry gets both factories in both twins, with its architecture and config."""
    tiny = dataclasses.replace(
        VARIANTS["xxt"], name="tiny", depth=(1, 1, 1, 1), sub_depth=(2, 1), crop_pct=0.8
    )
    for twin in TWINS:
        factories = overlock_common.model_factories(twin.OverLoCK, twin.__name__, variants=[tiny])
        assert set(factories) == {"overlock_tiny", "overlock_tiny_reparam"}
        if twin is T:
            model = _build_torch(factories["overlock_tiny"])
            deploy = _build_torch(factories["overlock_tiny_reparam"])
        else:
            model = factories["overlock_tiny"](num_classes=NUM_CLASSES)
            deploy = factories["overlock_tiny_reparam"](num_classes=NUM_CLASSES)
        assert len(model.blocks3) == 1 and len(model.sub_blocks3) == 2
        assert model.default_cfg["crop_pct"] == 0.8
        assert hasattr(model.blocks1[0].proj[1], "origin_bn")
        assert not hasattr(deploy.blocks1[0].proj[1], "origin_bn")


def _classes(path: Path) -> list[tuple[str, list[str]]]:
    """(class name, method names in order) of every top-level class; Jittor's ``execute`` is
    torch's ``forward``."""
    tree = ast.parse(path.read_text())
    return [
        (
            node.name,
            [
                "forward" if item.name == "execute" else item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef)
            ],
        )
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    ]


def _public_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    ]


def test_twins_define_the_same_classes_and_methods_in_the_same_order() -> None:
    torch_classes = _classes(MODELS / "overlock_torch.py")
    jittor_classes = _classes(MODELS / "overlock_jittor.py")
    assert [name for name, _ in torch_classes] == [name for name, _ in jittor_classes]
    assert torch_classes == jittor_classes
    assert "OverLoCK" in dict(torch_classes)
    assert _public_functions(MODELS / "overlock_torch.py") == _public_functions(
        MODELS / "overlock_jittor.py"
    )
