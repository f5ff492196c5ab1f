"""Why the trainer has its own attention kernel: a bfloat16-autocast T5 training step (forward and backward)
through the grouped attention's training kernel (``gqa_t5_train``, scores in bfloat16) against the same
step through the evaluation's attention (transformers' SDPA for MHA layers, ``gqa_t5`` for grouped ones),
on the same model and batch, interleaved step by step. T5's learned relative position bias keeps SDPA off
its fused kernels, so SDPA adds a float32 mask per layer; the training kernel keeps the scores in the
autocast dtype. Prints the median step time of each and their ratio, for MHA and a GQA conversion.

    python benchmarks/train_attention.py                       # d_model 256, 4+4 layers, 8 x 1024 tokens
    python benchmarks/train_attention.py --source 512 --batch 16 --kv-heads 8 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
from transformers import T5Config, T5ForConditionalGeneration

from gqa_eval.training.kernels import lean_attention
from gqa_eval.variant.conversion import convert_to_gqa


def _step(model, batch, kernel) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with kernel(model), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=int, default=1024, help="source tokens per example")
    parser.add_argument("--target", type=int, default=128, help="target tokens per example")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, nargs="+", default=[8, 2], help="8 = MHA (8 query heads)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per kernel (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch} x "
          f"({args.source} source + {args.target} target) tokens, bf16 autocast")  # fmt: skip
    print(f"{'variant':<8} {'training kernel s':>18} {'SDPA s':>8} {'ratio':>7}")
    for kv_heads in args.kv_heads:
        torch.manual_seed(0)
        config = T5Config(vocab_size=4000, d_model=256, d_kv=32, d_ff=1024, num_layers=4, num_heads=8,
                          dropout_rate=0.0, decoder_start_token_id=0)  # fmt: skip
        model = T5ForConditionalGeneration(config)
        if kv_heads < config.num_heads:
            convert_to_gqa(model, kv_heads)
        model.train()
        gen = torch.Generator().manual_seed(1)
        ids = torch.randint(3, 4000, (args.batch, args.source), generator=gen)
        mask = torch.ones_like(ids)
        mask[args.batch // 2 :, -args.source // 8 :] = 0  # half the rows padded
        labels = torch.randint(3, 4000, (args.batch, args.target), generator=gen)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        kernels = {"train": lean_attention, "sdpa": lambda _: nullcontext()}
        times: dict[str, list[float]] = {name: [] for name in kernels}
        for i in range(args.steps + 1):
            order = list(kernels) if i % 2 == 0 else list(reversed(kernels))
            for name in order:
                seconds = _step(model, batch, kernels[name])
                if i:  # the first round warms up
                    times[name].append(seconds)
        train, sdpa = (statistics.median(times[n]) for n in ("train", "sdpa"))
        name = "MHA" if kv_heads == config.num_heads else f"GQA-{kv_heads}"
        print(f"{name:<8} {train:>18.3f} {sdpa:>8.3f} {train / sdpa:>6.2f}x")


if __name__ == "__main__":
    main()
