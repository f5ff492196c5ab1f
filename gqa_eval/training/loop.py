"""Training stage: train a small MHA checkpoint on the synthetic mixture, or continue any checkpoint.

``train(cfg)`` (``conf/training.yaml``, console script ``gqa-eval-train``) either builds a model from scratch
(``train=tiny_t5`` or ``train=tiny_llama``: architecture, tokenizer trained locally on the training
inputs, recipe) or continues ``init_from``, a saved checkpoint, optionally converted first to ``kv_heads``
key/value heads. Continuing a converted checkpoint for a fraction of the original steps is the paper's
uptraining (Ainslie et al. 2023, arXiv 2305.13245, sec. 2.1). Data comes from ``gqa_eval.training.data``.

Everything lands in ``out_dir``: the model and tokenizer (``save_pretrained``; safetensors), the resolved
``train_config.yaml``, and ``train_log.jsonl`` (loss every ``log_every`` steps, validation scores every
``eval_every``). Every ``save_every`` steps ``out_dir/resume/`` gets the model, optimizer, scheduler, RNG
state and step; rerunning the same command continues from there and follows the same data order, so an
interrupted run ends where an uninterrupted one would.
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
from tqdm.auto import tqdm

from gqa_eval import metrics
from gqa_eval.generation import generate
from gqa_eval.io import readable_weights, replace_dir
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.tasks import encode, load_examples
from gqa_eval.timing import Timer
from gqa_eval.training.architecture import build_model
from gqa_eval.training.data import (
    BatchStream,
    collate,
    encode_pairs,
    model_input_text,
    quiet_progress,
    train_tokenizer,
    training_examples,
)
from gqa_eval.training.kernels import lean_attention
from gqa_eval.training.pooled import pooled_kv, pooling_for_step
from gqa_eval.variant import family_of
from gqa_eval.variant.checkpoints import checkpoint_source, load_checkpoint, model_class, resolve_device
from gqa_eval.variant.conversion import calibrate_and_convert

STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "train_config.yaml"
# Settings that only steer a run (where it writes, how often it reports); a resumed run may change them,
# everything else must equal the run that wrote resume/.
RUN_CONTROL_KEYS = (
    "out_dir", "output_root", "stop_at", "log_every", "eval_every", "eval_examples", "eval_max_new_tokens",
    "save_every", "keep_resume_state", "overwrite", "progress", "threads", "device",
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


def plan_uptraining(cfg: DictConfig) -> None:
    """Fill ``cfg`` for uptraining (``uptrain.*``, with ``init_from``), in place.

    ``uptrain.alpha`` sets ``steps`` to alpha x the base's training steps (``uptrain.base_steps``, or the
    sum over the stage configs the checkpoint carries). ``uptrain.recipe=continue`` continues the base's
    last stage (Ainslie et al. 2023, sec. 2.1: uptraining runs the base's pre-training recipe on): its
    data mixture, ``batch_tokens``, optimizer settings and bf16, at the learning rate that stage ended
    with (constant: the continuation of a finished decay), after a linear warm-up that takes the same
    fraction of this run as the stage's warm-up took of the stage; K/V pooling (``pool_kv``, the bundled
    bases' stand-in for uptraining) is off. ``uptrain.continues`` records what was taken from where.

    Raises:
        ValueError: uptraining settings without ``init_from``, an unknown recipe, or a base that carries
            no training config where one is needed (name what to set instead).
    """
    up = cfg.get("uptrain") or {}
    alpha, recipe = up.get("alpha"), up.get("recipe", "given")
    if recipe not in ("continue", "given"):
        raise ValueError(
            f"uptrain.recipe={recipe!r}: choose continue (the base's last stage, continued) or given"
        )
    if cfg.init_from is None:
        if alpha is not None:
            raise ValueError(
                "uptrain.alpha needs init_from=CHECKPOINT: the checkpoint whose training it continues"
            )
        return
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        raise ValueError(f"uptrain.alpha must be a fraction > 0 of the base's training steps, got {alpha!r}")
    source = checkpoint_source(str(cfg.init_from))
    configs = stage_configs(source) if isinstance(source, Path) else []
    stages = [OmegaConf.load(p) for p in configs]
    if recipe == "continue" and not stages:
        raise ValueError(
            f"uptrain.recipe=continue: {cfg.init_from} carries no {CONFIG_FILE} to continue; give the recipe "
            "(steps or uptrain.alpha with uptrain.base_steps, batch_tokens, lr, data.examples) and "
            "uptrain.recipe=given"
        )
    base_steps = up.get("base_steps") or (sum(int(s.steps) for s in stages) if stages else None)
    with open_dict(cfg):
        if alpha is not None:
            if not base_steps:
                raise ValueError(
                    f"uptrain.alpha: {cfg.init_from} carries no {CONFIG_FILE} to count its training steps; "
                    "set uptrain.base_steps=N (the steps it was trained for)"
                )
            cfg.steps = max(1, round(alpha * base_steps))
        if recipe == "given":
            return
        last = stages[-1]
        for key in ("batch_tokens", "betas", "weight_decay", "grad_clip", "bf16"):
            cfg[key] = last[key]
        cfg.data = last.data
        cfg.lr = final_lr(last)
        cfg.schedule = "constant"
        fraction = min(int(last.warmup_steps), int(last.steps)) / int(last.steps)
        cfg.warmup_steps = max(1, round(fraction * int(cfg.steps))) if fraction else 0
        cfg.pool_kv = None
        cfg.uptrain.continues = {
            "train_config": portable(configs[-1]),
            "stage": str(last.get("name")),
            "base_steps": int(base_steps),
            "lr": cfg.lr,
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


def save_resume(directory: Path, model, tokenizer, optimizer, scheduler, state: dict[str, Any]) -> None:
    """Write ``directory`` (model, tokenizer, trainer state) whole (:func:`gqa_eval.io.replace_dir`)."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        readable_weights(tmp)
        tokenizer.save_pretrained(tmp)
        full = {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        torch.save({**full, "torch_rng": torch.get_rng_state()}, tmp / STATE_FILE)

    replace_dir(directory, fill)


def find_resume(out_dir: Path) -> Path | None:
    """The latest complete resume directory in ``out_dir``, if any (``resume.old`` survives a crash
    between the two renames of ``replace_dir``)."""
    for name in ("resume", "resume.old"):
        if (out_dir / name / STATE_FILE).is_file():
            return out_dir / name
    return None


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


def _initial_model(cfg: DictConfig, examples: dict, tasks: dict, resume: Path | None):
    """(model, tokenizer): from resume/, from ``init_from`` (converted if asked), or built from scratch."""
    if resume is not None:
        from transformers import AutoConfig, AutoTokenizer

        model = model_class(AutoConfig.from_pretrained(resume)).from_pretrained(resume, dtype=torch.float32)
        return model, AutoTokenizer.from_pretrained(resume)
    if cfg.init_from is not None:
        model, tokenizer = load_checkpoint(cfg.init_from, dtype="float32", device="cpu")
        if cfg.kv_heads is not None:
            calibrate_and_convert(
                model, tokenizer, int(cfg.kv_heads), cfg.conversion, cfg.seed, cfg.get("calibration")
            )
        return model, tokenizer
    decoder_only = cfg.architecture.family != "t5"
    texts = []
    for name, task in tasks.items():
        for ex in examples[name][: cfg.tokenizer.examples_per_task]:
            texts += [model_input_text(task, ex, decoder_only), ex.references[0]]
    tokenizer = train_tokenizer(texts, cfg.tokenizer.vocab_size, decoder_only)
    torch.manual_seed(cfg.seed)
    return build_model(cfg.architecture, tokenizer), tokenizer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train as ``cfg`` says (see the module docstring) and return a summary of the run.

    Returns:
        ``{"out_dir", "step", "loss", "eval", "elapsed_s"}``: where the model is, the last step done,
        the last logged loss and the last validation scores.
    """
    with quiet_progress():  # datasets' and transformers' loading/saving bars would break the training bar
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any]:
    plan_uptraining(cfg)  # before the digest: a resumed uptraining run must plan the same steps
    out_dir = Path(cfg.out_dir)
    resume = find_resume(out_dir)
    if resume is None and (out_dir / "config.json").is_file() and not cfg.overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a trained checkpoint and no resume state; "
            "choose another out_dir, or pass overwrite=true to train over it"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    state = torch.load(resume / STATE_FILE, weights_only=True) if resume else None
    if state is not None and state["fingerprint"] != settings_digest(cfg):
        raise ValueError(
            f"{resume} was written by a run with other settings (other than {', '.join(RUN_CONTROL_KEYS)}); "
            "rerun with the same settings to resume, or choose another out_dir"
        )
    tasks = {
        name: OmegaConf.to_container(task, resolve=True)
        for name, task in cfg.tasks.items()
        if cfg.data.examples.get(name, 0) > 0
    }
    with tempfile.TemporaryDirectory() as tmp:
        examples = {
            name: training_examples(
                task,
                cfg.data.examples[name],
                cfg.data.seed,
                Path(tmp),
                cfg.data.counterfactual_qa,
                cfg.data.easy_qa_fraction,
            )
            for name, task in tasks.items()
        }
    model, tokenizer = _initial_model(cfg, examples, tasks, resume)
    model.to(device).train()
    family = family_of(model)
    decoder_only = not family.encoder_decoder
    pairs = [
        p
        for name, task in tasks.items()
        for p in encode_pairs(task, examples[name], tokenizer, decoder_only, cfg.data.max_input_tokens)
    ]
    lengths = [len(p.source) + len(p.target) for p in pairs]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    step, elapsed = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed = state["step"], state["elapsed_s"]
    else:
        torch.manual_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved_cfg = OmegaConf.to_container(cfg, resolve=True)
    saved_cfg["out_dir"] = portable(out_dir)
    for key in ("output_root", "init_from"):  # project paths relative; hub ids and outside paths as given
        if saved_cfg.get(key) and Path(saved_cfg[key]).exists():
            saved_cfg[key] = portable(saved_cfg[key])
    (out_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(saved_cfg), encoding="utf-8")
    log = JsonlLog(out_dir / LOG_FILE, step if state is not None else None)
    if state is None:
        log.write({
            "step": 0, "params": sum(p.numel() for p in model.parameters()), "n_heads": family.n_heads,
            "kv_heads": family.kv_heads, "examples": {n: len(e) for n, e in examples.items()},
            "torch_threads": torch.get_num_threads(),
        })  # fmt: skip

    def run_eval(at: int) -> dict[str, float]:
        scores = validate(model, tokenizer, tasks, cfg.eval_examples, cfg.eval_max_new_tokens)
        average = sum(scores.values()) / len(scores)
        log.write({"step": at, "eval": scores, "average": average})
        bar.write(f"step {at}: validation average {average:.1f} " + json.dumps(scores))
        return scores

    stop = min(cfg.steps, cfg.stop_at) if cfg.stop_at is not None else cfg.steps
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.name}", disable=not cfg.progress)
    scores: dict[str, float] = {}
    if state is None and cfg.init_from is not None and cfg.eval_every:
        scores = run_eval(0)  # the starting point of an uptraining run (e.g. the converted model)
    kv_heads = family.kv_heads
    stream = BatchStream(lengths, cfg.batch_tokens, cfg.seed, start=step)
    loss_sum, tokens, last_loss = 0.0, 0, None
    window_start, started = time.perf_counter(), time.perf_counter() - elapsed
    while step < stop:
        epoch, indices = stream.next()
        batch = collate([pairs[i] for i in indices], tokenizer.pad_token_id, decoder_only)
        batch = {k: v.to(device) for k, v in batch.items()}
        groups = pooling_for_step(cfg.pool_kv, cfg.seed, step, int(cfg.pool_kv_from * cfg.steps))
        if groups is not None and (groups >= kv_heads or kv_heads % groups):
            groups = None  # e.g. uptraining a GQA-2 conversion: only G = 1 still pools
        with lean_attention(model), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            if groups is None:
                loss = model(**batch).loss
            else:
                loss = torch.func.functional_call(model, pooled_kv(model, groups), args=(), kwargs=batch).loss
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        n_target = int((batch["labels"] != -100).sum())
        loss_sum, tokens = loss_sum + loss.item() * n_target, tokens + n_target
        bar.update(1)
        if step % cfg.log_every == 0 or step == stop:
            now = time.perf_counter()
            last_loss = loss_sum / tokens
            log.write({
                "step": step, "loss": round(last_loss, 5), "lr": scheduler.get_last_lr()[0],
                "epoch": epoch, "elapsed_s": round(now - started, 1),
                "steps_per_s": round(cfg.log_every / max(now - window_start, 1e-9), 4),
            })  # fmt: skip
            bar.set_postfix(loss=f"{last_loss:.3f}")
            loss_sum, tokens, window_start = 0.0, 0, now
        if cfg.eval_examples and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
            scores = run_eval(step)  # eval_examples=0: no validation (an evaluation follows, say)
        if step == stop or (cfg.save_every and step % cfg.save_every == 0):
            resume_state = {
                "step": step,
                "elapsed_s": time.perf_counter() - started,
                "fingerprint": settings_digest(cfg),
            }
            save_resume(out_dir / "resume", model, tokenizer, optimizer, scheduler, resume_state)
    bar.close()
    if step >= cfg.steps:  # only now: until here out_dir keeps any checkpoint it held, whole
        if cfg.init_from is not None:  # what the evaluation records of an uptrained checkpoint
            model.config.gqa_uptraining = uptraining_record(cfg)
        model.save_pretrained(out_dir)
        readable_weights(out_dir)
        tokenizer.save_pretrained(out_dir)
        if not cfg.keep_resume_state:
            shutil.rmtree(out_dir / "resume", ignore_errors=True)
    return {"out_dir": str(out_dir), "step": step, "loss": last_loss, "eval": scores,
            "elapsed_s": time.perf_counter() - started}  # fmt: skip


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="training")
def main(cfg: DictConfig) -> None:
    train(cfg)
