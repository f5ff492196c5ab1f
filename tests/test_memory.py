"""Peak memory is each run's own: in a Hydra sweep every job runs in one process, and a job after a heavy
one must not report the heavy job's peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.timing import PeakMemory

COMMON = ["task=cnn_dm", "limit=32", "progress=false", "timing.roofline=false", "hydra/job_logging=disabled"]


def _run(args: list[str]) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "gqa_eval.cli", *args, *COMMON], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


def _peaks(root: Path) -> dict[tuple[str, str], dict]:
    out = {}
    for path in root.rglob("result.json"):
        r = json.loads(path.read_text())
        out[(r["model"], r["batch_size"])] = r
    return out


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
def test_sweep_job_reports_its_own_peak_not_an_earlier_jobs(tmp_path):
    # Jobs run in this order in one process: batch 32 (MHA, MQA), then batch 2 (MHA, MQA). A batch of 32
    # needs far more memory than a batch of 2, so a peak carried over from earlier jobs would show.
    _run(["-m", "batch_size=32,2", "model=mha,mqa", f"output_root={tmp_path / 'sweep'}"])
    _run(["model=mqa", "batch_size=2", f"output_root={tmp_path / 'lone'}"])
    sweep, lone = _peaks(tmp_path / "sweep"), _peaks(tmp_path / "lone")
    alone = lone[("mqa", 2)]["peak_mem_mb"]
    assert sweep[("mha", 32)]["peak_mem_mb"] > 1.6 * alone, "the earlier jobs must be heavier for this test"
    for model in ("mha", "mqa"):
        late = sweep[(model, 2)]["peak_mem_mb"]
        # beyond noise: what earlier jobs leave resident that malloc_trim cannot hand back (~10%)
        assert late <= 1.25 * alone, (
            f"{model} at batch 2 after batch-32 jobs: {late:.0f} MB; alone {alone:.0f}"
        )
    assert {r["peak_mem_method"] for r in sweep.values()} == {"linux_vmhwm_reset"}


def test_peak_memory_counts_what_the_run_allocates():
    memory = PeakMemory(torch.device("cpu")).start()
    before = memory.peak_mb()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    after = memory.peak_mb()
    del block
    assert after - before >= 60 if memory.method == "linux_vmhwm_reset" else after >= before
    restarted = PeakMemory(torch.device("cpu")).start()
    if restarted.method == "linux_vmhwm_reset":  # the freed block no longer counts
        assert restarted.peak_mb() < after - 32
