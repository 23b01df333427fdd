"""Where two OverLoCK twins part, block by block: the method of ``analysis.divergence`` (the
command of ``locate_divergence.py``).

Each framework's probe (``backends.probe_torch`` / ``backends.probe_jittor``) runs the same
weights on the same batch and returns the outputs of every block, in the order the forward pass
calls them, and every parameter's gradient of the loss. Here, framework-free:

- the blocks (``block_names``): the stem and the downsampling layers, each block of the stages
  (Base-Net 1-3, Overview-Net), the context projection, the Focus-Net blocks, the parts of the
  main head that hold weights and the auxiliary head; a parameter belongs to the block whose
  name prefixes it (``block_of``);
- per block (``compare_probes``): the largest |Δ| of its outputs, relative to the largest
  |output| of the reference framework (per output, the worst one), and of its parameters'
  gradients, relative to the block's largest reference gradient, floored at ``GRAD_FLOOR`` x the
  model's largest (some gradients are zero by construction and hold only round-off);
- the verdict (``locate``): a wrong forward computation shows first in its own block's output
  and then in everything that reads it, and in the gradients of the blocks before it (the loss
  changes; the auxiliary head, which reads the Overview-Net only, may stay untouched): the
  first block in forward order above the tolerance is the one to read. When every output
  agrees, a backward difference shows first in the last block, in forward order, whose
  gradients differ (the backward pass reaches it first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Module lists whose items are blocks of their own; the main head's parts are called one by one.
SEQUENCES = ("blocks1", "blocks2", "blocks3", "blocks4", "sub_blocks3", "sub_blocks4", "head")
GRAD_FLOOR = 1e-3
# Defaults: on XXT one batch in training mode agrees to ~1e-6 relative in every block's output
# and gradients (docs/alignment.md); a deliberate 1e-2 change shows as ~1e-2.
ACTIVATION_TOL = 1e-4
GRAD_TOL = 1e-3
_LABELS = {
    "patch_embed1": "stem",
    "patch_embed2": "downsample to stage 2",
    "patch_embed3": "downsample to stage 3",
    "patch_embed4": "downsample to the Overview-Net",
    "high_level_proj": "context projection (Overview -> Focus)",
    "patch_embedx": "Focus-Net downsample to stage 4",
    "aux_head": "auxiliary head (Overview-Net)",
}
_BLOCK_LABELS = {
    "blocks1": "stage 1 (Base-Net) block",
    "blocks2": "stage 2 (Base-Net) block",
    "blocks3": "stage 3 (Base-Net) block",
    "blocks4": "Overview-Net block",
    "sub_blocks3": "Focus-Net stage 3 block",
    "sub_blocks4": "Focus-Net stage 4 block",
    "head": "main head part",
}
_HEAD_PARTS = {"0": "1x1 projection", "1": "BatchNorm", "4": "SiLU, pooling, classifier"}
# (outputs per block, call by call; gradients per parameter; loss): what a probe returns.
Probe = tuple[Mapping[str, Sequence[np.ndarray]], Mapping[str, np.ndarray], float]


def block_of(key: str) -> str:
    """The block a state-dict key belongs to: ``blocks2.0.proj.1.weight`` -> ``blocks2.0``,
    ``patch_embed1.1.bias`` -> ``patch_embed1``, ``head.4.weight`` -> ``head.4``."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] in SEQUENCES and len(parts) > 2 else parts[0]


def block_names(keys: Iterable[str]) -> list[str]:
    """Every block of a state dict's keys, in the keys' order (each once)."""
    return list(dict.fromkeys(block_of(k) for k in keys))


def describe_block(name: str) -> str:
    """What a block is, in words: "stem", "Focus-Net stage 3 block 1", ..."""
    if name in _LABELS:
        return _LABELS[name]
    group, _, index = name.partition(".")
    if group == "head":
        return f"main head: {_HEAD_PARTS.get(index, f'part {index}')}"
    return f"{_BLOCK_LABELS[group]} {index}" if group in _BLOCK_LABELS else name


@dataclass(frozen=True)
class BlockDiff:
    """One block's differences between the reference and the other framework."""

    name: str
    outputs: int  # output tensors compared (calls x tensors per call); 0: never called
    act_abs: float  # max |Δ| over its outputs (nan when not called)
    act_rel: float  # worst output's max |Δ| / max |reference output|
    params: int  # parameters in the block
    grad_abs: float  # max |Δ| over its parameters' gradients (nan without parameters)
    grad_rel: float  # that / max(max |reference grad| of the block, floor)
    note: str = ""  # a structural mismatch (shapes, calls), if any

    @property
    def label(self) -> str:
        return describe_block(self.name)


def _output_diffs(
    ref: Sequence[np.ndarray], other: Sequence[np.ndarray]
) -> tuple[float, float, str]:
    """(max |Δ|, worst relative |Δ|, note) over a block's outputs."""
    if len(ref) != len(other):
        return np.inf, np.inf, f"{len(ref)} outputs vs {len(other)}"
    worst_abs, worst_rel = 0.0, 0.0
    for a, b in zip(ref, other, strict=True):
        if a.shape != b.shape:
            return np.inf, np.inf, f"output shape {a.shape} vs {b.shape}"
        diff = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
        scale = float(np.abs(a).max()) if a.size else 0.0
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / scale if scale > 0 else (np.inf if diff else 0.0))
    return worst_abs, worst_rel, ""


def _grad_diffs(
    names: Sequence[str],
    ref: Mapping[str, np.ndarray],
    other: Mapping[str, np.ndarray],
    floor: float,
) -> tuple[float, float, str]:
    """(max |Δ|, relative, note) over the gradients of one block's parameters."""
    if not names:
        return np.nan, np.nan, ""
    missing = [n for n in names if n not in other]
    if missing:
        return np.inf, np.inf, f"no gradient for {missing[0]}"
    if any(ref[n].shape != other[n].shape for n in names):
        return np.inf, np.inf, "gradient shapes differ"
    diff = max(float(np.abs(ref[n].astype(np.float64) - other[n]).max()) for n in names)
    scale = max(max(float(np.abs(ref[n]).max()) for n in names), floor)
    return diff, (diff / scale if scale > 0 else (np.inf if diff else 0.0)), ""


def compare_probes(reference: Probe, other: Probe) -> list[BlockDiff]:
    """Per block, in the reference's forward order (then blocks never called, e.g. the
    auxiliary head in eval mode): the differences of ``other`` from ``reference``."""
    ref_out, ref_grads, _ = reference
    other_out, other_grads, _ = other
    by_block: dict[str, list[str]] = {}
    for name in ref_grads:
        by_block.setdefault(block_of(name), []).append(name)
    largest = max((float(np.abs(g).max()) for g in ref_grads.values() if g.size), default=0.0)
    floor = GRAD_FLOOR * largest
    order = list(ref_out) + [b for b in by_block if b not in ref_out]
    order += [b for b in other_out if b not in order]
    diffs = []
    for name in order:
        ref_calls, other_calls = ref_out.get(name, ()), other_out.get(name, ())
        if ref_calls or other_calls:
            act_abs, act_rel, note = _output_diffs(ref_calls, other_calls)
        else:
            act_abs, act_rel, note = np.nan, np.nan, ""
        params = by_block.get(name, [])
        grad_abs, grad_rel, grad_note = _grad_diffs(params, ref_grads, other_grads, floor)
        diffs.append(
            BlockDiff(name, len(ref_calls), act_abs, act_rel, len(params), grad_abs, grad_rel,
                      "; ".join(n for n in (note, grad_note) if n))
        )  # fmt: skip
    return diffs


@dataclass(frozen=True)
class Finding:
    """The verdict: the first block whose outputs differ (forward order) and the first whose
    gradients differ in backward order (the last one in forward order)."""

    forward: BlockDiff | None
    backward: BlockDiff | None
    act_tol: float
    grad_tol: float

    @property
    def diverged(self) -> bool:
        return self.forward is not None or self.backward is not None


def _above(value: float, tol: float) -> bool:
    return not np.isnan(value) and value > tol


def locate(diffs: Sequence[BlockDiff], act_tol: float, grad_tol: float) -> Finding:
    """The blocks above the tolerances (relative): see the module docstring."""
    forward = next((d for d in diffs if _above(d.act_rel, act_tol)), None)
    backward = next((d for d in reversed(diffs) if _above(d.grad_rel, grad_tol)), None)
    return Finding(forward, backward, act_tol, grad_tol)


def _cell(value: float) -> str:
    return "-" if np.isnan(value) else ("inf" if np.isinf(value) else f"{value:.1e}")


def format_table(diffs: Sequence[BlockDiff], finding: Finding) -> str:
    """The per-block table; ``!`` marks a value above its tolerance."""
    head = (
        f"{'#':>3}  {'block':<16}{'what':<40}{'outputs':>7}{'act max|Δ|':>12}{'rel':>10}"
        f"{'params':>8}{'grad max|Δ|':>13}{'rel':>10}"
    )
    lines = [head]
    for i, d in enumerate(diffs, 1):
        act_flag = "!" if _above(d.act_rel, finding.act_tol) else " "
        grad_flag = "!" if _above(d.grad_rel, finding.grad_tol) else " "
        line = (
            f"{i:>3}  {d.name:<16}{d.label[:39]:<40}{d.outputs:>7}{_cell(d.act_abs):>12}"
            f"{_cell(d.act_rel):>9}{act_flag}{d.params:>8}{_cell(d.grad_abs):>13}"
            f"{_cell(d.grad_rel):>9}{grad_flag}" + (f"  ({d.note})" if d.note else "")
        )
        lines.append(line.rstrip())
    return "\n".join(lines)


def format_verdict(finding: Finding, names: Sequence[str]) -> str:
    """What the table says, in one or two lines; ``names`` = (reference, other) framework."""
    tols = f"relative: outputs {finding.act_tol:.0e}, gradients {finding.grad_tol:.0e}"
    first = finding.forward
    if first is not None:
        return (
            f"DIVERGED: first block above tolerance in forward order: {first.name} "
            f"({first.label}): outputs differ by {_cell(first.act_rel)} relative "
            f"(max |Δ| {_cell(first.act_abs)}; tolerance {finding.act_tol:.0e}). What reads "
            f"its output, and the gradients of the blocks before it, inherit the difference; "
            f"look at {first.name}'s forward in {names[0]} and {names[1]}."
        )
    last = finding.backward
    if last is not None:
        return (
            f"DIVERGED in the backward pass: every block's outputs agree, but gradients first "
            f"differ (in backward order) at {last.name} ({last.label}): "
            f"{_cell(last.grad_rel)} relative (tolerance {finding.grad_tol:.0e}); look at "
            f"{last.name}'s backward (its custom gradients or kernels)."
        )
    return f"no block above tolerance ({tols}): {names[0]} and {names[1]} agree on this batch"
