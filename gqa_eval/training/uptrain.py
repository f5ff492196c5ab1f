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
    """``cfg.uptrain`` checked: ``{"alpha", "tokens", "recipe", "base_steps", "objective", "train",
    "out_root"}`` (alpha 0 when unset; uptraining runs when alpha > 0 or tokens is set).

    Raises:
        ValueError: alpha not a number >= 0, tokens not a count > 0, both set; uptraining without
            ``model.kv_heads`` or with ``model.checkpoint`` (a saved checkpoint is evaluated as it is);
            an unknown recipe or objective; ``train`` not a mapping.
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
    tokens = up.get("tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0):
        raise ValueError(f"uptrain.tokens must be a whole number of tokens > 0 (or null), got {tokens!r}")
    if tokens is not None and alpha:
        raise ValueError(
            "uptrain.alpha and uptrain.tokens both set the uptraining's length; give one of them"
        )
    from gqa_eval.training.objectives import OBJECTIVES

    objective = up.get("objective") or "task_mixture"
    if objective not in OBJECTIVES:
        raise ValueError(f"uptrain.objective={objective!r}: choose one of {', '.join(OBJECTIVES)}")
    train = up.get("train") or {}
    if not isinstance(train, dict):
        raise ValueError(
            f"uptrain.train must be a mapping of conf/training.yaml settings, got {train!r}; "
            "e.g. +uptrain.train.grad_accum=4"
        )
    if (alpha > 0 or tokens) and cfg.model.get("checkpoint"):
        raise ValueError(
            "uptraining (uptrain.alpha / uptrain.tokens) uptrains a conversion of the base, but "
            "model.checkpoint loads a saved checkpoint as it is; drop one of them (uptrain a saved "
            "checkpoint with gqa-eval-train init_from=DIR)"
        )
    if (alpha > 0 or tokens) and cfg.model.get("kv_heads") is None:
        length = f"uptrain.alpha={alpha:g}" if alpha else "uptrain.tokens"
        raise ValueError(
            f"{length} uptrains a converted variant, but model={cfg.model.name} converts nothing; "
            "choose a variant with key/value heads (model=gqa8, model=mqa, model.kv_heads=N)"
        )
    return {
        "alpha": float(alpha),
        "tokens": int(tokens) if tokens else None,
        "recipe": recipe,
        "base_steps": up.get("base_steps"),
        "lr": up.get("lr"),
        "objective": str(objective),
        "train": train,
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
        # added later: a checkpoint of the defaults keeps the digest it had before they existed
        **({"tokens": up["tokens"]} if up["tokens"] else {}),
        **({"lr": up["lr"]} if up["lr"] is not None else {}),
        **({"objective": up["objective"]} if up["objective"] != "task_mixture" else {}),
        **({"train": up["train"]} if up["train"] else {}),
        **(
            {"pretraining": OmegaConf.to_container(cfg.base.pretraining, resolve=True)}
            if cfg.base.get("pretraining") is not None
            else {}
        ),
    }


def uptrained_dir(cfg: DictConfig, up: dict[str, Any] | None = None) -> Path:
    """Where the uptrained checkpoint of ``cfg`` lives."""
    up = up or uptrain_settings(cfg)
    ident = _identity(cfg, up)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    length = f"t{up['tokens']}" if up["tokens"] else f"a{up['alpha']:g}"
    objective = "" if up["objective"] == "task_mixture" else f"_{up['objective']}"
    name = f"{cfg.base.name}_{cfg.model.name}_{cfg.model.conversion}{objective}_{length}_{digest}"
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
        "uptrain.alpha": up["alpha"] or None,
        "uptrain.tokens": up["tokens"],
        "uptrain.recipe": up["recipe"],
        "uptrain.base_steps": up["base_steps"],
        "uptrain.lr": up["lr"],
        "objective": up["objective"],
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
        pretraining = cfg.base.get("pretraining")
        if pretraining is not None and up["base_steps"] is None:  # the base preset's (conf/base/)
            preset = Path("conf") / "base" / f"{cfg.base.name}.yaml"
            where = str(preset) if (PROJECT_ROOT / preset).is_file() else "base.pretraining"
            block = OmegaConf.to_container(pretraining, resolve=True)
            train_cfg.uptrain.pretraining = {**block, "preset": where}
        for key, value in _flat(up["train"]):
            if OmegaConf.select(train_cfg, key, default="<absent>") == "<absent>":
                raise ValueError(
                    f"uptrain.train.{key}: conf/training.yaml has no setting {key!r}; "
                    "see gqa-eval-train --cfg job for its settings"
                )
            OmegaConf.update(train_cfg, key, value, merge=False)
    return train_cfg


def _flat(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested mapping's (dotted key, value) leaves."""
    leaves = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            leaves += _flat(value, f"{prefix}{key}.")
        else:
            leaves.append((f"{prefix}{key}", value))
    return leaves


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
    if up["alpha"] == 0 and not up["tokens"]:
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
        return {
            "uptrain": record,
            "uptrain_alpha": record.get("alpha"),
            "uptrain_steps": record.get("steps"),
            # checkpoints from before objectives were named were trained on the task mixture
            "uptrain_objective": record.get("objective", "task_mixture"),
            "uptrain_lr": record.get("lr"),  # the peak (or constant) rate it trained at
        }
    unknown = None if saved else 0
    return {
        "uptrain": None, "uptrain_alpha": unknown, "uptrain_steps": unknown, "uptrain_objective": None,
        "uptrain_lr": None,
    }  # fmt: skip
