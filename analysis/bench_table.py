"""The benchmark's table (bench.py): the peers, the measures, medians over rounds and the ratio
of Jittor to the best PyTorch peer of each measure. Framework-free: it reads the workers' rows."""

from __future__ import annotations

import statistics
from typing import Any

# peer -> (column label, framework, channels_last, torch.compile)
PEERS = {
    "eager": ("PyTorch eager", "torch", False, False),
    "channels_last": ("PyTorch channels_last", "torch", True, False),
    "compile": ("PyTorch compile", "torch", False, True),
    "compile_channels_last": ("PyTorch compile + channels_last", "torch", True, True),
    "jittor": ("Jittor", "jittor", False, False),
}
FORMS = {"": "standard form", "reparam_": "deploy form"}
SPEED_METRICS = ("step_ms", "eval_", "reparam_eval_", "peak_mem_mib")  # ranked against Jittor


def metrics(eval_batch_sizes: list[int]) -> dict[str, tuple[str, str, bool]]:
    """metric -> (label, unit, lower is better), in table order."""
    table = {"step_ms": ("training step (fwd+bwd+AdamW)", "ms", True)}
    for prefix, form in FORMS.items():
        for size in eval_batch_sizes:
            label = f"eval throughput, batch {size}, {form}"
            table[f"{prefix}eval_b{size}_images_per_s"] = (label, "images/s", False)
    table["peak_mem_mib"] = ("peak memory", "MiB", True)
    table["first_step_s"] = ("first training step (compilation)", "s", True)
    table["first_eval_s"] = ("first evaluations, all shapes and forms (compilation)", "s", True)
    table["na2d_fwd_ms"] = ("na2d_av forward, all model shapes", "ms", True)
    table["na2d_fwd_bwd_ms"] = ("na2d_av forward+backward, all model shapes", "ms", True)
    return table


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median over rounds of each measure, per peer."""
    summary: dict[str, dict[str, float]] = {}
    for peer in dict.fromkeys(r["peer"] for r in rows):
        mine = [r for r in rows if r["peer"] == peer]
        numbers = {k for r in mine for k, v in r.items() if isinstance(v, float | int)}
        summary[peer] = {k: statistics.median(r[k] for r in mine if k in r) for k in numbers}
        summary[peer].pop("round", None)
    return summary


def best_peers(
    summary: dict[str, dict[str, float]], table: dict[str, tuple[str, str, bool]]
) -> dict[str, tuple[float, str]]:
    """measure -> (Jittor / the best PyTorch peer's value, that peer), for the speed and memory
    measures: below 1 is better for times and memory, above 1 for throughputs."""
    if "jittor" not in summary:
        return {}
    ratios = {}
    for metric, (_, _, lower_better) in table.items():
        if not metric.startswith(SPEED_METRICS) or metric not in summary["jittor"]:
            continue
        values = {
            p: s[metric] for p, s in summary.items() if p in PEERS and p != "jittor" and metric in s
        }
        if values:
            best = (min if lower_better else max)(values, key=values.__getitem__)
            ratios[metric] = (summary["jittor"][metric] / values[best], best)
    return ratios


def markdown(summary: dict[str, dict[str, float]], table: dict, context: str) -> str:
    """The measures as rows, the peers as columns, then Jittor / the best PyTorch peer."""
    peers = [p for p in (*PEERS, "natten") if p in summary]
    labels = [PEERS[p][0] if p in PEERS else "NATTEN (op only)" for p in peers]
    ratios = best_peers(summary, table)
    lines = [context, "", "| measure | " + " | ".join(labels) + " | Jittor / best PyTorch |"]
    lines.append("|" + " --- |" * (len(peers) + 2))
    for metric, (label, unit, _) in table.items():
        if not any(metric in summary[p] for p in peers):
            continue
        cells = [f"{label} ({unit})", *(_num(summary[p].get(metric)) for p in peers)]
        ratio, best = ratios.get(metric, (None, ""))
        cells.append(f"{ratio:.2f}x ({PEERS[best][0]})" if ratio else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    digits = 0 if value is None or value >= 100 else 1 if value >= 10 else 2
    return "" if value is None else f"{value:.{digits}f}"
