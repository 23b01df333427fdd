"""tools/profile_jittor.py: kernels are grouped by what they compute, and a tiny profile runs."""

from __future__ import annotations

import pytest

from tools import profile_jittor


def test_every_kernel_module_has_named_sources_none_inside_another() -> None:
    sources = profile_jittor.kernel_sources()
    modules = {group.split()[0] for group, _ in sources}
    assert modules == {m.removesuffix("_jittor") for m in profile_jittor.KERNEL_MODULES}
    for group, source in sources:
        inside = [g for g, other in sources if g != group and source in other]
        assert not inside, f"{group}'s source is part of {inside}: the first match would win"


def test_keys_are_grouped_by_kernel() -> None:
    sources = profile_jittor.kernel_sources()
    for group, source in sources:
        key = f"code«IN_SIZE:2«in0_type:float32«HEADER:#include <vector>«CODE:{source}\n«"
        assert profile_jittor.group_of(key, sources) == group
    jittor_keys = {
        "mkl_conv_backward_w«Txd:float32«XFORMAT:abcd": "oneDNN conv",
        "mkl_matmul«T:float32«Trans_a:N": "oneDNN matmul",
        "«opkey0:broadcast_to«Tx:float32«opkey1:reduce«OP:add": "Jittor fused reductions",
        "«opkey0:binary«Tx:float32«OP:multiply": "Jittor element-wise",
        "getitem«Ti:float32«IDIM=4": "Jittor copies",
        "code«CODE:int main() {}": "other jt.code",
    }
    for key, group in jittor_keys.items():
        assert profile_jittor.group_of(key, sources) == group


@pytest.mark.parametrize("work", ["step", "eval"])
def test_a_tiny_profile_lists_the_kernel_groups(work: str, capsys) -> None:
    argv = ["--work", work, "--batch-size", "2", "--warmup", "1", "--runs", "1"]
    assert profile_jittor.main(argv) == 0
    out = capsys.readouterr().out
    assert f"{work} xxt b2 64px: wall" in out
    assert "oneDNN conv" in out and "depthwise forward" in out
    if work == "step":
        assert "depthwise backward" in out and "fused bn_backward" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--runs", "0"], "--runs must be at least 1"), (["--img-size", "48"], "multiple of 32")],
)
def test_bad_arguments_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert profile_jittor.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
