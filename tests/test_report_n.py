"""Sample sizes in the report: a row only combines runs of one n (or one smoke limit), whatever other runs
the folder holds; smoke runs are labelled so; table.md and table.csv say each cell's n."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import read_csv

from gqa_eval.report import plots, summary
from gqa_eval.report.summary import write_report
from gqa_eval.report.table import mixed_settings_line, pivot

PRIMARY = {"cnn_dm": "rouge1", "wmt_en_de": "bleu", "trivia_qa": "f1"}


def result(task="cnn_dm", n=64, limit=None, model="gqa8", kv_heads=8, score=50.0, **extra) -> dict:
    """A result.json as evaluate() writes it (the fields the report reads); ``limit`` in its config."""
    metric = PRIMARY[task]
    out = {
        "model": model, "base": "tiny_t5", "arch": "t5", "n_heads": 16, "kv_heads": kv_heads,
        "conversion": "mean" if kv_heads != 16 else None, "task": task, "split": "validation",
        "n_samples": n, "metric": metric, "score": score, "metrics": {metric: score},
        "timing_mode": "natural", "time_per_sample_s": 0.07, "timing": {"mode": "natural"},
        "device": "cpu", "dtype": "float32", "batch_size": 8, "kv_cache_bytes_per_token": 128 * kv_heads,
        "uptrain_alpha": 0, "config": {"limit": limit},
    }  # fmt: skip
    out.update(extra)
    return out


def rows_of(*results: dict) -> list[dict]:
    return [summary.row(r) for r in results]


def row_of(table, run: dict) -> str:
    """The label of the row holding ``run``'s task cell with ``run``'s score."""
    key = f"{run['task']}_{run['metric']}"
    (label,) = [v.label for v in table.variants if key in v.cells and v.cells[key].score == run["score"]]
    return label


# the case, after the README's commands: a 64-example CNN/DM run and limit=4 runs of other tasks
FULL = result("cnn_dm", 64, score=40.0)
SMOKE = [result("wmt_en_de", 4, limit=4, score=9.0), result("trivia_qa", 4, limit=4, score=30.0)]


def test_a_run_lands_in_the_same_row_whatever_else_the_folder_holds():
    alone = {run["task"]: row_of(pivot(rows_of(run)), run) for run in [FULL, *SMOKE]}
    smoke_only, together = pivot(rows_of(*SMOKE)), pivot(rows_of(FULL, *SMOKE))
    assert {r["task"]: row_of(together, r) for r in [FULL, *SMOKE]} == alone
    assert {r["task"]: row_of(smoke_only, r) for r in SMOKE} == {r["task"]: alone[r["task"]] for r in SMOKE}
    assert alone == {
        "cnn_dm": "tiny_t5 GQA-8 (mean)",
        "wmt_en_de": "tiny_t5 GQA-8 (mean) [smoke, n=4]",
        "trivia_qa": "tiny_t5 GQA-8 (mean) [smoke, n=4]",
    }


def test_a_64_example_run_and_4_example_runs_are_never_one_row():
    table = pivot(rows_of(FULL, *SMOKE))
    for v in table.variants:
        assert len({c.samples for c in v.cells.values()}) == 1, v.label
    full, smoke = table.variants
    assert (full.n_samples, full.limit, full.average) == (64, None, 40.0)
    assert (smoke.n_samples, smoke.limit, smoke.average, smoke.n_tasks) == (4, 4, 19.5, 2)


def test_smoke_runs_of_different_limits_are_never_one_row():
    runs = [result("cnn_dm", 4, limit=4), result("wmt_en_de", 8, limit=8), result("trivia_qa", 8, limit=8)]
    table = pivot(rows_of(*runs))
    got = [(v.label, v.n_samples, sorted(v.cells)) for v in table.variants]
    assert got == [
        ("tiny_t5 GQA-8 (mean) [smoke, n=4]", 4, ["cnn_dm_rouge1"]),
        ("tiny_t5 GQA-8 (mean) [smoke, n=8]", 8, ["trivia_qa_f1", "wmt_en_de_bleu"]),
    ]


def test_a_limit_above_the_split_size_is_a_run_of_the_whole_split():
    # limit=100 on a 64-example split scored all 64: the same examples as limit=null, one row, no tag
    table = pivot(rows_of(result(score=50.0), result(limit=100, score=52.0)))
    (v,) = table.variants
    assert (v.label, v.limit, v.cells["cnn_dm_rouge1"].n) == ("tiny_t5 GQA-8 (mean)", None, 2)
    assert table.mixed == {}


def test_smoke_and_whole_split_runs_warn_and_are_noted(tmp_path):
    table = pivot(rows_of(FULL, *SMOKE))
    assert table.mixed == {"limit": [4, "none"]}
    line = mixed_settings_line(table)
    assert "the runs differ in limit (4, none)" in line and "[smoke, n=N]" in line
    assert "[setting=value]" not in line


def write_runs(root: Path, *results: dict) -> Path:
    for i, r in enumerate(results):
        (root / str(i)).mkdir(parents=True)
        (root / str(i) / "result.json").write_text(json.dumps(r))
    return root


def test_table_md_and_table_csv_say_each_cells_n(tmp_path):
    root = write_runs(tmp_path / "outputs", FULL, *SMOKE, result("trivia_qa", 7993, score=35.0))
    write_report(root)
    assert [r["limit"] for r in read_csv(root / "summary.csv")] == ["", "4", "4", ""]
    csv_rows = {r["variant"]: r for r in read_csv(root / "table.csv")}
    full, smoke = csv_rows["tiny_t5 GQA-8 (mean)"], csv_rows["tiny_t5 GQA-8 (mean) [smoke, n=4]"]
    # whole splits of different sizes: no row-wide n, each cell's own
    assert (full["smoke"], full["limit"], full["n_samples"]) == ("False", "", "")
    assert (full["cnn_dm_rouge1_n_samples"], full["trivia_qa_f1_n_samples"]) == ("64", "7993")
    assert (smoke["smoke"], smoke["limit"], smoke["n_samples"]) == ("True", "4", "4")
    assert (smoke["wmt_en_de_bleu_n_samples"], smoke["wmt_en_de_bleu_runs"]) == ("4", "1")
    assert smoke["cnn_dm_rouge1_n_samples"] == ""  # no cell: no n
    md = (root / "table.md").read_text().splitlines()
    header = next(x for x in md if x.startswith("| Model"))
    cells = {
        x.split("|")[1].strip(): [c.strip() for c in x.strip("|").split("|")] for x in md if "GQA-8" in x
    }
    assert [c.strip() for c in header.strip("|").split("|")][:2] == ["Model", "n"]
    assert cells["tiny_t5 GQA-8 (mean)"][1] == "by task"
    assert (
        "40.00 (n=64)" in cells["tiny_t5 GQA-8 (mean)"] and "35.00 (n=7993)" in cells["tiny_t5 GQA-8 (mean)"]
    )
    assert cells["tiny_t5 GQA-8 (mean) [smoke, n=4]"][1] == "4"
    assert "9.00" in cells["tiny_t5 GQA-8 (mean) [smoke, n=4]"]  # one n for the row: cells carry none
    assert any(x.startswith("- [smoke, n=N]: runs of the first N examples") for x in md)


def test_figures_4_and_5_compare_rows_of_one_n():
    runs = [result(model="gqa4", kv_heads=4, score=35.0, limit=4, n=4),
            result(model="mqa", kv_heads=1, score=30.0, limit=4, n=4)]  # fmt: skip
    # a folder of smoke runs only still draws its bars; beside whole-split rows, the smoke ones are left out
    assert plots.method_bars(pivot(rows_of(*runs))) == {"GQA-4": {"mean": 35.0}, "MQA": {"mean": 30.0}}
    full = result(model="gqa4", kv_heads=4, score=45.0)
    assert plots.method_bars(pivot(rows_of(*runs, full))) == {"GQA-4": {"mean": 45.0}}


def test_a_merged_set_of_smoke_shards_is_a_smoke_row(tmp_path):
    # shard=K/2 of a limit=4 run: the merged row keeps the limit from the shards' shared config
    for k in range(2):
        run = tmp_path / "sweep" / f"shard{k}"
        run.mkdir(parents=True)
        rows = [{"index": i, "prediction": "paris", "references": ["Paris"]} for i in (k, k + 2)]
        (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = {"limit": 4, "task": {"name": "trivia_qa", "metrics": ["f1"]}}
        shard = result("trivia_qa", 2, limit=4, shard=f"{k}/2", task_samples=4, config=config)
        (run / "result.json").write_text(json.dumps(shard))
    built = write_report(tmp_path / "sweep")
    ((merged,), (row,)) = built.rows, built.table.variants
    assert (merged["shards"], merged["n_samples"], merged["limit"]) == ("2/2", 4, 4)
    assert (row.label, row.n_samples) == ("tiny_t5 GQA-8 (mean) [smoke, n=4]", 4)


def test_a_smoke_row_that_also_differs_in_a_setting_says_both():
    runs = [result(limit=4, n=4), result(limit=4, n=4), result(limit=4, n=4, batch_size=2, score=10.0)]
    labels = [v.label for v in pivot(rows_of(*runs)).variants]
    assert labels == ["tiny_t5 GQA-8 (mean) [smoke, n=4]", "tiny_t5 GQA-8 (mean) [smoke, n=4] [batch_size=2]"]
