"""Entry stage: the ``gqa-eval`` Hydra app. All logic lives in ``evaluate(cfg)``."""

from __future__ import annotations

import os
import secrets

import hydra
from omegaconf import DictConfig, OmegaConf

from gqa_eval.evaluate import convert, evaluate
from gqa_eval.paths import PROJECT_ROOT

# One id per process: run and sweep directories started in the same second stay apart.
_UID = f"{os.getpid():x}{secrets.token_hex(2)}"
if not OmegaConf.has_resolver("gqa_eval.uid"):
    OmegaConf.register_new_resolver("gqa_eval.uid", lambda: _UID)


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="convert")
def convert_main(cfg: DictConfig) -> None:
    convert(cfg)
