"""Decode cost of MHA vs GQA-G vs MQA, measured side by side in one interleaved run (no quality run).

The KV-heavy case of the GQA paper's motivation (arXiv 2305.13245, sec. 1): a long source, so every
decode step re-reads the cross-attention (T5) or prompt (decoder-only) K/V cache, and fewer K/V heads
move fewer bytes. Every variant is the same model converted with ``gqa_eval.convert_to_gqa``;
``mha`` is the unconverted model on transformers' own attention path.

Each repeat runs every variant once, in an order that rotates from repeat to repeat (A B C, B C A, ...),
decoding exactly ``--new`` tokens per example (the fixed-work mode of ``gqa_eval.timing``: identical
work for every variant). The timer is the evaluation's own: prefill (time to first token) and every
decode step are read during generation. For T5 the encoder is the same module in every variant (the
paper converts the decoder only), so its output is computed and timed once (every repeat with
``--encoder-repeats``) and shared.

Reported per variant, medians over repeats: decode time per step (one token for each of the batch's
rows), its ratio to MHA, time per sample ((encoder + prefill + decode) / batch) and its ratio, the KV
cache the generation ended with next to the formula's bytes per token, and the roofline floor of a decode
step (``gqa_eval.roofline``: the weights a step reads and the KV cache at the mean step position, over
this machine's cached memory bandwidth and matmul rate), the measured step over it and what bounds it.

    python benchmarks/decode_speed.py                 # the KV-heavy case: ~60M T5, batch 16, 2048 -> 64
    python benchmarks/decode_speed.py --shape t5-small --threads 2               # T5.1.1-small's geometry
    python benchmarks/decode_speed.py --shape t5-xxl --device cuda --dtype bfloat16 --batch 64 --compile true
    python benchmarks/decode_speed.py --arch llama --source 1024
    python benchmarks/decode_speed.py --checkpoint evals/checkpoints/tiny_t5 --kv-heads 8,4,2,1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessorList,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.modeling_outputs import BaseModelOutput

from gqa_eval.decode_path import decode_path
from gqa_eval.generation import returned_cache
from gqa_eval.roofline import decode_floor, hardware_rates, kv_cache_bytes
from gqa_eval.timing import Timer, cache_bytes
from gqa_eval.variant import family_of
from gqa_eval.variant.checkpoints import load_checkpoint, resolve_device, torch_dtype
from gqa_eval.variant.conversion import convert_to_gqa

# The T5.1.1 checkpoints' geometry (google/t5-v1_1-*): width, FFN width, head width, heads, layers per side.
# Gated-GELU FFN, untied LM head, vocabulary 32128: the models of the GQA paper's Table 1 (T5-Large, T5-XXL).
SHAPES = {
    "t5-small": dict(d_model=512, d_ff=1024, d_kv=64, heads=6, layers=8),
    "t5-base": dict(d_model=768, d_ff=2048, d_kv=64, heads=12, layers=12),
    "t5-large": dict(d_model=1024, d_ff=2816, d_kv=64, heads=16, layers=24),
    "t5-xl": dict(d_model=2048, d_ff=5120, d_kv=64, heads=32, layers=24),
    "t5-xxl": dict(d_model=4096, d_ff=10240, d_kv=64, heads=64, layers=24),
}


def build(args, device: torch.device, dtype: torch.dtype):
    """A randomly initialised model of the requested geometry (timing does not depend on the weights),
    initialised where it will run, in its dtype: a T5-XXL is never materialised on the host."""
    torch.manual_seed(args.seed)
    if args.arch == "t5" or args.shape:
        if args.shape:
            shape = SHAPES[args.shape]
            geometry = dict(d_model=shape["d_model"], d_ff=shape["d_ff"], d_kv=shape["d_kv"],
                            num_heads=shape["heads"], num_layers=shape["layers"],
                            num_decoder_layers=shape["layers"], feed_forward_proj="gated-gelu",
                            tie_word_embeddings=False)  # fmt: skip
        else:
            geometry = dict(d_model=args.d_model, d_kv=args.d_model // args.heads, d_ff=4 * args.d_model,
                            num_layers=args.layers, num_decoder_layers=args.layers,
                            num_heads=args.heads)  # fmt: skip
        config = T5Config(vocab_size=args.vocab, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                          eos_token_id=1, **geometry)  # fmt: skip
        return _on(device, dtype, lambda: T5ForConditionalGeneration(config))
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.d_model, intermediate_size=4 * args.d_model,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=args.source + args.new + 8, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )  # fmt: skip
    return _on(device, dtype, lambda: LlamaForCausalLM(config))


def _on(device: torch.device, dtype: torch.dtype, make):
    """``make()`` with parameters created on ``device`` in ``dtype``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            return make().eval()
    finally:
        torch.set_default_dtype(previous)


def default_kv_heads(n_heads: int) -> list[int]:
    """The grouped variants benchmarked when ``--kv-heads`` is not given: GQA-8 (the paper's), 4, 3, 2 and
    MQA, where they divide the heads."""
    return [g for g in (8, 4, 3, 2, 1) if g < n_heads and n_heads % g == 0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="a local checkpoint or hub id instead of a random model")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random T5 of a T5.1.1 checkpoint's geometry")
    parser.add_argument("--arch", choices=("t5", "llama"), default="t5", help="random model: architecture")
    parser.add_argument("--d-model", type=int, default=512, help="random model: width")
    parser.add_argument("--heads", type=int, default=8, help="random model: attention heads")
    parser.add_argument("--layers", type=int, default=6, help="random model: layers (each side for T5)")
    parser.add_argument("--vocab", type=int, default=32128, help="random model: vocabulary")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--source", type=int, default=2048, help="source (prompt) tokens per example")
    parser.add_argument("--new", type=int, default=64, help="new tokens per example")
    parser.add_argument(
        "--kv-heads",
        help="converted variants, comma-separated (default: 8,4,3,2,1 where they divide the heads)",
    )
    parser.add_argument(
        "--compile", default="auto", choices=("auto", "true", "false"),
        help="the decode path (gqa_eval.decode_path): a torch.compile'd step over a static KV cache "
        "(CUDA graphs on CUDA); auto = on for CUDA",
    )  # fmt: skip
    parser.add_argument(
        "--cache",
        default="auto",
        choices=("auto", "static", "dynamic"),
        help="KV cache (auto: static if compiled)",
    )
    parser.add_argument(
        "--encoder-batch", type=int, default=None,
        help="T5: rows per encoder call when computing the shared source encoding (default: the batch)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile one generation of MHA and of the fewest-K/V-heads variant (torch.profiler) "
        "and print where a decode step's time goes: weight matmuls, attention, everything else",
    )
    parser.add_argument(
        "--encoder-repeats", action="store_true", help="T5: time the encoder every repeat, not only once"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device), torch_dtype(args.dtype)
    if args.checkpoint:
        base, _ = load_checkpoint(args.checkpoint, dtype=args.dtype, device=str(device))
    else:
        base = build(args, device, dtype)
    seq2seq = base.config.is_encoder_decoder
    n_heads = family_of(base).n_heads
    kv_list = [int(x) for x in args.kv_heads.split(",")] if args.kv_heads else default_kv_heads(n_heads)
    flag = {"true": True, "false": False}.get(args.compile, args.compile)
    decode = decode_path(flag, args.cache, device, pad_to_multiple_of=1)
    variants = {"mha": base}
    for g in kv_list:
        # every variant shares the base's weights but for the K/V projections it narrows
        shared = copy.deepcopy(base, memo={id(p): p for p in base.parameters()})
        variants[f"gqa{g}" if g > 1 else "mqa"] = convert_to_gqa(shared, g)
    params = sum(p.numel() for p in base.parameters())
    print(f"{args.shape or base.config.model_type} {params / 1e6:.1f}M params, {n_heads} heads; "
          f"batch {args.batch}, "
          f"source {args.source}, {args.new} new tokens; {args.dtype} on {device}, "
          f"{torch.get_num_threads()} threads; {args.repeats} interleaved repeats; "
          f"decode path {decode.name}")  # fmt: skip

    gen = torch.Generator().manual_seed(args.seed)
    vocab = base.config.vocab_size
    src = torch.randint(3, vocab, (args.batch, args.source), generator=gen).to(device)
    mask = torch.ones_like(src)
    encoder_timer = Timer(device)
    encoder_out = None

    def run(model, timer: Timer | None, new: int):
        steps = timer.step_clock({model.generation_config.eos_token_id}) if timer else None
        kwargs = {"attention_mask": mask, "max_new_tokens": new, "do_sample": False, "num_beams": 1,
                  "return_dict_in_generate": True,
                  "logits_processor": LogitsProcessorList([steps] if steps else []),
                  **decode.generate_kwargs(args.source, args.new, not seq2seq)}  # fmt: skip
        if seq2seq:
            kwargs["encoder_outputs"] = BaseModelOutput(last_hidden_state=encoder_out)
        else:
            kwargs["input_ids"] = src
        with torch.inference_mode():
            if timer is None:
                return model.generate(**kwargs)
            with timer.batch(args.batch, steps) as record:
                out = model.generate(**kwargs)
            record.new_tokens = args.batch * new
            record.input_tokens = args.source  # the prompt, or the cross-attention cache's positions
            return out

    def encode() -> None:
        nonlocal encoder_out
        if seq2seq:
            step = args.encoder_batch or args.batch  # rows per call: T5's biased attention is (rows, H, S, S)
            with encoder_timer.batch(args.batch), torch.inference_mode():
                encoder_out = torch.cat([
                    base.encoder(input_ids=src[i : i + step], attention_mask=mask[i : i + step])
                    .last_hidden_state
                    for i in range(0, args.batch, step)
                ])  # fmt: skip

    encode()
    names = list(variants)
    warmup = {}
    for name in names:  # warm-up: allocator, kernels and, compiled, the compile; not timed
        start = time.perf_counter()
        run(variants[name], None, 2)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        warmup[name] = time.perf_counter() - start
    measured_cache = {}
    timers = {name: Timer(device, mode="fixed") for name in names}
    for rep in range(args.repeats):
        if rep and args.encoder_repeats:
            encode()
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            out = run(variants[name], timers[name], args.new)
            measured_cache[name] = cache_bytes(returned_cache(out))  # the cache the generation ended with
            del out
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)

    enc = statistics.median(b.seconds for b in encoder_timer.batches) if seq2seq else 0.0
    rows = {}
    for name in names:
        batches = timers[name].batches
        step = statistics.median(statistics.median(b.steps) for b in batches)
        prefill = statistics.median(b.prefill for b in batches)
        sample = statistics.median((enc + b.seconds) / args.batch for b in batches)
        rows[name] = (step, prefill, sample)
    ref_step, _, ref_sample = rows["mha"]
    rates = hardware_rates(device, dtype)
    header = (f"\n{'variant':<8} {'kv':>3} {'decode ms/step':>15} {'ratio':>6} {'prefill s':>10} "
              f"{'s/sample':>9} {'ratio':>6} {'cache MiB':>10} {'KV B/token':>11}")  # fmt: skip
    print(
        header
        + (f" {'cross B/src':>12}" if seq2seq else "")
        + f" {'floor ms':>9} {'x floor':>8} {'warm-up s':>9} bound"
    )
    for name in names:
        step, prefill, sample = rows[name]
        formula = kv_cache_bytes(variants[name], dtype)
        kv = family_of(variants[name]).kv_heads
        line = (f"{name:<8} {kv:>3} {step * 1e3:>15.2f} {step / ref_step:>6.3f} {prefill:>10.3f} "
                f"{sample:>9.4f} {sample / ref_sample:>6.3f} {measured_cache[name] / 2**20:>10.1f} "
                f"{formula['kv_cache_bytes_per_token']:>11}")  # fmt: skip
        if seq2seq:
            line += f" {formula['cross_kv_cache_bytes_per_source_token']:>12}"
        floor = decode_floor(variants[name], timers[name].batches, rates)
        floor_s = floor["decode_floor_s_per_step"]
        print(
            line
            + f" {floor_s * 1e3:>9.2f} {step / floor_s:>8.2f} {warmup[name]:>9.1f} {floor['decode_bound']}"
        )
    if seq2seq:
        print(f"(encoder, shared by all variants: {enc:.3f} s per batch, included in s/sample)")
    memory, matmul = rates["memory_bytes_per_s"] / 1e9, rates["matmul_flops_per_s"] / 1e9
    print(
        f"(floor: {memory:.1f} GB/s memory, {matmul:.1f} GFLOP/s matmul, measured once and cached; "
        "x floor = decode ms/step / floor ms; warm-up: the untimed first call, compile included)"
    )
    if args.profile:
        print("\nWhere a decode step's time goes (torch.profiler, self CPU time of one generation / steps):")
        columns = (*CATEGORIES, "outside ops")
        print(f"{'variant':<8} " + " ".join(f"{k + ' ms':>15}" for k in columns) + f" {'total ms':>9}")
        for name in ("mha", names[-1]):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                run(variants[name], None, args.new)
                wall = time.perf_counter() - start
            split = profile_split(prof, steps=args.new)
            split["outside ops"] = max(0.0, wall / args.new - sum(split.values()))
            print(f"{name:<8} " + " ".join(f"{split[k] * 1e3:>15.2f}" for k in columns)
                  + f" {sum(split.values()) * 1e3:>9.2f}")  # fmt: skip
        print(
            "(weights: linear layers and the LM head, the same in every variant; attention: the SDPA kernels "
            "and their matmuls/softmax; other: masks, norms, activations, cache updates; outside ops: Python,"
            " generate's loop, profiler; all per decode step, prefill included)"
        )


CATEGORIES = ("weights", "attention", "other")
ATTENTION_OPS = ("aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::_efficient_attention")


def profile_split(prof, steps: int) -> dict[str, float]:
    """Self CPU seconds per generation step of a profile, grouped into ``CATEGORIES``."""
    split = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.key_averages():
        name = event.key
        if name in ("aten::linear", "aten::addmm", "aten::mm", "aten::matmul") or "gemm" in name:
            key = "weights"
        elif (
            "scaled_dot_product" in name or "flash_attention" in name or name == "aten::_efficient_attention"
        ):
            key = "attention"
        else:
            key = "other"
        split[key] += event.self_cpu_time_total / 1e6 / steps
    return split


if __name__ == "__main__":
    main()
