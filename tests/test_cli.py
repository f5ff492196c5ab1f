"""The entry stage: a refused run leaves the run directory it was pointed at byte for byte as it was, a
finished run asked for again is not rerun, every run ends with a block saying what it scored and where
its files are, and a missing or malformed config value is one line, not a traceback.

The apps run in this process (``gqa_eval.cli.run`` with ``sys.argv``; Hydra's global state is reset
around each call) on tiny limits of the bundled tiny_t5; one test runs the console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_gqa_eval
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

import gqa_eval.cli as cli
import gqa_eval.variant.conversion

QUICK = ["task=wmt_en_de", "limit=2", "task.max_new_tokens=4", "batch_size=2", "timing.roofline=false"]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (``.hydra/`` included), by relative path."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def test_finished_run_reports_and_is_never_changed(app, tmp_path):
    run_dir = tmp_path / "run"
    here = ["model=gqa4", *QUICK, f"output_root={tmp_path}", f"hydra.run.dir={run_dir}"]
    code, out = app(*here)
    assert code == 0, code
    result = json.loads((run_dir / "result.json").read_text())
    assert "finished: gqa4 on wmt_en_de (tiny_t5, 4 of 16 key/value heads, mean)" in out
    assert f"score    bleu {result['score']:.2f} over 2 examples" in out
    assert f"time     {result['time_per_sample_s']:.4f} s per sample (natural timing)" in out
    assert f"result   {run_dir / 'result.json'}" in out and f"summary  {tmp_path / 'summary.csv'}" in out
    assert "resumed" not in out and "uptrained" not in out
    # every file the report wrote is named: table.md and the plots beside summary.csv
    report_line = next(line for line in out.splitlines() if line.startswith("  report   "))
    assert report_line.endswith(f" in {tmp_path}")
    for name in ("table.md", "table.csv", "quality_vs_time.png", "uptraining.png"):
        assert name in report_line and (tmp_path / name).exists()
    assert {"result.json", "predictions.jsonl", "fingerprint.json", ".hydra/config.yaml",
            ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= set(snapshot(run_dir))  # fmt: skip
    assert "- model=gqa4" in (run_dir / ".hydra/overrides.yaml").read_text()
    before = snapshot(run_dir)

    code, _ = app(*here, "model=gqa2")  # other settings (the later override wins)
    assert "holds a finished run with other settings (model.kv_heads: 4 -> 2" in str(code)
    assert snapshot(run_dir) == before
    code, _ = app(*here, "resume=false")
    assert "holds a finished run and resume=false" in str(code)
    assert snapshot(run_dir) == before
    code, _ = app("model=gqa2", *QUICK, f"output_root={tmp_path}", f"resume={run_dir}")
    assert "holds a finished run with other settings" in str(code)
    assert snapshot(run_dir) == before

    code, out = app(*here)  # the same run again: already done, not rerun (its timing would be lost)
    assert code == 0 and "already finished, nothing rerun: gqa4 on wmt_en_de" in out
    assert f"bleu {result['score']:.2f}" in out
    code, out = app("model=gqa4", *QUICK, f"output_root={tmp_path}", f"resume={run_dir}")
    assert code == 0 and "already finished" in out
    assert snapshot(run_dir) == before


def test_interrupted_run_resumes_and_a_refused_run_leaves_it_alone(app, tmp_path):
    run_dir = tmp_path / "run"
    here = ["model=gqa4", *QUICK, f"output_root={tmp_path}", f"hydra.run.dir={run_dir}"]
    assert app(*here)[0] == 0
    (run_dir / "result.json").unlink()  # as if killed after the first prediction
    first = (run_dir / "predictions.jsonl").read_text().splitlines(keepends=True)[0]
    (run_dir / "predictions.jsonl").write_text(first)
    before = snapshot(run_dir)

    code, _ = app(*here, "model=gqa2")
    assert "cannot resume" in str(code) and "kv_heads: 4 -> 2" in str(code)
    assert snapshot(run_dir) == before  # no error.json, .hydra/ still the run's own
    code, _ = app(*here, "resume=false")
    assert "holds predictions of an earlier run and resume=false" in str(code)
    assert snapshot(run_dir) == before

    code, out = app(*here)  # the README's resume recipe
    assert code == 0, code
    assert "resumed  1 of 2 predictions reused from an earlier session (timed: the other 1)" in out
    assert json.loads((run_dir / "result.json").read_text())["n_samples"] == 2
    after = snapshot(run_dir)
    assert all(after[name] == before[name] for name in before if name.startswith(".hydra/"))


def test_multirun_prints_a_line_per_job_and_a_rerun_sweep_changes_nothing(app, tmp_path):
    sweep = tmp_path / "sweep"
    here = ["-m", "model=gqa4,mqa", *QUICK, f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}"]
    code, out = app(*here)
    assert code == 0, code
    for job, model in enumerate(["gqa4", "mqa"]):
        run_dir = sweep / f"{job}_tiny_t5_{model}_wmt_en_de"
        result = json.loads((run_dir / "result.json").read_text())
        assert (
            f"gqa-eval: job {job}: {model} on wmt_en_de (2 examples): bleu {result['score']:.2f}, "
            f"{result['time_per_sample_s']:.4f} s per sample -> {run_dir / 'result.json'}"
        ) in out
    runs = {d.name: snapshot(d) for d in sweep.iterdir() if d.is_dir()}

    code, out = app(*here)  # a sweep resumed after a crash: its finished jobs are done
    assert code == 0 and out.count("(already finished, not rerun)") == 2
    code, _ = app(*here, "task.max_new_tokens=5")
    assert "2 job(s) failed" in str(code) and "task.max_new_tokens: 4 -> 5" in str(code)
    assert {d.name: snapshot(d) for d in sweep.iterdir() if d.is_dir()} == runs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=gqa"], "model.kv_heads is required but not set; model=gqa needs the number of"),
        (["model=saved"], "model.checkpoint is required but not set; model=saved evaluates a saved"),
        (["limit=abc"], "limit must be a positive whole number"),
        (["task.input_template=${nope}"], "Interpolation key 'nope' not found (config key task.input_"),
        (["task=cnn_dn"], "Could not find 'task/cnn_dn'"),
    ],
)  # fmt: skip
def test_config_errors_are_one_line(app, tmp_path, overrides, message):
    code, _ = app(*QUICK, *overrides, f"output_root={tmp_path}")
    assert isinstance(code, str) and code.startswith("gqa-eval: error: ") and message in code
    if "Could not find" not in code:  # Hydra's listing of the options has lines of its own
        assert "\n" not in code
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.parametrize("override", ["method=first", "+method=first"])
def test_convert_names_the_renamed_conversion_key(app, tmp_path, override):
    code, _ = app("kv_heads=2", f"out={tmp_path / 'gqa2'}", override, entry=cli.convert_main)
    assert code == (
        "gqa-eval-convert: error: method= was renamed conversion= (as model.conversion is named); "
        "set conversion=..."
    )
    assert not (tmp_path / "gqa2").exists()


def test_convert_checks_kv_heads_and_out_before_loading(app, tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the config was checked")

    monkeypatch.setattr(gqa_eval.variant.conversion, "load_checkpoint", no_loading)
    out = f"out={tmp_path / 'gqa4'}"
    for args, message in [
        ([out], "kv_heads is required but not set; the number of key/value heads after conversion"),
        (["kv_heads=4"], "out is required but not set; the directory to write the converted checkpoint"),
        ([], "kv_heads and out are required but not set"),
        (["kv_heads=abc", out], "kv_heads must be a whole number >= 1"),
        (["kv_heads=0", out], "kv_heads must be a whole number >= 1"),
    ]:
        code, _ = app(*args, entry=cli.convert_main)
        assert isinstance(code, str) and code.startswith("gqa-eval-convert: error: "), code
        assert message in code and "\n" not in code
    assert not (tmp_path / "gqa4").exists()


def test_error_line_names_the_key():
    cfg = OmegaConf.create({"model": {"name": "gqa${.kv_heads}", "kv_heads": "???", "extra": "${nope}"}})
    with pytest.raises(MissingMandatoryValue) as err:
        _ = cfg.model.kv_heads
    assert cli.error_line(err.value) == (
        "model.kv_heads is required but not set; model=gqa needs the number of key/value heads: "
        "set model.kv_heads=N"
    )
    with pytest.raises(cli.CONFIG_ERRORS) as err:
        _ = cfg.model.name  # an interpolation to the unset value names the unset key
    assert cli.error_line(err.value).startswith("model.kv_heads is required but not set")
    with pytest.raises(cli.CONFIG_ERRORS) as err:
        _ = cfg.model.extra
    assert cli.error_line(err.value) == "Interpolation key 'nope' not found (config key model.extra)"
    assert isinstance(err.value, cli.USER_ERRORS)


def test_console_script_says_one_line(tmp_path):
    """Where Hydra itself meets the unset value (model=gqa's run directory name needs kv_heads)."""
    proc = run_gqa_eval("model=gqa", f"output_root={tmp_path}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "gqa-eval: error: model.kv_heads is required but not set; model=gqa needs the number of "
        "key/value heads: set model.kv_heads=N"
    ]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unwritable_output_is_one_line_and_a_bug_keeps_its_traceback(app, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _ = app(*QUICK, f"output_root={blocker}")  # Hydra cannot create the run directory
    assert str(code).startswith("gqa-eval: error: cannot create the output directory ([Errno 20]")
    assert "set output_root=DIR" in str(code) and "\n" not in str(code)

    def bug(cfg):
        raise IsADirectoryError(21, "a bug, not the user's input")

    monkeypatch.setattr(cli, "evaluate", bug)
    with pytest.raises(IsADirectoryError, match="a bug"):
        app(*QUICK, f"output_root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert "traceback" in json.loads((tmp_path / "run" / "error.json").read_text())


def test_end_of_run_block_says_where_uptraining_went_and_paths_are_absolute(app, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output_root=outputs, relative: the summary line is absolute all the same
    code, out = app("model=gqa4", *QUICK, "output_root=outputs", "hydra.run.dir=outputs/run")
    assert code == 0, code
    assert f"summary  {tmp_path / 'outputs' / 'summary.csv'}" in out
    result = json.loads((tmp_path / "outputs" / "run" / "result.json").read_text())
    uptrained = {**result, "uptrain": {"alpha": 0.05, "steps": 100, "checkpoint": "/x/uptrained/a"},
                 "uptrain_alpha": 0.05, "uptrain_steps": 100}  # fmt: skip
    assert "  uptrained alpha 0.05 (100 steps) into /x/uptrained/a" in cli.report(uptrained).splitlines()
