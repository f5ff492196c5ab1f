"""A command line that gqa-eval refuses is refused before Hydra writes anything (gqa_eval/refusals.py,
``cli.refuse_before_hydra``): no run directory for a refused run, no new ``multirun.yaml`` for a refused
sweep (an existing one is left as it was), no empty directory for ``resume=PATH``, and one line naming the
fix for a launcher this machine cannot use (the cluster extra missing, SLURM's commands not on PATH)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import read_predictions

import gqa_eval.cli as cli
import gqa_eval.launch as launch
import gqa_eval.refusals as refusals

QUICK = ["task=wmt_en_de", "limit=2", "task.max_new_tokens=4", "batch_size=2", "timing.roofline=false"]


def no_evaluation(cfg):
    raise AssertionError("evaluate() ran for a refused command line")


def files(directory: Path) -> dict[str, bytes]:
    """Every file and directory below ``directory`` (directories as b'<dir>')."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): b"<dir>" if p.is_dir() else p.read_bytes()
        for p in directory.rglob("*")
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=abc"], "seed must be a whole number >= 0, got seed='abc'"),
        (["model=gqa", "model.kv_heads=abc"], "model.kv_heads"),
        (["task.max_new_tokens=0"], "task.max_new_tokens"),
    ],
)
def test_a_refused_run_makes_no_run_directory(app, tmp_path, monkeypatch, overrides, message):
    monkeypatch.setattr(cli, "evaluate", no_evaluation)
    code, _ = app(*QUICK, *overrides, f"output_root={tmp_path}")
    assert isinstance(code, str) and code.startswith("gqa-eval: error: ") and message in code, code
    assert "\n" not in code
    assert files(tmp_path) == {}  # not even the empty run directory the report would list as failed


def test_a_refused_sweep_leaves_its_sweep_directory_as_it_was(app, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    here = ["-m", "model=gqa4", *QUICK, f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}"]
    assert app(*here)[0] == 0
    before = files(tmp_path)
    assert "sweep/multirun.yaml" in before
    monkeypatch.setattr(cli, "evaluate", no_evaluation)
    code, _ = app(*here, "seed=0,abc")  # job 1 of the sweep is refused: so is the whole sweep
    assert isinstance(code, str) and "job 1: seed must be a whole number" in code and "\n" not in code
    assert "nothing was written" in code
    assert files(tmp_path) == before  # multirun.yaml not rewritten, no job directory added
    code, _ = app(*here, "task.max_new_tokens=5")  # the finished job's directory holds other settings
    assert "task.max_new_tokens: 4 -> 5" in str(code)
    assert files(tmp_path) == before


def test_a_new_refused_sweep_makes_no_sweep_directory(app, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "evaluate", no_evaluation)
    code, _ = app("-m", "model=gqa4,mqa", *QUICK, "task.max_new_tokens=0,4", f"output_root={tmp_path}")
    assert isinstance(code, str) and "2 job(s) failed the checks before the sweep started" in code
    assert files(tmp_path) == {}


def test_resume_path_runs_in_that_directory_and_makes_no_other(app, tmp_path):
    run_dir = tmp_path / "interrupted"
    assert app("model=gqa4", *QUICK, f"output_root={tmp_path}", f"hydra.run.dir={run_dir}")[0] == 0
    (run_dir / "result.json").unlink()  # as if killed after the first prediction
    first = (run_dir / "predictions.jsonl").read_text().splitlines(keepends=True)[0]
    (run_dir / "predictions.jsonl").write_text(first)
    outputs = tmp_path / "outputs"
    code, out = app("model=gqa4", *QUICK, f"output_root={outputs}", f"resume={run_dir}")
    assert code == 0, code
    assert "resumed  1 of 2 predictions reused" in out
    assert len(read_predictions(run_dir)) == 2
    assert not outputs.exists() or not list((outputs / "runs").glob("*"))  # no second, empty run directory


def test_resume_path_without_predictions_is_refused_before_anything(app, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "evaluate", no_evaluation)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _ = app("model=gqa4", *QUICK, f"output_root={tmp_path / 'out'}", f"resume={empty}")
    assert code == (
        f"gqa-eval: error: resume={empty}: no predictions.jsonl there to resume from; give the directory "
        "of an interrupted run, or drop resume= to start a new run"
    )
    assert files(tmp_path) == {"empty": b"<dir>"}


def test_a_large_sweep_is_checked_on_a_covering_subset(monkeypatch):
    """More than MAX_COMPOSED jobs: every value of every swept key is composed at least once, each with the
    job number the basic sweeper gives that combination."""
    monkeypatch.setattr(refusals, "MAX_COMPOSED", 3)
    jobs = refusals._jobs(["model=mha,gqa4,mqa", "seed=1,2", "hydra.sweep.dir=x"], multirun=True)
    assert jobs is not None and len(jobs) == 3
    seen = {o for _, overrides in jobs for o in overrides}
    assert {"model=mha", "model=gqa4", "model=mqa", "seed=1", "seed=2", "hydra.sweep.dir=x"} <= seen
    order = [f"model={m}" for m in ("mha", "gqa4", "mqa")]
    for number, overrides in jobs:  # the cartesian product's order: the last key runs fastest
        model, seed = overrides[1], overrides[2]
        assert number == order.index(model) * 2 + (int(seed[-1]) - 1)


def test_the_cluster_launchers_without_their_extra_name_the_install(app, tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "_installed", lambda module: False)
    for name in ("parallel", "joblib", "slurm", "submitit_local"):
        code, _ = app("-m", "model=gqa4", *QUICK, f"hydra/launcher={name}", f"output_root={tmp_path}")
        assert code == (
            f"gqa-eval: error: hydra/launcher={name} needs the cluster extra, not installed: "
            'pip install -e ".[cluster]"'
        )
    assert files(tmp_path) == {}


def test_slurm_without_its_commands_is_one_line(app, tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"  # a PATH with no srun and an sbatch only
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{Path(os.__file__).parent}")
    out_dir = tmp_path / "out"
    code, _ = app("-m", "model=gqa4", *QUICK, "hydra/launcher=slurm", f"output_root={out_dir}")
    assert code == (
        "gqa-eval: error: hydra/launcher=slurm submits SLURM jobs, but srun is not on PATH: run it on the "
        "cluster's login node, or sweep on this machine with hydra/launcher=parallel"
    )
    assert files(out_dir) == {}  # no sweep directory holding a lone multirun.yaml


def test_launchers_that_need_nothing_more_are_not_refused():
    assert launch.launcher_refusal(None) is None
    assert launch.launcher_refusal("basic") is None


def test_an_unreachable_hub_model_is_refused_before_a_run_directory(app, hub, tmp_path):
    code, _ = app("base=flan_t5_small", "task=cnn_dm", "limit=2", f"output_root={tmp_path / 'out'}")
    assert isinstance(code, str) and code.startswith("gqa-eval: error: ")
    assert "google/flan-t5-small" in code and "base.path" in code and "\n" not in code.strip()
    assert not (tmp_path / "out").exists()
