"""Entry stage: the ``gqa-eval`` and ``gqa-eval-convert`` Hydra apps. The work is done by ``evaluate``
and ``gqa_eval.variant.conversion.convert_checkpoint``.

Every run ends with a short block on stdout: variant, task, primary score, time per sample, how many
predictions an earlier session left and were reused, and where ``result.json`` and the summary are (a
multirun job: one line; the sweep's end report has the table). A failing run prints one line naming
the problem and the fix and exits non-zero, a config value left unset (``???``) included; in a
multirun the failure is recorded in the job's ``error.json``, the other jobs go on, the sweep report
lists it, and the sweep exits non-zero at the end.

A run directory belongs to the run that started it. A run pointed at an existing one
(``hydra.run.dir=DIR``, ``hydra.sweep.dir=DIR``, ``resume=DIR``) is checked before anything is written
there:

- a finished run (``result.json``) is never written again: asked for with the same settings it is
  already done (its result is reported, nothing is rerun); with other settings, or ``resume=false``,
  the run is refused;
- an interrupted run (predictions, no ``result.json``) is continued by ``evaluate`` if its fingerprint
  matches and refused if not; ``resume=false`` refuses it here;
- Hydra's record (``.hydra/``) is written here, not by Hydra before the task starts
  (``hydra.output_subdir: null``), and only into a directory that holds no run yet; ``error.json`` only
  into one this run started or is continuing with the same recorded config.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    GrammarParseError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from gqa_eval.evaluate import evaluate
from gqa_eval.io import write_atomic
from gqa_eval.launch import assign_job_gpu  # also registers parallel.yaml's n_jobs resolver
from gqa_eval.paths import PROJECT_ROOT, resolve
from gqa_eval.resume import FINGERPRINT, PREDICTIONS, ResumeError
from gqa_eval.variant.conversion import convert_checkpoint

# One id per process: run and sweep directories started in the same second stay apart.
_UID = f"{os.getpid():x}{secrets.token_hex(2)}"
if not OmegaConf.has_resolver("gqa_eval.uid"):
    OmegaConf.register_new_resolver("gqa_eval.uid", lambda: _UID)


def variant_name(kv_heads: int | None) -> str:
    """The name of the variant with ``kv_heads`` K/V heads, as the fixed presets name it: ``mqa`` for
    one, ``gqa{N}`` otherwise, ``mha`` for null (the base's own heads), so one variant has one name. A
    value that is no number is named as it is, for the conversion to refuse with its own message."""
    if kv_heads is None:
        return "mha"
    return "mqa" if str(kv_heads) == "1" else f"gqa{kv_heads}"


if not OmegaConf.has_resolver("gqa_eval.variant_name"):  # conf/model/gqa.yaml's name
    OmegaConf.register_new_resolver("gqa_eval.variant_name", variant_name)

# A config that leaves a required value unset (``???``), or names a key or interpolation that is not there.
CONFIG_ERRORS = (
    MissingMandatoryValue,
    InterpolationResolutionError,
    ConfigKeyError,
    ConfigAttributeError,
    GrammarParseError,
)
# Problems with the user's input, told in one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    FloatingPointError,
    *CONFIG_ERRORS,
)
FAILED: list[str] = []

RESULT = "result.json"
RECORD = ".hydra"  # Hydra's name for it
# Settings that change neither what a run computes nor what it records: a finished run asked for again
# with only these changed is the same run, already done.
RUN_INDEPENDENT = ("progress", "resume", "output_root")
# What to set for a required value (``???``), by key.
REQUIRED = {
    "model.checkpoint": "model=saved evaluates a saved checkpoint: set model.checkpoint=DIR",
    "model.kv_heads": "model=gqa needs the number of key/value heads: set model.kv_heads=N",
    "kv_heads": "the number of key/value heads after conversion (1 = MQA): set kv_heads=N",
    "out": "the directory to write the converted checkpoint to: set out=DIR",
}


# Config keys that were renamed: the old name on the command line is refused with the new one.
RENAMED = {"method": "conversion"}  # gqa-eval-convert: named as model.conversion is


def renamed_key_line(text: str) -> str | None:
    """For Hydra's "Could not override 'KEY'" about a renamed key, one line naming the new key."""
    match = re.search(r"Could not override '([\w.]+)'", text)
    if match and match.group(1) in RENAMED:
        old = match.group(1)
        return (
            f"{old}= was renamed {RENAMED[old]}= (as model.{RENAMED[old]} is named); set {RENAMED[old]}=..."
        )
    return None


# Config groups under conf/ (``+experiment=``, ``+finetuned=``, ``model=``, ...) and Hydra's own keys
# are not settings of the primary config; every other key on the command line must name one of them.
NOT_SETTINGS = ("hydra",)


def _leaf_paths(node: Any, prefix: str) -> list[str]:
    """Every dotted key below ``prefix`` in the plain config ``node`` (``prefix`` itself included)."""
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _leaf_paths(value, f"{prefix}.{key}")
    return paths


def config_keys(config_name: str = "config") -> tuple[set[str], set[str], list[str]]:
    """The primary config's top-level keys, the config groups under conf/, and every dotted key below
    the top level (config.yaml's own and those of each file of the groups its defaults list names)."""
    conf = PROJECT_ROOT / "conf"
    primary = OmegaConf.to_container(OmegaConf.load(conf / f"{config_name}.yaml"), resolve=False)
    groups = {p.name for p in conf.iterdir() if p.is_dir()}
    top = {str(k) for k in primary if k != "defaults"}
    nested: list[str] = []
    for key in sorted(top - set(NOT_SETTINGS)):
        nested += _leaf_paths(primary[key], key)[1:]
    for entry in primary.get("defaults") or []:
        group = next(iter(entry)) if isinstance(entry, dict) else None
        if group is None or group.startswith(("override ", "hydra")) or group not in groups:
            continue
        top.add(group)
        for path in sorted((conf / group).glob("*.yaml")):
            if "@package" in path.read_text(encoding="utf-8").split("\n", 1)[0]:
                continue  # a file that sets keys elsewhere (_global_) is no part of the group's node
            values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            nested += _leaf_paths(values, group)[1:]
    return top, groups, list(dict.fromkeys(nested))


def misplaced_key_line(overrides: list[str], config_name: str = "config") -> str | None:
    """For the first override whose top-level key is no setting of the app's config (``+conversion=aligned``,
    which Hydra would add to the config unused), one line naming the real key where there is one
    (``model.conversion``). None if every override names a setting, a config group or a Hydra key, and
    for overrides Hydra cannot parse (it says so itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # Hydra's own message for a malformed override
        return None
    top, groups, nested = config_keys(config_name)
    for override in parsed:
        key = override.key_or_group
        first = key.split(".")[0]
        if override.is_delete() or "/" in key or first in top or first in groups or first in NOT_SETTINGS:
            continue
        value = (override.input_line or "=").split("=", 1)[1]  # as typed (a sweep's a,b too)
        matches = [path for path in nested if path.endswith(f".{key}")]
        if matches:
            options = [f"{path}={value}" for path in matches]
            guess = options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"
            return f"unknown key '{key}': did you mean {guess}?"
        return (
            f"unknown key '{key}': no setting is named {key} (the settings: conf/{config_name}.yaml's, "
            f"and those of {', '.join(f'{g}=' for g in sorted((top & groups) - set(NOT_SETTINGS)))})"
        )
    return None


def _argv() -> Any:
    """This process's command line as Hydra's argument parser takes it; None where another config is
    asked for (--config-name / --config-path / --config-dir) or the line is Hydra's to refuse."""
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(sys.argv[1:])
    except (SystemExit, Exception):
        return None
    return None if args.config_name or args.config_path or args.config_dir else args


def _argv_overrides() -> list[str] | None:
    """The overrides on this process's command line (:func:`_argv`), None where it gives none."""
    args = _argv()
    return None if args is None else list(args.overrides or [])


def _launcher(overrides: list[str]) -> str | None:
    """The ``hydra/launcher=`` option the command line picks (the last one), None if it picks none."""
    picked = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == "hydra/launcher"]
    return picked[-1] if picked else None


def _quoted(path: Path) -> str | None:
    """``path`` as a quoted Hydra override value; None for one that quoting cannot carry as it is."""
    text = str(path)
    return None if any(c in text for c in "'\\$") else f"'{text}'"


def refuse_before_hydra() -> None:
    """Exit with one line where the command line would be refused, before Hydra writes anything: an
    unknown top-level key, a launcher this machine lacks, a run or sweep job whose config, resume=PATH
    or run directory is refused (gqa_eval/refusals.py). A single run's resume=PATH becomes Hydra's run
    directory, so that no other, empty one is made."""
    from gqa_eval.launch import launcher_refusal
    from gqa_eval.refusals import precheck

    args = _argv()
    overrides = list(args.overrides or []) if args is not None else []
    # An unknown top-level key (+conversion=aligned, meant as model.conversion=aligned): Hydra would add
    # it to the config, unused, and run something else.
    line = misplaced_key_line(overrides) or launcher_refusal(_launcher(overrides))
    if line:
        sys.exit(f"gqa-eval: error: {line}")
    if args is None or args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return  # Hydra prints something and runs nothing
    multirun = bool(args.multirun) or "hydra.mode=MULTIRUN" in overrides
    checked = precheck(overrides, multirun)
    if checked.line:
        sys.exit(f"gqa-eval: error: {checked.line}")
    if checked.resume_dir is not None and not any(o.startswith("hydra.run.dir=") for o in overrides):
        value = _quoted(checked.resume_dir)
        if value:
            sys.argv.append(f"hydra.run.dir={value}")


class RunDirError(FileExistsError):
    """The run directory holds another run, or a finished one; nothing was written to it."""


def error_line(err: BaseException) -> str:
    """``err`` as one line. An omegaconf error names the key; an unset required value also the fix."""
    text = str(err).strip()
    if not isinstance(err, OmegaConfBaseException):
        return text or type(err).__name__
    missing = re.search(r"Missing mandatory value: ?([\w.\[\]-]+)", text)
    if missing:
        key = missing.group(1)
        return f"{key} is required but not set; {REQUIRED.get(key, f'set {key}=...')}"
    first = text.splitlines()[0] if text else type(err).__name__
    key = getattr(err, "full_key", None)
    return f"{first} (config key {key})" if key and str(key) not in first else first


def _get(cfg: DictConfig, key: str) -> Any:
    """``cfg``'s value at ``key``, None where it is unset or cannot be resolved (for failure records)."""
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except OmegaConfBaseException:
        return None


def _changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two plain configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [c for k in keys for c in _changes(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix[:-1]}: {old!r:.60} -> {new!r:.60}"]


def _settings(config: Any) -> dict:
    return {k: v for k, v in (config or {}).items() if k not in RUN_INDEPENDENT}


def _holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (RESULT, PREDICTIONS, FINGERPRINT))


def _run_dir(cfg: DictConfig) -> Path:
    """The directory this run writes: ``resume=PATH``'s, else Hydra's (as ``evaluate`` picks it)."""
    from hydra.core.hydra_config import HydraConfig

    resume = cfg.get("resume", True)
    return resolve(resume) if isinstance(resume, str) else Path(HydraConfig.get().runtime.output_dir)


def check_run_dir(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Refuse a run directory that this run may not write, before anything is written to it.

    Returns:
        The ``result.json`` of the finished run in ``run_dir`` if it is this very run (already done),
        else None: the directory is new, or holds an interrupted run for ``evaluate`` to check.

    Raises:
        RunDirError: ``run_dir`` holds a finished run with other settings, or any run and resume=false.
    """
    result_path = run_dir / RESULT
    if cfg.get("resume", True) is False and _holds_run(run_dir):
        held = "a finished run" if result_path.exists() else "predictions of an earlier run"
        raise RunDirError(
            f"{run_dir} holds {held} and resume=false; nothing was changed there. Run in a new "
            "directory (drop hydra.run.dir), or set resume=true to continue an interrupted run there"
        )
    if not result_path.exists():
        return None
    try:
        finished = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(
            f"{run_dir} holds a {RESULT} that cannot be read ({err}); nothing was changed there. "
            "Run in a new directory (drop hydra.run.dir / resume=)"
        ) from None
    current = OmegaConf.to_container(cfg, resolve=True)
    changes = _changes(_settings(finished.get("config")), _settings(current))
    if changes:
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise RunDirError(
            f"{run_dir} holds a finished run with other settings ({'; '.join(changes[:3])}{more}); "
            "nothing was changed there. Run in a new directory (drop hydra.run.dir / hydra.sweep.dir / "
            "resume=)"
        )
    return finished


def _same_record(run_dir: Path, cfg: DictConfig) -> bool:
    """Whether ``run_dir/.hydra/config.yaml`` records this run's config (up to RUN_INDEPENDENT)."""
    try:
        recorded = OmegaConf.to_container(OmegaConf.load(run_dir / RECORD / "config.yaml"))
    except Exception:  # absent or unreadable: not known to be this run's
        return False
    return isinstance(recorded, dict) and _settings(recorded) == _settings(OmegaConf.to_container(cfg))


def may_record(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether this run may write its own records (``.hydra/``, ``error.json``) into ``run_dir``: one
    that holds no run yet (not for ``resume=PATH``: that names another run's directory), or an
    interrupted run whose ``.hydra`` records the same config. Never one with a ``result.json``."""
    if (run_dir / RESULT).exists():
        return False
    if not _holds_run(run_dir):
        return not isinstance(cfg.get("resume", True), str)
    return _same_record(run_dir, cfg)


def write_record(cfg: DictConfig, run_dir: Path) -> None:
    """Write what Hydra writes into ``.hydra/`` (config, hydra config, overrides), as Hydra writes it."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.instance().cfg
    write_atomic(run_dir / RECORD / "config.yaml", OmegaConf.to_yaml(cfg))
    write_atomic(run_dir / RECORD / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    write_atomic(run_dir / RECORD / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))


def _record_failure(cfg: DictConfig, err: BaseException, run_dir: Path) -> Path | None:
    """Write ``error.json`` into the job's run directory (what failed, and why)."""
    record = {
        "model": _get(cfg, "model.name"),
        "base": _get(cfg, "base.name"),
        "task": _get(cfg, "task.name"),
        "kv_heads": _get(cfg, "model.kv_heads"),
        "error_type": type(err).__name__,
        "message": error_line(err),
        "run_dir": str(run_dir),
    }
    if not isinstance(err, USER_ERRORS):
        record["traceback"] = traceback.format_exc()
    try:
        write_atomic(run_dir / "error.json", json.dumps(record, indent=2) + "\n")
    except OSError:
        return None  # e.g. the unwritable output directory that caused the error
    return run_dir


def _number(value: Any, spec: str) -> str | None:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _reused(result: dict) -> int:
    """Predictions taken from an earlier session of the run (``result.json`` before that key: from the
    timing's coverage)."""
    if result.get("reused_predictions") is not None:
        return int(result["reused_predictions"])
    timing = result.get("timing") or {}
    if timing.get("partial") and isinstance(result.get("n_samples"), int):
        return result["n_samples"] - int(timing.get("timed_samples") or 0)
    return 0


def report(result: dict, job: int | None = None, already: bool = False) -> str:
    """What a run prints at its end: a block for a single run, one line for multirun job ``job``."""
    n, reused = result.get("n_samples"), _reused(result)
    score = f"{result.get('metric')} {_number(result.get('score'), '.2f') or result.get('score')}"
    per_sample = _number(result.get("time_per_sample_s"), ".4f")
    timed = f"{per_sample} s per sample" if per_sample else "not timed"
    run = f"{result.get('model')} on {result.get('task')}"
    result_path = Path(str(result.get("run_dir"))) / RESULT
    if job is not None:
        state = "already finished, not rerun" if already else f"{n} examples"
        reuse = f", {reused} of {n} reused" if reused and not already else ""
        return f"gqa-eval: job {job}: {run} ({state}{reuse}): {score}, {timed} -> {result_path}"
    heads = f"{result.get('kv_heads')} of {result.get('n_heads')} key/value heads"
    conversion = f", {result['conversion']}" if result.get("conversion") else ""
    lines = [
        f"gqa-eval: {'already finished, nothing rerun' if already else 'finished'}: {run} "
        f"({result.get('base')}, {heads}{conversion})",
        f"  score    {score} over {n} examples",
        f"  time     {timed} ({result.get('timing_mode') or 'natural'} timing)",
    ]
    if reused:
        rest = f"timed: the other {n - reused}" if isinstance(n, int) and n > reused else "nothing timed"
        lines.append(f"  resumed  {reused} of {n} predictions reused from an earlier session ({rest})")
    if result.get("uptrain"):
        up = result["uptrain"]
        where = f" into {up['checkpoint']}" if up.get("checkpoint") else ""
        lines.append(
            f"  uptrained alpha {result.get('uptrain_alpha')} ({result.get('uptrain_steps')} steps){where}"
        )
    lines.append(f"  result   {result_path}")
    if result.get("summary_path"):
        lines.append(f"  summary  {result['summary_path']}")
    others = [f for f in result.get("report_files") or [] if f != result.get("summary_path")]
    if others:
        folder = Path(others[0]).parent
        names = ", ".join(os.path.relpath(f, folder) for f in others)
        lines.append(f"  report   {names} in {folder}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    job = hc.job.num if hc.mode == RunMode.MULTIRUN else None
    assign_job_gpu(cfg, hc, job)  # a parallel local sweep: one GPU per job, before CUDA starts
    run_dir, owned = None, False
    try:
        # a sweep's own +key=... parameters too (as typed: an override's ${...} is not resolved here)
        misplaced = misplaced_key_line(OmegaConf.to_container(hc.overrides.task, resolve=False))
        if misplaced:
            raise ValueError(misplaced)
        run_dir = _run_dir(cfg)
        finished = check_run_dir(cfg, run_dir)
        if finished is not None:
            print(report(finished, job, already=True), flush=True)
            return finished
        owned = may_record(cfg, run_dir)
        if owned and hc.output_subdir is None and not _holds_run(run_dir):
            write_record(cfg, run_dir)
        result = evaluate(cfg)
    except Exception as err:
        if owned and not isinstance(err, ResumeError) and not (run_dir / RESULT).exists():
            _record_failure(cfg, err, run_dir)
        if job is None:
            if isinstance(err, USER_ERRORS):
                sys.exit(f"gqa-eval: error: {error_line(err)}")
            raise
        what = f"{_get(cfg, 'model.name')} x {_get(cfg, 'task.name')}"
        FAILED.append(f"{what}: {type(err).__name__}: {error_line(err)}")
        print(f"gqa-eval: job {job}: {what} failed, the sweep goes on: {error_line(err)}", file=sys.stderr)
        return None
    print(report(result, job), flush=True)
    return result


def _raised_in_task(err: BaseException) -> bool:
    """Whether ``err`` came out of a task function of this module (which told the user errors itself)."""
    frames = traceback.extract_tb(err.__traceback__)
    return any(f.filename == __file__ and f.name in ("main", "convert_app") for f in frames)


def _run_app(app: Callable[[], Any], prog: str) -> None:
    """Run a Hydra app so that a config error Hydra meets before the task starts (a required value that
    the run directory's name needs, as model=gqa's name needs model.kv_heads) is one line too, and an
    unknown config option or malformed override is Hydra's own message, without a traceback.
    ``HYDRA_FULL_ERROR=1`` set by the user keeps Hydra's full tracebacks."""
    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing a trimmed traceback
    try:
        app()
    except CONFIG_ERRORS as err:
        if user_setting == "1":
            raise
        sys.exit(f"{prog}: error: {error_line(err)}")
    except CompactHydraException as err:
        if user_setting == "1":
            raise
        cause = err.__cause__
        detail = f" ({error_line(cause)})" if isinstance(cause, OmegaConfBaseException) else ""
        text = str(err)
        if text.startswith("Could not override"):  # Hydra's two lines -> one; a renamed key names the new
            renamed = renamed_key_line(text)
            text, detail = (renamed, "") if renamed else (" ".join(text.splitlines()), detail)
        sys.exit(f"{prog}: error: {text}{detail}")
    except OSError as err:  # Hydra could not create the run or sweep directory
        if user_setting == "1" or _raised_in_task(err):
            raise
        sys.exit(
            f"{prog}: error: cannot create the output directory ({err}); set output_root=DIR "
            "(or hydra.run.dir / hydra.sweep.dir) to a writable directory"
        )
    finally:
        if user_setting is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_setting


def run() -> None:
    """Console entry of ``gqa-eval``: the Hydra app, then a non-zero exit if any multirun job failed."""
    from gqa_eval.report.callback import SWEEP_FAILURES

    SWEEP_FAILURES.clear()  # a sweep's, not an earlier one's in the same process
    refuse_before_hydra()
    _run_app(main, "gqa-eval")
    # jobs that failed in this process, else (jobs run by joblib or submitit in other processes) the
    # failures the end-of-sweep report found in the sweep directory
    failed = FAILED or SWEEP_FAILURES
    if failed:
        sys.exit("gqa-eval: " + f"{len(failed)} job(s) failed:\n  " + "\n  ".join(failed))


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="convert")
def convert_app(cfg: DictConfig) -> None:
    try:
        convert_checkpoint(cfg)
    except USER_ERRORS as err:
        sys.exit(f"gqa-eval-convert: error: {error_line(err)}")


def convert_main() -> None:
    """Console entry of ``gqa-eval-convert``."""
    _run_app(convert_app, "gqa-eval-convert")


if __name__ == "__main__":  # python -m gqa_eval.cli, where the console script is not installed
    run()
