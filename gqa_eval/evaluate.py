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
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gqa_eval import __version__, metrics, roofline
from gqa_eval.batching import DEFAULT_MAX_BATCH_SIZE, BatchStats, check_settings
from gqa_eval.decode_path import from_config as decode_path_of
from gqa_eval.generation import generate
from gqa_eval.io import write_atomic
from gqa_eval.paths import resolve
from gqa_eval.report.summary import report_root, write_report
from gqa_eval.resume import PREDICTIONS, fingerprint, load_predictions
from gqa_eval.tasks import (
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
from gqa_eval.training.uptrain import uptrain_settings, uptrained_checkpoint, uptraining_of
from gqa_eval.variant import family_of
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


def _check_config(cfg: DictConfig) -> None:
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
    _check_config(cfg)
    hydra_dir, sweep_dir = _hydra_dirs()
    resume = cfg.get("resume", True)
    if isinstance(resume, str):  # resume=PATH: continue the run in PATH
        output_dir = resolve(resume)
        if not (output_dir / PREDICTIONS).is_file():
            raise FileNotFoundError(f"resume={resume}: no {PREDICTIONS} there to resume from")
    run_dir = Path(output_dir) if output_dir is not None else hydra_dir
    if run_dir is None:
        raise ValueError("evaluate() outside Hydra needs output_dir=")
    # the task as the base reads it: base.input_template (raw: no T5 prefix) and base.max_input_tokens
    task = task_for_base(OmegaConf.to_container(cfg.task, resolve=True), cfg.base)
    unknown = [m for m in task["metrics"] if m not in metrics.METRICS]
    if unknown or task["primary_metric"] not in task["metrics"]:
        raise ValueError(
            f"task {task['name']}: unknown metric(s) {unknown or [task['primary_metric']]}; "
            f"registered metrics are {sorted(metrics.METRICS)} and primary_metric must be one of task.metrics"
        )
    _check_writable(run_dir)

    examples = load_examples(task, cfg.limit)
    task_samples, shard = len(examples), parse_shard(cfg.get("shard"))
    positions = shard_positions(task_samples, shard)  # this run's examples, by index in the whole task
    examples = [examples[i] for i in positions]  # none for part K >= the task's size: an empty shard
    if resume is False and (run_dir / PREDICTIONS).is_file():
        raise FileExistsError(
            f"{run_dir / PREDICTIONS} exists and resume=false; run in a new directory or set resume=true"
        )
    plain = OmegaConf.to_container(cfg, resolve=True)
    done = load_predictions(run_dir, fingerprint(plain, task, [ex.id for ex in examples]))
    local = {index: j for j, index in enumerate(positions)}  # predictions.jsonl keeps the task's index
    done = {local[index]: row for index, row in done.items() if index in local}
    if done:
        log.info(
            "resuming %s: %d of %d examples were predicted by an earlier session and are reused; "
            "generating the other %d", run_dir, len(done), len(examples), len(examples) - len(done),
        )  # fmt: skip
    uptrained = uptrained_checkpoint(cfg)  # uptrain.alpha > 0: trained here once, or found (untimed)
    memory = PeakMemory(resolve_device(cfg.device)).start()  # this run's peak, not the process's
    torch.manual_seed(cfg.seed)
    model, tokenizer, provenance = make_variant(_loading(cfg, uptrained))
    if uptrained is not None:
        provenance["conversion"] = OmegaConf.to_container(cfg.model, resolve=True)
    family = family_of(model)  # heads, head width and cache layout, asked of the model once
    decoder_only = not family.encoder_decoder
    chat = use_chat_template(cfg, tokenizer, decoder_only)
    forced_bos = set_languages(tokenizer, cfg.base)  # base.src_lang / tgt_lang (mBART-50); None: none
    inputs = encode(task, examples, tokenizer, decoder_only, chat_template=chat)
    stop_strings = list(task.get("stop_strings") or []) if decoder_only else []
    device = next(model.parameters()).device

    with (run_dir / PREDICTIONS).open("a", encoding="utf-8") as sink:

        def write_batch(indices: list[int], texts: list[str]) -> None:
            for i, text in zip(indices, texts, strict=True):
                row = {
                    "index": positions[i],
                    "id": examples[i].id,
                    "input": tokenizer.decode(inputs[i], skip_special_tokens=True),
                    "prediction": text,
                    "references": examples[i].references,
                }
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())

        timer = Timer(device=device, mode=cfg.timing.mode, repeats=cfg.timing.get("repeats", 1))
        batch_stats = BatchStats()
        decode = decode_path_of(cfg.get("generation"), device)
        predictions = generate(
            model,
            tokenizer,
            inputs,
            max_new_tokens=task["max_new_tokens"],
            batch_size=cfg.batch_size,
            timer=timer,
            on_batch=write_batch,
            skip=set(done),
            progress=cfg.get("progress", True),
            description=f"{cfg.model.name} {task['name']}",
            stop_strings=stop_strings,
            decode=decode,
            max_batch_size=cfg.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
            batch_tokens=cfg.get("batch_tokens"),
            batch_stats=batch_stats,
            forced_bos_token_id=forced_bos,
            newline_token=cfg.base.get("newline_token"),
        )

    predictions.update({i: row["prediction"] for i, row in done.items()})
    preds = [predictions[i] for i in range(len(examples))]
    refs = [ex.references for ex in examples]
    options = dict(task.get("metric_options") or {})
    scores, details = {}, {}  # an empty shard scores nothing
    if preds:
        scores, details = metrics.score_with_details(task["metrics"], preds, refs, **options)
    timing = timer.summary()
    if done:  # the timer saw only this session's examples
        timing["partial"] = True
        timing["covers"] = (
            f"{timing['timed_samples']} of {len(examples)} examples; {len(done)} were predicted by an "
            "earlier, interrupted session of this run and are not timed"
        )
    dtype = next(model.parameters()).dtype
    result = {
        "model": cfg.model.name,
        "base": cfg.base.name,
        "arch": family.name,
        "n_heads": family.n_heads,
        "kv_heads": family.kv_heads,
        "conversion": conversion_method(model),
        "task": task["name"],
        "split": task["split"],
        "n_samples": len(examples),
        "shard": shard_text(shard),
        "task_samples": task_samples,
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
        **batch_stats.result(),  # batch_sizes_used (this session's, largest first), oom_retries
        "max_input_tokens": task["max_input_tokens"],
        "max_new_tokens": task["max_new_tokens"],
        "stop_strings": stop_strings,
        "chat_template": chat,
        **uptraining_of(model, uptrained, saved=bool(cfg.model.get("checkpoint"))),
        "reused_predictions": len(done),
        "run_dir": str(run_dir),
        "provenance": provenance,
        "environment": {"gqa_eval": __version__, **roofline.environment(device, dtype)},
        "config": plain,
    }
    summary_root = report_root(run_dir, sweep_dir, Path(cfg.output_root)) if hydra_dir else None
    summary_path = (summary_root / "summary.csv").resolve() if summary_root is not None else None
    result["summary_path"] = str(summary_path) if summary_path is not None else None
    write_atomic(run_dir / "result.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if summary_root is not None:  # the report's files, for the end-of-run block (not in result.json)
        result["report_files"] = [str(p.resolve()) for p in write_report(summary_root).files]
    return result
