"""End to end: evaluate() on the bundled tiny checkpoints, the console script, and a real multirun."""

from __future__ import annotations

import json
import time

import pytest
from conftest import read_csv, read_predictions, run_gqa_eval

from gqa_eval.evaluate import evaluate
from gqa_eval.report.summary import COLUMNS

QUICK = ["limit=3", "task.max_new_tokens=6", "batch_size=2"]


@pytest.mark.parametrize(("base", "model"), [("tiny_t5", "gqa4"), ("tiny_llama", "mqa")])
def test_evaluate_writes_run_directory(compose_cfg, tmp_path, base, model):
    cfg = compose_cfg([f"base={base}", f"model={model}", "task=trivia_qa", *QUICK])
    start = time.perf_counter()
    evaluate(cfg, output_dir=tmp_path / "run")
    elapsed = time.perf_counter() - start
    rows = read_predictions(tmp_path / "run")
    assert len(rows) == 3 and {"id", "input", "prediction", "references"} <= set(rows[0])
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["n_samples"] == 3 and saved["metric"] == "f1"
    assert saved["kv_heads"] == {"gqa4": 4, "mqa": 1}[model] and saved["n_heads"] == 16
    assert saved["arch"] == {"tiny_t5": "t5", "tiny_llama": "llama"}[base]
    assert saved["timing"]["timed_samples"] == 3 and saved["timing"]["generated_tokens"] <= 3 * 6
    # Timing figures that must agree with each other and with the clock outside the run.
    t = saved["timing"]
    assert 0 < t["total_s"] <= elapsed
    assert saved["time_per_sample_s"] == pytest.approx(t["total_s"] / 3)
    assert saved["tokens_per_s"] == pytest.approx(t["generated_tokens"] / t["total_s"])
    assert 0.8 <= t["accounted_fraction"] <= 1.0  # prefill + decode steps cover the batches' wall time
    assert saved["prefill_s_per_sample"] * 3 < t["total_s"] and saved["decode_s_per_token"] < t["total_s"]
    # Memory and KV bytes from the geometry, computed here: layers x (K, V) x kv_heads x head width x fp32.
    layers, width = {"tiny_t5": (2, 16), "tiny_llama": (4, 16)}[base]  # decoder layers, head width
    assert saved["kv_cache_bytes_per_token"] == layers * 2 * saved["kv_heads"] * width * 4
    assert saved["peak_mem_mb"] >= saved["params"] * 4 / 2**20  # the fp32 weights are resident
    # measured / floor is a median over batches of (median step / that batch's floor): within the steps'
    # range over the floor, allowing a factor 2 for batches of other sizes
    floor, ratio = saved["decode_floor_s_per_step"], saved["decode_floor_ratio"]
    assert t["decode_step_min_s"] / floor / 2 <= ratio <= 2 * t["decode_step_max_s"] / floor
    assert saved["kv_cache_bytes_per_token_measured"] == saved["kv_cache_bytes_per_token"]
    assert saved["timing_mode"] == "natural" and saved["decode_bound"] in ("memory", "compute")
    assert {"device_name", "torch", "transformers", "threads", "dtype"} <= set(saved["environment"])


def test_fixed_timing_mode_scores_like_natural(compose_cfg, tmp_path):
    natural = evaluate(compose_cfg(["model=gqa4", "task=wmt_en_de", *QUICK]), output_dir=tmp_path / "n")
    fixed = evaluate(
        compose_cfg(["model=gqa4", "task=wmt_en_de", "timing.mode=fixed", "timing.repeats=2", *QUICK]),
        output_dir=tmp_path / "f",
    )
    assert fixed["timing_mode"] == "fixed" and fixed["timing"]["generated_tokens"] == 3 * 6
    assert fixed["timing"]["repeats"] == 2 and fixed["timing"]["pass_spread_median"] >= 0
    assert fixed["metrics"] == natural["metrics"]


def test_same_output_every_time(compose_cfg, tmp_path):
    cfg = compose_cfg(["model=gqa8", "task=wmt_en_de", *QUICK])
    first = evaluate(cfg, output_dir=tmp_path / "a")
    second = evaluate(cfg, output_dir=tmp_path / "b")
    assert (tmp_path / "a/predictions.jsonl").read_text() == (tmp_path / "b/predictions.jsonl").read_text()
    assert first["metrics"] == second["metrics"]


def test_console_script_single_run(tmp_path):
    proc = run_gqa_eval("model=gqa8", "task=cnn_dm", f"output_root={tmp_path}", "progress=false", *QUICK)
    assert proc.returncode == 0, proc.stderr
    results = list(tmp_path.glob("runs/*/result.json"))
    assert len(results) == 1
    rows = read_csv(tmp_path / "summary.csv")
    assert len(rows) == 1 and rows[0]["model"] == "gqa8" and rows[0]["task"] == "cnn_dm"
    assert list(rows[0]) == COLUMNS


def test_multirun_writes_one_summary_row_per_job(tmp_path):
    proc = run_gqa_eval(
        "-m", "model=mha,mqa", "task=cnn_dm,wmt_en_de", f"output_root={tmp_path}", "progress=false", *QUICK,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (sweep,) = list((tmp_path / "multirun").iterdir())
    rows = read_csv(sweep / "summary.csv")
    assert sorted((r["model"], r["task"]) for r in rows) == [
        ("mha", "cnn_dm"), ("mha", "wmt_en_de"), ("mqa", "cnn_dm"), ("mqa", "wmt_en_de"),
    ]  # fmt: skip
    assert {r["metric"] for r in rows} == {"rouge1", "bleu"}
    assert {r["kv_heads"] for r in rows if r["model"] == "mqa"} == {"1"}


def test_bad_kv_heads_fails_without_writing_results(tmp_path):
    proc = run_gqa_eval("model=gqa", "model.kv_heads=3", f"output_root={tmp_path}", "progress=false", *QUICK)
    assert proc.returncode != 0
    assert "kv_heads=3 does not divide the model's 16 key/value heads" in proc.stderr
    assert not list(tmp_path.rglob("result.json"))
