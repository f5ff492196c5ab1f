"""One task spread across jobs: ``shard=K/N`` evaluates examples K, K+N, K+2N, ... of the task; the
summary merges a complete set of shards into one row equal to the unsharded run, and lists an
incomplete set instead of passing it off as a row.

One unsharded run and three shards of the same small config (bundled tiny_t5, WMT: BLEU is a corpus
metric, so the merged score is right only if it is computed again over the union) are evaluated once
per module, in-process; the Hydra app and ``gqa-eval-summary`` run on top of them."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config, read_csv, read_predictions

import gqa_eval.evaluate
from gqa_eval.evaluate import evaluate
from gqa_eval.report.summary import COLUMNS, SHARDS_FILE, write_report
from gqa_eval.resume import ResumeError
from gqa_eval.tasks import parse_shard, shard_dir_tag, shard_positions

N_EXAMPLES, N_SHARDS = 7, 3
QUICK = ["task=wmt_en_de", f"limit={N_EXAMPLES}", "task.max_new_tokens=12", "batch_size=2",
         "timing.roofline=false", "progress=false"]  # fmt: skip


def config(root: Path, *overrides: str):
    return compose_config("config", [f"output_root={root}", *QUICK, *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The unsharded run (``full/run``) and its three shards (``sweep/shard{K}``), with their results."""
    root = tmp_path_factory.mktemp("shards")
    with pytest.MonkeyPatch.context() as env:  # as the autouse _rates_cache does for each test
        env.setenv("GQA_EVAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gqa_eval_cache"))
        full = evaluate(config(root), output_dir=root / "full" / "run")
        shards = [
            evaluate(config(root, f"shard={k}/{N_SHARDS}"), output_dir=root / "sweep" / f"shard{k}")
            for k in range(N_SHARDS)
        ]
    return {"root": root, "full": full, "shards": shards}


def by_index(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["index"])


def test_parse_shard_positions_and_directory_tag():
    assert parse_shard(None) is None and parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4)
    assert shard_positions(10, (1, 4)) == [1, 5, 9] and shard_positions(3, None) == [0, 1, 2]
    assert shard_dir_tag(None) == "" and shard_dir_tag("2/4") == "_shard2of4"
    assert "/" not in shard_dir_tag("a/b")  # a malformed value makes no nested directory


def test_a_shard_evaluates_every_nth_example_of_the_task(runs):
    full_rows = by_index(read_predictions(runs["root"] / "full" / "run"))
    assert [r["index"] for r in full_rows] == list(range(N_EXAMPLES))
    seen: list[int] = []
    for k, result in enumerate(runs["shards"]):
        rows = read_predictions(runs["root"] / "sweep" / f"shard{k}")
        indices = sorted(r["index"] for r in rows)
        assert indices == list(range(k, N_EXAMPLES, N_SHARDS))  # K, K+N, ... in the whole task's numbering
        assert [full_rows[i]["id"] for i in indices] == [r["id"] for r in by_index(rows)]
        assert result["shard"] == f"{k}/{N_SHARDS}" and result["n_samples"] == len(indices)
        assert result["task_samples"] == N_EXAMPLES
        seen += indices
    assert sorted(seen) == list(range(N_EXAMPLES))  # disjoint, and together the whole task
    assert runs["full"]["shard"] is None and runs["full"]["task_samples"] == runs["full"]["n_samples"]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("3/2", "shard=3/2: K must be less than N"),
        ("0/0", "shard=0/0: N, the number of parts, must be at least 1"),
        ("a/b", "shard must be K/N"),
        ("1", "shard must be K/N"),
    ],
)
def test_a_bad_shard_is_refused_in_one_line_before_any_model_loads(tmp_path, monkeypatch, value, says):
    def no_model(cfg):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(gqa_eval.evaluate, "make_variant", no_model)
    with pytest.raises(ValueError) as err:
        evaluate(config(tmp_path, f"shard={value}", "limit=3"), output_dir=tmp_path / "run")
    message = str(err.value)
    assert says in message and "\n" not in message  # one line, naming the problem
    assert "set shard=" in message  # and the fix
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_merged_row_equals_the_unsharded_run(runs):
    sweep, full = runs["root"] / "sweep", runs["full"]
    write_report(sweep)
    (merged,) = read_csv(sweep / "summary.csv")  # the shards are one row, never rows of their own
    assert list(merged) == COLUMNS and merged["shards"] == f"{N_SHARDS}/{N_SHARDS}"
    assert merged["n_samples"] == str(N_EXAMPLES)
    assert float(merged["bleu"]) == float(merged["score"]) == full["metrics"]["bleu"]
    assert merged["run_dir"] == ";".join(f"shard{k}" for k in range(N_SHARDS))
    # BLEU is a corpus metric: the shards' own scores do not average to it, the union's does
    assert statistics.fmean(s["metrics"]["bleu"] for s in runs["shards"]) != full["metrics"]["bleu"]
    record = json.loads((sweep / SHARDS_FILE).read_text())["sets"]
    assert len(record) == 1 and record[0]["complete"] and record[0]["metrics"] == full["metrics"]
    assert record[0]["metric_details"] == full["metric_details"]
    union = by_index([r for k in range(N_SHARDS) for r in read_predictions(sweep / f"shard{k}")])
    assert union == by_index(read_predictions(runs["root"] / "full" / "run"))
    # timing: totals over totals; decode step-weighted; peak memory the largest
    timings = [s["timing"] for s in runs["shards"]]
    seconds, samples = sum(t["total_s"] for t in timings), sum(t["timed_samples"] for t in timings)
    assert float(merged["time_per_sample_s"]) == pytest.approx(seconds / samples)
    tokens = sum(t["generated_tokens"] for t in timings)
    assert float(merged["tokens_per_s"]) == pytest.approx(tokens / seconds)
    steps = [t["decode_steps"] for t in timings]
    decode = sum(s["decode_s_per_token"] * n for s, n in zip(runs["shards"], steps, strict=True)) / sum(steps)
    assert float(merged["decode_s_per_token"]) == pytest.approx(decode)
    prefill = sum(
        s["prefill_s_per_sample"] * t["timed_samples"] for s, t in zip(runs["shards"], timings, strict=True)
    )
    assert float(merged["prefill_s_per_sample"]) == pytest.approx(prefill / samples)
    assert float(merged["peak_mem_mb"]) == max(s["peak_mem_mb"] for s in runs["shards"])
    (table,) = read_csv(sweep / "table.csv")
    assert table["n_runs"] == "1" and float(table["wmt_en_de_bleu"]) == full["metrics"]["bleu"]


def test_an_incomplete_set_is_listed_never_a_row(runs, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(runs["root"] / "sweep", sweep, ignore=shutil.ignore_patterns(SHARDS_FILE, "*.csv"))
    (sweep / "shard1" / "result.json").unlink()  # shard 1 failed
    error = {"model": "mha", "base": "tiny_t5", "task": "wmt_en_de", "kv_heads": None,
             "error_type": "RuntimeError", "message": "killed"}  # fmt: skip
    (sweep / "shard1" / "error.json").write_text(json.dumps(error))
    built = write_report(sweep)
    assert read_csv(sweep / "summary.csv") == [] and built.rows == []
    table_md = (sweep / "table.md").read_text()
    section = table_md.split("## Incomplete shard sets")[1]
    assert "shard 1/3 missing" in section and "2/3" in section and "shard0;shard2" in section
    assert "## Failed runs" in table_md and "killed" in table_md  # the failed shard is a failed run too
    assert "shard 1/3 missing" in built.text
    assert json.loads((sweep / SHARDS_FILE).read_text())["sets"][0]["complete"] is False


def test_predictions_that_do_not_cover_the_task_are_no_row(runs, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(runs["root"] / "sweep", sweep, ignore=shutil.ignore_patterns(SHARDS_FILE, "*.csv"))
    assert len(write_report(sweep).rows) == 1  # merged, and its scores kept in shards.json
    predictions = sweep / "shard2" / "predictions.jsonl"
    predictions.write_text(predictions.read_text().splitlines(keepends=True)[0])  # a row lost
    built = write_report(sweep)  # the cached scores are not used: the predictions changed
    assert built.rows == [] and "shard 2/3: predictions.jsonl has 1 rows" in built.incomplete[0]["problem"]


def test_shards_run_on_different_gpus_merge(runs, tmp_path):
    # device=cuda:K per part (or a launcher's per-job GPU): the set is still one configuration
    sweep = tmp_path / "sweep"
    shutil.copytree(runs["root"] / "sweep", sweep, ignore=shutil.ignore_patterns(SHARDS_FILE, "*.csv"))
    for k in range(N_SHARDS):
        path = sweep / f"shard{k}" / "result.json"
        result = json.loads(path.read_text())
        result["config"]["device"] = result["device"] = f"cuda:{k}"
        path.write_text(json.dumps(result))
    built = write_report(sweep)
    assert built.incomplete == [] and len(built.rows) == 1
    (merged,) = read_csv(sweep / "summary.csv")
    assert merged["shards"] == f"{N_SHARDS}/{N_SHARDS}" and merged["device"] == "cuda:0, cuda:1, cuda:2"
    assert float(merged["bleu"]) == runs["full"]["metrics"]["bleu"]


def test_gqa_eval_summary_merges_shards_beside_an_unsharded_run(runs, tmp_path):
    root, out = runs["root"], tmp_path / "report"
    summary = Path(sys.executable).parent / "gqa-eval-summary"
    proc = subprocess.run(
        [str(summary), str(root / "full"), str(root / "sweep"), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(out / "summary.csv")
    assert sorted(r["shards"] for r in rows) == ["", "3/3"]
    assert {r["bleu"] for r in rows} == {repr(runs["full"]["metrics"]["bleu"])}
    assert "(2 runs)" in (out / "table.md").read_text()  # the merged row pools with the unsharded run


def test_resume_inside_a_shard_and_a_shard_never_resumes_another(runs, tmp_path):
    run_dir = tmp_path / "shard1"  # part 1: its rows' task indices (1, 4) are not its own (0, 1)
    shutil.copytree(runs["root"] / "sweep" / "shard1", run_dir)
    (run_dir / "result.json").unlink()
    predictions = run_dir / "predictions.jsonl"
    before = by_index(read_predictions(run_dir))
    predictions.write_text(predictions.read_text().splitlines(keepends=True)[0])  # killed after one row
    result = evaluate(config(tmp_path, f"shard=1/{N_SHARDS}"), output_dir=run_dir)
    assert result["reused_predictions"] == 1 and by_index(read_predictions(run_dir)) == before
    assert result["metrics"] == runs["shards"][1]["metrics"]
    with pytest.raises(ResumeError, match=r"shard: '1/3' -> '0/3'"):
        evaluate(config(tmp_path, f"shard=0/{N_SHARDS}"), output_dir=run_dir)


def test_run_directory_names_carry_the_shard(tmp_path):
    plain = compose_config("config", ["output_root=OUT"], return_hydra_config=True)
    assert plain.hydra.run.dir.endswith("_tiny_t5_mha_cnn_dm")  # unsharded names as before
    shard = compose_config("config", ["output_root=OUT", "shard=1/4"], return_hydra_config=True)
    assert shard.hydra.run.dir.endswith("_tiny_t5_mha_cnn_dm_shard1of4")


def test_a_sharded_multirun_gives_a_directory_per_shard_and_one_row(app, tmp_path):
    # two examples in three parts: part 2 is empty, and the set is still the whole task
    sweep, small = tmp_path / "sweep", [*QUICK, "limit=2", f"output_root={tmp_path}"]
    code, _ = app("-m", "shard=0/3,1/3,2/3", *small, f"hydra.sweep.dir={sweep}")
    assert code == 0
    names = [f"{k}_tiny_t5_mha_wmt_en_de_shard{k}of3" for k in range(3)]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == names
    empty = json.loads((sweep / names[2] / "result.json").read_text())
    assert empty["n_samples"] == 0 and empty["score"] is None and empty["task_samples"] == 2
    (merged,) = read_csv(sweep / "summary.csv")
    assert merged["shards"] == "3/3" and merged["n_samples"] == "2"
    whole = evaluate(compose_config("config", small), output_dir=tmp_path / "whole")
    assert float(merged["bleu"]) == whole["metrics"]["bleu"]
    code, _ = app("shard=3/2", *small)
    assert code == (
        "gqa-eval: error: shard=3/2: K must be less than N (K counts from 0: the parts of 2 are 0/2 to 1/2); "
        "set shard=1/2, or shard=3/4 for 4 parts"
    )
