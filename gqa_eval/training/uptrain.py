"""Uptraining inside an evaluation run: ``gqa-eval model=mqa uptrain.alpha=0.05 task=...``.

The paper's converted checkpoints are uptrained for a fraction alpha of the base's pre-training steps
before they are evaluated (Ainslie et al. 2023, arXiv 2305.13245, sec. 2.1, Fig. 5). With
``uptrain.alpha > 0`` a run first converts the base as ``cfg.model`` says and continues it with the
trainer (:func:`gqa_eval.training.loop.train`, ``conf/training.yaml``; ``uptrain.recipe=continue``: the
base's last training stage, continued), then evaluates the uptrained checkpoint. The checkpoint goes to
``uptrain.out_root/<base>_<model>_<conversion>_a<alpha>_<digest>`` (the digest covers everything that
shapes it), once: the other tasks of a sweep, and the jobs of a parallel sweep, reuse it (a lock file
makes concurrent jobs wait for the one that trains). An interrupted uptraining resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from gqa_eval.paths import PROJECT_ROOT, resolve


def uptrain_settings(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.uptrain`` checked: ``{"alpha", "recipe", "base_steps", "out_root"}`` (alpha 0 when unset).

    Raises:
        ValueError: alpha not a number >= 0; alpha > 0 without ``model.kv_heads`` or with
            ``model.checkpoint`` (a saved checkpoint is evaluated as it is); an unknown recipe.
    """
    up = dict(OmegaConf.to_container(cfg.uptrain, resolve=True)) if cfg.get("uptrain") is not None else {}
    alpha = up.get("alpha") or 0
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ValueError(
            f"uptrain.alpha must be a fraction >= 0 of the base's training steps (0 = no uptraining), "
            f"got {up.get('alpha')!r}"
        )
    recipe = up.get("recipe", "continue")
    if recipe not in ("continue", "given"):
        raise ValueError(
            f"uptrain.recipe={recipe!r}: choose continue (the base's last stage, continued) or given"
        )
    if alpha > 0 and cfg.model.get("checkpoint"):
        raise ValueError(
            "uptrain.alpha > 0 uptrains a conversion of the base, but model.checkpoint loads a saved "
            "checkpoint as it is; drop one of them (uptrain a saved checkpoint with "
            "gqa-eval-train init_from=DIR)"
        )
    if alpha > 0 and cfg.model.get("kv_heads") is None:
        raise ValueError(
            f"uptrain.alpha={alpha:g} uptrains a converted variant, but model={cfg.model.name} converts "
            "nothing; choose a variant with key/value heads (model=gqa8, model=mqa, model.kv_heads=N)"
        )
    return {
        "alpha": float(alpha),
        "recipe": recipe,
        "base_steps": up.get("base_steps"),
        "out_root": up.get("out_root") or "outputs/uptrained",
    }


def _identity(cfg: DictConfig, up: dict[str, Any]) -> dict[str, Any]:
    """Everything that shapes the uptrained checkpoint (its directory's digest)."""
    model = cfg.model
    calibration = model.get("calibration")
    return {
        "base": str(cfg.base.path),
        "revision": cfg.base.get("revision"),
        "kv_heads": int(model.kv_heads),
        "conversion": str(model.conversion),
        "calibration": OmegaConf.to_container(calibration, resolve=True) if calibration is not None else None,
        "alpha": up["alpha"],
        "recipe": up["recipe"],
        "base_steps": up["base_steps"],
        "seed": int(cfg.seed),
    }


def uptrained_dir(cfg: DictConfig, up: dict[str, Any] | None = None) -> Path:
    """Where the uptrained checkpoint of ``cfg`` lives."""
    up = up or uptrain_settings(cfg)
    ident = _identity(cfg, up)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{cfg.base.name}_{cfg.model.name}_{cfg.model.conversion}_a{up['alpha']:g}_{digest}"
    root = Path(up["out_root"])
    return (root if root.is_absolute() else Path.cwd() / root) / name


def training_config(cfg: DictConfig, out_dir: Path, up: dict[str, Any]) -> DictConfig:
    """The trainer's config (``conf/training.yaml``) for uptraining ``cfg``'s variant into ``out_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside the gqa-eval app: the same config directory
        train_cfg = compose("training")
    else:
        with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
            train_cfg = compose("training")
    base = resolve(cfg.base.path)
    values = {
        "init_from": str(base) if base.exists() else str(cfg.base.path),
        "kv_heads": int(cfg.model.kv_heads),
        "conversion": str(cfg.model.conversion),
        "uptrain.alpha": up["alpha"],
        "uptrain.recipe": up["recipe"],
        "uptrain.base_steps": up["base_steps"],
        "seed": int(cfg.seed),
        "out_dir": str(out_dir),
        "output_root": str(cfg.output_root),
        "device": str(cfg.device),
        "progress": bool(cfg.get("progress", True)),
        "eval_examples": 0,  # the evaluation follows
        "keep_resume_state": False,
    }
    with open_dict(train_cfg):
        for key, value in values.items():
            OmegaConf.update(train_cfg, key, value, merge=False)
        if cfg.model.get("calibration") is not None:
            train_cfg.calibration = OmegaConf.to_container(cfg.model.calibration, resolve=True)
    return train_cfg


def finished(out_dir: Path) -> bool:
    """A finished uptraining: the checkpoint is saved and no resume state is left."""
    return (out_dir / "config.json").is_file() and not (out_dir / "checkpoints").exists()


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def uptrained_checkpoint(cfg: DictConfig) -> Path | None:
    """The directory of ``cfg``'s uptrained variant, trained first if it is not there yet (None when
    ``uptrain.alpha`` is 0)."""
    up = uptrain_settings(cfg)
    if up["alpha"] == 0:
        return None
    out_dir = uptrained_dir(cfg, up)
    with _locked(out_dir.parent / ".locks" / out_dir.name):
        if not finished(out_dir):
            from gqa_eval.training.loop import train

            train(training_config(cfg, out_dir, up))
    return out_dir


def uptraining_of(model, uptrained: Path | None, saved: bool) -> dict[str, Any]:
    """result.json's ``uptrain`` record and its two summary columns, from the loaded model's config
    (``gqa_uptraining``, written by the trainer; ``uptrained``: the directory this run trained it into).
    A variant made from the base without uptraining has alpha and steps 0; a saved checkpoint
    (``saved``: ``model.checkpoint``) that does not say how it was trained has None."""
    record = getattr(model.config, "gqa_uptraining", None)
    if record:
        record = dict(record)
        if uptrained is not None:
            record["checkpoint"] = str(uptrained)
        return {"uptrain": record, "uptrain_alpha": record.get("alpha"), "uptrain_steps": record.get("steps")}
    unknown = None if saved else 0
    return {"uptrain": None, "uptrain_alpha": unknown, "uptrain_steps": unknown}
