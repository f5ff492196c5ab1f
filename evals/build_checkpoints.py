"""Build the bundled tiny MHA checkpoints (``evals/checkpoints/tiny_t5`` and ``tiny_llama``) by training them.

Each is trained from scratch, offline, by the training stage (``gqa_eval.train``, ``conf/train.yaml`` with
``train=<name>``): a BPE tokenizer trained locally on the training inputs, then the model on the synthetic
training mixture of ``evals/generate.py`` (its ``train`` split, disjoint from the bundled validation sets).
The directory gets the weights (safetensors), config, tokenizer, ``train_config.yaml`` and
``train_log.jsonl``; the resume state is dropped at the end. This is the same as

    gqa-eval-train train=tiny_t5 out_dir=evals/checkpoints/tiny_t5 overwrite=true keep_resume_state=false

An interrupted build resumes where it stopped when run again. Usage:

    python evals/build_checkpoints.py                       # both checkpoints
    python evals/build_checkpoints.py tiny_llama            # one
    python evals/build_checkpoints.py tiny_t5 --set steps=50 --set out_dir=/tmp/t5   # overrides
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from gqa_eval.train import train

HERE = Path(__file__).resolve().parent
CONF = HERE.parent / "conf"
NAMES = ("tiny_t5", "tiny_llama")
# The recorded builds ran with 2 threads (results of float reductions can depend on the thread count).
BUILD = ["overwrite=true", "keep_resume_state=false", "threads=2", "eval_every=250", "save_every=100"]


def build(name: str, overrides: list[str]) -> dict:
    """Train ``name`` into ``evals/checkpoints/<name>`` (unless ``out_dir`` is overridden)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose(
                "train",
                overrides=[f"train={name}", f"out_dir={HERE / 'checkpoints' / name}", *BUILD, *overrides],
            )
    finally:
        GlobalHydra.instance().clear()
    return train(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", choices=NAMES, default=list(NAMES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Hydra override")
    args = parser.parse_args()
    for name in args.names:
        result = build(name, args.set)
        print(f"{name}: step {result['step']}, loss {result['loss']:.3f}, {result['elapsed_s'] / 60:.1f} min")
        print(f"  validation: {result['eval']}")


if __name__ == "__main__":
    main()
