"""Variant stage: convert a multi-head checkpoint to grouped-query attention with G key/value heads.

Ainslie et al. 2023 (arXiv 2305.13245, sec. 2.1): "the key and value projection matrices of all heads
in a group are mean-pooled into a single head". GQA-1 is multi-query attention (MQA), GQA-H is MHA.
Groups are contiguous (head h belongs to group h // (H/G)), the grouping of torch's ``enable_gqa`` and
transformers' ``repeat_kv``, so a converted Llama-family checkpoint is an ordinary transformers model
with ``num_key_value_heads = G``. For T5 the paper converts decoder self- and cross-attention only;
the encoder keeps multi-head attention.

Methods (the paper's conversion ablation, Fig. 4): ``mean`` pools each group, ``first`` keeps the first
head of each group, ``random`` initialises the G heads afresh. Conversion happens in place: only the
pooled K/V projections are new tensors, so a real-size model is never held twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from gqa_eval.attention import ATTN_IMPLEMENTATION
from gqa_eval.io import readable_weights

METHODS = ("mean", "first", "random")
# Decoder-only families whose attention modules carry k_proj / v_proj / num_key_value_groups.
DECODER_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED = ("t5",) + DECODER_FAMILIES


def architecture(model: nn.Module) -> str:
    """The family name of ``model`` as gqa-eval knows it (``t5`` or a decoder family)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in SUPPORTED:
        return model_type
    raise ValueError(
        f"unsupported architecture {model_type or type(model).__name__!r}: gqa-eval converts "
        f"{', '.join(SUPPORTED)} checkpoints (T5ForConditionalGeneration, or decoder-only models whose "
        "config has num_key_value_heads)"
    )


def attention_heads(model: nn.Module) -> tuple[int, int]:
    """``(n_heads, kv_heads)`` of the attention that conversion acts on (T5: the decoder)."""
    config = model.config
    if architecture(model) == "t5":
        return config.num_heads, getattr(config, "num_key_value_heads", None) or config.num_heads
    return config.num_attention_heads, config.num_key_value_heads


def head_dim(model: nn.Module) -> int:
    """Width of one attention head."""
    config = model.config
    if architecture(model) == "t5":
        return config.d_kv
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def check_kv_heads(n_heads: int, current_kv_heads: int, kv_heads: int) -> None:
    """Raise ``ValueError`` unless ``kv_heads`` groups can be made from ``current_kv_heads`` heads."""
    if not isinstance(kv_heads, int) or isinstance(kv_heads, bool) or kv_heads < 1:
        raise ValueError(f"kv_heads must be a positive integer, got {kv_heads!r}")
    if kv_heads > current_kv_heads:
        raise ValueError(
            f"kv_heads={kv_heads} is larger than the model's {current_kv_heads} key/value heads "
            f"({n_heads} query heads); choose a divisor of {current_kv_heads}"
        )
    if current_kv_heads % kv_heads:
        divisors = [d for d in range(1, current_kv_heads + 1) if current_kv_heads % d == 0]
        raise ValueError(
            f"kv_heads={kv_heads} does not divide the model's {current_kv_heads} key/value heads "
            f"({n_heads} query heads); choose one of {divisors}"
        )


def pool_heads(
    weight: torch.Tensor,
    kv_heads: int,
    head_dim: int,
    method: str = "mean",
    generator: torch.Generator | None = None,
    init_std: float = 0.02,
) -> torch.Tensor:
    """Pool the heads of a K or V projection into ``kv_heads`` contiguous groups.

    Args:
        weight: ``(n * head_dim, d_in)`` projection weight or ``(n * head_dim,)`` bias, n heads.
        kv_heads: number of groups G; must divide n.
        head_dim: width of one head.
        method: ``mean``, ``first`` or ``random``.
        generator: random source for ``random``.
        init_std: standard deviation for ``random``.

    Returns:
        ``(G * head_dim, d_in)`` (or ``(G * head_dim,)``) in ``weight``'s dtype and device.
    """
    n = weight.shape[0] // head_dim
    grouped = weight.reshape(kv_heads, n // kv_heads, head_dim, *weight.shape[1:])  # (G, n/G, D, ...)
    if method == "mean":
        # Accumulate in float32: bf16 means of many heads lose precision.
        pooled = grouped.float().mean(dim=1).to(weight.dtype)
    elif method == "first":
        pooled = grouped[:, 0].clone()
    elif method == "random":
        shape = (kv_heads, head_dim, *weight.shape[1:])
        pooled = torch.empty(shape, dtype=torch.float32).normal_(0.0, init_std, generator=generator)
        if weight.dim() == 1:
            pooled.zero_()
        pooled = pooled.to(device=weight.device, dtype=weight.dtype)
    else:
        raise ValueError(f"unknown conversion method {method!r}; choose one of {', '.join(METHODS)}")
    return pooled.reshape(kv_heads * head_dim, *weight.shape[1:])


def _narrowed(linear: nn.Linear, kv_heads: int, head_dim: int, method: str, gen, std: float) -> nn.Linear:
    """A new Linear with ``kv_heads`` output heads, pooled from ``linear``."""
    weight = pool_heads(linear.weight.data, kv_heads, head_dim, method, gen, std)
    out = nn.Linear(
        linear.in_features,
        weight.shape[0],
        bias=linear.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    out.weight.data = weight
    if linear.bias is not None:
        out.bias.data = pool_heads(linear.bias.data, kv_heads, head_dim, method, gen, std)
    out.weight.requires_grad_(linear.weight.requires_grad)
    return out


def t5_decoder_attentions(model: T5ForConditionalGeneration) -> Iterator[nn.Module]:
    """The decoder's self- and cross-attention modules (the ones the paper converts)."""
    for block in model.decoder.block:
        for layer in block.layer:
            for name in ("SelfAttention", "EncDecAttention"):
                if hasattr(layer, name):
                    yield getattr(layer, name)


def _decoder_attentions(model: nn.Module) -> Iterator[nn.Module]:
    for layer in model.model.layers:
        yield layer.self_attn


def convert_to_gqa(model: nn.Module, kv_heads: int, method: str = "mean", seed: int = 0) -> nn.Module:
    """Convert ``model`` in place to ``kv_heads`` key/value heads and return it.

    Args:
        model: a ``T5ForConditionalGeneration`` or a Llama/Mistral/Qwen2/Qwen3 causal LM; may already be
            grouped, as long as ``kv_heads`` divides its current key/value heads.
        kv_heads: G, the number of key/value heads after conversion (1 = MQA).
        method: ``mean`` (the paper's), ``first`` or ``random``.
        seed: seed of ``random`` initialisation.

    Returns:
        The same model object, with narrowed K/V projections and its config recording ``kv_heads`` and
        the conversion (``config.gqa_conversion``), so it saves and reloads as a GQA checkpoint.

    Raises:
        ValueError: unsupported architecture, unknown method, or ``kv_heads`` that is not a divisor of
            the current key/value heads.
    """
    arch = architecture(model)
    if method not in METHODS:
        raise ValueError(f"unknown conversion method {method!r}; choose one of {', '.join(METHODS)}")
    n_heads, current = attention_heads(model)
    check_kv_heads(n_heads, current, kv_heads)
    gen = torch.Generator().manual_seed(seed)
    dim = head_dim(model)
    config = model.config
    if arch == "t5":
        std = config.initializer_factor * config.d_model**-0.5
        if kv_heads != current:
            for attn in t5_decoder_attentions(model):
                attn.k = _narrowed(attn.k, kv_heads, dim, method, gen, std)
                attn.v = _narrowed(attn.v, kv_heads, dim, method, gen, std)
        set_t5_kv_heads(model, kv_heads)
    else:
        if kv_heads != current:
            for attn in _decoder_attentions(model):
                attn.k_proj = _narrowed(attn.k_proj, kv_heads, dim, method, gen, config.initializer_range)
                attn.v_proj = _narrowed(attn.v_proj, kv_heads, dim, method, gen, config.initializer_range)
                attn.num_key_value_groups = n_heads // kv_heads
        config.num_key_value_heads = kv_heads
    history = list(getattr(config, "gqa_conversion", None) or [])
    history.append({"from_kv_heads": current, "kv_heads": kv_heads, "method": method, "seed": seed})
    config.gqa_conversion = history
    return model


def set_t5_kv_heads(model: T5ForConditionalGeneration, kv_heads: int) -> None:
    """Record ``kv_heads`` on a T5 config and route its decoder through the grouped attention."""
    model.config.num_key_value_heads = kv_heads
    model.decoder.config.num_key_value_heads = kv_heads
    model.decoder.config._attn_implementation = ATTN_IMPLEMENTATION


def save_converted(
    model: nn.Module, tokenizer, out: str | Path, overwrite: bool = False, **provenance
) -> Path:
    """Save a converted model as a checkpoint ``load_checkpoint`` reloads: safetensors weights, a config
    recording ``num_key_value_heads`` and ``gqa_conversion``, the tokenizer, and ``gqa_conversion.json``
    (where it came from and how it was made).

    Raises:
        FileExistsError: ``out`` holds files and ``overwrite`` is false (nothing is touched then).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another out= or set overwrite=true")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    readable_weights(out)
    tokenizer.save_pretrained(out)
    n_heads, kv_heads = attention_heads(model)
    record = {
        "arch": architecture(model),
        "n_heads": n_heads,
        "kv_heads": kv_heads,
        "history": getattr(model.config, "gqa_conversion", []),
        **provenance,
    }
    (out / "gqa_conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


class T5GQAForConditionalGeneration(T5ForConditionalGeneration):
    """T5 whose decoder has ``config.num_key_value_heads`` key/value heads: the class that reloads a saved
    T5 GQA checkpoint, which plain ``T5ForConditionalGeneration.from_pretrained`` cannot size."""

    def __init__(self, config: T5Config):
        super().__init__(config)
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_heads
        check_kv_heads(config.num_heads, config.num_heads, kv_heads)
        if kv_heads != config.num_heads:
            for attn in t5_decoder_attentions(self):
                attn.k = nn.Linear(config.d_model, kv_heads * config.d_kv, bias=False)
                attn.v = nn.Linear(config.d_model, kv_heads * config.d_kv, bias=False)
        set_t5_kv_heads(self, kv_heads)
        self.post_init()
