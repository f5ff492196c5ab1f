"""Timing stage, hardware part: the roofline floor of a decode step, and the environment record.

A decode step must at least read the weights it uses and the KV cache up to the current position, and
must do the step's matrix-multiply FLOPs. Its floor is the larger of bytes / memory bandwidth and FLOPs
/ matmul rate, with both rates measured once per machine, device, dtype and thread count, and cached.
measured / floor says how close to the hardware limit a variant runs; which term is larger says whether
the step is memory- or compute-bound. GQA's speed-up comes from shrinking the KV bytes (arXiv
2305.13245, sec. 1), so a KV-heavy step is memory-bound and its floor falls with the number of K/V heads.

What a step reads: the decoder's layers, final norm and LM head, less T5's cross-attention K/V
projections, which run once per batch on the encoder output (prefill) and whose output every later step
reads from the cross-attention cache instead (:func:`prefill_only_params`). Which modules those are, and
the cache geometry, the model's :class:`~gqa_eval.variant.family.Family` says.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from gqa_eval.io import write_atomic
from gqa_eval.variant.family import Family, family_of

RATES_FILE = "hardware_rates.json"


def cache_dir() -> Path:
    """Where measured hardware rates are cached (``GQA_EVAL_CACHE_DIR``, else ``~/.cache/gqa_eval``)."""
    return Path(os.environ.get("GQA_EVAL_CACHE_DIR", Path.home() / ".cache" / "gqa_eval"))


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def seconds_of(fn, device: torch.device) -> float:
    """Wall seconds of one ``fn()``, the device's queued work before and its own work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return min(seconds_of(fn, device) for _ in range(repeats))


def measure_rates(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> dict[str, float]:
    """Memory bandwidth (bytes/s: the best of a read-only reduction and a copy over 256 MiB) and
    matrix-multiply rate (FLOP/s, square matmul in ``dtype``): the best of ``repeats`` tries each, so
    the floor built on them is a lower bound."""
    with torch.inference_mode():
        return {
            "memory_bytes_per_s": _bandwidth(device, repeats),
            "matmul_flops_per_s": _matmul_rate(device, dtype, max(2, repeats // 2)),
        }


def _bandwidth(device: torch.device, repeats: int) -> float:
    nbytes = 256 * 2**20
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    read = nbytes / _best_seconds(lambda: src.sum(), device, repeats)
    copy = 2 * nbytes / _best_seconds(lambda: dst.copy_(src), device, repeats)
    return max(read, copy)


def _matmul_rate(device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return 2 * size**3 / _best_seconds(lambda: a @ b, device, repeats)


def hardware_rates(device: torch.device, dtype: torch.dtype) -> dict[str, float | str]:
    """Cached :func:`measure_rates` for this machine, device, dtype and thread count."""
    threads = torch.get_num_threads()
    key = f"{device_name(device)}|{device.type}|{dtype}|threads={threads}|torch={torch.__version__}"
    path = cache_dir() / RATES_FILE
    try:
        cached = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        cached = {}
    if key not in cached:
        cached[key] = measure_rates(device, dtype)
        write_atomic(path, json.dumps(cached, indent=2))
    return {**cached[key], "key": key}


def _parameters(modules: list[torch.nn.Module]) -> dict[int, torch.nn.Parameter]:
    """The distinct parameters of ``modules`` (a tied LM head and embedding count once)."""
    return {id(p): p for module in modules for p in module.parameters()}


def _decode_parameters(family: Family) -> dict[int, torch.nn.Parameter]:
    used = _parameters(family.decode_modules())
    for key in _parameters(family.prefill_only_modules()):
        used.pop(key, None)
    return used


def _count(params: dict[int, torch.nn.Parameter]) -> tuple[int, int]:
    return sum(p.numel() for p in params.values()), sum(p.numel() * p.element_size() for p in params.values())


def decode_params(model) -> tuple[int, int]:
    """``(parameters, bytes)`` of the weights one decode step reads.

    The decoder layers (self-attention q/k/v/o, T5's cross-attention q/o, the FFN, the layer norms and
    T5's relative position bias table, which every step looks the new position up in), the final norm
    and the LM head. Not counted: the embedding lookup (B rows) and T5's cross-attention K/V
    projections (:func:`prefill_only_params`).
    """
    return _count(_decode_parameters(family_of(model)))


def prefill_only_params(model) -> tuple[int, int]:
    """``(parameters, bytes)`` of the decoder weights only prefill reads: T5's cross-attention K/V
    projections (layers x 2 x d_model x kv_heads x d_kv), run once per batch on the encoder output and
    cached; none for a decoder-only model, whose K/V projections run on every new token."""
    return _count(_parameters(family_of(model).prefill_only_modules()))


def _decode_matmul_weights(family: Family) -> int:
    """Weights of the linear layers a decode step multiplies each row's hidden state by (norms, biases
    and the position bias table are read, not multiplied)."""
    used = _decode_parameters(family)
    weights = {
        id(m.weight): m.weight.numel()
        for module in family.decode_modules()
        for m in module.modules()
        if isinstance(m, torch.nn.Linear) and id(m.weight) in used
    }
    return sum(weights.values())


def decode_step_cost(model, batch: int, self_positions: float, source_positions: int = 0) -> dict[str, float]:
    """Bytes read and FLOPs of one decode step for ``batch`` rows.

    Args:
        model: the variant, or its :class:`Family` (each function here takes either).
        batch: rows decoded together.
        self_positions: positions in the self-attention cache (mean over the steps of a batch).
        source_positions: encoder positions in the cross-attention cache (T5; 0 for decoder-only).
    """
    family = family_of(model)
    _, weight_bytes = decode_params(family)
    dim, layers = family.head_dim, family.cache_layers
    dtype_bytes = next(family.model.parameters()).element_size()
    contexts = family.cache_contexts(self_positions, source_positions)
    kv_bytes = sum(layers * 2 * family.kv_heads * dim * dtype_bytes * batch * ctx for ctx in contexts)
    attention_flops = sum(layers * 2 * 2 * batch * family.n_heads * dim * ctx for ctx in contexts)  # QK^T, AV
    matmul_flops = 2 * _decode_matmul_weights(family) * batch
    return {"bytes": weight_bytes + kv_bytes, "flops": matmul_flops + attention_flops}


def kv_cache_bytes(model, dtype: torch.dtype | None = None) -> dict[str, int]:
    """KV-cache bytes per token from the geometry: layers x 2 (K and V) x kv_heads x head_dim x bytes.

    For T5 the decoder self-attention cache grows per generated token and the cross-attention cache per
    source token; a decoder-only model has one cache that grows with prompt and output alike.
    """
    family = family_of(model)
    return family.kv_cache_bytes(dtype or next(family.model.parameters()).dtype)


def measured_kv_bytes(batches) -> dict[str, float]:
    """KV-cache bytes per token read off the caches generation ended with (the largest batch's)."""
    out: dict[str, float] = {}
    timed = [b for b in batches if b.cache_bytes]
    if not timed:
        return out
    b = max(timed, key=lambda b: sum(b.cache_bytes.values()))
    out["kv_cache_bytes_end"] = sum(b.cache_bytes.values())
    for part, key in (("self", "kv_cache_bytes_per_token_measured"),
                      ("cross", "cross_kv_cache_bytes_per_source_token_measured")):  # fmt: skip
        tokens = b.cache_tokens.get(part)
        if tokens:
            out[key] = b.cache_bytes[part] / (b.samples * tokens)
    return out


def decode_floor(model, batches, rates: dict[str, float]) -> dict[str, float | str | None]:
    """Roofline floor of the decode steps of each timed batch, and measured / floor (medians)."""
    import statistics

    floors, ratios, bounds = [], [], []
    family = family_of(model)
    decoder_only = not family.encoder_decoder
    for b in batches:
        if not b.steps:
            continue
        # later step k = 1..n feeds generated token k and attends over the prompt (or T5's start token)
        # plus k positions: on average (n + 1) / 2 of them
        mean_new = (len(b.steps) + 1) / 2
        self_positions = (b.input_tokens if decoder_only else 1) + mean_new
        cost = decode_step_cost(family, b.samples, self_positions, 0 if decoder_only else b.input_tokens)
        floor, bound = floor_seconds(cost, rates)
        floors.append(floor)
        ratios.append(statistics.median(b.steps) / floor)
        bounds.append(bound)
    if not floors:
        return {"decode_floor_s_per_step": None, "decode_floor_ratio": None, "decode_bound": None}
    return {
        "decode_floor_s_per_step": statistics.median(floors),
        "decode_floor_ratio": statistics.median(ratios),
        "decode_bound": max(set(bounds), key=bounds.count),
    }


def floor_seconds(cost: dict[str, float], rates: dict[str, float]) -> tuple[float, str]:
    """The roofline floor of a step and what bounds it (``memory`` or ``compute``)."""
    memory = cost["bytes"] / rates["memory_bytes_per_s"]
    compute = cost["flops"] / rates["matmul_flops_per_s"]
    return max(memory, compute), "memory" if memory >= compute else "compute"


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, str | int]:
    """What the timings were measured on."""
    from importlib.metadata import version

    return {
        "device": str(device),
        "device_name": device_name(device),
        "clock": "cuda_events" if device.type == "cuda" else "perf_counter",
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "python": platform.python_version(),
        "cuda": torch.version.cuda or "",
        "platform": platform.platform(),
    }
