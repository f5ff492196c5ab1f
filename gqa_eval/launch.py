"""Launch stage: which GPU a job of a sweep that runs several jobs at once on this machine uses.

With Hydra's joblib launcher (``hydra/launcher=parallel``, this project's preset, or the plugin's own
``hydra/launcher=joblib``) the jobs of a sweep run in worker processes of this machine, several at
once. Each worker process takes one GPU of the visible ones for its lifetime, before anything in it
initialises CUDA, by setting ``CUDA_VISIBLE_DEVICES`` to that one GPU: the job numbered ``n`` prefers
GPU ``n % count`` of the visible list and takes the next one free if another worker holds that (a
lock file per GPU in the sweep directory, held until the worker exits); when every GPU is held (more
workers than GPUs) it shares GPU ``n % count``. A worker that runs several jobs keeps its GPU, since
CUDA cannot move once it has started.

It applies only to jobs of the joblib launcher whose ``device`` is ``auto`` or ``cuda``, on a torch
built with CUDA, with more than one GPU visible. The visible GPUs are ``CUDA_VISIBLE_DEVICES``'s entries
when it is set (so a user's narrower choice is kept: jobs are spread over those GPUs only), else
``nvidia-smi -L``'s, counted without initialising CUDA. ``device=cuda:N`` or ``GQA_EVAL_GPU_PER_JOB=0``
leaves every job with all the visible GPUs. SLURM (``submitit_slurm``) and ``submitit_local`` set
``CUDA_VISIBLE_DEVICES`` for each job themselves and are left alone.

Before anything runs, :func:`launcher_refusal` says in one line what a chosen launcher lacks: the
plugin of the cluster extra, or SLURM's commands on PATH.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ENV = "GQA_EVAL_GPU_PER_JOB"  # 0/false/no/off: leave CUDA_VISIBLE_DEVICES alone
OFF = ("0", "false", "no", "off")
PARALLEL_LAUNCHERS = ("JoblibLauncher",)  # the launchers that run several jobs at once in this machine
CPU_JOBS = 2  # hydra/launcher=parallel's n_jobs on a machine without a GPU
_LOCK_PREFIX = ".gpu-"

# The hydra/launcher= options that the cluster extra installs (this project's presets and the plugins'
# own names), and the module each needs.
CLUSTER_LAUNCHERS = {
    "parallel": "hydra_plugins.hydra_joblib_launcher",
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
}
SLURM_LAUNCHERS = ("slurm", "submitit_slurm")
# submitit's SlurmExecutor refuses to start without srun; the jobs are submitted with sbatch
SLURM_TOOLS = ("srun", "sbatch")
INSTALL = 'pip install -e ".[cluster]"'

# This process's GPU, once a job in it took one: (gpu, job number, open lock file or None).
_HELD: tuple[str, int, Any] | None = None


def parse_visible(value: str) -> list[str]:
    """The entries of a ``CUDA_VISIBLE_DEVICES`` value, as CUDA reads it: up to the first invalid one
    (empty or negative); ``""`` and ``"-1"`` are no GPU."""
    gpus = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        gpus.append(entry)
    return gpus


def parse_nvidia_smi(listing: str) -> list[str]:
    """The GPUs in ``nvidia-smi -L``'s listing, as ``CUDA_VISIBLE_DEVICES`` names them: each GPU's
    index, or the UUIDs of its MIG instances where it is split into them."""
    gpus: list[tuple[str, list[str]]] = []
    for line in listing.splitlines():
        gpu = re.match(r"\s*GPU (\d+):", line)
        if gpu:
            gpus.append((gpu.group(1), []))
            continue
        mig = re.match(r"\s*MIG .*\(UUID: (MIG-[^)\s]+)\)", line)
        if mig and gpus:
            gpus[-1][1].append(mig.group(1))
    return [entry for index, migs in gpus for entry in (migs or [index])]


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The GPUs this process may use, without initialising CUDA: ``CUDA_VISIBLE_DEVICES``'s entries if
    it is set, else ``nvidia-smi -L``'s; None when they cannot be counted (no ``nvidia-smi``).

    (``torch.cuda.device_count()`` is not used: it asks NVML, but falls back to ``cudaGetDeviceCount``,
    which starts CUDA with the current ``CUDA_VISIBLE_DEVICES``, where NVML cannot answer, as for MIG.)
    """
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return parse_visible(environ["CUDA_VISIBLE_DEVICES"])
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(listing)


def choose_gpu(job_num: int, gpus: Sequence[str], held: Sequence[str] = ()) -> str:
    """The GPU for job ``job_num`` of the visible ``gpus``: ``gpus[job_num % len(gpus)]`` unless another
    worker holds it (``held``), then the next one after it that none holds; if all are held, that one."""
    if not gpus:
        raise ValueError("no GPU to choose from")
    start = job_num % len(gpus)
    order = [gpus[(start + i) % len(gpus)] for i in range(len(gpus))]
    return next((gpu for gpu in order if gpu not in held), order[0])


def local_jobs() -> int:
    """hydra/launcher=parallel's default ``n_jobs``: one per visible GPU, else CPU_JOBS."""
    gpus = visible_gpus() if _torch_has_cuda() else None
    return len(gpus) if gpus else CPU_JOBS


if not OmegaConf.has_resolver("gqa_eval.local_jobs"):  # conf/hydra/launcher/parallel.yaml's n_jobs
    OmegaConf.register_new_resolver("gqa_eval.local_jobs", local_jobs)


def _torch_has_cuda() -> bool:
    import torch

    return torch.version.cuda is not None


def _cuda_started() -> bool:
    import torch

    return torch.cuda.is_initialized()


def _claim(gpus: Sequence[str], job_num: int, lock_dir: Path | None) -> tuple[str, Any]:
    """Take this job's GPU: a lock file per GPU in ``lock_dir`` says which other workers hold."""
    if lock_dir is None:
        return choose_gpu(job_num, gpus), None
    import fcntl

    held: list[str] = []
    for _ in gpus:
        gpu = choose_gpu(job_num, gpus, held)
        if gpu in held:  # all held: share
            return gpu, None
        try:
            lock = open(lock_dir / f"{_LOCK_PREFIX}{gpu}.lock", "a")  # held open until the worker exits
        except OSError:
            return choose_gpu(job_num, gpus), None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            held.append(gpu)
            continue
        return gpu, lock
    return choose_gpu(job_num, gpus), None


def assign_gpu(
    device: str,
    job_num: int | None,
    launcher_target: str | None,
    lock_dir: Path | None = None,
    environ: Any = None,
) -> str | None:
    """Give this job one GPU (module docstring) by setting ``CUDA_VISIBLE_DEVICES``, before anything
    initialises CUDA. Returns the line to print saying which, or None where nothing was changed."""
    global _HELD
    environ = os.environ if environ is None else environ
    if job_num is None or not str(launcher_target or "").endswith(PARALLEL_LAUNCHERS):
        return None
    if str(environ.get(ENV, "auto")).strip().lower() in OFF or str(device) not in ("auto", "cuda"):
        return None
    if _HELD is not None:
        gpu, first, _ = _HELD
        return (
            f"gqa-eval: job {job_num}: on GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu}), this worker's since "
            f"job {first}"
        )
    if not _torch_has_cuda():
        return None
    gpus = visible_gpus(environ)
    if gpus is None:
        return (
            f"gqa-eval: job {job_num}: cannot count the GPUs (no nvidia-smi), so every job sees all of them; "
            "set CUDA_VISIBLE_DEVICES=0,1,... to give each job one"
        )
    if len(gpus) < 2:
        return None
    if _cuda_started():
        return f"gqa-eval: job {job_num}: CUDA already started in this process; it keeps all visible GPUs"
    gpu, lock = _claim(gpus, job_num, lock_dir)
    environ["CUDA_VISIBLE_DEVICES"] = gpu
    _HELD = (gpu, job_num, lock)
    return (
        f"gqa-eval: job {job_num}: on GPU {gpu} of {','.join(gpus)} (CUDA_VISIBLE_DEVICES={gpu}; "
        f"{ENV}=0 leaves the jobs all of them)"
    )


def assign_job_gpu(cfg: Any, hc: Any, job_num: int | None) -> None:
    """:func:`assign_gpu` for a Hydra job (``cfg``, ``HydraConfig.get()``), printing its line."""
    target = OmegaConf.select(hc, "launcher._target_", default=None) if job_num is not None else None
    if target is None:
        return
    sweep_dir = OmegaConf.select(hc, "sweep.dir", default=None)
    lock_dir = Path(str(sweep_dir)) if sweep_dir and Path(str(sweep_dir)).is_dir() else None
    device = OmegaConf.select(cfg, "device", default="auto", throw_on_resolution_failure=False)
    line = assign_gpu(str(device), job_num, str(target), lock_dir)
    if line:
        print(line, flush=True)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def launcher_refusal(launcher: str | None) -> str | None:
    """One line naming what ``hydra/launcher=launcher`` lacks on this machine, and the fix; None where
    it has what it needs (or is none of the cluster extra's)."""
    module = CLUSTER_LAUNCHERS.get(str(launcher))
    if module is None:
        return None
    if not _installed(module) or (module.endswith("submitit_launcher") and not _installed("submitit")):
        return f"hydra/launcher={launcher} needs the cluster extra, not installed: {INSTALL}"
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if launcher in SLURM_LAUNCHERS and missing:
        return (
            f"hydra/launcher={launcher} submits SLURM jobs, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH: run it on the cluster's login node, or "
            "sweep on this machine with hydra/launcher=parallel"
        )
    return None
