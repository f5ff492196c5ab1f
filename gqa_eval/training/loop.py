"""Training stage: train a small MHA checkpoint, or continue any checkpoint (uptraining), on Hugging Face's
``Trainer`` (:mod:`gqa_eval.training.engine`).

``train(cfg)`` (``conf/training.yaml``, console script ``gqa-eval-train``) either builds a model from scratch
(``train=tiny_t5`` or ``train=tiny_llama``: architecture, tokenizer trained locally on the training
inputs, recipe) or continues ``init_from``, a saved checkpoint, optionally converted first to ``kv_heads``
key/value heads. Continuing a converted checkpoint for a fraction of the original steps is the paper's
uptraining (Ainslie et al. 2023, arXiv 2305.13245, sec. 2.1). ``objective`` names what it learns:
``task_mixture`` (the synthetic mixture, ``gqa_eval.training.data``), ``span_corruption`` (T5's
pre-training objective) or ``causal_lm`` on a ``corpus``, or ``distill`` (KL to the unconverted model).

Everything lands in ``out_dir``: the model and tokenizer (``save_pretrained``; safetensors), the resolved
``train_config.yaml``, ``train_log.jsonl`` (the loss every ``log_every`` steps, validation scores every
``eval_every``) and, every ``save_every`` steps, the Trainer's own checkpoint under ``checkpoints/``
(model, optimizer, scheduler, RNG state of every process; sharded under FSDP / DeepSpeed). Rerunning the
same command resumes from the latest one and follows the same data order, so an interrupted run ends
where an uninterrupted one would. ``accelerate launch`` runs it on several processes unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gqa_eval import metrics
from gqa_eval.generation import generate
from gqa_eval.io import readable_weights
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.tasks import encode, load_examples
from gqa_eval.timing import Timer
from gqa_eval.training.architecture import build_model
from gqa_eval.training.data import (
    encode_pairs,
    model_input_text,
    quiet_progress,
    train_tokenizer,
    training_examples,
)
from gqa_eval.variant import family_of
from gqa_eval.variant.checkpoints import checkpoint_source, load_checkpoint, resolve_device
from gqa_eval.variant.conversion import calibrate_and_convert
from gqa_eval.variant.loadable import write_loadable_files

CHECKPOINTS = "checkpoints"  # the Trainer's resume checkpoints (checkpoint-N)
DIGEST_FILE = "settings_digest.txt"  # in CHECKPOINTS: the settings a resumed run must share
LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "train_config.yaml"
# Settings that only steer a run (where it writes, how often it reports); a resumed run may change them,
# everything else must equal the run that wrote resume/.
RUN_CONTROL_KEYS = (
    "out_dir", "output_root", "stop_at", "log_every", "eval_every", "eval_examples", "eval_max_new_tokens",
    "save_every", "keep_resume_state", "overwrite", "progress", "threads", "device", "gradient_checkpointing",
)  # fmt: skip


def lr_factor(step: int, cfg: DictConfig) -> float:
    """Learning-rate multiplier after ``step`` steps: linear warm-up, then constant, cosine or linear decay
    to ``min_lr_ratio`` at ``cfg.steps``."""
    warmup = min(cfg.warmup_steps, cfg.steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, cfg.steps - warmup))
    shape = {"cosine": 0.5 * (1 + math.cos(math.pi * progress)), "linear": 1 - progress}
    if cfg.schedule not in shape:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose constant, cosine or linear")
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape[cfg.schedule]


def final_lr(cfg: DictConfig) -> float:
    """The learning rate a run following ``cfg``'s schedule ends with (after its last step)."""
    return float(cfg.lr) * lr_factor(int(cfg.steps), cfg)


def stage_configs(directory: Path) -> list[Path]:
    """The training configs a bundled-style checkpoint carries, earlier stages first
    (``stage1_train_config.yaml``, ..., then ``train_config.yaml``: its last stage)."""
    stages = sorted(directory.glob("stage*_train_config.yaml"), key=lambda p: int(p.name[5:].split("_")[0]))
    last = directory / CONFIG_FILE
    return [*stages, last] if last.is_file() else []


def preset_pretraining(init_from: str) -> dict[str, Any] | None:
    """The ``pretraining`` block (steps, batch_tokens, source) of the base preset under ``conf/base/``
    whose ``path`` is ``init_from`` (a hub id as the presets spell it), or None."""
    wanted = str(init_from).rstrip("/")
    for preset in sorted((PROJECT_ROOT / "conf" / "base").glob("*.yaml")):
        base = OmegaConf.load(preset)
        if str(base.get("path", "")).rstrip("/") == wanted and base.get("pretraining") is not None:
            return {**OmegaConf.to_container(base.pretraining, resolve=True), "preset": portable(preset)}
    return None


def base_pretraining(cfg: DictConfig, stages: list, configs: list[Path]) -> dict[str, Any] | None:
    """How long the base was trained: ``{"steps", "tokens" (None when its batch is unknown), "from"}``,
    from ``uptrain.base_steps`` (with ``uptrain.base_batch_tokens``), else the base preset's
    ``pretraining`` (conf/base/, passed by gqa-eval as ``uptrain.pretraining`` or found by
    ``init_from``), else the stage configs the checkpoint carries; None when none of them says."""
    up = cfg.uptrain
    if up.get("base_steps"):
        batch = up.get("base_batch_tokens")
        steps = int(up.base_steps)
        return {"steps": steps, "tokens": steps * int(batch) if batch else None, "from": "uptrain.base_steps"}
    preset = up.get("pretraining")
    preset = OmegaConf.to_container(preset, resolve=True) if preset is not None else None
    preset = preset or preset_pretraining(str(cfg.init_from))
    if preset:
        steps, batch = int(preset["steps"]), preset.get("batch_tokens")
        where = preset.get("preset") or "uptrain.pretraining"
        return {"steps": steps, "tokens": steps * int(batch) if batch else None, "from": where}
    if stages:
        return {
            "steps": sum(int(s.steps) for s in stages),
            "tokens": sum(int(s.steps) * int(s.batch_tokens) for s in stages),
            "from": portable(configs[-1]),
        }
    return None


def tokens_per_step(cfg: DictConfig) -> int:
    """Tokens one optimizer step trains on, over every process: the task mixture's ``batch_tokens``
    (padding included) or ``batch_size x block_tokens`` corpus tokens (span corruption: inputs), times
    ``grad_accum`` and the processes (``WORLD_SIZE``, which ``accelerate launch`` sets)."""
    import os

    objective = str(cfg.objective)
    data = str(cfg.distill.data) if objective == "distill" else objective
    if data == "task_mixture":
        per_micro = int(cfg.batch_tokens)
    else:
        per_micro = int(cfg.batch_size) * int(cfg.block_tokens)
    return per_micro * int(cfg.grad_accum) * int(os.environ.get("WORLD_SIZE", "1"))


def plan_uptraining(cfg: DictConfig) -> None:
    """Fill ``cfg`` for uptraining (``uptrain.*``, with ``init_from``), in place.

    The run's length: ``uptrain.alpha`` is the paper's fraction of the base's pre-training, taken as a
    token budget, alpha x its steps x its batch (:func:`base_pretraining`); ``uptrain.tokens`` gives the
    budget itself. ``steps`` is the budget over this run's :func:`tokens_per_step`, so that the fraction
    holds whatever batch, accumulation or number of processes trains it (with the base's batch: alpha x
    its steps). Where the base's batch is unknown (``uptrain.base_steps`` alone), alpha x its steps.
    ``uptrain.planned`` records the arithmetic.

    ``uptrain.recipe=continue`` continues the base's last stage (Ainslie et al. 2023, sec. 2.1:
    uptraining runs the base's pre-training recipe on): its data mixture, ``batch_tokens`` (corpus
    objectives: ``batch_size`` so that a step holds as many tokens), optimizer settings and bf16, at the
    learning rate that stage ended with (constant: the continuation of a finished decay; or, with
    ``uptrain.lr``, re-warmed to that peak and decayed by cosine back to it), after a linear warm-up
    that takes the same fraction of this run as the stage's warm-up took of the stage.
    ``uptrain.continues`` records what was taken from where.

    With either recipe, K/V-pooled steps (``pool_kv``, the bundled tiny_t5's from-scratch stand-in for
    uptraining) are ``uptrain.pool_kv``'s (default none), not the ``train=...`` preset's.

    Raises:
        ValueError: uptraining settings without ``init_from``, an unknown recipe, or a base that carries
            no training config where one is needed (name what to set instead).
    """
    up = cfg.get("uptrain") or {}
    alpha, recipe, budget = up.get("alpha"), up.get("recipe", "given"), up.get("tokens")
    if recipe not in ("continue", "given"):
        raise ValueError(
            f"uptrain.recipe={recipe!r}: choose continue (the base's last stage, continued) or given"
        )
    if cfg.init_from is None:
        if alpha is not None or budget is not None:
            raise ValueError(
                "uptrain.alpha / uptrain.tokens need init_from=CHECKPOINT: the checkpoint whose training "
                "they continue"
            )
        return
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        raise ValueError(f"uptrain.alpha must be a fraction > 0 of the base's training steps, got {alpha!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
        raise ValueError(f"uptrain.tokens must be a whole number of tokens > 0, got {budget!r}")
    if alpha is not None and budget is not None:
        raise ValueError("uptrain.alpha and uptrain.tokens both set the run's length; give one of them")
    source = checkpoint_source(str(cfg.init_from))
    configs = stage_configs(source) if isinstance(source, Path) else []
    stages = [OmegaConf.load(p) for p in configs]
    if recipe == "continue" and not stages:
        raise ValueError(
            f"uptrain.recipe=continue: {cfg.init_from} carries no {CONFIG_FILE} to continue; give the recipe "
            "(lr, batch_size or batch_tokens, ...) with uptrain.recipe=given"
        )
    base = base_pretraining(cfg, stages, configs)
    with open_dict(cfg):
        # pooled steps are a from-scratch recipe's (train=tiny_t5); an uptraining pools only when asked
        cfg.pool_kv = up.get("pool_kv")
        if recipe == "continue":
            last = stages[-1]
            for key in ("batch_tokens", "betas", "weight_decay", "grad_clip", "bf16"):
                cfg[key] = last[key]
            cfg.batch_size = max(1, int(last.batch_tokens) // int(cfg.block_tokens))
            cfg.data = last.data
        if alpha is not None and base is None:
            raise ValueError(
                f"uptrain.alpha: nothing says how long {cfg.init_from} was trained (no base preset with "
                f"pretraining, no {CONFIG_FILE}); set uptrain.base_steps=N and uptrain.base_batch_tokens=T "
                "(its pre-training steps and tokens per step), or uptrain.tokens=N"
            )
        if alpha is not None or budget is not None:
            per_step = tokens_per_step(cfg)
            if budget is None and base["tokens"] is None:
                cfg.steps = max(1, round(alpha * base["steps"]))
            else:
                budget = budget if budget is not None else alpha * base["tokens"]
                cfg.steps = max(1, round(budget / per_step))
            cfg.uptrain.planned = {
                "tokens": int(budget) if budget is not None else None,
                "tokens_per_step": per_step,
                "steps": int(cfg.steps),
                "base": base,
            }
        if recipe == "given":
            return
        ended = final_lr(last)
        peak = up.get("lr")
        if peak is None:  # the continuation of a finished decay
            cfg.lr, cfg.schedule = ended, "constant"
        else:  # re-warmed to a peak, then decayed back to where the base ended
            if isinstance(peak, bool) or not isinstance(peak, (int, float)) or peak < ended:
                raise ValueError(
                    f"uptrain.lr={peak!r}: give a peak learning rate >= the base's last ({ended:g}), "
                    "or null to continue at that one"
                )
            cfg.lr, cfg.schedule, cfg.min_lr_ratio = float(peak), "cosine", ended / float(peak)
        fraction = min(int(last.warmup_steps), int(last.steps)) / int(last.steps)
        cfg.warmup_steps = max(1, round(fraction * int(cfg.steps))) if fraction else 0
        cfg.uptrain.continues = {
            "train_config": portable(configs[-1]),
            "stage": str(last.get("name")),
            "base_steps": int(base["steps"]),
            "lr": cfg.lr,
            "schedule": str(cfg.schedule),
            "warmup_steps": int(cfg.warmup_steps),
        }


def uptraining_record(cfg: DictConfig) -> dict[str, Any]:
    """How a continued (uptrained) checkpoint was trained, as its config records it
    (``config.gqa_uptraining``; ``result.json`` reports it as ``uptrain``)."""
    up = cfg.get("uptrain") or {}
    init = str(cfg.init_from)
    return {
        "init_from": portable(init) if Path(init).exists() else init,
        "kv_heads": cfg.kv_heads,
        "conversion": cfg.conversion if cfg.kv_heads is not None else None,
        "alpha": up.get("alpha"),
        "tokens": (up.get("planned") or {}).get("tokens"),
        "objective": str(cfg.objective),
        "steps": int(cfg.steps),
        "recipe": up.get("recipe", "given"),
        "continues": OmegaConf.to_container(up.continues) if up.get("continues") is not None else None,
        "lr": float(cfg.lr),
        "schedule": cfg.schedule,
        "warmup_steps": int(cfg.warmup_steps),
        "seed": int(cfg.seed),
    }


def validate(model, tokenizer, tasks: dict[str, dict], n: int, max_new_tokens: int) -> dict[str, float]:
    """Primary score (0-100) of greedy decoding on the first ``n`` bundled validation examples per task."""
    was_training = model.training
    model.eval()
    decoder_only = not model.config.is_encoder_decoder
    device = next(model.parameters()).device
    scores = {}
    for name, task in tasks.items():
        examples = load_examples(task, n)
        inputs = encode(task, examples, tokenizer, decoder_only)
        predictions = generate(
            model,
            tokenizer,
            inputs,
            max_new_tokens=min(task["max_new_tokens"], max_new_tokens),
            batch_size=8,
            timer=Timer(device=device),
            progress=False,
        )
        preds = [predictions[i] for i in range(len(examples))]
        primary = task["primary_metric"]
        scores[name] = metrics.score([primary], preds, [ex.references for ex in examples])[primary]
    model.train(was_training)
    return scores


def portable(path: str | Path) -> str:
    """``path`` relative to the project when it lies inside it (no machine paths in saved files)."""
    p = Path(path).resolve()
    return str(p.relative_to(PROJECT_ROOT)) if p.is_relative_to(PROJECT_ROOT) else str(path)


def settings_digest(cfg: DictConfig) -> str:
    """A digest of the settings a resumed run must share with the interrupted one."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    picked = {k: v for k, v in settings.items() if k not in RUN_CONTROL_KEYS}
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def last_checkpoint(out_dir: Path) -> Path | None:
    """The Trainer's latest checkpoint in ``out_dir/checkpoints``, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = out_dir / CHECKPOINTS
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


class JsonlLog:
    """``train_log.jsonl``: one JSON object per line, flushed as written. A resumed run drops the lines
    of steps after its resume point, so the log reads as one continuous run."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        if resume_step is None:
            lines = []
        kept = [line for line in lines if json.loads(line).get("step", 0) <= (resume_step or 0)]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _initial_model(cfg: DictConfig, examples: dict, tasks: dict, resuming: bool):
    """(model, tokenizer) as training starts: ``init_from`` (converted if asked) or built from scratch
    (a resumed run: with the tokenizer it saved in ``out_dir``); a resumed run's weights then come from
    its checkpoint, which the Trainer loads (sharded or not)."""
    if cfg.init_from is not None:
        model, tokenizer = load_checkpoint(cfg.init_from, dtype="float32", device="cpu")
        if cfg.kv_heads is not None:
            calibrate_and_convert(
                model, tokenizer, int(cfg.kv_heads), cfg.conversion, cfg.seed, cfg.get("calibration")
            )
        return model, tokenizer
    decoder_only = cfg.architecture.family != "t5"
    if resuming:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.out_dir)
    else:
        texts = []
        for name, task in tasks.items():
            for ex in examples[name][: cfg.tokenizer.examples_per_task]:
                texts += [model_input_text(task, ex, decoder_only), ex.references[0]]
        tokenizer = train_tokenizer(texts, cfg.tokenizer.vocab_size, decoder_only)
    torch.manual_seed(cfg.seed)
    return build_model(cfg.architecture, tokenizer), tokenizer


def add_sentinels(model, tokenizer, seed: int, count: int = 100) -> bool:
    """Give a tokenizer without them T5's sentinels ``<extra_id_0>`` .. ``<extra_id_{count-1}>``,
    numbered down from the top of the vocabulary as T5's are, and grow the model's embeddings (and
    output layer) to match: the new rows are drawn around the old ones' mean (transformers'
    ``mean_resizing``) from ``seed``, so that every process of a distributed run, and a resumed run,
    draws the same rows. Returns False, changing nothing, when the tokenizer has them already."""
    first = tokenizer.convert_tokens_to_ids("<extra_id_0>")
    if first is not None and first != getattr(tokenizer, "unk_token_id", None):
        return False
    tokenizer.add_tokens([f"<extra_id_{i}>" for i in reversed(range(count))], special_tokens=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.resize_token_embeddings(len(tokenizer))
    print(f"span_corruption: added {count} sentinel tokens; vocabulary now {len(tokenizer)}", flush=True)
    return True


def _teacher(cfg: DictConfig, objective: str):
    """The unconverted model ``distill`` learns from: ``init_from`` as it is, frozen."""
    if objective != "distill":
        return None
    if cfg.init_from is None or cfg.kv_heads is None:
        raise ValueError(
            "objective=distill learns a conversion from the model it was converted from: set "
            "init_from=CHECKPOINT and kv_heads=G"
        )
    teacher, _ = load_checkpoint(cfg.init_from, dtype="float32", device="cpu")
    return teacher.eval().requires_grad_(False)


def _corpus_blocks(cfg: DictConfig, tokenizer, encoder_decoder: bool):
    """(dataset, collator) of a corpus objective: fixed-length blocks of ``cfg.corpus``, tokenised on the
    fly; span corruption for an encoder-decoder (``block_tokens`` the input length after corruption),
    causal LM for a decoder-only model."""
    from gqa_eval.training.corpus import iter_texts, tokenize_stream
    from gqa_eval.training.engine import Blocks
    from gqa_eval.training.objectives import CausalLMCollator, SpanCorruptionCollator, packed_blocks

    corpus, length = cfg.corpus, int(cfg.block_tokens)
    if encoder_decoder:
        collator = SpanCorruptionCollator(
            tokenizer, length, cfg.span_corruption.noise_density, cfg.span_corruption.mean_span, cfg.seed
        )
        length = collator.expanded_length
    else:
        collator = CausalLMCollator(tokenizer, length)
    eos = tokenizer.eos_token_id

    def blocks():
        texts = iter_texts(corpus.source, corpus.field, corpus.get("name"), corpus.get("split", "train"))
        return packed_blocks(tokenize_stream(texts, tokenizer), length, eos)

    return Blocks(blocks), collator


def _checkpointing(on: bool) -> dict[str, bool]:
    """Gradient (activation) checkpointing, under the name this transformers version takes (5.25 renamed
    ``gradient_checkpointing`` to ``activation_checkpointing``); nothing when off."""
    import inspect

    from transformers import TrainingArguments

    if not on:
        return {}
    names = inspect.signature(TrainingArguments.__init__).parameters
    return {
        "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": True
    }


def _arguments(cfg: DictConfig, out_dir: Path, objective_data: str):
    """The Trainer's settings from ``conf/training.yaml``'s."""
    from transformers import TrainingArguments

    save_every = int(cfg.save_every or 0)
    return TrainingArguments(
        output_dir=str(out_dir / CHECKPOINTS),
        max_steps=int(cfg.steps),
        per_device_train_batch_size=1 if objective_data == "task_mixture" else int(cfg.batch_size),
        gradient_accumulation_steps=int(cfg.grad_accum),
        learning_rate=float(cfg.lr),
        weight_decay=float(cfg.weight_decay),
        adam_beta1=float(cfg.betas[0]),
        adam_beta2=float(cfg.betas[1]),
        max_grad_norm=float(cfg.grad_clip or 0.0),
        optim=str(cfg.optim),
        bf16=bool(cfg.bf16),
        **_checkpointing(bool(cfg.gradient_checkpointing)),
        logging_steps=int(cfg.log_every),
        save_strategy="steps" if save_every else "no",
        save_steps=save_every or 1,
        save_total_limit=1,
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        use_cpu=resolve_device(cfg.device).type == "cpu",  # auto: CUDA where there is one
        report_to=[],
        disable_tqdm=not cfg.progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train as ``cfg`` says (see the module docstring) and return a summary of the run.

    Returns:
        ``{"out_dir", "step", "loss", "eval", "elapsed_s"}``: where the model is, the last step done,
        the last logged loss and the last validation scores.
    """
    with quiet_progress():  # datasets' and transformers' loading/saving bars would break the training bar
        return _train(cfg)


def _check_start(cfg: DictConfig, out_dir: Path) -> Path | None:
    """The checkpoint a rerun resumes from (None: a new run); refuse a finished checkpoint without
    overwrite=true, and a checkpoint written with other settings."""
    resume = last_checkpoint(out_dir)
    if resume is None and (out_dir / "config.json").is_file() and not cfg.overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a trained checkpoint and no resume state; "
            "choose another out_dir, or pass overwrite=true to train over it"
        )
    digest = out_dir / CHECKPOINTS / DIGEST_FILE
    if resume is not None and (not digest.is_file() or digest.read_text().strip() != settings_digest(cfg)):
        raise ValueError(
            f"{resume} was written by a run with other settings (other than {', '.join(RUN_CONTROL_KEYS)}); "
            "rerun with the same settings to resume, or choose another out_dir"
        )
    return resume


def _task_data(cfg: DictConfig, needed: bool) -> tuple[dict, dict]:
    """The tasks (validation, and the mixture's configs) and, where needed, their generated examples."""
    tasks = {
        name: OmegaConf.to_container(task, resolve=True)
        for name, task in cfg.tasks.items()
        if cfg.data.examples.get(name, 0) > 0
    }
    if not needed:
        return tasks, {}
    with tempfile.TemporaryDirectory() as tmp:
        examples = {
            name: training_examples(
                task,
                cfg.data.examples[name],
                cfg.data.seed,
                Path(tmp),
                cfg.data.counterfactual_qa,
                cfg.data.easy_qa_fraction,
            )  # fmt: skip
            for name, task in tasks.items()
        }
    return tasks, examples


def _write_start(cfg: DictConfig, out_dir: Path, model, tokenizer, examples: dict, resuming: bool) -> None:
    """train_config.yaml, the settings digest, the tokenizer and the log's first line (a new run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved_cfg = OmegaConf.to_container(cfg, resolve=True)
    saved_cfg["out_dir"] = portable(out_dir)
    for key in ("output_root", "init_from"):  # project paths relative; hub ids and outside paths as given
        if saved_cfg.get(key) and Path(saved_cfg[key]).exists():
            saved_cfg[key] = portable(saved_cfg[key])
    (out_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(saved_cfg), encoding="utf-8")
    if resuming:
        return
    (out_dir / CHECKPOINTS).mkdir(exist_ok=True)
    (out_dir / CHECKPOINTS / DIGEST_FILE).write_text(settings_digest(cfg) + "\n")
    tokenizer.save_pretrained(out_dir)
    family = family_of(model)
    JsonlLog(out_dir / LOG_FILE, None).write({
        "step": 0, "params": sum(p.numel() for p in model.parameters()), "n_heads": family.n_heads,
        "kv_heads": family.kv_heads, "examples": {n: len(e) for n, e in examples.items()},
        "objective": cfg.objective, "torch_threads": torch.get_num_threads(),
    })  # fmt: skip


def _save_final(cfg: DictConfig, trainer, out_dir: Path, tokenizer) -> None:
    """The trained checkpoint into ``out_dir`` (the full weights, gathered from every process), and the
    resume checkpoints dropped unless ``keep_resume_state``."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    state = trainer.accelerator.get_state_dict(trainer.model)  # every process takes part (FSDP, ZeRO-3)
    if not trainer.is_world_process_zero():
        return
    if cfg.init_from is not None:  # what the evaluation records of an uptrained checkpoint
        model.config.gqa_uptraining = uptraining_record(cfg)
    model.save_pretrained(out_dir, state_dict=state)
    readable_weights(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_loadable_files(model, out_dir)
    if not cfg.keep_resume_state:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)


def _train(cfg: DictConfig) -> dict[str, Any]:
    from gqa_eval.training.engine import GQATrainer, Pairs, Progress, TokenBudgetBatches
    from gqa_eval.training.objectives import check_objective

    plan_uptraining(cfg)  # before the digest: a resumed uptraining run must plan the same steps
    out_dir = Path(cfg.out_dir)
    resume = _check_start(cfg, out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    objective = str(cfg.objective)
    data_kind = str(cfg.distill.data) if objective == "distill" else objective
    building = cfg.init_from is None
    tasks, examples = _task_data(cfg, data_kind == "task_mixture" or (building and resume is None))
    model, tokenizer = _initial_model(cfg, examples, tasks, resume is not None)
    encoder_decoder = family_of(model).encoder_decoder
    check_objective(objective, encoder_decoder)
    if objective == "span_corruption" and cfg.span_corruption.get("add_sentinels"):
        add_sentinels(model, tokenizer, int(cfg.seed))
    args = _arguments(cfg, out_dir, data_kind)
    decoder_only = not encoder_decoder
    extra: dict[str, Any] = {}
    if data_kind == "task_mixture":
        pairs = [
            p
            for name, task in tasks.items()
            for p in encode_pairs(task, examples[name], tokenizer, decoder_only, cfg.data.max_input_tokens)
        ]
        total = int(cfg.steps) * int(cfg.grad_accum) * args.world_size
        lengths = [len(p.source) + len(p.target) for p in pairs]
        dataset, collator = Pairs(pairs), None
        extra = {"token_batches": TokenBudgetBatches(lengths, int(cfg.batch_tokens), int(cfg.seed), total)}
    elif data_kind in ("span_corruption", "causal_lm", "corpus"):
        dataset, collator = _corpus_blocks(cfg, tokenizer, encoder_decoder)
    else:
        raise ValueError(f"distill.data={data_kind!r}: choose task_mixture or corpus")
    if args.process_index == 0:
        _write_start(cfg, out_dir, model, tokenizer, examples, resume is not None)
        if resume is not None:  # the log reads as one run: lines after the checkpoint's step go
            JsonlLog(out_dir / LOG_FILE, _checkpoint_step(resume))

    def run_eval(at: int) -> dict[str, float]:
        plain = trainer.accelerator.unwrap_model(trainer.model)
        scores = validate(plain, tokenizer, tasks, cfg.eval_examples, cfg.eval_max_new_tokens)
        average = sum(scores.values()) / len(scores)
        progress.write({"step": at, "eval": scores, "average": average})
        print(f"step {at}: validation average {average:.1f} " + json.dumps(scores), flush=True)
        return scores

    progress = Progress(
        out_dir / LOG_FILE, run_eval if cfg.eval_examples and tasks else None, int(cfg.eval_every or 0),
        int(cfg.steps), cfg.stop_at, cfg.init_from is not None and bool(cfg.eval_every),
    )  # fmt: skip
    teacher = _teacher(cfg, objective)
    trainer = GQATrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=tokenizer,
        callbacks=[progress], lr_factor=lambda s: lr_factor(s, cfg), pool_kv=cfg.pool_kv,
        pool_kv_from=float(cfg.pool_kv_from), pool_seed=int(cfg.seed), teacher=teacher,
        distill=OmegaConf.to_container(cfg.distill, resolve=True), pad_id=tokenizer.pad_token_id,
        decoder_only=decoder_only, **extra,
    )  # fmt: skip
    if not cfg.progress:  # the Trainer prints every log record when its bar is off: train_log.jsonl has them
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    if teacher is not None:
        teacher.to(args.device)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    step = trainer.state.global_step
    if step >= cfg.steps:  # only now: until here out_dir keeps any checkpoint it held, whole
        _save_final(cfg, trainer, out_dir, tokenizer)
    return {"out_dir": str(out_dir), "step": step, "loss": progress.last_loss, "eval": progress.scores,
            "elapsed_s": time.perf_counter() - started}  # fmt: skip


def _checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="training")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":  # python -m gqa_eval.training.loop, accelerate launch -m gqa_eval.training.loop
    main()
