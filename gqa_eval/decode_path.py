"""Generation stage: how a decode step runs — eager with a growing cache, or compiled with a static one.

Eager decoding with transformers' ``DynamicCache`` pays, every step, for Python, kernel launches and a
cache that grows by concatenation; on a GPU that overhead is larger than the step's memory traffic, so
it hides what fewer key/value heads save. ``generation.compile`` switches to the path built for decoding
at the hardware limit: a static KV cache (self-attention sized to the batch's prompt plus the output
length, T5's cross-attention to the source, allocated once per batch) and a ``torch.compile``'d decode
step — ``mode="reduce-overhead"`` on CUDA, which replays each step as one CUDA graph; inductor's default
mode elsewhere. This is transformers' own compiled-generation path (``cache_implementation="static"`` +
``compile_config``); the prefill stays eager, as transformers runs it.

A compiled step is specialised to its shapes, so a batch of a new shape compiles (or, on CUDA, records
a graph) on its first call. To keep that out of the timed region, ``generate`` runs an untimed warm-up
for every new (rows, input width) before timing it, and the input width is padded up to a multiple of
``pad_to_multiple_of`` (64 by default when compiled) so a run sees few shapes. The warm-ups' time is
reported as ``timing.warmup_s``: the one-time cost to weigh against the per-step saving.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

SETTINGS = ("auto", True, False)
CACHES = ("auto", "static", "dynamic")
DEFAULT_PAD_MULTIPLE = 64


@dataclass(frozen=True)
class DecodePath:
    """The decode path of a run: ``compiled`` (torch.compile'd step) and ``static`` (static KV cache)."""

    compiled: bool = False
    static: bool = False
    cuda_graphs: bool = False  # compiled with mode="reduce-overhead" on CUDA
    pad_to_multiple_of: int = 1

    @property
    def name(self) -> str:
        if self.compiled:
            return "compiled+cuda_graphs" if self.cuda_graphs else "compiled"
        return "static" if self.static else "eager"

    def ran_on(self, model: torch.nn.Module) -> DecodePath:
        """The path that ran once ``model`` has generated: transformers falls back to the eager step over
        the static cache without a word where it will not compile (a quantizer that cannot, CPU or disk
        offload, a cache it cannot compile, Llama 4), and then leaves no compiled call on the model."""
        if self.compiled and getattr(model, "_compiled_call", None) is None:
            return replace(self, compiled=False, cuda_graphs=False)
        return self

    def padded_width(self, width: int) -> int:
        m = self.pad_to_multiple_of
        return -(-width // m) * m

    def generate_kwargs(self, width: int, max_new_tokens: int, decoder_only: bool) -> dict:
        """Extra ``model.generate`` arguments for a batch of padded input ``width``.

        The static self-attention cache is given one length for a batch whatever the number of new
        tokens (the prompt and output length; for T5 the decoder start token and the output), so the
        warm-up call, which decodes a few tokens, builds the same cache shape as the timed call.
        """
        if not self.static:
            return {}
        kwargs = {
            "cache_implementation": "static",
            "max_cache_len": (width if decoder_only else 1) + max_new_tokens,
        }
        if self.compiled:
            from transformers import CompileConfig

            config = CompileConfig(
                fullgraph=False, dynamic=None, mode="reduce-overhead" if self.cuda_graphs else "default"
            )
            config._compile_all_devices = True  # transformers compiles on CUDA only unless asked
            kwargs["compile_config"] = config
        else:
            kwargs["disable_compile"] = True  # a static cache alone: transformers would compile it on CUDA
        return kwargs


def size_static_cache_per_batch(model: torch.nn.Module) -> None:
    """Let the next static cache be sized for its own batch, not the longest batch the model has seen.

    transformers keeps every static cache at least as long as the longest one built before on the model
    (``_previous_max_cache_length``, so that a compiled step is not recompiled for a shorter prompt). Batches
    come longest first, so every later batch would attend over the first batch's length while the roofline
    charges its own; each new length instead gets its own untimed warm-up (the widths are padded to a
    multiple, so there are few of them).
    """
    vars(model).pop("_previous_max_cache_length", None)


def decode_path(
    compile_setting="auto", cache="auto", device: torch.device | str = "cpu", pad_to_multiple_of="auto"
) -> DecodePath:
    """Resolve ``generation.compile`` / ``generation.cache`` / ``generation.pad_to_multiple_of``.

    ``compile``: ``auto`` compiles on CUDA (where a step is otherwise launch-bound) and not elsewhere;
    ``true`` / ``false`` force it. ``cache``: ``auto`` is static when compiled, else dynamic; ``static``
    without compile runs the static cache eagerly; a compiled step needs the static cache.
    """
    if compile_setting not in SETTINGS:
        raise ValueError(f"generation.compile must be auto, true or false, got {compile_setting!r}")
    if cache not in CACHES:
        raise ValueError(f"generation.cache must be auto, static or dynamic, got {cache!r}")
    device = torch.device(device)
    compiled = device.type == "cuda" if compile_setting == "auto" else bool(compile_setting)
    if compiled and cache == "dynamic":
        raise ValueError(
            "generation.compile=true needs the static KV cache (a growing cache changes shape every step); "
            "set generation.cache=auto or static, or generation.compile=false"
        )
    static = compiled or cache == "static"
    if pad_to_multiple_of == "auto":
        multiple = DEFAULT_PAD_MULTIPLE if compiled else 1
    elif (
        isinstance(pad_to_multiple_of, bool)
        or not isinstance(pad_to_multiple_of, int)
        or pad_to_multiple_of < 1
    ):
        raise ValueError(
            f"generation.pad_to_multiple_of must be auto or a whole number >= 1, got {pad_to_multiple_of!r}"
        )
    else:
        multiple = pad_to_multiple_of
    return DecodePath(
        compiled=compiled,
        static=static,
        cuda_graphs=compiled and device.type == "cuda",
        pad_to_multiple_of=multiple,
    )


def from_config(generation_cfg, device) -> DecodePath:
    """The decode path of a run's ``generation`` config group (absent keys take their defaults)."""
    g = generation_cfg or {}
    return decode_path(
        g.get("compile", "auto"), g.get("cache", "auto"), device, g.get("pad_to_multiple_of", "auto")
    )
