"""Write the bundled offline evaluation sets (deterministic synthetic data) under evals/data.

:func:`generate` draws a task's examples for a split from its world, keeping only candidates whose
:func:`split_key` hashes into the split's buckets; :func:`write_split` writes them in the real
dataset's file layout; :func:`main` is the command line (``python evals/build_data.py``).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.synthetic.common import (
    DEFAULT_N,
    DEFAULT_SEEDS,
    SPLIT_BUCKETS,
    SPLITS,
    TASKS,
    _derive_seed,
    split_of,
)
from gqa_eval.synthetic.dialogue import _make_mediasum
from gqa_eval.synthetic.news import MULTI_NEWS_STEMS, _make_cnn_dm, _make_multi_news, multi_news_raw
from gqa_eval.synthetic.science import _make_arxiv, _make_pubmed
from gqa_eval.synthetic.translation import _make_wmt
from gqa_eval.synthetic.trivia import _make_trivia

#: Where the bundled evaluation sets live (``evals/data`` of the project).
BUNDLED_DATA = PROJECT_ROOT / "evals" / "data"

MAKERS: dict[str, Callable[[random.Random], tuple[dict[str, Any], str]]] = {
    "cnn_dm": _make_cnn_dm,
    "arxiv": _make_arxiv,
    "pubmed": _make_pubmed,
    "mediasum": _make_mediasum,
    "multi_news": _make_multi_news,
    "wmt_en_de": _make_wmt,
}


def split_key(task: str, example: dict[str, Any]) -> str:
    """The text an example's split is decided by, read off the example itself."""
    if task == "cnn_dm":
        return example["highlights"]
    if task in ("arxiv", "pubmed"):
        return example["abstract"]
    if task in ("mediasum", "multi_news"):
        return example["summary"]
    if task == "wmt_en_de":
        return example["translation"]["en"]
    if task == "trivia_qa":
        return example["entity_pages"]["title"][0]
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def generate(task: str, split: str, n: int, seed: int | None = None) -> list[dict[str, Any]]:
    """``n`` examples of ``task`` for ``split`` in the hub dataset's schema (multi_news: the processed
    form ``{"document", "summary"}``, documents joined by ``" ||||| "``). Deterministic in
    (task, split, n, seed); every example's :func:`split_key` hashes into ``split``'s buckets, and no
    two examples of a validation/test call share a key (nor, in a train call, the same content)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    seed = DEFAULT_SEEDS[split] if seed is None else seed
    rng = random.Random(_derive_seed(task, split, seed))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    max_attempts = 200 * n + 10_000
    for _ in range(max_attempts):
        if len(out) >= n:
            break
        if task == "trivia_qa":
            example, unique = _make_trivia(rng, split)
        else:
            example, unique = MAKERS[task](rng)
        if split_of(task, split_key(task, example)) != split:
            continue
        if split == "train":
            unique = json.dumps(example, sort_keys=True, ensure_ascii=False)
        if unique in seen:
            continue
        seen.add(unique)
        out.append(example)
    if len(out) < n:
        raise RuntimeError(f"{task}/{split}: only {len(out)} distinct examples after {max_attempts} tries")
    return out


def _jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_split(task: str, split: str, examples: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Write ``examples`` under ``out/<task>/`` in the file layout of the real dataset; returns the paths."""
    folder = out / task
    folder.mkdir(parents=True, exist_ok=True)
    if task == "multi_news":
        stem = MULTI_NEWS_STEMS[split]
        lines = [multi_news_raw(e) for e in examples]
        src, tgt = folder / f"{stem}.src.cleaned", folder / f"{stem}.tgt"
        src.write_text("".join(s + "\n" for s, _ in lines), encoding="utf-8", newline="\n")
        tgt.write_text("".join(t + "\n" for _, t in lines), encoding="utf-8", newline="\n")
        return [src, tgt]
    path = folder / f"{split}.jsonl"
    path.write_text(_jsonl(examples), encoding="utf-8", newline="\n")
    return [path]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``evals/build_data.py``: write the chosen splits of the chosen tasks under
    ``--out`` (default: the project's ``evals/data``). Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_DATA, help="default: evals/data")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="examples per task and split")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=["validation"])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seed", type=int, default=None, help="default: the split's fixed seed")
    args = parser.parse_args(argv)
    for split in args.splits:
        for task in args.tasks:
            examples = generate(task, split, args.n, args.seed)
            for path in write_split(task, split, examples, args.out):
                print(f"{path}: {len(examples)} examples, {path.stat().st_size} bytes")
    return 0
