"""Entry stage: the ``gqa-eval`` and ``gqa-eval-convert`` Hydra apps. All logic lives in ``evaluate``.

A failing run prints one line naming the problem and the fix and exits non-zero; in a multirun the
failure is recorded in the job's ``error.json``, the other jobs go on, the sweep report lists it, and the
sweep exits non-zero at the end.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from gqa_eval.evaluate import convert, evaluate
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.summary import write_atomic

log = logging.getLogger("gqa_eval")

# One id per process: run and sweep directories started in the same second stay apart.
_UID = f"{os.getpid():x}{secrets.token_hex(2)}"
if not OmegaConf.has_resolver("gqa_eval.uid"):
    OmegaConf.register_new_resolver("gqa_eval.uid", lambda: _UID)

# Problems with the user's input, told in one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, FloatingPointError)
FAILED: list[str] = []


def _record_failure(cfg: DictConfig, err: BaseException) -> Path | None:
    """Write ``error.json`` into the job's run directory (what failed, and why)."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    record = {
        "model": cfg.model.get("name"),
        "base": cfg.base.get("name"),
        "task": cfg.task.get("name"),
        "kv_heads": cfg.model.get("kv_heads"),
        "error_type": type(err).__name__,
        "message": str(err),
        "run_dir": str(run_dir),
    }
    if not isinstance(err, USER_ERRORS):
        record["traceback"] = traceback.format_exc()
    try:
        write_atomic(run_dir / "error.json", json.dumps(record, indent=2) + "\n")
    except OSError:
        return None  # e.g. the unwritable output directory that caused the error
    return run_dir


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        evaluate(cfg)
    except Exception as err:
        _record_failure(cfg, err)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            if isinstance(err, USER_ERRORS):
                sys.exit(f"gqa-eval: error: {err}")
            raise
        FAILED.append(f"{cfg.model.get('name')} x {cfg.task.get('name')}: {type(err).__name__}: {err}")
        log.error("job failed, the sweep goes on: %s: %s", type(err).__name__, err)


def run() -> None:
    """Console entry of ``gqa-eval``: the Hydra app, then a non-zero exit if any multirun job failed."""
    main()
    if FAILED:
        sys.exit("gqa-eval: " + f"{len(FAILED)} job(s) failed:\n  " + "\n  ".join(FAILED))


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="convert")
def convert_main(cfg: DictConfig) -> None:
    try:
        convert(cfg)
    except USER_ERRORS as err:
        sys.exit(f"gqa-eval-convert: error: {err}")


if __name__ == "__main__":  # python -m gqa_eval.cli, where the console script is not installed
    run()
