"""Build the bundled tiny MHA checkpoints (``evals/checkpoints/tiny_t5`` and ``tiny_llama``) by training them.

Each is trained from scratch, offline, by the training stage (``gqa_eval.training``, ``conf/training.yaml``
with ``train=<name>``): a BPE tokenizer trained locally on the training inputs, then the model on the
synthetic training mixture of ``gqa_eval.synthetic`` (its ``train`` split, disjoint from the bundled
validation sets).
``tiny_t5`` has a second stage (``train=tiny_t5_reading``) that continues the first on a mixture heavy in
TriviaQA reading questions. The directory gets the weights (safetensors), config, tokenizer,
``train_config.yaml`` and ``train_log.jsonl`` (and ``stage1_*`` copies of the first stage's); the resume
state is dropped at the end (keep_resume_state=false). For tiny_t5 this is the same as

    gqa-eval-train train=tiny_t5 out_dir=outputs/train/tiny_t5_stage1
    gqa-eval-train train=tiny_t5_reading out_dir=evals/checkpoints/tiny_t5 overwrite=true

An interrupted build resumes where it stopped when run again; a finished first stage is reused. Usage:

    python evals/build_checkpoints.py                       # both checkpoints
    python evals/build_checkpoints.py tiny_llama            # one
    python evals/build_checkpoints.py tiny_t5 --set steps=50 --set out_dir=outputs/train/quick  # overrides
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from gqa_eval.training.loop import train

HERE = Path(__file__).resolve().parent
CONF = HERE.parent / "conf"
NAMES = ("tiny_t5", "tiny_llama", "tiny_t5_plain")
# The recorded builds ran with 2 threads (results of float reductions can depend on the thread count).
BUILD = ["overwrite=true", "keep_resume_state=false", "threads=2", "eval_every=250", "save_every=100"]


# Stages per checkpoint: (train config, out_dir). A later stage continues the one before (its config's
# init_from); only the last writes into evals/checkpoints, and the earlier stages' config and log are
# copied there as stage<k>_train_config.yaml / stage<k>_train_log.jsonl.
OUTPUTS = HERE.parent / "outputs" / "train"
STAGES = {
    "tiny_t5": [("tiny_t5", OUTPUTS / "tiny_t5_stage1"), ("tiny_t5_reading", None)],
    "tiny_llama": [("tiny_llama", None)],
    # tiny_t5's two stages without stochastic K/V pooling: the fair base for comparing conversion methods
    "tiny_t5_plain": [("tiny_t5_plain", OUTPUTS / "tiny_t5_plain_stage1"), ("tiny_t5_plain_reading", None)],
}


def build(name: str, overrides: list[str]) -> dict:
    """Train ``name`` through its stages into ``evals/checkpoints/<name>`` (or the ``out_dir`` override)."""
    final = HERE / "checkpoints" / name
    result = {}
    for k, (config, out_dir) in enumerate(STAGES[name], start=1):
        # an out_dir override moves the finished checkpoint only; earlier stages stay where the next expects
        extra = overrides if out_dir is None else [o for o in overrides if not o.startswith("out_dir=")]
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
                where = [f"out_dir={out_dir or final}", f"output_root={OUTPUTS.parent}"]
                cfg = compose("training", overrides=[f"train={config}", *where, *BUILD, *extra])
        finally:
            GlobalHydra.instance().clear()
        if (
            out_dir is not None
            and (out_dir / "config.json").is_file()
            and not (out_dir / "checkpoints").exists()
        ):
            print(f"{name} stage {k} ({config}): reusing the finished {out_dir} (delete it to retrain)")
            continue
        result = train(cfg)
        if out_dir is not None:
            print(f"{name} stage {k} ({config}): step {result['step']}, validation {result['eval']}")
    for k, (_, out_dir) in enumerate(STAGES[name][:-1], start=1):
        for file in ("train_config.yaml", "train_log.jsonl"):
            shutil.copyfile(out_dir / file, Path(result["out_dir"]) / f"stage{k}_{file}")
    return result


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
