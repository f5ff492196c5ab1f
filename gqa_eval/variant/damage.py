"""Variant stage: how much a conversion damages the model, measured before any training.

A conversion collapses quality, and uptraining is what costs; ranking the conversions (method x G) before
paying for it needs a cheap predictor of the damage. QCQA (Joshi et al. 2024, arXiv 2406.10247) ranks
groupings by the error weight sharing makes in the K/V projections; an error in K or V alone, though,
is not what attention sees: the calibrated methods rotate a group's heads (and the queries with them) so
that q·k is kept while k itself moves. So the error measured here is that of each converted attention
layer's *output*, on the inputs the unconverted model gives that layer:

    error_l = sum ||attn'_l(x_l) - attn_l(x_l)||^2 / sum ||attn_l(x_l)||^2

over the tokens of the calibration examples (the training mixture's, as the calibrated conversions use;
:func:`gqa_eval.variant.calibration.calibration_batches`), ``attn'_l`` the layer after conversion. Each
layer is measured on the unconverted model's own inputs, so the errors do not compound and each says
what that layer's conversion alone does. ``result.json`` records the mean over layers (``value``), the
largest and each layer's; ``summary.csv`` the mean as ``conversion_error``. Cost: one forward pass per
calibration example and one attention call per layer and example, inputs held on the device (a 7B model,
8 examples of 64 tokens: ~130 MB).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gqa_eval.variant.family import family_of

DEFAULTS = {"examples": 8, "max_tokens": 64, "seed": 0}


def _first(output: Any) -> torch.Tensor:
    """An attention module's output tensor (modules return ``(output, weights, ...)``)."""
    return output[0] if isinstance(output, tuple) else output


class _Recorded:
    """The (args, kwargs, output) of every call of each of ``modules`` while ``recording`` is open."""

    def __init__(self, modules: Sequence[nn.Module]):
        self.modules = list(modules)
        self.calls: list[list[tuple[tuple, dict, torch.Tensor]]] = [[] for _ in self.modules]

    @contextlib.contextmanager
    def recording(self):
        def hook(i: int) -> Callable:
            def record(_module, args, kwargs, output):
                self.calls[i].append((args, dict(kwargs), _first(output).detach()))

            return record

        handles = [m.register_forward_hook(hook(i), with_kwargs=True) for i, m in enumerate(self.modules)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


@torch.no_grad()
def _run(model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]]) -> None:
    device = next(model.parameters()).device
    for batch in batches:
        model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False)


@torch.no_grad()
def conversion_error(
    model: nn.Module,
    convert: Callable[[], Any],
    batches: Sequence[Mapping[str, torch.Tensor]],
) -> dict[str, Any]:
    """Convert ``model`` by calling ``convert()`` and measure what it did to each converted attention.

    Args:
        model: the model before conversion (a family :func:`family_of` knows).
        convert: converts ``model`` in place (e.g. ``lambda: convert_to_gqa(model, 4)``).
        batches: calibration inputs, one ``model(**batch)`` each.

    Returns:
        ``{"value": mean over layers, "max": largest, "layers": [per layer], "examples": len(batches)}``,
        relative squared errors of each layer's output (module docstring); value 0.0 for a conversion that
        changes nothing.
    """
    if not batches:
        raise ValueError("conversion_error needs calibration inputs: no calibration examples?")
    attentions = list(family_of(model).attentions())  # the converted ones: the same modules after
    recorded = _Recorded(attentions)
    was_training = model.training
    model.eval()
    try:
        with recorded.recording():
            _run(model, batches)
        convert()
        errors = []
        for module, calls in zip(attentions, recorded.calls, strict=True):
            diff = total = 0.0
            for args, kwargs, before in calls:
                after = _first(module(*args, **kwargs))
                diff += float((after.double() - before.double()).pow(2).sum())
                total += float(before.double().pow(2).sum())
            errors.append(diff / total if total > 0 else 0.0)
    finally:
        model.train(was_training)
    return {
        "value": sum(errors) / len(errors),
        "max": max(errors),
        "layers": [round(e, 6) for e in errors],
        "examples": len(batches),
    }
