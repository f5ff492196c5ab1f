"""Sweeps on Hydra's other launchers (docs/sweeps.md): a joblib sweep of two workers and a submitit_local
sweep each give every variant x task row of the sweep's summary, whose report the launching process
writes at the end; the SLURM preset reaches sbatch as its keys say (a stand-in sbatch on PATH); and
each job of a parallel local sweep gets one GPU (gqa_eval/launch.py), chosen before CUDA starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import compose_config, read_csv, run_gqa_eval

import gqa_eval.cli as cli
import gqa_eval.launch as launch

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

SMALL = ["limit=1", "task.max_new_tokens=2", "batch_size=1", "timing.roofline=false", "progress=false"]
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def sweep_rows(sweep: Path) -> dict[tuple[str, str], dict]:
    rows = read_csv(sweep / "summary.csv")
    return {(row["model"], row["task"]): row for row in rows}


def assert_every_row(proc: subprocess.CompletedProcess, sweep: Path, models, tasks) -> None:
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = sweep_rows(sweep)
    assert set(rows) == {(m, t) for m in models for t in tasks}
    for row in rows.values():
        assert row["score"] not in ("", None) and float(row["score"]) >= 0, row
    runs = len(models) * len(tasks)
    # the launching process rebuilt the report once every job was done (SummaryCallback.on_multirun_end)
    assert f"gqa-eval: report of {runs} runs written to {sweep}/" in proc.stdout
    table = (sweep / "table.md").read_text()
    assert all(f"tiny_t5 {m.upper()}" in table for m in models)


def test_joblib_sweep_of_two_workers_gives_every_row(tmp_path):
    sweep = tmp_path / "sweep"
    models, tasks = ["mha", "mqa"], ["cnn_dm", "trivia_qa"]
    proc = run_gqa_eval(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"model={','.join(models)}",
        f"task={','.join(tasks)}", *SMALL, f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert "Joblib.Parallel(n_jobs=2," in proc.stdout + proc.stderr  # the joblib launcher ran the sweep
    assert_every_row(proc, sweep, models, tasks)
    for job in range(4):  # every job's line came back from its worker process
        assert f"gqa-eval: job {job}: " in proc.stdout


def test_a_failed_job_in_a_worker_process_fails_the_sweep(tmp_path):
    """A job that fails in a joblib worker cannot tell the launching process; its error.json can: the
    sweep still exits non-zero naming it, and the other job's row is there."""
    sweep = tmp_path / "sweep"
    proc = run_gqa_eval(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=gqa", "model.kv_heads=3,1",
        "task=cnn_dm", *SMALL, f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "gqa-eval: 1 job(s) failed:" in proc.stderr and "gqa3 x cnn_dm" in proc.stderr
    assert set(sweep_rows(sweep)) == {("mqa", "cnn_dm")}


def test_submitit_local_sweep_gives_every_row(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_gqa_eval(
        "-m", "hydra/launcher=submitit_local", "model=mha,mqa", "task=cnn_dm", *SMALL,
        f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert_every_row(proc, sweep, ["mha", "mqa"], ["cnn_dm"])
    logs = sorted((sweep / ".submitit").rglob("*_log.out"))  # the jobs ran in submitit's processes
    assert len(logs) == 2 and all("gqa-eval: job " in log.read_text() for log in logs)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A stand-in ``sbatch`` (copies the batch script it is given, says it submitted job 4242) and
    ``srun`` on PATH; the jobs' results are not waited for. Returns the copy's path."""
    import submitit.slurm.slurm

    bin_dir, copy = tmp_path / "bin", tmp_path / "sbatch_script.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{copy}"\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "results", lambda self: ["not run"])
    return copy


def submit(overrides: list[str], tmp_path: Path) -> list[str]:
    """The ``#SBATCH`` lines of the job array a two-job sweep with ``overrides`` submits."""
    import hydra.utils

    cfg = compose_config("config", [*overrides, f"output_root={tmp_path}"], return_hydra_config=True)
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=cli.main, config=cfg)
    assert launcher.launch([["model=mha"], ["model=mqa"]], initial_job_idx=0) == ["not run"] * 2
    script = (tmp_path / "sbatch_script.sh").read_text()
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")]


def test_slurm_preset_reaches_sbatch(fake_slurm, tmp_path):
    lines = submit(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], tmp_path)
    for expected in (
        "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB", "--time=240",
        "--array=0-1%2", "--job-name=gqa-eval", "--nodes=1", "--ntasks-per-node=1",
    ):  # fmt: skip
        assert expected in lines, (expected, lines)
    lines = submit(
        ["hydra/launcher=slurm", "hydra.launcher.array_parallelism=1", "hydra.launcher.gpus_per_node=null",
         "hydra.launcher.gres=gpu:1", "hydra.launcher.timeout_min=30", "hydra.launcher.mem_gb=16"],
        tmp_path,
    )  # fmt: skip
    assert {"--array=0-1%1", "--gres=gpu:1", "--time=30", "--mem=16GB"} <= set(lines), lines
    assert not any(line.startswith("--gpus-per-node") or line.startswith("--partition") for line in lines)


def test_plugin_names_work_as_they_are(fake_slurm, tmp_path):
    """hydra/launcher=submitit_slurm (the plugin's own config, no project preset) submits too."""
    lines = submit(["hydra/launcher=submitit_slurm"], tmp_path)
    assert "--time=60" in lines and not any(line.startswith("--gpus-per-node") for line in lines)
    cfg = compose_config("config", ["hydra/launcher=joblib"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == JOBLIB and cfg.hydra.launcher.n_jobs == -1


def test_parallel_preset_runs_a_job_per_gpu(monkeypatch):
    cfg = compose_config("config", ["hydra/launcher=parallel"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == JOBLIB
    monkeypatch.setattr(launch, "_torch_has_cuda", lambda: False)
    assert cfg.hydra.launcher.n_jobs == launch.CPU_JOBS == 2
    monkeypatch.setattr(launch, "_torch_has_cuda", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    assert cfg.hydra.launcher.n_jobs == 8
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert cfg.hydra.launcher.n_jobs == 2


# --- the GPU of a job (gqa_eval/launch.py) ---


@pytest.mark.parametrize(
    ("value", "gpus"),
    [("0,1,2", ["0", "1", "2"]), (" 3, 5 ", ["3", "5"]), ("", []), ("-1", []), ("1,-1,2", ["1"]),
     ("GPU-aa,GPU-bb", ["GPU-aa", "GPU-bb"]), ("4", ["4"])],
)  # fmt: skip
def test_parse_visible(value, gpus):
    assert launch.parse_visible(value) == gpus


def test_parse_nvidia_smi():
    listing = (
        "GPU 0: NVIDIA H200 (UUID: GPU-0a1b)\n"
        "GPU 1: NVIDIA H200 (UUID: GPU-2c3d)\n"
        "  MIG 3g.71gb     Device  0: (UUID: MIG-aaaa-1111)\n"
        "  MIG 3g.71gb     Device  1: (UUID: MIG-bbbb-2222)\n"
        "GPU 2: NVIDIA H200 (UUID: GPU-4e5f)\n"
    )
    assert launch.parse_nvidia_smi(listing) == ["0", "MIG-aaaa-1111", "MIG-bbbb-2222", "2"]
    assert launch.parse_nvidia_smi("") == []


def test_visible_gpus_reads_cuda_visible_devices_first(monkeypatch):
    def smi(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout="GPU 0: A (UUID: GPU-x)\nGPU 1: A (UUID: GPU-y)\n")

    monkeypatch.setattr(launch.subprocess, "run", smi)
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "3"}) == ["3"]  # the user's choice is kept
    assert launch.visible_gpus({}) == ["0", "1"]

    def missing(*args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(launch.subprocess, "run", missing)
    assert launch.visible_gpus({}) is None


def test_choose_gpu():
    gpus = ["0", "1", "2", "3"]
    assert [launch.choose_gpu(n, gpus) for n in range(6)] == ["0", "1", "2", "3", "0", "1"]
    assert launch.choose_gpu(1, ["4", "6"]) == "6"  # an entry of the visible list, not an index
    assert launch.choose_gpu(1, gpus, held=["1", "2"]) == "3"  # the next free one after its own
    assert launch.choose_gpu(3, gpus, held=["3"]) == "0"
    assert launch.choose_gpu(5, gpus, held=gpus) == "1"  # all held: shares its own
    with pytest.raises(ValueError):
        launch.choose_gpu(0, [])


@pytest.fixture
def gpu_host(monkeypatch):
    """A torch that has CUDA, not started yet; this process has no GPU of its own yet (and after the
    test, the GPU lock it took is let go)."""
    monkeypatch.setattr(launch, "_torch_has_cuda", lambda: True)
    monkeypatch.setattr(launch, "_cuda_started", lambda: False)
    monkeypatch.setattr(launch, "_HELD", None)
    yield
    if launch._HELD and launch._HELD[2]:  # the lock of the last "worker"
        launch._HELD[2].close()


def test_each_worker_takes_a_free_gpu_and_keeps_it(gpu_host, monkeypatch, tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    line = launch.assign_gpu("auto", 0, JOBLIB, tmp_path, env)
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert line == (
        "gqa-eval: job 0: on GPU 0 of 0,1 (CUDA_VISIBLE_DEVICES=0; GQA_EVAL_GPU_PER_JOB=0 leaves the jobs "
        "all of them)"
    )
    worker_a = launch._HELD
    # worker A's next job keeps its GPU: CUDA cannot move once it has started
    assert launch.assign_gpu("auto", 1, JOBLIB, tmp_path, env).endswith("this worker's since job 0")
    assert env["CUDA_VISIBLE_DEVICES"] == "0"

    # worker B starts on job 2 (worker A ran 0 and 1, say both were already finished): GPU 0 is A's
    monkeypatch.setattr(launch, "_HELD", None)
    env_b = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert "on GPU 1 of 0,1" in launch.assign_gpu("cuda", 2, JOBLIB, tmp_path, env_b)
    assert env_b["CUDA_VISIBLE_DEVICES"] == "1"
    worker_b = launch._HELD

    # a third worker, two GPUs held: it shares its job's own (4 % 2 = 0)
    monkeypatch.setattr(launch, "_HELD", None)
    env_c = {"CUDA_VISIBLE_DEVICES": "0,1"}
    launch.assign_gpu("auto", 4, JOBLIB, tmp_path, env_c)
    assert env_c["CUDA_VISIBLE_DEVICES"] == "0"

    worker_b[2].close()  # worker B exits: its GPU is free again
    monkeypatch.setattr(launch, "_HELD", None)
    env_d = {"CUDA_VISIBLE_DEVICES": "0,1"}
    launch.assign_gpu("auto", 6, JOBLIB, tmp_path, env_d)
    assert env_d["CUDA_VISIBLE_DEVICES"] == "1"
    worker_a[2].close()


@pytest.mark.parametrize(
    ("device", "target", "env", "why"),
    [
        ("auto", "hydra._internal.core_plugins.basic_launcher.BasicLauncher", {}, "one job at a time"),
        ("auto", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", {}, "submitit's"),
        ("cpu", JOBLIB, {}, "device=cpu"),
        ("cuda:1", JOBLIB, {}, "the user's GPU"),
        ("auto", JOBLIB, {"GQA_EVAL_GPU_PER_JOB": "0"}, "turned off"),
        ("auto", JOBLIB, {"GQA_EVAL_GPU_PER_JOB": "false"}, "turned off"),
        ("auto", JOBLIB, {"CUDA_VISIBLE_DEVICES": "5"}, "one GPU only: the user's"),
        ("auto", JOBLIB, {"CUDA_VISIBLE_DEVICES": ""}, "no GPU"),
    ],
)
def test_gpus_left_alone(gpu_host, tmp_path, device, target, env, why):
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2", **env}
    before = dict(env)
    assert launch.assign_gpu(device, 3, target, tmp_path, env) is None, why
    assert env == before and launch._HELD is None


def test_gpus_left_alone_on_cpu_torch_or_started_cuda(gpu_host, monkeypatch, tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert launch.assign_gpu("auto", None, JOBLIB, tmp_path, env) is None  # not a multirun job
    monkeypatch.setattr(launch, "_cuda_started", lambda: True)
    assert "CUDA already started" in launch.assign_gpu("auto", 1, JOBLIB, tmp_path, env)
    monkeypatch.setattr(launch, "_torch_has_cuda", lambda: False)
    assert launch.assign_gpu("auto", 1, JOBLIB, tmp_path, env) is None
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1"} and launch._HELD is None


def test_a_job_gets_its_gpu_before_evaluate_starts(gpu_host, monkeypatch, tmp_path, app):
    """The app in this process with joblib's n_jobs=1 (its jobs run here, one after the other): the
    GPU is set at the start of the job, before evaluate, and the job says which."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(cli, "FAILED", [])
    seen = []
    real_evaluate = cli.evaluate

    def evaluate(cfg):
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
        return real_evaluate(cfg)

    monkeypatch.setattr(cli, "evaluate", evaluate)
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "model=mha,mqa", "task=cnn_dm", *SMALL]
    code, out = app(*args, f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}")
    assert code == 0
    assert seen == ["0", "0"]  # job 0's GPU (0 % 2), kept by the process's second job
    assert "gqa-eval: job 0: on GPU 0 of 0,1 (CUDA_VISIBLE_DEVICES=0;" in out
    assert "gqa-eval: job 1: on GPU 0 (CUDA_VISIBLE_DEVICES=0), this worker's since job 0" in out
    assert len(sweep_rows(sweep)) == 2
