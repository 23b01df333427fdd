"""The benchmark table: medians over rounds, and Jittor ranked against the best PyTorch peer."""

from __future__ import annotations

from analysis import bench_table


def test_summary_is_the_median_over_rounds_and_jittor_is_ranked_against_the_best_peer() -> None:
    rows = [{"peer": "eager", "step_ms": s, "peak_mem_mib": 100.0} for s in (10.0, 30.0, 20.0)]
    rows += [{"peer": "compile", "step_ms": s, "peak_mem_mib": 300.0} for s in (15.0, 16.0)]
    rows += [{"peer": "jittor", "step_ms": s, "peak_mem_mib": 50.0} for s in (8.0, 9.0, 40.0)]
    for row, throughput in zip(
        rows, (100.0, 200.0, 300.0, 400.0, 410.0, 500.0, 600.0, 50.0), strict=True
    ):
        row["eval_b4_images_per_s"] = throughput
    summary = bench_table.summarise(rows)
    assert summary["eager"] == {
        "step_ms": 20.0,
        "peak_mem_mib": 100.0,
        "eval_b4_images_per_s": 200.0,
    }
    assert summary["compile"]["step_ms"] == 15.5 and summary["jittor"]["step_ms"] == 9.0
    table = bench_table.metrics([4])
    ratios = bench_table.best_peers(summary, table)
    assert ratios["step_ms"] == (9.0 / 15.5, "compile")  # the fastest peer, not eager
    assert ratios["peak_mem_mib"] == (0.5, "eager")  # the leanest peer
    assert ratios["eval_b4_images_per_s"] == (500.0 / 405.0, "compile")
    assert "first_step_s" not in ratios  # compilation is reported, not ranked
    md = bench_table.markdown(summary, table, "context")
    assert "| measure | PyTorch eager | PyTorch compile | Jittor | Jittor / best PyTorch |" in md
    assert (
        "| training step (fwd+bwd+AdamW) (ms) | 20.0 | 15.5 | 9.00 | 0.58x (PyTorch compile) |"
        in md
    )
    assert "NATTEN" not in md


def test_a_peer_without_a_measure_is_left_out_of_its_ranking() -> None:
    summary = {
        "eager": {"step_ms": 20.0, "eval_b4_images_per_s": 100.0},
        "channels_last": {"step_ms": 10.0},  # e.g. its evaluation was not measured
        "jittor": {"step_ms": 5.0, "eval_b4_images_per_s": 150.0},
    }
    ratios = bench_table.best_peers(summary, bench_table.metrics([4]))
    assert ratios["step_ms"] == (0.5, "channels_last")
    assert ratios["eval_b4_images_per_s"] == (1.5, "eager")
