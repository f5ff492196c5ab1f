"""Variant stage, decoder-only families, taken by rule rather than by name.

The rule (:func:`decoder_family`): a model that is not encoder-decoder, whose config has
``num_key_value_heads`` and whose decoder layers (``model.model.layers[i].self_attn``) carry

- separate ``q_proj``/``k_proj``/``v_proj`` Linears: :class:`DecoderFamily` (Llama, Mistral, Qwen2/3,
  Gemma 1/2/3, Granite, StableLM, Cohere, OLMo 1/2, Phi, ...);
- one fused ``qkv_proj`` with rows ``[Q | K | V]``: :class:`FusedDecoderFamily` (Phi-3), whose rows are
  split into temporary q/k/v Linears while conversion edits them and re-fused afterwards.

Anything else is refused in one line naming what is missing. These attentions reshape K/V with
``view(..., -1, head_dim)`` (or by their own ``num_key_value_heads``, which
:meth:`~DecoderFamily.set_kv_heads` updates) and repeat them per group by ``num_key_value_groups``
(``repeat_kv`` / SDPA ``enable_gqa``), so a converted model is an ordinary transformers model with
``num_key_value_heads = G`` that reloads by its own class. RoPE (partial or not), sliding windows, logit
soft-capping, ``clip_qkv`` and K/V biases act on every head alike and need nothing.

A K normalisation (the attention's ``k_norm`` / ``k_layernorm``) comes in three shapes:

- one head's width, shared by every head (Qwen3, Gemma 3, Phi): left as it is;
- weights per K head (OLMo 2's RMSNorm over the whole K width, Cohere's ``(heads, head_dim)`` LayerNorm,
  StableLM's list of per-head LayerNorms): pooled with the K heads (group mean; ``first`` keeps the
  first). The result is exactly an MHA model whose K heads and K-norm weights are each group's pooled
  ones repeated (for OLMo 2: the RMS over r repeated copies of the pooled width is the RMS over that
  width), the statistic now being taken over the pooled heads;
- anything else, or any other parameterised module in the attention: refused.

``aligned`` is refused where its RoPE-commuting rotation is not exact (a q/k norm, partial rotary, a
RoPE pairing other than ``(i, i + D/2)``), ``clustered`` where a q/k norm holds per-head weights the
permutation would have to reorder.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Iterator

import torch
from torch import nn

from gqa_eval.variant.attention import DECODER_ATTN_IMPLEMENTATION
from gqa_eval.variant.family import Family, register_rule
from gqa_eval.variant.pooling import pool_heads

TESTED = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "granite", "stablelm",
          "cohere", "phi3", "olmo", "olmo2", "phi")  # fmt: skip
Q_NORMS = ("q_norm", "q_layernorm")
K_NORMS = ("k_norm", "k_layernorm")
O_NAMES = ("o_proj", "dense")
QKV = ("q_proj", "k_proj", "v_proj")
KNOWN = (*QKV, "qkv_proj", *O_NAMES, *Q_NORMS, *K_NORMS)  # the attention children conversion understands


def decoder_attentions(model: nn.Module) -> list[nn.Module] | None:
    """``model.model.layers[i].self_attn`` for every layer, or None if the model is not laid out so."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        return None
    attentions = [getattr(layer, "self_attn", None) for layer in layers]
    return attentions if all(isinstance(a, nn.Module) for a in attentions) else None


def route_grouped_attention(model: nn.Module) -> nn.Module:
    """Route a decoder-only model that runs transformers' SDPA attention through ``gqa_decoder``
    (:func:`gqa_eval.variant.attention.gqa_decoder_attention_forward`), so that its compiled decode step
    attends H query heads to G key/value heads without repeating K/V; returns ``model``.

    Only ``sdpa`` is replaced (an eager or flash-attention model is left as chosen), and H == G runs the
    very same SDPA call. The name lives in the in-memory config only: transformers does not serialise
    ``_attn_implementation``, so a saved checkpoint reloads with plain ``AutoModelForCausalLM`` (as SDPA).
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or decoder_attentions(model) is None:
        return model
    if getattr(config, "_attn_implementation", None) == "sdpa":
        config._attn_implementation = DECODER_ATTN_IMPLEMENTATION
    return model


def _linear(module: nn.Module, name: str) -> bool:
    return isinstance(getattr(module, name, None), nn.Linear)


@register_rule(tested=TESTED)
def decoder_family(model: nn.Module) -> Family | str:
    """The rule: the decoder-only family of ``model``, or one line saying what it lacks."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    if getattr(config, "is_encoder_decoder", False):
        return f"model_type {model_type!r} is an encoder-decoder model of no family gqa-eval knows"
    if not getattr(config, "num_key_value_heads", None):
        return f"model_type {model_type!r} has no num_key_value_heads in its config"
    attentions = decoder_attentions(model)
    if attentions is None:
        return f"{type(model).__name__} has no decoder layers with a self_attn at model.model.layers"
    attn = attentions[0]
    if all(_linear(attn, name) for name in QKV):
        family: DecoderFamily = DecoderFamily(model)
    elif _linear(attn, "qkv_proj"):
        family = FusedDecoderFamily(model)
    else:
        return f"its attention ({type(attn).__name__}) has neither q_proj/k_proj/v_proj nor qkv_proj"
    return family.geometry_refusal() or family


def norm_shape(norm: nn.Module, heads: int, dim: int) -> str | None:
    """How a q/k norm over ``heads`` heads of width ``dim`` holds its weights: ``shared`` (one head's
    width, or none), ``per_head`` (its own parameters, ``heads * dim`` values each), ``listed`` (a
    ModuleList of one norm per head), or None (something else)."""
    params = list(norm.parameters())
    lists = [m for m in norm.children() if isinstance(m, nn.ModuleList)]
    if (
        heads > 1
        and len(lists) == 1
        and len(lists[0]) == heads
        and sum(1 for _ in lists[0].parameters()) == len(params)
        and all(p.numel() == dim for p in params)
    ):
        return "listed"
    if all(p.numel() == dim for p in params):
        return "shared"
    own = list(norm.parameters(recurse=False))
    if len(own) == len(params) and all(p.numel() == heads * dim for p in own):
        return "per_head"
    return None


def _mean_or_first(stacked: torch.Tensor, method: str) -> torch.Tensor:
    """Pool ``(G, r, ...)`` over its group axis: the first member for ``first``, else the mean."""
    pooled = stacked[:, 0] if method == "first" else stacked.float().mean(dim=1)
    return pooled.to(stacked.dtype).contiguous()


@torch.no_grad()
def pool_norm(norm: nn.Module, heads: int, kv_heads: int, dim: int, method: str) -> None:
    """Pool a K norm's per-head weights into ``kv_heads`` contiguous groups (nothing for a shared one)."""
    shape = norm_shape(norm, heads, dim)
    if shape == "per_head":  # OLMo 2: (heads * dim,); Cohere: (heads, dim)
        for p in norm.parameters(recurse=False):
            flat = p.data.reshape(heads * dim)
            pooled = pool_heads(flat, kv_heads, dim, "first" if method == "first" else "mean")
            p.data = pooled.reshape(p.shape[0] // heads * kv_heads, *p.shape[1:])
    elif shape == "listed":  # StableLM: ModuleList of one LayerNorm per head
        name, norms = next((n, m) for n, m in norm.named_children() if isinstance(m, nn.ModuleList))
        size = heads // kv_heads
        pooled = nn.ModuleList()
        for g in range(kv_heads):
            members = list(norms[g * size : (g + 1) * size])
            head = copy.deepcopy(members[0])
            for pname, p in head.named_parameters():
                stacked = torch.stack([m.get_parameter(pname).data for m in members])[None]  # (1, r, ...)
                p.data = _mean_or_first(stacked, method)[0]
            pooled.append(head)
        setattr(norm, name, pooled)
        if hasattr(norm, "num_heads"):
            norm.num_heads = kv_heads


def rope_pairing(attn: nn.Module, dim: int) -> str | None:
    """None if the attention's modelling module rotates pairs ``(i, i + D/2)`` (``rotate_half``), else how
    it pairs them."""
    rotate_half = getattr(sys.modules.get(type(attn).__module__), "rotate_half", None)
    if rotate_half is None:
        return "in a way gqa-eval cannot check (its modelling module has no rotate_half)"
    x = torch.arange(1.0, dim + 1).reshape(1, dim)
    got = rotate_half(x)
    half = dim // 2
    if torch.equal(got, torch.cat([-x[..., half:], x[..., :half]], dim=-1)):
        return None
    if torch.equal(got, torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).flatten(-2)):
        return "(2i, 2i + 1) (interleaved)"
    return "in an order other than (i, i + D/2)"


class DecoderFamily(Family):
    """A decoder-only causal LM with separate q/k/v projections: one cache that grows with the prompt
    and the output alike; every K/V projection runs at each decode step."""

    rope = True

    def __init__(self, model: nn.Module):
        super().__init__(model)
        attn = next(self.attentions())
        self.o_name = next((n for n in O_NAMES if _linear(attn, n)), "o_proj")

    def _norms(self, attn: nn.Module, names: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
        return [(n, getattr(attn, n)) for n in names if isinstance(getattr(attn, n, None), nn.Module)]

    def geometry_refusal(self) -> str | None:
        """Why the projections' widths do not match the config's heads (None: they do)."""
        attn, dim = next(self.attentions()), self.head_dim
        widths = {"q_proj": self.n_heads * dim, "k_proj": self.kv_heads * dim, "v_proj": self.kv_heads * dim}
        for name, width in widths.items():
            got = getattr(attn, name).out_features
            if got != width:
                return (
                    f"its {name} has {got} outputs, not {width} ({width // dim} heads of width {dim} by "
                    "num_attention_heads / num_key_value_heads): gqa-eval cannot tell its heads apart"
                )
        return None

    def conversion_refusal(self) -> str | None:
        dim, cannot = self.head_dim, f"cannot pool the K/V heads of {self.name}"
        for attn in self.attentions():
            children = attn.named_children()
            unknown = [n for n, m in children if n not in KNOWN and next(m.parameters(), None) is not None]
            unknown += [n for n, _ in attn.named_parameters(recurse=False)]
            if unknown:
                return (
                    f"{cannot}: its attention ({type(attn).__name__}) also holds {', '.join(unknown)}, which "
                    "gqa-eval does not know how to group"
                )
            for name, norm in self._norms(attn, K_NORMS):
                if norm_shape(norm, self.kv_heads, dim) is None:
                    shapes = ", ".join(str(tuple(p.shape)) for p in norm.parameters())
                    return (
                        f"{cannot}: its {name} ({type(norm).__name__}, parameters {shapes}) holds neither "
                        f"one head's width ({dim}) shared by every head nor weights per K head "
                        f"({self.kv_heads} x {dim})"
                    )
        return None

    def reshape_refusal(self, method: str) -> str | None:
        attn, dim = next(self.attentions()), self.head_dim
        if not _linear(attn, self.o_name):
            return (
                f"conversion={method} needs the attention's output projection ({' or '.join(O_NAMES)}); "
                f"{type(attn).__name__} has neither"
            )
        if method.startswith("clustered"):
            norms = [(n, m, self.n_heads) for n, m in self._norms(attn, Q_NORMS)]
            norms += [(n, m, self.kv_heads) for n, m in self._norms(attn, K_NORMS)]
            for name, norm, heads in norms:
                if norm_shape(norm, heads, dim) != "shared":
                    return (
                        f"conversion={method} cannot permute {self.name} heads exactly: its {name} holds "
                        "weights per head, which the permutation does not reorder; use mean"
                    )
        return super().reshape_refusal(method)

    def rotary_dims(self) -> int | None:
        """Dimensions of each head RoPE rotates (2 x the inverse frequencies), None without RoPE."""
        widths = {2 * b.numel() for n, b in self.model.named_buffers() if n.endswith("inv_freq")}
        return min(widths) if widths else None

    def alignment_refusal(self) -> str | None:
        attn, dim = next(self.attentions()), self.head_dim
        cannot = f"conversion=aligned cannot rotate {self.name} heads exactly"
        norms = [n for n, _ in self._norms(attn, Q_NORMS + K_NORMS)]
        if norms:
            return (
                f"{cannot}: its {'/'.join(norms)} scales each dimension, which no rotation "
                "commutes with; use mean or clustered"
            )
        rotary = self.rotary_dims()
        if rotary is None:
            return None
        if rotary != dim:
            return (
                f"{cannot}: RoPE rotates only {rotary} of each head's {dim} dimensions (partial rotary), and "
                "the alignment's pair rotations assume it rotates all of them; use mean or clustered"
            )
        pairing = rope_pairing(attn, dim)
        if pairing:
            return (
                f"{cannot}: its RoPE pairs dimensions {pairing}, not (i, i + D/2) as the alignment's "
                "rotations assume; use mean or clustered"
            )
        return None

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def kv_heads(self) -> int:
        return self.config.num_key_value_heads

    @property
    def head_dim(self) -> int:
        dim = getattr(next(self.attentions()), "head_dim", None)
        if isinstance(dim, int):
            return dim
        return getattr(self.config, "head_dim", None) or self.config.hidden_size // self.n_heads

    @property
    def cache_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def init_std(self) -> float:
        return getattr(self.config, "initializer_range", 0.02)

    def attentions(self) -> Iterator[nn.Module]:
        yield from decoder_attentions(self.model) or ()

    def pool_kv(self, kv_heads: int, method: str, generator: torch.Generator) -> None:
        current, dim = self.kv_heads, self.head_dim
        for attn in self.attentions():
            for _, norm in self._norms(attn, K_NORMS):
                pool_norm(norm, current, kv_heads, dim, method)
        super().pool_kv(kv_heads, method, generator)

    def set_kv_heads(self, kv_heads: int) -> None:
        for attn in self.attentions():
            attn.num_key_value_groups = self.n_heads // kv_heads
            if hasattr(attn, "num_key_value_heads"):  # StableLM and Phi-3 reshape / slice by it
                attn.num_key_value_heads = kv_heads
        self.config.num_key_value_heads = kv_heads
        route_grouped_attention(self.model)

    def decode_modules(self) -> list[nn.Module]:
        inner = self.model.model  # the layers, final norm (and rotary tables); the embedding is a lookup
        return [m for n, m in inner.named_children() if n != "embed_tokens"] + [self.model.lm_head]


class FusedQKV(nn.Module):
    """Stands in for a fused ``qkv_proj`` while its rows live in the attention's q/k/v Linears."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.__dict__["attn"] = attn  # a reference, not a submodule

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        a = self.attn
        return torch.cat([a.q_proj(hidden), a.k_proj(hidden), a.v_proj(hidden)], dim=-1)


def _linear_like(weight: torch.Tensor, bias: torch.Tensor | None, requires_grad: bool) -> nn.Linear:
    out = nn.utils.skip_init(
        nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
        dtype=weight.dtype,
    )  # fmt: skip
    out.weight.data = weight
    if bias is not None:
        out.bias.data = bias
    out.requires_grad_(requires_grad)
    return out


@torch.no_grad()
def split_qkv(attn: nn.Module, q_rows: int, kv_rows: int) -> None:
    """Give ``attn`` q/k/v Linears holding the rows of its fused ``qkv_proj`` (``[Q | K | V]``), which
    then computes from them."""
    fused = attn.qkv_proj
    sizes = (q_rows, kv_rows, fused.out_features - q_rows - kv_rows)
    weights = fused.weight.data.split(sizes)
    biases = fused.bias.data.split(sizes) if fused.bias is not None else (None,) * 3
    grad = fused.weight.requires_grad
    for name, w, b in zip(QKV, weights, biases, strict=True):
        setattr(attn, name, _linear_like(w.clone(), None if b is None else b.clone(), grad))
    attn.qkv_proj = FusedQKV(attn)


@torch.no_grad()
def fuse_qkv(attn: nn.Module) -> None:
    """Undo :func:`split_qkv`: one ``qkv_proj`` from the (possibly narrowed) q/k/v Linears."""
    parts = [getattr(attn, name) for name in QKV]
    weight = torch.cat([p.weight.data for p in parts])
    bias = torch.cat([p.bias.data for p in parts]) if parts[0].bias is not None else None
    fused = _linear_like(weight, bias, parts[0].weight.requires_grad)
    for name in QKV:
        delattr(attn, name)
    attn.qkv_proj = fused


class FusedDecoderFamily(DecoderFamily):
    """A decoder-only causal LM whose attention has one ``qkv_proj`` with rows ``[Q | K | V]`` (Phi-3),
    sliced by the module's ``num_key_value_heads``. Conversion edits it through :meth:`editing`."""

    def geometry_refusal(self) -> str | None:
        attn, dim = next(self.attentions()), self.head_dim
        if hasattr(attn, "qkv_proj") and isinstance(attn.qkv_proj, nn.Linear):
            width = (self.n_heads + 2 * self.kv_heads) * dim
            if attn.qkv_proj.out_features != width:
                return (
                    f"its qkv_proj has {attn.qkv_proj.out_features} outputs, not {width} (Q, K and V rows of "
                    f"{self.n_heads} + 2 x {self.kv_heads} heads of width {dim}): gqa-eval cannot split it"
                )
        return None

    @contextlib.contextmanager
    def editing(self):
        attentions = list(self.attentions())
        dim = self.head_dim
        for attn in attentions:
            split_qkv(attn, self.n_heads * dim, self.kv_heads * dim)
        try:
            yield
        finally:
            for attn in attentions:
                fuse_qkv(attn)

    def kv_projections(self) -> list[nn.Linear]:
        if not isinstance(getattr(next(self.attentions()), "k_proj", None), nn.Linear):
            raise ValueError(
                f"{self.name} fuses its Q, K and V projections into one qkv_proj: its K/V projections exist "
                "as modules only inside Family.editing() (training with pooled K/V is not supported for it)"
            )
        return super().kv_projections()
