"""Report stage, Hydra side: rebuild the report in the sweep directory when a multirun ends.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Each successful job already refreshes
the report itself (``evaluate`` calls ``write_summary``); this callback writes the final one at the end
of a multirun and prints the pivot, and refreshes the report after a failed job so that the failure is
listed (Hydra's basic sweeper raises on a failed job before ``on_multirun_end`` is reached). When the
runs mix settings (``gqa_eval.report.SETTINGS``) it says which, in one warning line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gqa_eval.report.summary import find_failures, find_results, report_root, write_report

log = logging.getLogger(__name__)
# The failed jobs the end-of-sweep report found. A launcher that runs jobs in other processes (joblib,
# submitit) cannot tell the launching process which failed; their error.json files can. gqa_eval.cli
# exits non-zero when this is not empty.
SWEEP_FAILURES: list[str] = []


class SummaryCallback(Callback):
    """Writes ``summary.csv``, ``table.csv``, ``table.md`` and the plots into the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        built = write_report(sweep_dir)
        SWEEP_FAILURES[:] = [
            f"{f.get('model')} x {f.get('task')}: {f.get('error_type')}: {f.get('message')}"
            for f in built.failures
        ]
        print(f"\ngqa-eval: report of {len(built.rows)} runs written to {sweep_dir}/")
        print("  " + ", ".join(p.name for p in built.files) + "\n")
        print(built.text, end="", flush=True)
        if built.warning:
            log.warning("%s", built.warning)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return  # evaluate() refreshed the report itself
        root = _report_root(config)
        if not (find_results(root) or find_failures(root)):
            return  # nothing to list: the job failed before writing anything
        try:
            write_report(root)
        except Exception as err:  # the job's own error is the one to report
            log.warning("could not refresh the report in %s after a failed job: %s", root, err)


def _report_root(config: DictConfig) -> Path:
    """Where a job's report lives, by the rule ``evaluate`` follows (``summary.report_root``)."""
    sweep = Path(config.hydra.sweep.dir) if config.hydra.mode == RunMode.MULTIRUN else None
    run_dir = OmegaConf.select(config, "hydra.runtime.output_dir") or config.output_root
    return report_root(Path(run_dir), sweep, Path(config.output_root))
