"""launch/perf_plan.py: its arithmetic against hand-computed values (its HLO readers:
test_hlo_costs.py)."""

import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "launch"))
import perf_plan  # noqa: E402


def test_roofline_takes_the_slowest_resource():
    hw = dict(flops=1e12, hbm=1e11, link=1e10, devices=8)
    # 2e12 FLOPs -> 2 s; 1e11 bytes -> 1 s; 3e10 bytes over the links -> 3 s: bound by comm.
    r = perf_plan.roofline(2e12, 1e11, 3e10, hw)
    assert (r["compute_s"], r["hbm_s"], r["comm_s"]) == (2.0, 1.0, 3.0)
    assert r["step_s"] == 3.0 and r["bound"] == "comm"
    assert perf_plan.roofline(5e12, 1e11, 3e10, hw)["bound"] == "compute"


def test_model_flops_are_the_trainers():
    """6 N per LLM token (LLM + projector), 2 N per patch token of each tower, by hand from the
    preset's parameter counts."""
    from tgg_jax.models.tgg import PRESETS, count_params
    counts = count_params(PRESETS["1.5b"]())
    expected = 6 * (counts["llm"] + counts["projector"]) * 4 * 2048 + 2 * (counts["clip"] + counts["dinov2"]) * 576 * 4 * 5
    assert perf_plan.model_flops("1.5b", "stage3", 4, 2048, 5) == pytest.approx(expected)


def test_plan_row_mfu_ceiling_by_hand(monkeypatch):
    """A row whose compiles grow by 10 FLOPs per LLM layer and 1 per tower layer: at depth
    (28, 24) the per-device FLOPs are 100 + 26*10 + 22*1 = 382; the step is compute-bound."""
    monkeypatch.setattr(perf_plan, "model_flops", lambda *a: 8 * 300.0)
    hw = dict(devices=8, flops=100.0, hbm=1e9, link=1e9, source="")
    monkeypatch.setitem(perf_plan.HARDWARE, "toy", hw)

    def point(llm, tower):
        return {"flops": 100 + 10 * (llm - 2) + (tower - 2), "xla_flops": 50.0, "hbm_bytes": 1.0, "comm_bytes": 1.0,
                "peak_bytes": 5.0 * llm, "compile_s": 3.0 * llm + tower}
    points = {d: point(*d) for d in (*perf_plan.SHALLOW, perf_plan.TOWER_PROBE)}
    row = perf_plan.plan_row("toy", "1.5b", "stage3", points, (28, 24), 16, 2048, 5)
    assert row["flops"] == pytest.approx(382) and row["xla_flops"] == 50.0
    assert row["compile_s"] == 3 * 2 + 2 and row["peak_bytes"] == 5 * 2  # the shallow compile's
    assert row["step_s"] == pytest.approx(3.82) and row["bound"] == "compute"
    assert row["flops_over_model"] == pytest.approx(382 / 300)
    assert row["mfu_ceiling"] == pytest.approx(300 / 382)


def test_time_to_paper_by_hand():
    """Recipe steps: 1a ceil(558128/256) = 2181, 1b 2181, 2 ceil(4356000/256) = 17016,
    3 ceil(2*737000/128) = 11516."""
    rows = {s: {"size": "3b", "step_s": t, "model_flops": f} for s, t, f in
            (("stage1_pretrain", 1.0, 0.0), ("stage2", 2.0, 989e12 * 8), ("stage3", 3.0, 989e12 * 4))}
    assert perf_plan.time_to_paper(rows) == 2181 * 1.0 + (2181 + 17016) * 2.0 + 11516 * 3.0
    assert perf_plan.time_to_paper(rows, mfu=0.5) == pytest.approx((2181 + 17016) * 2.0 + 11516 * 1.0)


def test_extrapolate_is_linear_per_layer():
    assert math.isclose(perf_plan.extrapolate({(2, 2): 1.0, (4, 2): 3.0, (2, 4): 2.0}, (10, 6)), 1 + 8 + 2)
