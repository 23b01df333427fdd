"""The alignment study's report: Markdown (report.md), the figure (report.png, drawn by
``analysis.compare_figure``) and the per-epoch numbers (per_epoch.csv), written together from
the runs' log.csv files (``analysis.compare_data``). Framework-free; partial studies included:
the report says which runs are missing or unfinished and what the numbers then rest on.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from scipy import stats

from analysis.compare_data import (
    ENDPOINTS,
    FRAMEWORKS,
    GAPS,
    METRICS,
    TESTED,
    StudyData,
    band,
    collect,
    endpoint,
    endpoint_spread,
    gap_summary,
    gaps,
    missing_runs,
    paired,
    paired_seeds,
)
from analysis.compare_stats import PairedComparison, Spread, seeds_needed
from analysis.compare_study import MAP_KINDS, ULP_INIT, Run, StudySettings, map_figures
from analysis.output import figure_png, write_together

REPORT, FIGURE, TABLE = "report.md", "report.png", "per_epoch.csv"


def _num(value: float, digits: int = 2) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == 0.0:
        return "0"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _gap(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3g}"


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _mean_std(s: Spread, digits: int = 2) -> str:
    if s.n == 0:
        return "–"
    if s.n == 1:
        return f"{s.mean:.{digits}f} (n=1, no std)"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f} (n={s.n})"


def _design(data: StudyData, root: Path) -> list[str]:
    s = data.settings
    model = data.model or "the training scripts' default model"
    flags = " ".join(s.train_args) or "none (the TinyImageNet-20 protocol defaults)"
    return [
        "# Alignment study: Jittor vs PyTorch",
        "",
        f"{model}, data `{s.data or 'the generated default dataset'}`, {_epochs(s.epochs)} per "
        f"run, seeds 0..{s.seeds - 1}. Written by `compare.py` from the runs' `log.csv` under "
        f"`{root}`; extra training flags: {flags}.",
        "",
        "**Design.** For each seed s: a PyTorch run (`train_torch.py --seed s`) and a Jittor run "
        "(`train.py --seed s --init seed<s>/torch/init.pth`), so both start from the same "
        "initial weights and see the same batches. `--seed` sets the initial weights, the data "
        "order and the flips: different seeds differ in all three. Control: PyTorch from seed "
        f"0's initial weights with every float entry moved up by one float32 ulp "
        f"(`np.nextafter`, `{ULP_INIT}`), everything else as seed 0's PyTorch run: how far "
        "round-off alone separates two runs of one framework.",
        "",
    ]


def _runs(data: StudyData) -> list[str]:
    lines = [
        "## Runs",
        "",
        "| run | folder | status | final top-1 % | machine |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for run, status in data.statuses.items():
        final = _num(endpoint(data, run, "final_top1"))
        lines.append(
            f"| seed {run.seed} {run.label} | `{run.name}` | {status.describe()} | {final} | "
            f"{data.machines[run]} |"
        )
    missing = missing_runs(data)
    if missing:
        names = ", ".join(f"`{s.run.name}` ({s.describe()})" for s in missing)
        lines += [
            "",
            f"**Partial study.** Not complete: {names}. Final and best values and "
            "the tests use the complete runs only; the curves use every logged epoch. "
            "Run `make compare` (or `compare.py`) again to continue.",
        ]
    return lines + [""]


def _endpoints(data: StudyData) -> list[str]:
    lines = [
        "## Final and best accuracy",
        "",
        "| | PyTorch | Jittor | Jittor − PyTorch, paired by seed |",
        "| --- | ---: | ---: | ---: |",
    ]
    for which, title in ENDPOINTS.items():
        cells = [_mean_std(endpoint_spread(data, role, which)) for role in FRAMEWORKS]
        test = paired(data, which)
        diff = Spread(test.n, test.mean_diff, test.sd_diff)
        lines.append(f"| {title} | {cells[0]} | {cells[1]} | {_mean_std(diff)} |")
    lines += [
        "",
        "Mean ± sample standard deviation over seeds (n runs). Final: epoch "
        f"{data.epochs}; best: the maximum over the epochs, for each column on its own "
        "(top-1 is what picks `checkpoint_best`).",
    ]
    ulp, base = Run("ulp", 0), Run("torch", 0)
    a, b = endpoint(data, base, "final_top1"), endpoint(data, ulp, "final_top1")
    if not (math.isnan(a) or math.isnan(b)):
        lines.append(
            f"The ulp control ends at {b:.2f} % top-1, seed 0's PyTorch run at "
            f"{a:.2f} % (Δ {b - a:+.2f} points)."
        )
    return lines + [""]


def _reach(test: PairedComparison) -> str:
    """What the number of seeds allows at the margin, and a planning figure."""
    n = test.n
    crit = float(stats.t.ppf(1 - test.alpha, n - 1))
    most_sd = test.margin * math.sqrt(n) / crit
    text = (
        f"With n = {n} seeds the one-sided critical value t({1 - test.alpha:.2f}; {n - 1}) = "
        f"{crit:.2f} multiplies the standard error sd/√n, so ±{test.margin:g} point needs "
        f"|mean d| + {crit:.2f}·sd/√{n} < {test.margin:g}: a standard deviation of the per-seed "
        f"differences below {most_sd:.2f} points even with a zero mean (observed: "
        f"{_num(test.sd_diff)})."
    )
    needed = seeds_needed(test.mean_diff, test.sd_diff, test.margin, test.alpha)
    if needed is not None and needed > n:
        text += (
            f" If the differences kept the observed mean and sd, about {needed} seeds "
            f"would establish ±{test.margin:g} (a planning figure, not a result)."
        )
    return text


def _tests(data: StudyData) -> list[str]:
    tests = {which: paired(data, which) for which in TESTED}
    margin, alpha = tests["final_top1"].margin, tests["final_top1"].alpha
    lines = [
        "## Equivalence of top-1 (d = Jittor − PyTorch, paired by seed)",
        "",
        f"| | n | mean d | sd d | paired t-test p (two-sided) | TOST p (±{margin:g} point) | "
        f"smallest margin at p < {alpha:g} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for which, t in tests.items():
        smallest = "n/a" if math.isnan(t.min_margin) else f"±{t.min_margin:.2f}"
        lines.append(
            f"| {ENDPOINTS[which]} | {t.n} | {_num(t.mean_diff)} | {_num(t.sd_diff)} | "
            f"{_p(t.p_ttest)} | {_p(t.p_tost)} | {smallest} |"
        )
    lines += [
        "",
        f"TOST: two one-sided t-tests of H0 mean d ≤ −{margin:g} and H0 mean d ≥ "
        f"+{margin:g}; equivalence within ±{margin:g} at level {alpha:g} when both are "
        "rejected (p = the larger of the two). The smallest margin is the far end of the "
        f"{100 * (1 - 2 * alpha):.0f}% confidence interval of mean d: the data establish "
        "equivalence for any margin above it. A paired t-test that finds no difference is "
        "not evidence of equivalence.",
    ]
    final = tests["final_top1"]
    if not final.testable:
        lines += [
            "",
            f"With {final.n} complete pair(s) the standard deviation and both tests "
            "are undefined (they need at least 2 seeds): no p-value can be given.",
        ]
    elif not final.equivalent:
        lines += ["", _reach(final)]
    if any(t.testable and t.sd_diff == 0 for t in tests.values()):
        lines += [
            "",
            "The per-seed differences are identical (sd 0): the t statistics are "
            "infinite or undefined and the p-values degenerate (0 or 1, n/a for a zero "
            "mean); they say only that every pair differed by the same amount.",
        ]
    lines += ["", f"**Conclusion.** {conclusion(tests['final_top1'], tests['best_top1'])}", ""]
    return lines


def conclusion(final: PairedComparison, best: PairedComparison) -> str:
    """One sentence: what the tests allow, and nothing stronger."""
    n, m = final.n, final.margin
    if n == 0:
        return "No seed has both runs complete yet, so no conclusion is possible."
    if n == 1:
        return (
            f"With one seed the paired tests are undefined; the single pair differs by "
            f"{final.mean_diff:+.2f} points in final and {best.mean_diff:+.2f} in best top-1, "
            "which says nothing about how much such differences vary."
        )
    if final.equivalent and best.equivalent:
        return (
            f"Over {n} seeds Jittor's final and best top-1 are equivalent to PyTorch's "
            f"within ±{m:g} point (TOST p = {_p(final.p_tost)} and {_p(best.p_tost)}, "
            f"< {final.alpha:g})."
        )
    return (
        f"Over {n} seeds {_tost_clause(final, best)}; the smallest margins they establish at "
        f"p < {final.alpha:g} are ±{final.min_margin:.2f} (final) and ±{best.min_margin:.2f} "
        f"points (best), and {_t_clause(final, best)}."
    )


def _tost_clause(final: PairedComparison, best: PairedComparison) -> str:
    m = final.margin
    if not (final.equivalent or best.equivalent):
        return (
            f"the data do not establish equivalence within ±{m:g} point for final or best "
            f"top-1 (TOST p = {_p(final.p_tost)} and {_p(best.p_tost)})"
        )
    (yes, t_yes), (no, t_no) = sorted(
        {"final": final, "best": best}.items(), key=lambda kv: not kv[1].equivalent
    )
    return (
        f"the data establish equivalence within ±{m:g} point for {yes} top-1 (TOST p = "
        f"{_p(t_yes.p_tost)}) but not for {no} top-1 (p = {_p(t_no.p_tost)})"
    )


def _t_clause(final: PairedComparison, best: PairedComparison) -> str:
    tests = {"final": final, "best": best}
    found = {k: t for k, t in tests.items() if t.different}
    if not found:
        return (
            f"the paired t-test finds no significant difference (p = {_p(final.p_ttest)} "
            f"and {_p(best.p_ttest)}), which is not evidence of equivalence"
        )
    said = " and ".join(
        f"{t.mean_diff:+.2f} points in {k} top-1 (p = {_p(t.p_ttest)})" for k, t in found.items()
    )
    rest = [f"{k} top-1 (p = {_p(t.p_ttest)})" for k, t in tests.items() if k not in found]
    return f"the paired t-test finds a mean difference of {said}" + (
        f" but no significant one in {rest[0]}" if rest else ""
    )


def _gap_tables(data: StudyData) -> list[str]:
    all_gaps = {m: gaps(data, m) for m in METRICS}
    lines = [
        "## Per-epoch gaps",
        "",
        f"![curves and gaps]({FIGURE})",
        "",
        "|Δ| averaged over the epochs. Same seed: |Jittor − PyTorch| of one seed, averaged "
        "over the seeds; ulp control: |PyTorch from the ulp-shifted init − PyTorch| of seed 0; "
        "between seeds: the mean |Δ| over all pairs of seeds within a framework, averaged over "
        "both (`analysis/compare_data.py`). Logged values have 6 significant digits.",
        "",
        "| metric | " + " | ".join(GAPS.values()) + " |",
        "| --- |" + " ---: |" * len(GAPS),
    ]
    for metric, title in METRICS.items():
        cells = [_gap(gap_summary(all_gaps[metric][k])) for k in GAPS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per epoch, each cell: same seed / ulp control / between seeds:",
        "",
        "| epoch | " + " | ".join(METRICS.values()) + " |",
        "| ---: |" + " ---: |" * len(METRICS),
    ]
    for e in range(data.epochs):
        cells = [" / ".join(_gap(all_gaps[m][k][e]) for k in GAPS) for m in METRICS]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return lines + [""]


def _band_table(data: StudyData) -> list[str]:
    columns = [(m, r) for m in METRICS for r in FRAMEWORKS]
    bands = {(m, r): band(data, r, m) for m, r in columns}
    lines = [
        "## Per-epoch curves (mean ± std over seeds)",
        "",
        "| epoch | " + " | ".join(f"{FRAMEWORKS[r]} {METRICS[m]}" for m, r in columns) + " |",
        "| ---: |" + " ---: |" * len(columns),
    ]
    for e in range(data.epochs):
        cells = []
        for key in columns:
            mean, std, n = (a[e] for a in bands[key])
            digits = 3 if "loss" in key[0] else 2
            cells.append(
                "–" if n == 0 else _num(mean, digits) + ("" if n < 2 else f" ± {std:.{digits}f}")
            )
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    if data.settings.seeds < 2:
        lines += ["", "One seed: no standard deviation (it needs at least 2)."]
    return lines + [""]


def _map_links(root: Path, seeds: int) -> list[str]:
    lines = []
    for seed in range(seeds):
        names = zip(map_figures(seed), MAP_KINDS.values(), strict=True)
        found = [f"![{what}]({name})" for name, what in names if (root / name).is_file()]
        if found:
            lines += [f"## Seed {seed}'s final checkpoints: ERF and Grad-CAM", "", *found, ""]
    return lines[:-1] or [
        "The ERF and Grad-CAM figures (seed 0's, or `--maps-seed`'s) are drawn once both runs of "
        "the seed are complete, from their checkpoints."
    ]


def per_epoch_csv(data: StudyData) -> bytes:
    """Every per-epoch number: bands per framework, the three gaps, per metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header, series = ["epoch"], []
    for metric in METRICS:
        for role in FRAMEWORKS:
            mean, std, n = band(data, role, metric)
            header += [f"{role}_{metric}_mean", f"{role}_{metric}_std", f"{role}_{metric}_n"]
            series += [mean, std, n]
        for kind, values in gaps(data, metric).items():
            header.append(f"gap_{kind}_{metric}")
            series.append(values)
    writer.writerow(header)
    for e in range(data.epochs):
        writer.writerow([e + 1] + ["" if math.isnan(s[e]) else f"{s[e]:.6g}" for s in series])
    return buffer.getvalue().encode()


def report_markdown(data: StudyData, root: Path) -> str:
    """The whole report.md."""
    parts = [
        _design(data, root),
        _runs(data),
        _endpoints(data),
        _tests(data),
        _gap_tables(data),
        _band_table(data),
        _map_links(root, data.settings.seeds),
    ]
    return "\n".join(line for part in parts for line in part) + "\n"


def write_report(root: Path, settings: StudySettings) -> StudyData:
    """report.md, report.png and per_epoch.csv under ``root``, all three or none."""
    from analysis.compare_figure import study_figure

    data = collect(root, settings)
    figure = figure_png(study_figure(data))
    write_together(
        {
            root / REPORT: report_markdown(data, root).encode(),
            root / FIGURE: figure,
            root / TABLE: per_epoch_csv(data),
        }
    )
    return data


def summary_lines(data: StudyData) -> list[str]:
    """The lines compare.py prints at the end: the final top-1 per framework, the conclusion."""
    lines = [
        f"{FRAMEWORKS[r]} final top-1: {_mean_std(endpoint_spread(data, r, 'final_top1'))}"
        for r in FRAMEWORKS
    ]
    tests = {which: paired(data, which) for which in TESTED}
    lines.append(
        f"paired seeds: {len(paired_seeds(data))}; "
        + conclusion(tests["final_top1"], tests["best_top1"])
    )
    missing = missing_runs(data)
    if missing:
        lines.append(
            "not complete: " + ", ".join(f"{s.run.name} ({s.describe()})" for s in missing)
        )
    return lines
