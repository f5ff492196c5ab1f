"""Training stage, the engine: Hugging Face's ``Trainer`` with Accelerate underneath.

``gqa-eval-train`` builds its model and data (:mod:`gqa_eval.training.loop`) and hands them to
:class:`GQATrainer`, a ``transformers.Trainer``; distribution (DDP, FSDP, DeepSpeed ZeRO), mixed
precision, gradient accumulation and checkpointing, sharded checkpoints with their optimizer, scheduler
and RNG state (CUDA's included), and resuming them are the Trainer's and Accelerate's own: the same run
goes from one CPU to N GPUs with ``accelerate launch --config_file conf/accelerate/<config>.yaml``
(docs/training.md). What the project adds is what the paper's uptraining needs and the Trainer does not
have:

- the objective's loss (:meth:`GQATrainer.compute_loss`): the model's own cross-entropy for
  ``task_mixture``, ``span_corruption`` and ``causal_lm``; for ``distill``, the KL divergence to the
  unconverted model's logits (plus, optionally, the LM loss); a step run as the model's mean-pooled
  conversion (``pool_kv``, the bundled bases' recipe); T5 under the project's grouped attention with its
  training kernel;
- token-budget batches for the task mixture (:class:`TokenBudgetBatches`, as the bundled checkpoints
  were trained), a continuous stream over epochs so that a resumed run sees what an uninterrupted one
  would;
- the learning-rate schedule of ``conf/training.yaml`` (warm-up, then constant, cosine or linear to
  ``min_lr_ratio``), validation scores every ``eval_every`` steps, ``train_log.jsonl``, and ``stop_at``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from transformers import Trainer, TrainerCallback

from gqa_eval.training.data import collate, plan_epoch
from gqa_eval.training.kernels import lean_attention
from gqa_eval.training.objectives import distill_loss
from gqa_eval.training.pooled import pooled_projections, pooling_for_step


class Pairs(Dataset):
    """The task mixture's encoded (source, target) pairs, by index."""

    def __init__(self, pairs: Sequence):
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        return self.pairs[i]


class TokenBudgetBatches(Sampler[list[int]]):
    """Batches of at most ``batch_tokens`` tokens (padding included) over consecutive epochs of
    :func:`gqa_eval.training.data.plan_epoch`, ``total`` batches in all: the Trainer sees one epoch
    as long as the run, so a resumed run skips exactly the batches it trained on, whatever the number
    of batches of each data epoch."""

    def __init__(self, lengths: Sequence[int], batch_tokens: int, seed: int, total: int):
        self.lengths, self.batch_tokens, self.seed, self.total = list(lengths), batch_tokens, seed, total

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[list[int]]:
        given, epoch = 0, 0
        while given < self.total:
            for batch in plan_epoch(self.lengths, self.batch_tokens, self.seed, epoch):
                if given == self.total:
                    return
                given += 1
                yield batch
            epoch += 1


class Blocks(IterableDataset):
    """Fixed-length token blocks from a corpus, tokenised on the fly, the corpus read again from the
    start when it runs out (``make_blocks()`` starts a new pass)."""

    def __init__(self, make_blocks: Callable[[], Iterable[list[int]]]):
        self.make_blocks = make_blocks

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            empty = True
            for block in self.make_blocks():
                empty = False
                yield block
            if empty:
                raise ValueError("the corpus gave no block of block_tokens tokens; a longer corpus is needed")


class GQATrainer(Trainer):
    """``transformers.Trainer`` with the project's losses, batches and schedule (module docstring).

    Args (besides the Trainer's): ``lr_factor`` (step -> learning-rate multiplier), ``pool_kv`` /
    ``pool_kv_from`` / ``pool_seed`` (the pooled steps), ``teacher`` and ``distill`` settings (the
    ``distill`` objective), and for the task mixture ``token_batches`` (a :class:`TokenBudgetBatches`)
    with its ``pad_id`` and ``decoder_only``.
    """

    def __init__(
        self,
        *args,
        lr_factor: Callable[[int], float],
        pool_kv: dict | None = None,
        pool_kv_from: int = 0,
        pool_seed: int = 0,
        teacher: torch.nn.Module | None = None,
        distill: dict | None = None,
        token_batches: TokenBudgetBatches | None = None,
        pad_id: int = 0,
        decoder_only: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.lr_factor = lr_factor
        self.pool_kv, self.pool_kv_from, self.pool_seed = pool_kv, pool_kv_from, pool_seed
        self.teacher, self.distill = teacher, dict(distill or {})
        self.token_batches, self.pad_id, self.decoder_only = token_batches, pad_id, decoder_only
        from gqa_eval.variant import family_of

        self.kv_heads = family_of(self.model).kv_heads
        # Each micro-batch's loss is its own mean over its target tokens (as the model computes it), so the
        # Trainer divides by the accumulation steps itself instead of passing num_items_in_batch.
        self.model_accepts_loss_kwargs = False

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer if optimizer is None else optimizer, self.lr_factor
            )
        return self.lr_scheduler

    def get_train_dataloader(self) -> DataLoader:
        if self.token_batches is None:
            return super().get_train_dataloader()
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self.token_batches,
            collate_fn=lambda pairs: collate(pairs, self.pad_id, self.decoder_only),
        )
        # every process gets the same number of batches already (total: steps x grad_accum x processes);
        # Accelerate < 1.6 cannot even out a batch sampler without a fixed batch size, and need not
        self.accelerator.even_batches = False
        return self.accelerator.prepare(loader)

    def _groups(self) -> int | None:
        """G of this step's pooled conversion, or None for a plain step."""
        steps = self.args.max_steps
        groups = pooling_for_step(
            self.pool_kv, self.pool_seed, self.state.global_step, int(self.pool_kv_from * steps)
        )
        if groups is not None and (groups >= self.kv_heads or self.kv_heads % groups):
            return None  # e.g. uptraining a GQA-2 conversion: only G = 1 still pools
        return groups

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's step, forward and backward, with T5's attention through the training kernel and, on
        a pooled step, the model as its mean-pooled conversion. Both hold through the backward pass, where
        activation checkpointing recomputes the forward, and the model is still called through its
        DDP/FSDP wrapper, so a pooled step's gradients are all-reduced like any other's."""
        plain = self.accelerator.unwrap_model(model)
        groups = self._groups() if self.pool_kv else None
        with lean_attention(plain), pooled_projections(plain, groups) if groups else contextlib.nullcontext():
            return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs.loss if self.teacher is None else self._distill_loss(outputs, inputs)
        return (loss, outputs) if return_outputs else loss

    def _distill_loss(self, outputs, inputs) -> torch.Tensor:
        with torch.no_grad(), lean_attention(self.teacher):
            teacher_logits = self.teacher(**inputs).logits
        student, labels = outputs.logits, inputs["labels"]
        if self.decoder_only:  # position t predicts token t + 1
            student, teacher_logits, labels = student[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
        return distill_loss(
            student,
            teacher_logits,
            labels,
            self.distill.get("temperature", 1.0),
            self.distill.get("lm_weight", 0.0),
        )


class Progress(TrainerCallback):
    """``train_log.jsonl`` (the Trainer's log records with the step), validation every ``eval_every``
    steps (and at the start of an uptraining), and ``stop_at``: stop (resumably, after a save) there."""

    def __init__(
        self,
        log_path: Path,
        validate: Callable[[int], dict[str, float]] | None,
        eval_every: int,
        steps: int,
        stop_at: int | None,
        validate_first: bool,
    ):
        self.log_path, self.validate, self.eval_every = log_path, validate, eval_every
        self.steps, self.stop_at, self.validate_first = steps, stop_at, validate_first
        self.scores: dict[str, float] = {}
        self.last_loss: float | None = None

    def write(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _eval(self, state, step: int) -> None:
        if self.validate is not None and state.is_world_process_zero:
            self.scores = self.validate(step)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.validate_first and state.global_step == 0:
            self._eval(state, 0)  # the starting point of an uptraining run (e.g. the converted model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
        if state.is_world_process_zero and "loss" in logs:
            record = {"step": state.global_step, "loss": round(float(logs["loss"]), 5)}
            for key in ("learning_rate", "grad_norm", "epoch"):
                if (
                    key in logs
                    and logs[key] is not None
                    and not (isinstance(logs[key], float) and math.isnan(logs[key]))
                ):
                    record["lr" if key == "learning_rate" else key] = logs[key]
            self.write(record)

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if (self.eval_every and step % self.eval_every == 0) or step == self.steps:
            self._eval(state, step)
        if self.stop_at is not None and step >= self.stop_at and step < self.steps:
            control.should_save = True
            control.should_training_stop = True
        if step == self.steps:
            control.should_save = True  # the resume state of the last step (keep_resume_state)
        return control
