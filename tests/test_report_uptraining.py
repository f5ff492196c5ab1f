"""Uptrained rows in the report: each objective is its own row and Fig. 5 line, and each row says how much
of its conversion's gap to MHA the uptraining won back (table.md, table.csv)."""

from __future__ import annotations

import csv
import io

import pytest
from test_report_n import result, rows_of

from gqa_eval.report import plots
from gqa_eval.report.table import pivot, to_markdown, to_table_csv


def runs(kv_heads: int, score: float, alpha: float = 0, objective: str | None = None, **extra) -> list[dict]:
    """The variant's cnn_dm and trivia_qa runs, both at ``score``."""
    up = {"uptrain_alpha": alpha, **({"uptrain_objective": objective} if objective else {})}
    model = {16: "mha", 4: "gqa4", 1: "mqa"}[kv_heads]
    return [
        result(task, 64, model=model, kv_heads=kv_heads, score=score, **up, **extra)
        for task in ("cnn_dm", "trivia_qa")
    ]


SWEEP = [
    *runs(16, 40.0),
    *runs(4, 10.0),
    *runs(4, 25.0, 0.1, "task_mixture"),
    *runs(4, 34.0, 0.1, "distill"),
    *runs(1, 5.0),
    *runs(1, 20.0, 0.1, "distill"),
]


def by_label(table) -> dict:
    return {v.label: v for v in table.variants}


def test_objectives_are_rows_of_their_own_and_say_the_gap_they_recover():
    table = by_label(pivot(rows_of(*SWEEP)))
    recovered = {label: v.gap_recovered for label, v in table.items()}
    assert recovered == {
        "tiny_t5 MHA": None,
        "tiny_t5 GQA-4 (mean)": None,
        "tiny_t5 GQA-4 (mean, uptrained α=0.1)": pytest.approx(0.5),  # (25 - 10) / (40 - 10)
        "tiny_t5 GQA-4 (mean, uptrained α=0.1 by distill)": pytest.approx(0.8),
        "tiny_t5 MQA (mean)": None,
        "tiny_t5 MQA (mean, uptrained α=0.1 by distill)": pytest.approx(15 / 35),
    }
    # rows written before objectives were recorded are the task mixture's, as they were trained
    legacy = pivot(rows_of(*runs(16, 40.0), *runs(4, 10.0), *runs(4, 25.0, 0.1)))
    assert by_label(legacy)["tiny_t5 GQA-4 (mean, uptrained α=0.1)"].uptrain_objective == "task_mixture"


def test_gap_recovered_needs_the_same_tasks_and_n():
    other_n = [
        result("cnn_dm", 8, model="gqa4", kv_heads=4, score=30.0, uptrain_alpha=0.1),
        result("trivia_qa", 8, model="gqa4", kv_heads=4, score=30.0, uptrain_alpha=0.1),
    ]
    fewer = [result("cnn_dm", 64, model="mqa", kv_heads=1, score=30.0, uptrain_alpha=0.1)]
    table = pivot(rows_of(*runs(16, 40.0), *runs(4, 10.0), *runs(1, 5.0), *other_n, *fewer))
    assert [v.gap_recovered for v in table.variants if v.uptrain_alpha] == [None, None]


def test_table_md_and_csv_carry_the_recovery():
    table = pivot(rows_of(*SWEEP))
    md = to_markdown(table, [])
    assert "Gap recovered" in md.splitlines()[2]
    (line,) = [x for x in md.splitlines() if "uptrained α=0.1 by distill" in x and "GQA-4" in x]
    assert [cell.strip() for cell in line.split("|")][5] == "80%"  # after Model, n, T_infer, Average
    rows = list(csv.DictReader(io.StringIO(to_table_csv(table))))
    got = {
        (r["kv_heads"], r["uptrain_objective"]): r["gap_recovered"] for r in rows if r["uptrain_alpha"] != "0"
    }
    assert {k: round(float(v), 3) for k, v in got.items() if v} == {
        ("4", "task_mixture"): 0.5,
        ("4", "distill"): 0.8,
        ("1", "distill"): 0.429,
    }


def test_fig5_draws_a_line_per_objective_from_the_conversion_it_starts_at():
    series = plots.uptraining_series(pivot(rows_of(*SWEEP)))
    assert series == {
        "tiny_t5 GQA-4 (mean)": [(0.0, 10.0), (0.1, 25.0)],
        "tiny_t5 GQA-4 (mean) by distill": [(0.0, 10.0), (0.1, 34.0)],
        "tiny_t5 MQA (mean) by distill": [(0.0, 5.0), (0.1, 20.0)],
    }


def test_runs_uptrained_at_other_learning_rates_are_rows_and_lines_of_their_own():
    sweep = [
        *runs(16, 40.0),
        *runs(4, 10.0),
        *runs(4, 25.0, 0.1, "task_mixture", uptrain_lr=1e-4),
        *runs(4, 31.0, 0.1, "task_mixture", uptrain_lr=1e-3),
    ]
    table = pivot(rows_of(*sweep))
    recovered = {v.label: v.gap_recovered for v in table.variants if v.uptrain_alpha}
    assert recovered == {
        "tiny_t5 GQA-4 (mean, uptrained α=0.1, lr=0.0001)": pytest.approx(0.5),  # not averaged together
        "tiny_t5 GQA-4 (mean, uptrained α=0.1, lr=0.001)": pytest.approx(0.7),
    }
    lines = plots.uptraining_series(table)
    assert sorted(lines) == ["tiny_t5 GQA-4 (mean), lr=0.0001", "tiny_t5 GQA-4 (mean), lr=0.001"]
    assert all((0.0, 10.0) in points for points in lines.values())  # each starts at the conversion
    csv_rows = list(csv.DictReader(io.StringIO(to_table_csv(table))))
    assert sorted(r["uptrain_lr"] for r in csv_rows) == ["", "", "0.0001", "0.001"]  # MHA, GQA-4: none
    # one learning rate in the folder: the labels stay as they were
    same = pivot(rows_of(*sweep[:6]))
    assert "tiny_t5 GQA-4 (mean, uptrained α=0.1)" in {v.label for v in same.variants}
