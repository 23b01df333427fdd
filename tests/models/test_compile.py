"""torch.compile: the whole model is one graph (``fullgraph=True``: no graph break, the na2d op
included) and the batch size may change between calls (default arguments: after the first
change the batch dimension is dynamic); the results equal eager mode's.

Inductor, torch.compile's default backend, spends minutes generating C++ on a small CPU, so the
graph-capture checks use the ``aot_eager`` backend (TorchDynamo and AOTAutograd, dynamic
shapes, no code generation) and one slow test runs inductor on a tiny configuration with a
dynamic batch, the case that used to fail.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend

from models import overlock_torch as T

SIZE = 32  # stage maps 8, 4, 2, 1: every ContMix window is upsampled (the shape-dependent path)
NUM_CLASSES = 5
# A tiny OverLoCK (every kind of block, small widths) for inductor's code generation.
TINY = dict(
    depth=[1, 1, 1, 1], sub_depth=[1, 1], embed_dim=[8, 16, 32, 32], kernel_size=[7, 5, 5, 5],
    mlp_ratio=[1, 1, 1, 1], sub_num_heads=[1, 1], sub_mlp_ratio=[1, 1], projection=16,
)  # fmt: skip

pytestmark = pytest.mark.slow


def _images(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # compiled code of one test must not serve another
    yield
    torch._dynamo.reset()


def test_eval_is_one_graph_for_every_batch_size() -> None:
    torch.manual_seed(0)
    model = T.overlock_xxt(num_classes=NUM_CLASSES).eval()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    with torch.no_grad():
        for seed, batch in enumerate((2, 3, 6)):
            x = _images(batch, seed)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 2  # batch 2, then one graph with a dynamic batch


def _loss_and_grads(model: T.OverLoCK, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    loss = F.cross_entropy(out["main"], y) + 0.4 * F.cross_entropy(out["aux"], y)
    loss.backward()
    return [loss.detach()] + [p.grad for p in model.parameters()]


def test_training_compiles_whole_with_a_changing_batch() -> None:
    torch.manual_seed(0)
    model = T.overlock_xxt(num_classes=NUM_CLASSES).train()
    eager = T.overlock_xxt(num_classes=NUM_CLASSES).train()
    eager.load_state_dict(model.state_dict())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for seed, batch in enumerate((4, 3)):
        x, y = _images(batch, seed), torch.arange(batch) % NUM_CLASSES
        got, want = _loss_and_grads(compiled, x, y), _loss_and_grads(eager, x, y)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=0)  # the loss
        # AOTAutograd's backward sums in another order: errors relative to each gradient's
        # scale, floored as in the Jittor-PyTorch gradient parity (tests/models/test_models.py;
        # a conv bias before a train-mode BatchNorm has a zero gradient plus rounding noise).
        floor = 1e-3 * max(float(w.abs().max()) for w in want[1:])
        for g, w in zip(got[1:], want[1:], strict=True):
            assert (g - w).abs().max() <= 1e-3 * max(float(w.abs().max()), floor)
    # BatchNorm's running statistics were updated as in eager mode.
    for (name, b), w in zip(model.named_buffers(), eager.buffers(), strict=True):
        torch.testing.assert_close(b, w, rtol=1e-5, atol=1e-6, msg=name)


def test_inductor_with_a_dynamic_batch() -> None:
    """Inductor's generated code with a symbolic batch: the default torch.compile after the
    batch size changed (marked dynamic at once here, to compile one graph, not two)."""
    torch.manual_seed(0)
    model = T.OverLoCK(**TINY, num_classes=NUM_CLASSES).eval()
    compiled = torch.compile(model)
    first = _images(4, 0)
    torch._dynamo.mark_dynamic(first, 0)
    with torch.no_grad():
        for x in (first, _images(7, 1), _images(2, 2)):
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
