"""Report grouping: runs that differ in a setting are never averaged; table and plots read the same rows;
gqa-eval-summary over several folders; one name per variant (config names, run directories)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import compose_config, read_csv
from omegaconf import open_dict

from gqa_eval import cli
from gqa_eval.report import plots, summary
from gqa_eval.report.summary import main, write_report
from gqa_eval.report.table import pivot

PRIMARY = {"cnn_dm": "rouge1", "wmt_en_de": "bleu", "trivia_qa": "f1"}
LENGTHS = {"cnn_dm": (512, 256), "wmt_en_de": (512, 256), "trivia_qa": (2048, 32)}


def result(model="gqa8", kv_heads=8, task="cnn_dm", score=50.0, time_s=0.07, **settings) -> dict:
    """A result.json as evaluate() writes it (the fields the report reads), full bundled set, natural."""
    metric = PRIMARY[task]
    max_in, max_new = LENGTHS[task]
    out = {
        "model": model, "base": "tiny_t5", "arch": "t5", "n_heads": 16, "kv_heads": kv_heads,
        "conversion": "mean" if kv_heads != 16 else None, "task": task, "split": "validation",
        "n_samples": 64, "metric": metric, "score": score, "metrics": {metric: score},
        "timing_mode": "natural", "time_per_sample_s": time_s, "timing": {"mode": "natural"},
        "kv_cache_bytes_per_token": 128 * kv_heads, "device": "cpu", "dtype": "float32", "batch_size": 8,
        "max_input_tokens": max_in, "max_new_tokens": max_new,
    }  # fmt: skip
    out.update(settings)
    return out


def rows_of(*results: dict) -> list[dict]:
    return [summary.row(r) for r in results]


def write_runs(root: Path, *results: dict) -> Path:
    for i, r in enumerate(results):
        run = root / f"{i}_{r['base']}_{r['model']}_{r['task']}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps(r))
    return root


def by_label(table) -> dict:
    return {v.label: v for v in table.variants}


def test_a_smoke_run_is_not_averaged_with_full_runs(tmp_path):
    # the case: GQA-8 CNN R1 from two 64-example runs and one limit=8 run was "mean (n=3)"
    smoke_run = result(score=48.0, n_samples=8, config={"limit": 8})
    runs = [result(score=51.0), result(score=52.0), smoke_run]
    root = write_runs(tmp_path / "outputs", *runs, result("mha", 16, score=55.0))
    write_report(root)
    table = {r["variant"]: r for r in read_csv(root / "table.csv")}
    assert list(table) == ["tiny_t5 MHA", "tiny_t5 GQA-8 (mean)", "tiny_t5 GQA-8 (mean) [smoke, n=8]"]
    full, smoke = table["tiny_t5 GQA-8 (mean)"], table["tiny_t5 GQA-8 (mean) [smoke, n=8]"]
    assert (float(full["cnn_dm_rouge1"]), full["cnn_dm_rouge1_runs"], full["smoke"], full["n_samples"]) == (
        51.5, "2", "False", "64",
    )  # fmt: skip
    assert (float(smoke["cnn_dm_rouge1"]), smoke["cnn_dm_rouge1_runs"], smoke["smoke"], smoke["limit"]) == (
        48.0, "1", "True", "8",
    )  # fmt: skip
    md = (root / "table.md").read_text()
    assert "| tiny_t5 GQA-8 (mean) [smoke, n=8] " in md and "51.50 (2 runs)" in md


@pytest.mark.parametrize(
    ("setting", "usual", "other"),
    [
        ("split", "validation", "test"),
        ("max_input_tokens", 512, 128),
        ("max_new_tokens", 256, 4),
        ("timing_mode", "natural", "fixed"),
        ("batch_size", 8, 2),
        ("dtype", "float32", "bfloat16"),
        ("device", "cpu", "cuda"),
    ],
)
def test_every_setting_that_changes_a_number_keeps_runs_apart(setting, usual, other):
    runs = [result(**{setting: usual}), result(**{setting: usual}), result(score=10.0, **{setting: other})]
    table = by_label(pivot(rows_of(*runs)))
    tagged = f"tiny_t5 GQA-8 (mean) [{setting}={other}]"
    assert sorted(table) == ["tiny_t5 GQA-8 (mean)", tagged]
    assert table["tiny_t5 GQA-8 (mean)"].cells["cnn_dm_rouge1"].n == 2
    assert table[tagged].cells["cnn_dm_rouge1"].score == 10.0 and table[tagged].settings == {setting: other}


@pytest.mark.parametrize(
    ("setting", "usual", "other"),
    [("device_name", "NVIDIA H100 80GB HBM3", "Tesla V100-SXM2-16GB"), ("threads", 2, 16)],
)
def test_runs_timed_on_different_hardware_are_never_one_cell(setting, usual, other):
    # result.json keeps the hardware under environment; an H100 and a V100 timing are not averaged
    env = {"device_name": "NVIDIA H100 80GB HBM3", "threads": 2}
    runs = [result(environment=env), result(environment=env),
            result(time_s=0.5, environment={**env, setting: other})]  # fmt: skip
    table = by_label(pivot(rows_of(*runs)))
    tagged = f"tiny_t5 GQA-8 (mean) [{setting}={other}]"
    assert sorted(table) == ["tiny_t5 GQA-8 (mean)", tagged]
    assert table["tiny_t5 GQA-8 (mean)"].cells["cnn_dm_rouge1"].time_s == pytest.approx(0.07)
    assert table[tagged].cells["cnn_dm_rouge1"].time_s == 0.5


def test_which_gpu_of_a_node_ran_a_job_splits_no_row():
    # the parallel launcher or device=cuda:N put the jobs of one sweep on cuda:0, cuda:1, ...
    env = {"device_name": "NVIDIA H100 80GB HBM3", "threads": 16}
    runs = [result(device=f"cuda:{i}", score=50.0 + i, environment=env) for i in range(3)]
    (variant,) = pivot(rows_of(*runs)).variants
    assert variant.label == "tiny_t5 GQA-8 (mean)" and variant.cells["cnn_dm_rouge1"].n == 3


def test_task_lengths_and_sizes_that_differ_by_task_are_not_tags():
    # each task's own n_samples and lengths are its reference: a normal sweep has no tags
    runs = [result(task="cnn_dm", n_samples=13368), result(task="trivia_qa", n_samples=7993)]
    table = pivot(rows_of(*runs))
    assert [v.label for v in table.variants] == ["tiny_t5 GQA-8 (mean)"] and table.mixed == {}
    assert table.variants[0].n_tasks == 2


def test_fixed_timing_on_one_task_is_its_own_row_in_table_and_plots():
    # the case: one fixed-mode run moved a row's T_infer from about 0.07 to 0.170, while Fig. 6
    # pooled it to 0.119, and the row's Average covered three tasks but its T_infer one
    natural = [
        result(task=t, time_s=s) for t, s in (("cnn_dm", 0.06), ("wmt_en_de", 0.07), ("trivia_qa", 0.08))
    ]
    fixed = result(task="cnn_dm", time_s=0.17, timing_mode="fixed", timing={"mode": "fixed"})
    table = pivot(rows_of(*natural, fixed, result("mha", 16, time_s=0.05)))
    rows = by_label(table)
    plain, timed = rows["tiny_t5 GQA-8 (mean)"], rows["tiny_t5 GQA-8 (mean) [timing_mode=fixed]"]
    assert plain.t_infer == pytest.approx(0.07) and plain.n_tasks == 3 and plain.timing_mode == "natural"
    assert timed.t_infer == pytest.approx(0.17) and timed.n_tasks == 1 and timed.timing_mode == "fixed"
    # Fig. 6: each row is one point with the table's T_infer, nothing pooled again
    series = plots.kv_series(table)
    assert sorted(series) == ["tiny_t5 (mean)", "tiny_t5 (mean) [timing_mode=fixed]"]
    points = {name: [(k, v.label, v.t_infer) for k, v in pts] for name, pts in series.items()}
    assert points["tiny_t5 (mean)"] == [
        (8, plain.label, plain.t_infer),
        (16, "tiny_t5 MHA", pytest.approx(0.05)),
    ]
    assert points["tiny_t5 (mean) [timing_mode=fixed]"] == [(8, timed.label, pytest.approx(0.17))]
    assert all(len({k for k, _ in pts}) == len(pts) for pts in series.values())


def test_t_infer_covers_exactly_the_tasks_of_the_average(tmp_path):
    runs = [result(task="cnn_dm", time_s=0.06), result(task="wmt_en_de", time_s=None)]
    root = write_runs(tmp_path / "outputs", *runs)
    built = write_report(root)
    (v,) = built.table.variants
    assert v.average == 50.0 and v.n_tasks == 2 and v.t_infer is None
    md = (root / "table.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| tiny_t5 GQA-8 (mean)"))
    assert [c.strip() for c in line.strip("|").split("|")][1:4] == ["64", "—", "50.00 (2/2)"]
    assert "no time on wmt_en_de_bleu" in md


def test_resumed_run_timing_is_carried_and_marked(tmp_path):
    partial = {"mode": "natural", "partial": True, "covers": "24 of 64 examples; 40 were predicted earlier"}
    root = write_runs(tmp_path / "a", result(time_s=0.03, timing=partial), result("mha", 16, time_s=0.05))
    write_report(root)
    rows = {r["model"]: r for r in read_csv(root / "summary.csv")}
    assert rows["gqa8"]["timing_partial"] == "True" and rows["mha"]["timing_partial"] == "False"
    table = {r["variant"]: r for r in read_csv(root / "table.csv")}
    assert table["tiny_t5 GQA-8 (mean)"]["timing_partial"] == "True"
    md = (root / "table.md").read_text()
    assert "0.0300 (partial)" in md and "0.0500 (partial)" not in md and "(partial): T_infer includes" in md
    # a complete timing of the same cell is used instead of the partial one
    table = pivot(rows_of(result(time_s=0.03, timing=partial), result(time_s=0.07)))
    (v,) = table.variants
    assert v.t_infer == pytest.approx(0.07) and not v.timing_partial and v.cells["cnn_dm_rouge1"].n == 2


def test_plots_label_points_exactly_as_the_table_labels_rows():
    # a saved GQA-4 checkpoint next to one converted on the fly: same geometry, two rows, two tags
    runs = [
        result("gqa4", 4),
        result("saved", 4, score=60.0),
        result("mha", 16),
        result("gqa4", 4, n_samples=8),
    ]
    table = pivot(rows_of(*runs))
    labels = [v.label for v in table.variants]
    assert labels == [
        "tiny_t5 MHA", "tiny_t5 GQA-4 (mean)", "tiny_t5 GQA-4 (mean) [n_samples=8]",
        "tiny_t5 GQA-4 (mean) [saved]",
    ]  # fmt: skip
    (points,) = plots.quality_points(table).values()
    assert sorted(text for _, _, text in points) == sorted(labels)
    series = {name: [(k, v.label) for k, v in pts] for name, pts in plots.kv_series(table).items()}
    assert series == {
        "tiny_t5 (mean)": [(4, "tiny_t5 GQA-4 (mean)"), (16, "tiny_t5 MHA")],
        "tiny_t5 (mean) [n_samples=8]": [(4, "tiny_t5 GQA-4 (mean) [n_samples=8]")],
        "tiny_t5 (mean) [saved]": [(4, "tiny_t5 GQA-4 (mean) [saved]")],
    }


def test_mixed_settings_warn_in_one_line(tmp_path, capsys):
    clean = write_runs(tmp_path / "clean", result(), result("mha", 16))
    assert main([str(clean)]) == 0
    assert "warning" not in capsys.readouterr().err
    mixed = write_runs(
        tmp_path / "mixed", result(), result(), result(n_samples=8), result(timing_mode="fixed")
    )
    assert main([str(mixed)]) == 0
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert "the runs differ in n_samples (8, 64), timing_mode (fixed, natural)" in line
    md = (mixed / "table.md").read_text()
    assert "Here the runs differ in n_samples (8, 64), timing_mode (fixed, natural)." in md


def test_summary_gathers_runs_from_several_folders(tmp_path, capsys):
    sweep = write_runs(tmp_path / "outputs" / "multirun" / "s1", result(), result("mha", 16))
    elsewhere = write_runs(tmp_path / "scratch" / "run", result(task="trivia_qa"))
    out = tmp_path / "report"
    # a folder given twice, or inside another, counts its runs once
    assert main([str(tmp_path / "outputs"), str(sweep), str(elsewhere), "--out", str(out)]) == 0
    rows = read_csv(out / "summary.csv")
    assert len(rows) == 3
    for r in rows:  # run_dir is relative to the folder of summary.csv
        assert (out / r["run_dir"] / "result.json").is_file()
    assert {r["run_dir"].split(os.sep)[1] for r in rows} == {"outputs", "scratch"}
    md = (out / "table.md").read_text()
    assert "Built from 3 runs (every `result.json` under `../outputs`, `../outputs/multirun/s1`" in md
    assert "tiny_t5 GQA-8 (mean)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), str(elsewhere)])
    assert exit_info.value.code == 2 and "--out OUT is required" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--out"):
        write_report([sweep, elsewhere])
    # one folder written elsewhere: run_dir relative to the report, too
    assert main([str(sweep), "--out", str(tmp_path / "r2")]) == 0
    assert all((tmp_path / "r2" / r["run_dir"]).is_dir() for r in read_csv(tmp_path / "r2" / "summary.csv"))


@pytest.mark.parametrize(("kv_heads", "name"), [("1", "mqa"), ("2", "gqa2"), ("8", "gqa8"), ("null", "mha")])
def test_gqa_sweep_names_a_variant_as_its_preset_does(compose_cfg, kv_heads, name):
    cfg = compose_cfg(["model=gqa", f"model.kv_heads={kv_heads}"])
    assert cfg.model.name == name
    if name in ("mqa", "gqa2", "gqa8", "mha"):
        preset = compose_cfg([f"model={name}"]).model
        assert (preset.name, preset.kv_heads, preset.conversion) == (name, cfg.model.kv_heads, "mean")
    assert (
        cli.variant_name(None) == "mha" and cli.variant_name(1) == "mqa" and cli.variant_name(16) == "gqa16"
    )


def test_run_and_sweep_directories_name_the_base(tmp_path):
    overrides = [
        "base=tiny_llama",
        "model=gqa",
        "model.kv_heads=1",
        "task=trivia_qa",
        f"output_root={tmp_path}",
    ]
    cfg = compose_config("config", overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.job.num = 3
    assert Path(cfg.hydra.run.dir).name.endswith("_tiny_llama_mqa_trivia_qa")
    assert Path(cfg.hydra.run.dir).parent == tmp_path / "runs"
    assert cfg.hydra.sweep.subdir == "3_tiny_llama_mqa_trivia_qa"


def test_failed_lone_run_outside_output_root_is_reported_in_its_own_directory(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from gqa_eval.report.callback import SummaryCallback

    run = tmp_path / "scratch" / "run"
    run.mkdir(parents=True)
    error = {"model": "gqa8", "base": "tiny_t5", "task": "cnn_dm", "error_type": "ValueError", "message": "x"}
    (run / "error.json").write_text(json.dumps(error))
    config = OmegaConf.create(
        {
            "output_root": str(tmp_path / "outputs"),
            "hydra": {"mode": RunMode.RUN, "runtime": {"output_dir": str(run)}},
        }
    )
    SummaryCallback().on_job_end(config, job_return=JobReturn(status=JobStatus.FAILED))
    assert "## Failed runs" in (run / "table.md").read_text()
    assert not (tmp_path / "outputs").exists()
