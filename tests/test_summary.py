"""Summary stage: summary.csv, the Table-1 pivot, plots, failed runs, the Hydra callback, a real multirun."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import read_csv, run_gqa_eval
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from gqa_eval.report import summary
from gqa_eval.report.callback import SummaryCallback
from gqa_eval.report.summary import COLUMNS, PLOTS, main, write_atomic, write_report
from gqa_eval.report.table import PAPER_COLUMNS, PUBLISHED, pivot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRIMARY = {"cnn_dm": "rouge1", "wmt_en_de": "bleu", "trivia_qa": "f1"}
REPORT_FILES = ["summary.csv", "table.csv", "table.md", *PLOTS]

# (directory, base, model, kv_heads, conversion, task, score, time per sample, timing_mode)
RUNS = [
    ("runs/a_mha_cnn", "tiny_t5", "mha", 16, None, "cnn_dm", 30.0, 0.10, None),
    ("runs/b_mha_cnn", "tiny_t5", "mha", 16, None, "cnn_dm", 32.0, 0.14, None),  # a repeat
    ("multirun/s1/0_mha_wmt", "tiny_t5", "mha", 16, None, "wmt_en_de", 10.0, 0.20, None),
    ("multirun/s1/1_mha_tqa", "tiny_t5", "mha", 16, None, "trivia_qa", 50.0, 0.30, None),
    ("multirun/s1/2_gqa4_cnn", "tiny_t5", "gqa4", 4, "mean", "cnn_dm", 28.0, 0.08, None),
    ("multirun/s1/3_gqa4_wmt", "tiny_t5", "gqa4", 4, "mean", "wmt_en_de", 9.0, 0.16, None),
    # gqa4 x trivia_qa is the missing cell
    ("multirun/s1/4_mqa_cnn", "tiny_t5", "mqa", 1, "mean", "cnn_dm", 20.0, 0.05, "natural"),
    ("multirun/s1/5_mqa_wmt", "tiny_t5", "mqa", 1, "mean", "wmt_en_de", 6.0, 0.10, "natural"),
    ("multirun/s1/6_mqa_tqa", "tiny_t5", "mqa", 1, "mean", "trivia_qa", 40.0, 0.15, "natural"),
    ("deep/x/y/llama_nat", "tiny_llama", "gqa8", 8, "mean", "cnn_dm", 12.0, 0.04, "natural"),
    ("deep/x/y/llama_fix", "tiny_llama", "gqa8", 8, "mean", "cnn_dm", 14.0, 0.06, "fixed"),
]


def fake_result(base, model, kv_heads, conversion, task, score, time_s, timing_mode) -> dict:
    metric = PRIMARY[task]
    result = {
        "model": model, "base": base, "arch": "t5" if base == "tiny_t5" else "llama", "n_heads": 16,
        "kv_heads": kv_heads, "conversion": conversion, "task": task, "split": "validation",
        "n_samples": 4, "metric": metric, "score": score, "metrics": {metric: score, "extra": 1.0},
        "time_per_sample_s": time_s, "tokens_per_s": 100.0, "timing": {"decode_s_per_token": 0.001},
        "peak_mem_mb": 500.0, "kv_cache_bytes_per_token": 128 * kv_heads, "params": 1000,
        "device": "cpu", "dtype": "float32", "batch_size": 2, "run_dir": "/elsewhere/run",
        "config": {"ignored": True},
    }  # fmt: skip
    if timing_mode is not None:
        result["timing_mode"] = timing_mode
    return result


@pytest.fixture
def runs(tmp_path) -> Path:
    """A folder of synthetic runs: 4 variants, 3 tasks, repeats, a missing cell and two error.json."""
    root = tmp_path / "outputs"
    for directory, *fields in RUNS:
        (root / directory).mkdir(parents=True)
        (root / directory / "result.json").write_text(json.dumps(fake_result(*fields)))
    error = {"model": "gqa2", "base": "tiny_t5", "task": "cnn_dm", "kv_heads": 2,
             "error_type": "RuntimeError", "message": "CUDA out of memory | tried\nsecond line"}  # fmt: skip
    (root / "multirun/s1/7_gqa2_cnn").mkdir(parents=True)
    (root / "multirun/s1/7_gqa2_cnn/error.json").write_text(json.dumps(error))
    # a directory with both files succeeded after all and is not a failure
    (root / "runs/a_mha_cnn/error.json").write_text(json.dumps({**error, "model": "stale"}))
    return root


def test_summary_csv_has_one_row_per_run(runs):
    write_report(runs)
    rows = read_csv(runs / "summary.csv")
    assert list(rows[0]) == COLUMNS
    assert len(rows) == len(RUNS)  # repeats kept, failed runs left out
    assert "gqa2" not in {r["model"] for r in rows}
    first = next(r for r in rows if r["run_dir"] == os.path.join("runs", "a_mha_cnn"))
    assert first["rouge1"] == first["score"] == "30.0" and first["bleu"] == ""
    assert first["timing_mode"] == "natural" and first["decode_s_per_token"] == "0.001"
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(runs / "summary.csv")
    assert frame.shape == (len(RUNS), len(COLUMNS)) and frame["score"].sum() == pytest.approx(251.0)


def test_pivot_values_repeats_and_missing_cell(runs):
    write_report(runs)
    table = {r["variant"]: r for r in read_csv(runs / "table.csv")}
    assert list(table) == [
        "tiny_llama GQA-8 (mean)", "tiny_llama GQA-8 (mean) [timing_mode=fixed]", "tiny_t5 MHA",
        "tiny_t5 GQA-4 (mean)", "tiny_t5 MQA (mean)",
    ]  # fmt: skip
    header = list(next(iter(table.values())))
    assert header[header.index("gap_recovered") + 1 :] == [
        "cnn_dm_rouge1", "cnn_dm_rouge1_n_samples", "cnn_dm_rouge1_runs",
        "wmt_en_de_bleu", "wmt_en_de_bleu_n_samples", "wmt_en_de_bleu_runs",
        "trivia_qa_f1", "trivia_qa_f1_n_samples", "trivia_qa_f1_runs",
    ]  # fmt: skip

    def num(variant, column):
        return float(table[variant][column])

    mha, gqa4, mqa, llama = (table[k] for k in ("tiny_t5 MHA", "tiny_t5 GQA-4 (mean)", "tiny_t5 MQA (mean)",
                                                 "tiny_llama GQA-8 (mean)"))  # fmt: skip
    assert num("tiny_t5 MHA", "cnn_dm_rouge1") == 31.0 and mha["cnn_dm_rouge1_runs"] == "2"
    assert num("tiny_t5 MHA", "average") == pytest.approx((31 + 10 + 50) / 3) and mha["n_tasks"] == "3"
    assert num("tiny_t5 MHA", "t_infer_s") == pytest.approx((0.12 + 0.20 + 0.30) / 3)
    assert mha["n_runs"] == "4" and mha["kv_heads"] == "16" and mha["source"] == "computed"
    # every run scored 4 examples of its whole split (no limit): n is said, no row is smoke
    assert (mha["n_samples"], mha["cnn_dm_rouge1_n_samples"], mha["smoke"], mha["limit"]) == (
        "4",
        "4",
        "False",
        "",
    )
    assert gqa4["trivia_qa_f1"] == "" and gqa4["trivia_qa_f1_runs"] == ""  # missing, not zero
    assert num("tiny_t5 GQA-4 (mean)", "average") == pytest.approx(18.5) and gqa4["n_tasks"] == "2"
    assert num("tiny_t5 GQA-4 (mean)", "t_infer_s") == pytest.approx(0.12)
    assert num("tiny_t5 MQA (mean)", "average") == pytest.approx(22.0) and mqa["n_tasks"] == "3"
    assert num("tiny_t5 MQA (mean)", "kv_cache_bytes_per_token") == 128
    # timing modes are never averaged: the fixed run is a row of its own, tagged
    fixed = table["tiny_llama GQA-8 (mean) [timing_mode=fixed]"]
    assert num("tiny_llama GQA-8 (mean)", "cnn_dm_rouge1") == 12.0 and llama["cnn_dm_rouge1_runs"] == "1"
    assert (
        num("tiny_llama GQA-8 (mean)", "t_infer_s") == pytest.approx(0.04)
        and llama["timing_mode"] == "natural"
    )
    assert float(fixed["cnn_dm_rouge1"]) == 14.0 and float(fixed["t_infer_s"]) == pytest.approx(0.06)
    assert fixed["timing_mode"] == "fixed" and fixed["settings"] == "timing_mode=fixed"


def test_table_md_and_failed_runs(runs, capsys):
    assert main([str(runs)]) == 0
    printed = capsys.readouterr().out
    md = (runs / "table.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Model", "n", "T_infer (s)", "Average", "CNN R1", "WMT BLEU", "TriviaQA F1",
    ]  # fmt: skip
    gqa4 = next(line for line in md.splitlines() if line.startswith("| tiny_t5 GQA-4 (mean)"))
    assert [c.strip() for c in gqa4.strip("|").split("|")][1:] == [
        "4",
        "0.120",
        "18.50 (2/3)",
        "28.00",
        "9.00",
        "—",
    ]
    assert "31.00 (2 runs)" in md and "30.33 (3/3)" in md
    assert "the runs differ in timing_mode (fixed, natural)." in md
    assert "Timing modes differ between rows (fixed: tiny_llama GQA-8 (mean) [timing_mode=fixed];" in md
    failed = md.split("## Failed runs", 1)[1]
    assert "gqa2" in failed and "RuntimeError: CUDA out of memory \\| tried" in failed
    assert "second line" not in failed and "stale" not in md
    assert os.path.join("multirun", "s1", "7_gqa2_cnn") in failed
    assert "Failed runs (1)" in printed and "RuntimeError: CUDA out of memory | tried" in printed
    assert "tiny_t5 GQA-4 (mean)" in printed
    lines = printed[printed.index("Model") :].splitlines()[:6]
    assert len({len(line.rstrip()) for line in lines[:2]}) == 1  # header and rule aligned


def test_pngs_written_and_valid(runs, tmp_path):
    from matplotlib.image import imread

    for metric in ("average", "trivia_qa"):
        out = tmp_path / metric
        assert main([str(runs), "--out", str(out), "--metric", metric]) == 0
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(REPORT_FILES)
        for name in PLOTS:
            data = (out / name).read_bytes()
            assert data.startswith(PNG_SIGNATURE)
            image = imread(out / name)
            assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300 and image.std() > 0


def test_reference_rows_are_published_and_not_averaged(runs, tmp_path):
    out = tmp_path / "ref"
    assert main([str(runs), "--out", str(out), "--reference", "paper"]) == 0
    rows = read_csv(out / "table.csv")
    published = [r for r in rows if r["source"] == PUBLISHED]
    assert [r["variant"] for r in published] == ["T5-Large MHA", "T5-XXL MHA", "T5-XXL MQA", "T5-XXL GQA-8"]
    mqa = published[2]
    assert (mqa["t_infer_s"], mqa["average"], mqa["n_tasks"], mqa["cnn_dm_rouge1"]) == (
        "0.24",
        "46.6",
        "7",
        "43.0",
    )
    keys = [f"{task}_{metric}" for task, metric in PAPER_COLUMNS]
    assert [k for k in rows[0] if k in keys] == keys  # all seven, in the paper's order
    mha = next(r for r in rows if r["variant"] == "tiny_t5 MHA")
    assert float(mha["average"]) == pytest.approx((31 + 10 + 50) / 3) and mha["n_tasks"] == "3"
    md = (out / "table.md").read_text()
    assert "T5-XXL GQA-8 (published, TPUv4)" in md and "arXiv 2305.13245" in md and "30.33 (3/7)" in md
    assert (
        "tiny_t5" in (out / "summary.csv").read_text() and "T5-XXL" not in (out / "summary.csv").read_text()
    )


def test_same_geometry_under_two_names_gets_two_labelled_rows():
    rows = [
        summary.row(fake_result("tiny_t5", m, 1, "mean", "cnn_dm", 5.0, 0.1, None)) for m in ("mqa", "gqa1")
    ]
    table = pivot(rows)
    assert [v.label for v in table.variants] == ["tiny_t5 MQA (mean)", "tiny_t5 MQA (mean) [gqa1]"]


def test_empty_folder_still_gives_a_valid_report(tmp_path):
    built = write_report(tmp_path)
    assert built.rows == [] and read_csv(tmp_path / "summary.csv") == []
    assert (tmp_path / "summary.csv").read_text().strip() == ",".join(COLUMNS)
    assert all((tmp_path / name).read_bytes().startswith(PNG_SIGNATURE) for name in PLOTS)


def test_cli_errors(tmp_path, runs, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no result.json under" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(runs), "--out", str(tmp_path / "o"), "--metric", "arxiv"])
    assert exit_info.value.code == 2 and "--metric 'arxiv' is not in the results" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.csv").exists()


def test_writes_are_atomic(runs, monkeypatch):
    write_report(runs)
    assert not list(runs.glob("*.tmp")) and not list(runs.glob(".*.tmp"))
    before = (runs / "table.md").read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(summary.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(runs / "table.md", b"partial")
    assert (runs / "table.md").read_bytes() == before and not list(runs.glob(".*.tmp"))


def test_callback_reports_failed_job_and_multirun_end(runs, capsys):
    sweep = runs / "multirun" / "s1"
    config = OmegaConf.create(
        {"output_root": str(runs), "hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}}}
    )
    SummaryCallback().on_job_end(config, job_return=JobReturn(status=JobStatus.FAILED))
    assert "## Failed runs" in (sweep / "table.md").read_text()
    assert len(read_csv(sweep / "summary.csv")) == 7
    SummaryCallback().on_multirun_end(config)
    printed = capsys.readouterr().out
    assert f"report of 7 runs written to {sweep}" in printed and "tiny_t5 MQA (mean)" in printed


def test_console_multirun_leaves_report_in_sweep_dir(tmp_path):
    proc = run_gqa_eval(
        "-m", "model=mha,mqa", "task=cnn_dm,trivia_qa", "limit=2", "task.max_new_tokens=4", "batch_size=2",
        "progress=false", f"output_root={tmp_path}", timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (sweep,) = list((tmp_path / "multirun").iterdir())
    assert set(REPORT_FILES) <= {p.name for p in sweep.iterdir()}
    assert {p.name for p in sweep.iterdir() if p.is_dir()} >= {
        "0_tiny_t5_mha_cnn_dm", "3_tiny_t5_mqa_trivia_qa",
    }  # fmt: skip
    assert not list(sweep.glob(".*.tmp"))
    assert len(read_csv(sweep / "summary.csv")) == 4
    table = read_csv(sweep / "table.csv")
    # limit=2 cut both splits: smoke rows, labelled and sized so
    assert [r["variant"] for r in table] == ["tiny_t5 MHA [smoke, n=2]", "tiny_t5 MQA (mean) [smoke, n=2]"]
    assert all(r["n_tasks"] == "2" and r["cnn_dm_rouge1"] and r["trivia_qa_f1"] for r in table)
    assert all((r["smoke"], r["limit"], r["n_samples"]) == ("True", "2", "2") for r in table)
    for name in PLOTS:
        assert (sweep / name).read_bytes().startswith(PNG_SIGNATURE)
    assert (
        "CNN R1" in proc.stdout
        and "TriviaQA F1" in proc.stdout
        and "tiny_t5 MQA (mean) [smoke, n=2]" in proc.stdout
    )


def test_conversion_methods_plot_has_a_bar_per_method_and_variant():
    """Fig. 4's bars come from the table's converted rows (Average per row), one per method and variant;
    MHA rows are the reference line, not bars."""
    from gqa_eval.report.plots import method_bars, plot_conversion_methods
    from gqa_eval.report.table import pivot

    rows = []
    variants = [("mha", 16, None, 40.0), ("gqa4", 4, "mean", 35.0), ("gqa4", 4, "aligned", 33.0),
                ("mqa", 1, "mean", 30.0), ("mqa", 1, "first", 10.0)]  # fmt: skip
    for model, kv, method, score in variants:
        result = fake_result("tiny_t5", model, kv, method, "cnn_dm", score, 0.1, "fixed")
        rows.append({**result, "rouge1": score})
    table = pivot(rows)
    assert method_bars(table) == {
        "GQA-4": {"mean": 35.0, "aligned": 33.0},
        "MQA": {"mean": 30.0, "first": 10.0},
    }
    assert plot_conversion_methods(table).startswith(PNG_SIGNATURE)
    assert plot_conversion_methods(pivot([])).startswith(PNG_SIGNATURE)  # no data: still a valid picture
