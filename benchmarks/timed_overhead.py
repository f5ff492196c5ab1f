"""What timing costs: gqa-eval's timed generate() against a bare ``model.generate`` on the same batches.

The evaluation reports the time of its timed region (``gqa_eval.timing.Timer.batch`` around one
``model.generate`` call with the step clock as its only logits processor, plus stopping criteria where
the task has stop strings). This benchmark times that region and, on the same batch, a bare
``model.generate`` with the same decoding settings and no processors (in the fixed-work mode, with
``min_new_tokens`` so that both decode the same number of tokens), interleaved batch by batch in an order
that alternates, and prints the ratio timed / bare per batch and its median. The target is at most 1.05x:
the timed region holds the model's work and nothing else.

    python benchmarks/timed_overhead.py                           # bundled tiny_t5 and tiny_llama, CNN/DM
    python benchmarks/timed_overhead.py --arch t5 --mode natural --batches 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gqa_eval.generation import _pad, generate
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.tasks import encode, load_examples
from gqa_eval.timing import Timer
from gqa_eval.variant.checkpoints import load_checkpoint

CHECKPOINTS = {"t5": "evals/checkpoints/tiny_t5", "llama": "evals/checkpoints/tiny_llama"}


def _task() -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(
        OmegaConf.load(PROJECT_ROOT / "conf" / "task" / "cnn_dm.yaml"), resolve=True
    )


def _bare_seconds(model, tokenizer, batch, max_new: int, fixed: bool, stops: list[str]) -> float:
    decoder_only = not model.config.is_encoder_decoder
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, mask = _pad(batch, pad, left=decoder_only)
    if fixed:
        kwargs = {"min_new_tokens": max_new}
    else:
        kwargs = {"stop_strings": stops, "tokenizer": tokenizer} if stops else {}
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                       num_beams=1, pad_token_id=pad, return_dict_in_generate=True, **kwargs)  # fmt: skip
        return time.perf_counter() - start


def _timed_seconds(model, tokenizer, batch, max_new: int, mode: str, stops: list[str]) -> float:
    timer = Timer(mode=mode)
    generate(model, tokenizer, batch, max_new_tokens=max_new, batch_size=len(batch), timer=timer,
             progress=False, stop_strings=stops)  # fmt: skip
    (record,) = timer.batches
    return record.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=["t5", "llama", "both"], default="both")
    parser.add_argument("--mode", choices=["natural", "fixed", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--batches", type=int, default=6, help="batches per (arch, mode); each timed both ways"
    )
    parser.add_argument("--new", type=int, default=64, help="max new tokens")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = _task()
    examples = load_examples(task, args.batch * args.batches)
    archs = ["t5", "llama"] if args.arch == "both" else [args.arch]
    modes = ["natural", "fixed"] if args.mode == "both" else [args.mode]
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, max new tokens {args.new}, CNN/DM inputs")
    print(f"{'arch':6} {'mode':8} {'bare s':>8} {'timed s':>8} {'timed/bare':>11}  per batch")
    for arch in archs:
        model, tokenizer = load_checkpoint(CHECKPOINTS[arch])
        decoder_only = not model.config.is_encoder_decoder
        stops = task["stop_strings"] if decoder_only else []
        inputs = encode(task, examples, tokenizer, decoder_only)
        batches = [inputs[k : k + args.batch] for k in range(0, len(inputs), args.batch)]
        _bare_seconds(model, tokenizer, batches[0], 4, False, stops)  # warm-up
        for mode in modes:
            bare, timed = [], []
            for i, batch in enumerate(batches):
                pair = [
                    ("bare", _bare_seconds, (mode == "fixed", stops)),
                    ("timed", _timed_seconds, (mode, stops)),
                ]
                for name, fn, extra in pair if i % 2 == 0 else pair[::-1]:  # alternate the order
                    (bare if name == "bare" else timed).append(fn(model, tokenizer, batch, args.new, *extra))
            ratios = [t / b for t, b in zip(timed, bare, strict=True)]
            print(f"{arch:6} {mode:8} {sum(bare):8.3f} {sum(timed):8.3f} {statistics.median(ratios):10.3f}x  "
                  + " ".join(f"{r:.3f}" for r in ratios))  # fmt: skip


if __name__ == "__main__":
    main()
