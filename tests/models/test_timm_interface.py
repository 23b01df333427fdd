"""The PyTorch twin speaks timm's model interface, for every variant and its reparam form.

timm's own model tests (tests/test_models.py of pytorch-image-models) are the contract; these
check the same things cheaply: attributes and configs of every variant on the meta device, the
methods on XXT (and XT for features_only) at small inputs. FX and TorchScript are here too;
torch.compile is in test_compile.py.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models._features import FeatureGetterNet
from torchvision.models.feature_extraction import create_feature_extractor

from models import overlock_torch as T
from models.variants import ALL_MODEL_NAMES, variant_of

NUM_CLASSES = 7
SIZE = 64  # stage maps 16, 8, 4, 2: the upsample-then-pool ContMix path


def _meta(name: str, **kwargs) -> T.OverLoCK:
    with torch.device("meta"):
        return timm.create_model(name, num_classes=NUM_CLASSES, **kwargs)


@pytest.fixture(scope="module")
def xxt() -> T.OverLoCK:
    torch.manual_seed(0)
    return timm.create_model("overlock_xxt", num_classes=NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ALL_MODEL_NAMES)
def test_every_variant_describes_its_features_and_head(name: str) -> None:
    variant, _ = variant_of(name)
    model = _meta(name)
    dims = variant.embed_dim
    assert model.num_features == dims[3] + dims[3] // 4 and isinstance(model.num_features, int)
    assert model.head_hidden_size == variant.projection == model.head[0].out_channels
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    assert [f["num_chs"] for f in model.feature_info] == [*dims[:3], model.num_features]
    for info in model.feature_info:
        model.get_submodule(info["module"])  # names a real block
    assert model.get_classifier() is model.head[4]
    assert model.get_classifier().out_channels == NUM_CLASSES
    cfg = model.default_cfg
    assert cfg["pool_size"] == (variant.input_size[1] // 32, variant.input_size[2] // 32)
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state
    assert all(c + ".weight" in state for c in cfg["classifier"])


def test_forward_is_forward_features_then_forward_head(xxt, images) -> None:
    with torch.no_grad():
        logits = xxt(images)
        features = xxt.forward_features(images)
        assert features.shape == (2, xxt.num_features, SIZE // 32, SIZE // 32)
        assert torch.equal(xxt.forward_head(features), logits)
        pre = xxt.forward_head(features, pre_logits=True)
    assert pre.shape == (2, xxt.head_hidden_size)
    assert logits.shape == (2, NUM_CLASSES)


def test_training_mode_returns_main_and_aux_logits(images) -> None:
    """The official dict's reads and timm's test_model_backward (a tuple output is
    concatenated, its mean back-propagated, and every parameter must get a gradient)."""
    model = T.overlock_xxt(num_classes=NUM_CLASSES).train()
    out = model(images)
    assert isinstance(out, tuple) and len(out) == 2 and out[0] is out["main"] is out.main
    assert set(out.keys()) == {"main", "aux"} and out["aux"].shape == (2, NUM_CLASSES)
    assert dict(out) == {"main": out[0], "aux": out[1]} and dict(out.items()) == dict(out)
    with pytest.raises(KeyError):
        out["logits"]
    torch.cat(out).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def _hooked_stage_maps(model: T.OverLoCK, x: torch.Tensor) -> list[torch.Tensor]:
    """What forward hooks on feature_info's modules see (Focus-Net blocks return (x, ctx))."""
    caught = []
    handles = [
        model.get_submodule(f["module"]).register_forward_hook(
            lambda m, i, out: caught.append(out[0] if isinstance(out, tuple) else out)
        )
        for f in model.feature_info
    ]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return caught


def test_forward_intermediates_gives_the_stage_maps(xxt, images) -> None:
    with torch.no_grad():
        final, maps = xxt.forward_intermediates(images)
        hooked = _hooked_stage_maps(xxt, images)
        assert torch.equal(final, xxt.forward_features(images))
        for info, fmap, want in zip(xxt.feature_info, maps, hooked, strict=True):
            size = SIZE // info["reduction"]
            assert fmap.shape == (2, info["num_chs"], size, size)
            assert torch.equal(fmap, want)
        last_two = xxt.forward_intermediates(images, indices=2, intermediates_only=True)
        picked = xxt.forward_intermediates(images, indices=[0, -1], intermediates_only=True)
        early_final, early = xxt.forward_intermediates(images, indices=(1,), stop_early=True)
    assert [m.shape for m in last_two] == [m.shape for m in maps[2:]]
    assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], maps[3])
    assert torch.equal(early[0], maps[1]) and torch.equal(early_final, maps[1])
    with pytest.raises(ValueError, match="NCHW"):
        xxt.forward_intermediates(images, output_fmt="NHWC")
    with pytest.raises(ValueError, match="not in"):
        xxt.forward_intermediates(images, indices=[4])


def test_reset_classifier_and_global_pool(images) -> None:
    torch.manual_seed(0)
    model = T.overlock_xxt(num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(images), pre_logits=True)
        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model(images), pre)
        model.reset_classifier(0, "")  # no pooling: the head gives its projected map
        assert model(images).shape == (2, model.head_hidden_size, SIZE // 32, SIZE // 32)
        model.reset_classifier(11, "avg")
        assert model(images).shape == (2, 11) and model.get_classifier().out_channels == 11
        assert model.train()(images)["aux"].shape == (2, 11)
    unpooled = timm.create_model("overlock_xxt", num_classes=0, global_pool="").eval()
    assert unpooled(images).shape == (2, unpooled.head_hidden_size, SIZE // 32, SIZE // 32)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "max")


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 3), (0,), (2,)])
def test_features_only_through_timms_builder(out_indices, images) -> None:
    torch.manual_seed(0)
    full = timm.create_model("overlock_xt").eval()
    features = timm.create_model("overlock_xt", features_only=True, out_indices=out_indices)
    assert isinstance(features, FeatureGetterNet)
    kept = features.model.state_dict()
    assert set(kept) < set(full.state_dict())  # the heads and unused stages are dropped
    assert not any(k.startswith(("head.", "aux_head.")) for k in kept)
    features.model.load_state_dict({k: v for k, v in full.state_dict().items() if k in kept})
    features.eval()
    with torch.no_grad():
        maps = features(images)
        want = full.forward_intermediates(images, indices=out_indices, intermediates_only=True)
    assert features.feature_info.channels() == [
        full.feature_info[i]["num_chs"] for i in out_indices
    ]
    for fmap, reduction, expected in zip(
        maps, features.feature_info.reduction(), want, strict=True
    ):
        assert fmap.shape[2:] == (SIZE // reduction, SIZE // reduction)
        assert torch.equal(fmap, expected)


def test_prune_intermediate_layers_keeps_what_the_maps_need(images) -> None:
    model = T.overlock_xxt(num_classes=NUM_CLASSES).eval()
    assert model.prune_intermediate_layers((0, 1)) == [0, 1]
    assert not any(
        k.startswith(("blocks3", "sub_blocks", "head", "aux_head")) for k in model.state_dict()
    )
    assert model.num_features == model.head_hidden_size == model.feature_info[1]["num_chs"]
    with torch.no_grad():
        assert model(images).shape == (2, model.num_features, SIZE // 8, SIZE // 8)
    with pytest.raises(ValueError, match="pruned"):
        model.forward_intermediates(images, indices=[2])


def test_grad_checkpointing_keeps_outputs(images) -> None:
    torch.manual_seed(0)
    model = T.overlock_xxt(num_classes=NUM_CLASSES).eval()
    want = model(images)
    model.set_grad_checkpointing()
    assert all(b.use_checkpoint for b in model.modules() if hasattr(b, "use_checkpoint"))
    torch.testing.assert_close(model(images), want, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")
@pytest.mark.parametrize("name", ["overlock_xxt", "overlock_xxt_reparam"])
def test_fx_tracing_and_feature_extraction(name: str, images) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        want = model(images)
        assert torch.equal(torch.fx.symbolic_trace(model)(images), want)
        extractor = create_feature_extractor(model, {"blocks2.0": "stage2", "head.4": "logits"})
        out = extractor(images)
    assert torch.equal(out["logits"].flatten(1), want)
    assert out["stage2"].shape == (2, model.feature_info[1]["num_chs"], SIZE // 8, SIZE // 8)
    traced = torch.fx.symbolic_trace(model.train())  # the training graph: both heads
    eager_main, eager_aux = model(images)
    main, aux = traced(images)  # a plain tuple: both logits are graph outputs (timm's fx tests)
    assert main.shape == eager_main.shape and aux.shape == eager_aux.shape
    output = next(node for node in traced.graph.nodes if node.op == "output")
    assert len(output._input_nodes) == 2


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript(xxt, images) -> None:
    scripted = torch.jit.script(xxt)
    with torch.no_grad():
        torch.testing.assert_close(scripted(images), xxt(images), rtol=0, atol=1e-6)
