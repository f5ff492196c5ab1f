"""Refusal stage: a command line that would be refused is refused before Hydra creates anything.

Hydra makes the run directory (a single run), or the sweep directory and its ``multirun.yaml`` (``-m``),
before the task function starts: a run refused there would leave a directory that the report lists as
a failed run, and a sweep refused in an existing sweep directory would have rewritten its
``multirun.yaml``. So ``gqa-eval`` first composes each run of its command line in memory with Hydra's
compose API, as Hydra will (a sweep: every job of the basic sweeper's cartesian product), and runs the
checks the run would run first: the config's values (``evaluate``'s check), a hub data source the hub
cannot serve, ``resume=PATH``, and the run directory it would write where that exists
(``cli.check_run_dir``). A command line Hydra itself cannot compose is left to Hydra, which says why.

The config check itself (:func:`check_config`) is ``evaluate``'s first step too, for runs started
without the command line (``evaluate(cfg)`` from Python).
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf, open_dict

from gqa_eval.batching import DEFAULT_MAX_BATCH_SIZE, check_settings
from gqa_eval.decode_path import from_config as decode_path_of
from gqa_eval.paths import PROJECT_ROOT, resolve
from gqa_eval.resume import PREDICTIONS
from gqa_eval.tasks import parse_shard
from gqa_eval.training.uptrain import uptrain_settings

# Jobs composed one by one (~60 ms each); a larger sweep has a covering subset of them checked: every
# value of every swept key at least once.
MAX_COMPOSED = 100


# (dataset, revision) -> what the hub answered, within one precheck
_HUB_ANSWERS: dict[tuple[str, str], Exception | None] = {}


class Precheck(NamedTuple):
    line: str | None  # the refusal, one line; None: nothing refused
    resume_dir: Path | None  # a single run's resume=PATH, for Hydra to use as its run directory


def _missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???``, found without resolving interpolations (``model.name`` of
    ``model=gqa`` interpolates the missing ``model.kv_heads``)."""
    out = []
    for key in cfg.keys():
        if OmegaConf.is_missing(cfg, key):
            out.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(cfg, key):
            node = cfg._get_node(key)
            if isinstance(node, DictConfig):
                out += _missing_keys(node, f"{prefix}{key}.")
    return out


def _whole(value, floor: int) -> bool:
    """A whole number >= ``floor`` (a bool is none: ``true`` reads as 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= floor


def check_config(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, a config with a required value unset or a value of the wrong
    kind, before anything is loaded or written."""
    missing = sorted(_missing_keys(cfg))
    if missing:
        hint = {
            "model.checkpoint": "model=saved evaluates a saved checkpoint: set model.checkpoint=DIR",
            "model.kv_heads": "model=gqa needs the number of key/value heads: set model.kv_heads=N",
        }
        raise ValueError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required but not set; "
            + "; ".join(hint.get(k, f"set {k}=...") for k in missing)
        )

    seed = cfg.get("seed")
    if not _whole(seed, 0):
        raise ValueError(f"seed must be a whole number >= 0, got seed={seed!r}")
    kv_heads = cfg.model.get("kv_heads")
    if kv_heads is not None and not _whole(kv_heads, 1):
        raise ValueError(
            f"model.kv_heads must be a whole number of key/value heads >= 1 (or null: the base's), "
            f"got model.kv_heads={kv_heads!r}"
        )
    if kv_heads is not None and cfg.model.get("conversion") == "saved":
        raise ValueError(
            f"model=saved evaluates model.checkpoint with its own key/value heads; model.kv_heads={kv_heads} "
            "does not apply: drop it, or convert the base with model=gqa model.kv_heads=N"
        )
    new_tokens = cfg.task.get("max_new_tokens")
    if not _whole(new_tokens, 1):
        raise ValueError(
            "task.max_new_tokens must be a whole number of tokens >= 1, "
            f"got task.max_new_tokens={new_tokens!r}"
        )
    limit = cfg.get("limit")
    if limit is not None and not _whole(limit, 1):
        raise ValueError(
            f"limit must be a positive whole number of examples or null for all, got limit={limit!r}"
        )
    check_settings(  # batch_size N or auto, max_batch_size, batch_tokens
        cfg.get("batch_size"), cfg.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE), cfg.get("batch_tokens")
    )
    decode_path_of(cfg.get("generation"), "cpu")  # generation.* values checked before anything loads
    parse_shard(cfg.get("shard"))  # K/N with 0 <= K < N, or null
    uptrain_settings(cfg)  # uptrain.alpha >= 0, and > 0 only for a converted variant of the base
    chat = cfg.base.get("chat_template", "auto")
    if chat not in ("auto", True, False):
        raise ValueError(f"base.chat_template must be auto, true or false, got {chat!r}")


def _jobs(overrides: list[str], multirun: bool) -> list[tuple[int | None, list[str]]] | None:
    """(job number, overrides) of each run the command line starts, as Hydra's basic sweeper numbers
    them (None for a single run); a covering subset of a sweep of more than MAX_COMPOSED. None where
    Hydra must parse the line itself."""
    if not multirun:
        return [(None, overrides)]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra's own message for a malformed override
        return None
    fixed = [o.input_line for o in parsed if o.key_or_group.startswith("hydra")]
    lists = []
    for o in parsed:
        if o.key_or_group.startswith("hydra"):
            continue
        if o.is_sweep_override() and not o.is_discrete_sweep():
            return None  # an interval: no basic sweeper's, Hydra refuses it
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        lists.append([f"{key}={v}" for v in values])
    total = math.prod(len(values) for values in lists)
    if total <= MAX_COMPOSED:
        return [(n, [*fixed, *job]) for n, job in enumerate(itertools.product(*lists))]
    picks = []
    for k in range(max(len(values) for values in lists)):  # value k % len of each list: all values seen
        choice = [k % len(values) for values in lists]
        number = 0
        for values, i in zip(lists, choice, strict=True):  # product's order: the last list runs fastest
            number = number * len(values) + i
        picks.append((number, [*fixed, *(values[i] for values, i in zip(lists, choice, strict=True))]))
    return picks


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """The task's config, as the task function gets it (no ``hydra`` node)."""
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]
    return task


def _run_dir(cfg: DictConfig, job: int | None) -> Path | None:
    """The directory Hydra would give the run: the sweep's job subdirectory, or hydra.run.dir."""
    try:
        if job is None:
            return Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
        with open_dict(cfg):
            cfg.hydra.job.num = job
            cfg.hydra.job.id = job
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    except Exception:  # a name Hydra cannot resolve: Hydra says so itself
        return None


def _check_data_source(task: DictConfig) -> None:
    """``task.data.source=hub``: the hub asked once (:func:`gqa_eval.tasks.check_hub_source`); the jobs of
    a sweep that share a dataset share the answer."""
    from gqa_eval.tasks import check_hub_source

    data = task.get("data") or {}
    if data.get("source") != "hub":
        return
    hub = data.get("hub") or {}
    key = (str(hub.get("path")), str(hub.get("revision")))
    if key not in _HUB_ANSWERS:
        try:
            check_hub_source(OmegaConf.to_container(task, resolve=True))
            _HUB_ANSWERS[key] = None
        except Exception as err:
            _HUB_ANSWERS[key] = err
    if _HUB_ANSWERS[key] is not None:
        raise _HUB_ANSWERS[key]


def _check_model_source(cfg: DictConfig) -> None:
    """The checkpoint the run loads (``model.checkpoint``, else ``base.path``): a local directory, or a
    hub id the hub (or its cache) has, asked once (:func:`gqa_eval.variant.checkpoints._hub_preflight`);
    the jobs of a sweep that share a checkpoint share the answer."""
    from gqa_eval.variant.checkpoints import _hub_preflight, checkpoint_source

    path = cfg.model.get("checkpoint") or cfg.base.path
    revision = None if cfg.model.get("checkpoint") else cfg.base.get("revision")
    source = checkpoint_source(str(path))
    if not isinstance(source, str):
        return
    key = ("model", f"{source}@{revision}")
    if key not in _HUB_ANSWERS:
        try:
            _hub_preflight(source, revision)
            _HUB_ANSWERS[key] = None
        except Exception as err:
            _HUB_ANSWERS[key] = err
    if _HUB_ANSWERS[key] is not None:
        raise _HUB_ANSWERS[key]


def _refusal(cfg: DictConfig, job: int | None) -> tuple[str | None, Path | None]:
    """The first check the run of ``cfg`` would fail, as one line; and its resume=PATH directory."""
    from gqa_eval.cli import USER_ERRORS, check_run_dir, error_line

    task = _without_hydra(cfg)
    where = f"job {job}: " if job is not None else ""
    try:
        check_config(task)
        _check_data_source(task.task)
        _check_model_source(task)
    except USER_ERRORS as err:
        return f"{where}{error_line(err)}", None
    resume = task.get("resume", True)
    resume_dir = resolve(resume) if isinstance(resume, str) else None
    if resume_dir is not None and not (resume_dir / PREDICTIONS).is_file():
        return (
            f"{where}resume={resume}: no {PREDICTIONS} there to resume from; give the directory of an "
            "interrupted run, or drop resume= to start a new run"
        ), None
    run_dir = resume_dir or _run_dir(cfg, job)
    if run_dir is not None and run_dir.is_dir():
        try:
            check_run_dir(task, resolve(run_dir))
        except USER_ERRORS as err:
            return f"{where}{error_line(err)}", None
    return None, resume_dir


def precheck(overrides: list[str], multirun: bool) -> Precheck:
    """Compose every run of the command line and check it (module docstring); nothing is written."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    jobs = _jobs(overrides, multirun)
    if jobs is None:
        return Precheck(None, None)
    _HUB_ANSWERS.clear()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
            refused, resume_dir = [], None
            for job, job_overrides in jobs:
                try:
                    cfg = compose("config", overrides=job_overrides, return_hydra_config=True)
                except Exception:  # Hydra's to refuse, with its own message
                    return Precheck(None, None)
                line, resume_dir = _refusal(cfg, job)
                if line:
                    refused.append(line)
    finally:
        GlobalHydra.instance().clear()
    if not refused:
        return Precheck(None, resume_dir if not multirun else None)
    if not multirun:
        return Precheck(refused[0], None)
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    return Precheck(
        f"{len(refused)} job(s) failed the checks before the sweep started, nothing was written: "
        f"{refused[0]}{more}",
        None,
    )
