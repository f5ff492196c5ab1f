"""The kernels of one T5 decode step, each against the roofline's rates: why a step sits where it does.

Two parts, every case timed interleaved with the others (best of ``--repeats`` rounds):

1. The weight matmuls of a decode step at its real shapes (``--batch`` rows x the model's linear layers,
   as ``F.linear`` runs them), as GFLOP/s next to the square-matmul rate the roofline floor uses
   (``gqa_eval.roofline.measure_rates``). A decode step multiplies a few rows by each weight matrix;
   how close such a call gets to the square-matmul rate bounds how close a step can get to its floor.
2. Grouped cross-attention of one decode step (H query heads, G key/value heads, ``--source``
   positions), the candidates for ``gqa_eval.variant.attention``: SDPA on the folded queries
   ``(B, G, r, D)`` (what the grouped attention runs), SDPA with ``enable_gqa=True`` on ``(B, H, 1, D)``,
   a plain matmul-softmax-matmul, and on CUDA FlexAttention (compiled, ``enable_gqa=True``). As GB/s of
   K/V read next to the measured memory bandwidth; each candidate's output is checked against the
   float64 reference first.

    python benchmarks/decode_kernels.py --threads 2                      # T5.1.1-small's shapes
    python benchmarks/decode_kernels.py --shape t5-xxl --device cuda --dtype bfloat16 --batch 64
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from gqa_eval.roofline import hardware_rates, seconds_of
from gqa_eval.variant.checkpoints import resolve_device, torch_dtype

SHAPES = {  # d_model, d_ff, d_kv, heads: the T5.1.1 checkpoints (as benchmarks/decode_speed.py)
    "t5-small": (512, 1024, 64, 6),
    "t5-base": (768, 2048, 64, 12),
    "t5-large": (1024, 2816, 64, 16),
    "t5-xl": (2048, 5120, 64, 32),
    "t5-xxl": (4096, 10240, 64, 64),
}
VOCAB = 32128


def best_of(cases: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Best seconds of each case over ``repeats`` interleaved rounds (one warm-up call each first)."""
    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(seconds_of(fn, device))
    return {name: min(t) for name, t in times.items()}


def weight_matmuls(args, device, dtype, rates) -> None:
    d_model, d_ff, d_kv, heads = SHAPES[args.shape]
    inner = heads * d_kv
    shapes = {  # (in, out) of each linear a T5.1.1 decoder layer and the LM head run per step
        "q/k/v (self), q (cross)": (d_model, inner),
        "o (self, cross)": (inner, d_model),
        "FFN wi_0 / wi_1": (d_model, d_ff),
        "FFN wo": (d_ff, d_model),
        "LM head": (d_model, VOCAB),
    }
    gen = torch.Generator(device=device).manual_seed(0)
    cases, flops = {}, {}
    for name, (n_in, n_out) in shapes.items():
        x = torch.randn(args.batch, n_in, generator=gen, device=device).to(dtype)
        w = torch.randn(n_out, n_in, generator=gen, device=device).to(dtype)
        cases[name] = lambda x=x, w=w: F.linear(x, w)
        flops[name] = 2 * args.batch * n_in * n_out
    seconds = best_of(cases, args.repeats, device)
    peak = rates["matmul_flops_per_s"]
    print(f"\nWeight matmuls of a decode step: {args.batch} rows, {args.dtype} "
          f"(square-matmul rate {peak / 1e9:.1f} GFLOP/s, the floor's)")  # fmt: skip
    print(f"{'linear':<26} {'in x out':>13} {'ms':>8} {'GFLOP/s':>9} {'of peak':>8}")
    for name, (n_in, n_out) in shapes.items():
        rate = flops[name] / seconds[name]
        print(f"{name:<26} {f'{n_in}x{n_out}':>13} {seconds[name] * 1e3:>8.3f} {rate / 1e9:>9.1f} "
              f"{rate / peak:>8.2f}")  # fmt: skip


def _reference(q, k, v, bias):
    """float64 attention of H query heads over G K/V heads, K/V repeated: ``(B, H, 1, D)``."""
    b, h, t, d = q.shape
    r = h // k.shape[1]
    k64, v64 = (x.double().repeat_interleave(r, dim=1) for x in (k, v))
    scores = q.double() @ k64.transpose(-1, -2) + (0 if bias is None else bias.double())
    return torch.softmax(scores, dim=-1) @ v64


def attention_candidates(args, device, dtype, rates) -> None:
    _, _, d, heads = SHAPES[args.shape]
    kv_list = [g for g in (heads, 8, 4, 3, 2, 1) if heads % g == 0 and g <= heads]
    print(f"\nGrouped cross-attention of a decode step: batch {args.batch}, {heads} query heads, source "
          f"{args.source}, {args.dtype} "
          f"(memory bandwidth {rates['memory_bytes_per_s'] / 1e9:.1f} GB/s)")  # fmt: skip
    flex = None
    if device.type == "cuda":
        try:
            from torch.nn.attention.flex_attention import flex_attention

            flex = torch.compile(flex_attention, dynamic=False)
        except ImportError:
            flex = None
    names = ["sdpa folded (gqa_t5)", "sdpa enable_gqa", "matmul"] + (["flex enable_gqa"] if flex else [])
    print(
        f"{'G':>3} {'K/V MB':>8} " + " ".join(f"{n + ' ms':>22}" for n in names) + f" {'best GB/s':>10} best"
    )
    gen = torch.Generator(device=device).manual_seed(0)
    for g in dict.fromkeys(kv_list):
        r = heads // g
        q = torch.randn(args.batch, heads, 1, d, generator=gen, device=device).to(dtype)
        k = torch.randn(args.batch, g, args.source, d, generator=gen, device=device).to(dtype)
        v = torch.randn(args.batch, g, args.source, d, generator=gen, device=device).to(dtype)
        folded = q.reshape(args.batch, g, r, d)

        def matmul(folded=folded, k=k, v=v):
            scores = torch.matmul(folded, k.transpose(-1, -2))
            return torch.matmul(torch.softmax(scores.float(), dim=-1).to(v.dtype), v)

        cases = {
            "sdpa folded (gqa_t5)": lambda folded=folded, k=k, v=v: F.scaled_dot_product_attention(
                folded, k, v, scale=1.0
            ),
            "sdpa enable_gqa": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(
                q, k, v, scale=1.0, enable_gqa=True
            ),
            "matmul": matmul,
        }
        if flex:
            cases["flex enable_gqa"] = lambda q=q, k=k, v=v: flex(q, k, v, scale=1.0, enable_gqa=True)
        reference = _reference(q, k, v, None)
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        for name, fn in list(cases.items()):
            try:
                out = fn().reshape(args.batch, heads, 1, d)
            except Exception as err:  # a candidate this torch cannot run at this shape (FlexAttention)
                if name != "flex enable_gqa":
                    raise
                print(f"  ({name} not run: {type(err).__name__}: {str(err).splitlines()[0][:120]})")
                del cases[name]
                continue
            torch.testing.assert_close(out.double(), reference, rtol=tol, atol=tol, msg=name)
        seconds = best_of(cases, args.repeats, device)
        kv_bytes = 2 * k.numel() * k.element_size()
        fastest = min(seconds, key=seconds.get)
        cells = [f"{seconds[n] * 1e3:>25.3f}" if n in seconds else f"{'n/a':>25}" for n in names]
        print(f"{g:>3} {kv_bytes / 1e6:>8.1f} " + " ".join(cells)
              + f" {kv_bytes / seconds[fastest] / 1e9:>10.1f} {fastest}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="t5-small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--source", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device), torch_dtype(args.dtype)
    rates = hardware_rates(device, dtype)
    print(f"{args.shape} shapes on {device} ({torch.get_num_threads()} threads), {args.dtype}")
    with torch.inference_mode():
        weight_matmuls(args, device, dtype, rates)
        attention_candidates(args, device, dtype, rates)


if __name__ == "__main__":
    main()
