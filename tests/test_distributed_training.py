"""Distribution is Accelerate's: the shipped DDP and FSDP configs launched as two CPU processes
(``accelerate launch --config_file conf/accelerate/ddp.yaml --num_processes 2``: torchrun underneath,
gloo on CPU) train the same weights as one process with the same global batch (two micro-batches a step:
one per process there, two accumulated here), K/V-pooled steps (``uptrain.pool_kv``) included: they
must still go through the DDP/FSDP wrapper, or that step's gradients are not all-reduced.
``accelerate launch --cpu`` is not the way: on one machine
it starts a single process whatever ``--num_processes`` says (its simple launcher)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_jsonl
from safetensors.torch import load_file

from gqa_eval.training.pooled import pooling_for_step
from gqa_eval.variant import family_of
from gqa_eval.variant.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RUN = [
    f"init_from={ROOT / 'evals/checkpoints/tiny_t5_plain'}", "kv_heads=4", "uptrain.recipe=given", "steps=4",
    "lr=1e-3", "warmup_steps=0", "schedule=constant", "batch_tokens=600", "data.max_input_tokens=48",
    "data.examples={cnn_dm:8,arxiv:0,pubmed:0,mediasum:0,multi_news:0,wmt_en_de:16,trivia_qa:4}",
    "log_every=1", "eval_examples=0", "save_every=0", "progress=false", "threads=1", "bf16=false",
    "uptrain.pool_kv={1:0.5}", "pool_kv_from=0",
]  # fmt: skip
POOLED = [s for s in range(4) if pooling_for_step({1: 0.5}, 0, s) is not None]  # seed 0, steps=4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str]) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


# the README's corpus form: T5 span corruption on a named corpus (the bundled one), sentinels added
CORPUS = [
    "objective=span_corruption", "span_corruption.add_sentinels=true", "corpus.source=evals/corpus",
    "block_tokens=32", "batch_size=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The single-process run of each objective's settings (two micro-batches accumulated a step)."""
    done: dict[str, Path] = {}

    def of(objective: str) -> Path:
        if objective not in done:
            out = tmp_path_factory.mktemp("single") / objective
            extra = CORPUS if objective == "span_corruption" else []
            run(
                [
                    sys.executable,
                    "-m",
                    "gqa_eval.training.loop",
                    *RUN,
                    *extra,
                    "grad_accum=2",
                    f"out_dir={out}",
                ]
            )
            done[objective] = out
        return done[objective]

    return of


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch built without gloo")
@pytest.mark.parametrize(
    ("config", "objective"),
    [
        ("ddp", "task_mixture"),
        ("fsdp", "task_mixture"),
        ("ddp", "span_corruption"),
        ("fsdp", "span_corruption"),
    ],
)
def test_two_processes_train_what_one_process_trains_with_the_same_global_batch(
    one_process, tmp_path, config, objective
):
    assert POOLED and len(POOLED) < 4, POOLED  # pooled steps and plain ones both
    one, two = one_process(objective), tmp_path / "two"
    extra = CORPUS if objective == "span_corruption" else []
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"conf/accelerate/{config}.yaml",
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()),
    ]  # fmt: skip
    run([*launch, "-m", "gqa_eval.training.loop", *RUN, *extra, "grad_accum=1", f"out_dir={two}"])
    losses = [[r["loss"] for r in read_jsonl(d / "train_log.jsonl") if "loss" in r] for d in (one, two)]
    assert len(losses[0]) == 4 and losses[1] == pytest.approx(losses[0], rel=1e-4)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    start = load_file(ROOT / "evals/checkpoints/tiny_t5_plain/model.safetensors")
    assert a.keys() == b.keys()
    # the same updates up to float rounding: gradients summed over micro-batches here, all-reduced there
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    moved = max(
        (a[k] - start[k]).abs().max().item() for k in a if k in start and a[k].shape == start[k].shape
    )
    print(f"{config} {objective}: largest weight difference {worst:.2e}, largest update {moved:.2e}")
    assert worst < 1e-5 and moved > 1e-3, (worst, moved)
    model, _ = load_checkpoint(str(two))  # the full weights, gathered from the shards under FSDP
    assert family_of(model).kv_heads == 4
