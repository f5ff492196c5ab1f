"""Variant stage: calibration inputs and the K/V activation statistics of the calibrated conversions.

Calibration examples are drawn from the training mixture's ``train`` split, made by the project's own
generator exactly as the trainer makes them (:func:`gqa_eval.training.data.training_examples`, the
generator seed 1 of ``conf/training.yaml`` offset by ``calibration.seed``), and tokenized as training
tokenizes them (:func:`gqa_eval.training.data.encode_pairs`): T5 gets the task's input template as
encoder input and the reference as decoder labels; a decoder-only model gets the prompt followed by the
reference. Tasks take turns (cnn_dm, arxiv, ...), each sequence is cut to ``max_tokens``. One forward
pass per example (no padding) with hooks on each converted attention's K and V projections accumulates
the Gram matrix of their outputs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from gqa_eval.paths import PROJECT_ROOT

DEFAULTS = {"examples": 32, "seed": 0, "max_tokens": 64}
TRAINING_DATA_SEED = 1  # conf/training.yaml data.seed


def calibration_settings(calibration: Mapping[str, Any] | None) -> dict[str, Any]:
    """The calibration settings with defaults filled in (``examples``, ``seed``, ``max_tokens``)."""
    values = {**DEFAULTS, **dict(calibration or {})}
    for key in ("examples", "max_tokens"):
        if isinstance(values[key], bool) or not isinstance(values[key], int) or values[key] < 1:
            raise ValueError(f"calibration.{key} must be a whole number >= 1, got {values[key]!r}")
    return values


def _task_configs() -> dict[str, dict]:
    from gqa_eval.training.data import generator

    out = {}
    for name in generator().TASKS:
        path = PROJECT_ROOT / "conf" / "task" / f"{name}.yaml"
        if path.is_file():
            out[name] = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return out


def calibration_batches(tokenizer, encoder_decoder: bool, calibration: Mapping[str, Any] | None = None):
    """The calibration inputs: a list of unpadded single-example model inputs.

    Returns:
        ``(batches, settings)``: each batch a dict for ``model(**batch)``; settings as recorded.
    """
    from gqa_eval.training.data import encode_pairs, quiet_progress, training_examples

    settings = calibration_settings(calibration)
    n, cap = settings["examples"], settings["max_tokens"]
    tasks = _task_configs()
    per_task = -(-n // len(tasks))
    pairs_by_task = {}
    with tempfile.TemporaryDirectory() as tmp, quiet_progress():
        for name, task in tasks.items():
            task = {**task, "name": name}
            examples = training_examples(task, per_task, TRAINING_DATA_SEED + settings["seed"], Path(tmp))
            pairs_by_task[name] = encode_pairs(task, examples, tokenizer, not encoder_decoder, cap)
    pairs = [
        ps[i] for i in range(per_task) for ps in pairs_by_task.values() if i < len(ps)
    ]  # tasks take turns
    batches = []
    for p in pairs[:n]:
        if encoder_decoder:
            batches.append({
                "input_ids": torch.tensor([p.source[:cap]]),
                "labels": torch.tensor([p.target[:cap]]),
            })  # fmt: skip
        else:
            batches.append({"input_ids": torch.tensor([(p.source + p.target)[:cap]])})
    settings["tasks"] = list(tasks)
    return batches, settings


@torch.no_grad()
def kv_statistics(
    family, batches: Sequence[Mapping[str, torch.Tensor]]
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{i: (K Gram, V Gram)}`` of the i-th converted attention, float64 on the CPU, over ``batches``."""
    model = family.model
    grams: dict[tuple[int, int], torch.Tensor] = {}
    handles = []

    def hook(key):
        def record(_module, _inputs, output):
            a = output.detach().reshape(-1, output.shape[-1]).double().cpu()
            g = a.T @ a
            grams[key] = grams[key] + g if key in grams else g

        return record

    for i, attn in enumerate(family.attentions()):
        for j, name in enumerate((family.k_name, family.v_name)):
            handles.append(getattr(attn, name).register_forward_hook(hook((i, j))))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not grams:
        raise ValueError("calibration ran no K/V projection: no calibration examples?")
    return {i: (grams[(i, 0)], grams[(i, 1)]) for i in {i for i, _ in grams}}
