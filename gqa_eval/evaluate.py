"""Run stage: ``evaluate(cfg)`` evaluates one variant on one task and writes its run directory.

config -> task data -> checkpoint -> variant -> generate (timed) -> score -> result.json -> summary.
The task's data is loaded and checked first, so a bad task fails before any model is loaded. The run
directory gets ``predictions.jsonl`` (one row per example, written per batch) and ``result.json``
(written atomically); then the summary CSV of the enclosing sweep (or of the outputs folder) is rebuilt.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gqa_eval import __version__, metrics, roofline
from gqa_eval.batching import DEFAULT_MAX_BATCH_SIZE, BatchStats
from gqa_eval.decode_path import DecodePath
from gqa_eval.decode_path import from_config as decode_path_of
from gqa_eval.generation import generate
from gqa_eval.io import write_atomic
from gqa_eval.paths import resolve
from gqa_eval.refusals import check_config
from gqa_eval.report.summary import report_root, write_report
from gqa_eval.resume import PREDICTIONS, fingerprint, load_predictions
from gqa_eval.tasks import (
    Example,
    encode,
    load_examples,
    parse_shard,
    set_languages,
    shard_dir_tag,
    shard_positions,
    shard_text,
    task_for_base,
)
from gqa_eval.timing import PeakMemory, Timer
from gqa_eval.training.uptrain import uptrained_checkpoint, uptraining_of
from gqa_eval.variant import Family, family_of
from gqa_eval.variant.checkpoints import resolve_device
from gqa_eval.variant.conversion import conversion_method, make_variant

log = logging.getLogger("gqa_eval")
if not OmegaConf.has_resolver("gqa_eval.shard_tag"):  # conf/config.yaml's run directory names
    OmegaConf.register_new_resolver("gqa_eval.shard_tag", shard_dir_tag)


def _hydra_dirs() -> tuple[Path | None, Path | None]:
    """(this run's output dir, the directory whose summary to refresh), when running under Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        return run_dir, Path(hc.sweep.dir)
    return run_dir, None


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"cannot write to the output directory {directory} ({err.strerror}); "
            "set output_root=DIR (or hydra.run.dir) to a writable directory"
        ) from err


def _loading(cfg: DictConfig, uptrained: Path | None) -> DictConfig:
    """``cfg`` as :func:`make_variant` should load it: the uptrained checkpoint as it is, if there is one."""
    if uptrained is None:
        return cfg
    loading = copy.deepcopy(cfg)
    with open_dict(loading):
        loading.model.checkpoint = str(uptrained)
        loading.model.kv_heads = None  # converted before it was uptrained
    return loading


def use_chat_template(cfg: DictConfig, tokenizer, decoder_only: bool) -> bool:
    """Whether prompts go through the tokenizer's chat template: ``base.chat_template`` true or false, or
    ``auto`` (the default): for a decoder-only checkpoint whose tokenizer has one (an instruct model)."""
    setting = cfg.base.get("chat_template", "auto")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if setting is True and not has_template:
        raise ValueError(
            f"base.chat_template=true but the tokenizer of {cfg.base.path} has no chat template; "
            "set base.chat_template=auto or false"
        )
    if setting == "auto":
        return decoder_only and has_template
    return bool(setting)


def evaluate(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.model`` (a variant of ``cfg.base``) on ``cfg.task``.

    Args:
        cfg: the composed config (``conf/config.yaml``).
        output_dir: where to write; defaults to Hydra's run directory.

    Returns:
        The contents of ``result.json``.
    """
    check_config(cfg)
    hydra_dir, sweep_dir = _hydra_dirs()
    resume = cfg.get("resume", True)
    run_dir = _run_dir(resume, output_dir, hydra_dir)
    task = _checked_task(cfg)
    _check_writable(run_dir)
    part = _this_runs_examples(task, cfg)
    plain, done = _reusable_predictions(cfg, run_dir, resume, task, part)
    loaded = _load_variant(cfg)
    prompts = _prompts(cfg, task, part.examples, loaded)
    generated = _generate_predictions(cfg, run_dir, task, part, loaded, prompts, done)
    scores, details = _score(task, part.examples, generated.predictions, done)
    result = _result(
        cfg, plain, run_dir, task=task, part=part, loaded=loaded, prompts=prompts, generated=generated,
        done=done, scores=scores, details=details,
    )  # fmt: skip
    _write_result(result, cfg, run_dir, hydra_dir, sweep_dir)
    return result


@dataclass
class _Part:
    """The task's examples this run evaluates (all of them, or shard K/N's) and where each sits in the
    whole task (``predictions.jsonl`` and merged shards keep the task's index)."""

    examples: list[Example]
    positions: list[int]  # by this run's index: the example's index in the whole task
    task_samples: int  # examples in the whole task (after ``limit``)
    shard: tuple[int, int] | None


@dataclass
class _Loaded:
    """The variant as this run loaded it, and what was measured from before it loaded."""

    model: Any
    tokenizer: Any
    provenance: dict[str, Any]
    family: Family  # heads, head width and cache layout, asked of the model once
    uptrained: Path | None  # the uptrained checkpoint loaded, if any
    memory: PeakMemory  # this run's peak, not the process's


@dataclass
class _Prompts:
    """The encoded inputs and the prompt settings they were made with (recorded in result.json)."""

    inputs: list[list[int]]
    chat: bool  # through the tokenizer's chat template
    forced_bos: int | None  # the target language's first token (mBART-50); None: none
    stop_strings: list[str]


@dataclass
class _Generated:
    """This session's predictions and what generating them measured."""

    predictions: dict[int, str]
    timer: Timer
    batch_stats: BatchStats
    decode: DecodePath
    device: torch.device


def _run_dir(resume: bool | str, output_dir: str | Path | None, hydra_dir: Path | None) -> Path:
    """Where this run writes: ``resume=PATH``'s directory (which must hold predictions to resume from),
    else ``output_dir``, else Hydra's run directory; refused before anything is loaded."""
    if isinstance(resume, str):  # resume=PATH: continue the run in PATH
        output_dir = resolve(resume)
        if not (output_dir / PREDICTIONS).is_file():
            raise FileNotFoundError(f"resume={resume}: no {PREDICTIONS} there to resume from")
    run_dir = Path(output_dir) if output_dir is not None else hydra_dir
    if run_dir is None:
        raise ValueError("evaluate() outside Hydra needs output_dir=")
    return run_dir


def _checked_task(cfg: DictConfig) -> dict[str, Any]:
    """The task as the base reads it (``base.input_template``, raw: no T5 prefix; ``base.max_input_tokens``),
    its metrics checked against the registry so a misspelt one fails before any model loads."""
    task = task_for_base(OmegaConf.to_container(cfg.task, resolve=True), cfg.base)
    unknown = [m for m in task["metrics"] if m not in metrics.METRICS]
    if unknown or task["primary_metric"] not in task["metrics"]:
        raise ValueError(
            f"task {task['name']}: unknown metric(s) {unknown or [task['primary_metric']]}; "
            f"registered metrics are {sorted(metrics.METRICS)} and primary_metric must be one of task.metrics"
        )
    return task


def _this_runs_examples(task: dict[str, Any], cfg: DictConfig) -> _Part:
    """Load and check the task's data (before any model, so a bad task fails fast) and keep this run's
    part: none for part K >= the task's size, an empty shard."""
    examples = load_examples(task, cfg.limit)
    task_samples, shard = len(examples), parse_shard(cfg.get("shard"))
    positions = shard_positions(task_samples, shard)  # this run's examples, by index in the whole task
    return _Part([examples[i] for i in positions], positions, task_samples, shard)


def _reusable_predictions(
    cfg: DictConfig, run_dir: Path, resume: bool | str, task: dict[str, Any], part: _Part
) -> tuple[dict[str, Any], dict[int, dict]]:
    """(the resolved config, the rows an earlier, interrupted session of this run wrote, by this run's
    index). Rows are reused only under the same fingerprint (config, task and example ids), so a changed
    setting regenerates; ``resume=false`` refuses a directory that already holds predictions."""
    if resume is False and (run_dir / PREDICTIONS).is_file():
        raise FileExistsError(
            f"{run_dir / PREDICTIONS} exists and resume=false; run in a new directory or set resume=true"
        )
    plain = OmegaConf.to_container(cfg, resolve=True)
    done = load_predictions(run_dir, fingerprint(plain, task, [ex.id for ex in part.examples]))
    local = {index: j for j, index in enumerate(part.positions)}  # predictions.jsonl keeps the task's index
    done = {local[index]: row for index, row in done.items() if index in local}
    if done:
        log.info(
            "resuming %s: %d of %d examples were predicted by an earlier session and are reused; "
            "generating the other %d", run_dir, len(done), len(part.examples), len(part.examples) - len(done),
        )  # fmt: skip
    return plain, done


def _load_variant(cfg: DictConfig) -> _Loaded:
    """Make the variant (uptrained first where ``uptrain.alpha`` > 0: trained here once, or found, and
    untimed), with peak memory measured from just before it loads and ``seed`` set before it is made."""
    uptrained = uptrained_checkpoint(cfg)
    memory = PeakMemory(resolve_device(cfg.device)).start()  # this run's peak, not the process's
    torch.manual_seed(cfg.seed)
    model, tokenizer, provenance = make_variant(_loading(cfg, uptrained))
    if uptrained is not None:
        provenance["conversion"] = OmegaConf.to_container(cfg.model, resolve=True)
    return _Loaded(model, tokenizer, provenance, family_of(model), uptrained, memory)


def _prompts(cfg: DictConfig, task: dict[str, Any], examples: list[Example], loaded: _Loaded) -> _Prompts:
    """Encode the examples as this checkpoint reads them: chat template or not, source and target
    language (mBART-50), and the stop strings that end a decoder-only answer."""
    decoder_only = not loaded.family.encoder_decoder
    chat = use_chat_template(cfg, loaded.tokenizer, decoder_only)
    forced_bos = set_languages(loaded.tokenizer, cfg.base)  # base.src_lang / tgt_lang (mBART-50); None: none
    inputs = encode(task, examples, loaded.tokenizer, decoder_only, chat_template=chat)
    stop_strings = list(task.get("stop_strings") or []) if decoder_only else []
    return _Prompts(inputs, chat, forced_bos, stop_strings)


def _generate_predictions(
    cfg: DictConfig,
    run_dir: Path,
    task: dict[str, Any],
    part: _Part,
    loaded: _Loaded,
    prompts: _Prompts,
    done: dict[int, dict],
) -> _Generated:
    """Generate (timed) every example not reused, each batch appended to ``predictions.jsonl`` as soon as
    it is done."""
    device = next(loaded.model.parameters()).device
    with (run_dir / PREDICTIONS).open("a", encoding="utf-8") as sink:
        timer = Timer(device=device, mode=cfg.timing.mode, repeats=cfg.timing.get("repeats", 1))
        batch_stats = BatchStats()
        decode = decode_path_of(cfg.get("generation"), device)
        predictions = generate(
            loaded.model,
            loaded.tokenizer,
            prompts.inputs,
            max_new_tokens=task["max_new_tokens"],
            batch_size=cfg.batch_size,
            timer=timer,
            on_batch=_prediction_writer(sink, part, loaded.tokenizer, prompts.inputs),
            skip=set(done),
            progress=cfg.get("progress", True),
            description=f"{cfg.model.name} {task['name']}",
            stop_strings=prompts.stop_strings,
            decode=decode,
            max_batch_size=cfg.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
            batch_tokens=cfg.get("batch_tokens"),
            batch_stats=batch_stats,
            forced_bos_token_id=prompts.forced_bos,
            newline_token=cfg.base.get("newline_token"),
        )
    return _Generated(predictions, timer, batch_stats, decode, device)


def _prediction_writer(
    sink: TextIO, part: _Part, tokenizer, inputs: list[list[int]]
) -> Callable[[list[int], list[str]], None]:
    """``generate``'s ``on_batch``: one ``predictions.jsonl`` row per example, flushed and synced to disk
    per batch, so an interrupted run keeps every finished batch for ``resume`` to reuse."""

    def write_batch(indices: list[int], texts: list[str]) -> None:
        for i, text in zip(indices, texts, strict=True):
            row = {
                "index": part.positions[i],
                "id": part.examples[i].id,
                "input": tokenizer.decode(inputs[i], skip_special_tokens=True),
                "prediction": text,
                "references": part.examples[i].references,
            }
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        sink.flush()
        os.fsync(sink.fileno())

    return write_batch


def _score(
    task: dict[str, Any], examples: list[Example], predictions: dict[int, str], done: dict[int, dict]
) -> tuple[dict[str, float], dict[str, Any]]:
    """(scores, per-metric details) of every prediction, this session's and the reused ones (added to
    ``predictions``), against the references; an empty shard scores nothing."""
    predictions.update({i: row["prediction"] for i, row in done.items()})
    preds = [predictions[i] for i in range(len(examples))]
    refs = [ex.references for ex in examples]
    options = dict(task.get("metric_options") or {})
    scores, details = {}, {}
    if preds:
        scores, details = metrics.score_with_details(task["metrics"], preds, refs, **options)
    return scores, details


def _timing(timer: Timer, reused: int, n_examples: int) -> dict[str, Any]:
    """The timer's summary, marked partial on a resumed run: the timer saw only this session's examples."""
    timing = timer.summary()
    if reused:
        timing["partial"] = True
        timing["covers"] = (
            f"{timing['timed_samples']} of {n_examples} examples; {reused} were predicted by an "
            "earlier, interrupted session of this run and are not timed"
        )
    return timing


def _result(
    cfg: DictConfig,
    plain: dict[str, Any],
    run_dir: Path,
    *,
    task: dict[str, Any],
    part: _Part,
    loaded: _Loaded,
    prompts: _Prompts,
    generated: _Generated,
    done: dict[int, dict],
    scores: dict[str, float],
    details: dict[str, Any],
) -> dict[str, Any]:
    """``result.json``'s contents: what ran (the decode path that ran, not only the one asked for), its
    scores, timing, memory and KV-cache figures, and the settings and provenance to reproduce it."""
    timing = _timing(generated.timer, len(done), len(part.examples))
    model, family, memory = loaded.model, loaded.family, loaded.memory
    timer, decode, device = generated.timer, generated.decode, generated.device
    dtype = next(model.parameters()).dtype
    return {
        "model": cfg.model.name,
        "base": cfg.base.name,
        "arch": family.name,
        "n_heads": family.n_heads,
        "kv_heads": family.kv_heads,
        "conversion": conversion_method(model),
        "task": task["name"],
        "split": task["split"],
        "n_samples": len(part.examples),
        "shard": shard_text(part.shard),
        "task_samples": part.task_samples,
        "metric": task["primary_metric"],
        "score": scores.get(task["primary_metric"]),  # None only for an empty shard
        "metrics": scores,
        "metric_details": details,
        "timing_mode": timing["mode"],
        "decode_path": decode.ran_on(model).name,  # what ran, not what was asked for
        "decode_path_requested": decode.name,
        "time_per_sample_s": timing["time_per_sample_s"],
        "prefill_s_per_sample": timing["prefill_s_per_sample"],
        "decode_s_per_token": timing["decode_s_per_token"],
        "tokens_per_s": timing["tokens_per_s"],
        "peak_mem_mb": memory.peak_mb(),
        "peak_mem_method": memory.method,
        "peak_mem_start_mb": memory.start_mb,
        **roofline.kv_cache_bytes(family, dtype),
        **roofline.measured_kv_bytes(timer.batches),
        **(
            roofline.decode_floor(family, timer.batches, roofline.hardware_rates(device, dtype))
            if cfg.timing.roofline
            else {}
        ),  # fmt: skip
        "timing": timing,
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "dtype": cfg.dtype,
        "batch_size": cfg.batch_size,
        **generated.batch_stats.result(),  # batch_sizes_used (this session's, largest first), oom_retries
        "max_input_tokens": task["max_input_tokens"],
        "max_new_tokens": task["max_new_tokens"],
        "stop_strings": prompts.stop_strings,
        "chat_template": prompts.chat,
        **uptraining_of(model, loaded.uptrained, saved=bool(cfg.model.get("checkpoint"))),
        "reused_predictions": len(done),
        "run_dir": str(run_dir),
        "provenance": loaded.provenance,
        "environment": {"gqa_eval": __version__, **roofline.environment(device, dtype)},
        "config": plain,
    }


def _write_result(
    result: dict[str, Any], cfg: DictConfig, run_dir: Path, hydra_dir: Path | None, sweep_dir: Path | None
) -> None:
    """Write ``result.json`` (atomically) and, under Hydra, rebuild the summary of the enclosing sweep (or
    of the outputs folder); ``result`` gains the summary's path and, not in result.json, the report's
    files for the end-of-run block."""
    summary_root = report_root(run_dir, sweep_dir, Path(cfg.output_root)) if hydra_dir else None
    summary_path = (summary_root / "summary.csv").resolve() if summary_root is not None else None
    result["summary_path"] = str(summary_path) if summary_path is not None else None
    write_atomic(run_dir / "result.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if summary_root is not None:  # the report's files, for the end-of-run block (not in result.json)
        result["report_files"] = [str(p.resolve()) for p in write_report(summary_root).files]
