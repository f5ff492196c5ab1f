"""Training stage, data side: the synthetic training mixture, read and tokenized as evaluation reads it.

Training examples come from the project's own generator (``gqa_eval.synthetic``, split ``train``: its
hash buckets are disjoint from the bundled validation and test sets by construction). They are written
to disk in each hub dataset's schema and read back through ``gqa_eval.tasks`` (``load_examples`` and
``encode``) with the very task configs the evaluation uses, so a training input is built by the same
field mapping, template and truncation as an evaluation input. The target is the first reference
(TriviaQA: ``answer.value``) followed by EOS. The tokenizer is trained here too, locally, on the same
model inputs and targets.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import gqa_eval.synthetic
from gqa_eval.tasks import Example, encode, load_examples

SPECIALS = ["<pad>", "</s>", "<unk>"]  # T5's ids: <pad> = 0 (also T5's decoder start), </s> = 1, <unk> = 2


def generator() -> ModuleType:
    """The synthetic data generator, :mod:`gqa_eval.synthetic` (its tasks, ``generate``, ``write_split``)."""
    return gqa_eval.synthetic


def training_examples(
    task: Mapping[str, Any],
    n: int,
    seed: int,
    workdir: Path,
    counterfactual_qa: bool = False,
    easy_fraction: float = 0.0,
) -> list[Example]:
    """``n`` generated training examples of ``task``, written in the hub schema and loaded back.

    Args:
        task: a task config (``conf/task/*.yaml``); its ``name`` must be one of the generator's tasks.
        n: number of examples (a larger ``n`` extends a smaller one: the generator's stream is fixed).
        seed: the generator's seed for the ``train`` split.
        workdir: where the files are written (``workdir/<task>/``, the layout of the bundled sets).
        counterfactual_qa: TriviaQA only: rewrite the ``n`` records by ``trivia_counterfactuals``
            (about 4.5 examples per record).
        easy_fraction: with ``counterfactual_qa``, the share of questions with easy evidence.

    Returns:
        The examples, mapped by ``task.fields`` exactly as evaluation maps its split.
    """
    gen = generator()
    name = task["name"]
    if name not in gen.TASKS:
        raise ValueError(f"no training-data generator for task {name!r}; the generator makes {gen.TASKS}")
    records = gen.generate(name, "train", n, seed)
    if counterfactual_qa and name == "trivia_qa":
        records = trivia_counterfactuals(records, seed, easy_fraction)
    gen.write_split(name, "train", records, workdir)
    local = {
        **task,
        "split": "train",
        "data": {**task["data"], "source": "local", "path": str(workdir / name)},
    }
    with quiet_progress():
        return load_examples(local)


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence the progress bars of ``datasets`` and ``transformers`` (loading, saving) for a while."""
    from datasets.utils import logging as ds_logging
    from transformers.utils import logging as tf_logging

    was = ds_logging.is_progress_bar_enabled(), tf_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            ds_logging.enable_progress_bar()
        if was[1]:
            tf_logging.enable_progress_bar()


def trivia_counterfactuals(
    records: Sequence[dict[str, Any]], seed: int, easy_fraction: float = 0.0
) -> list[dict[str, Any]]:
    """TriviaQA training records rewritten so that answers must be read from the evidence.

    The generator's fact world is fixed, so its training questions recur with the same answers, and a
    small model learns to recite them (and fails on the validation subjects it never saw). Here every
    fact of a record's subject is swapped, in the evidence, for another value of its relation taken from
    the training world (a capital for a capital, a year for a year), and the record is asked once per
    relation of its subject: the same evidence with different questions and answers. A share
    ``easy_fraction`` of the questions come with easy evidence, only the subject's own sentences of its
    page (no other entities): a curriculum without which a small model stays at guessing the answer's
    type. Records stay in the hub schema; the bundled validation set is untouched.
    """
    gen = generator()
    world = {e.name: e for e in gen._world_split("train")}
    pools: dict[str, list[Any]] = {}
    for entity in world.values():
        for relation, value in entity.facts.items():
            if value not in pools.setdefault(relation, []):
                pools[relation].append(value)

    def render(relation: str, value: Any) -> tuple[list[str], str]:
        return gen._answer_aliases(gen.RELATION_KINDS[relation], value)

    out = []
    for i, record in enumerate(records):
        rng = random.Random(f"counterfactual/{seed}/{i}")
        entity = world[record["entity_pages"]["title"][0]]
        swapped = {r: rng.choice([v for v in pools[r] if v != old]) for r, old in entity.facts.items()}
        mentions = {render(r, old)[0][0]: render(r, swapped[r])[0][0] for r, old in entity.facts.items()}
        pattern = re.compile(
            "|".join(rf"(?<!\w){re.escape(m)}(?!\w)" for m in sorted(mentions, key=len)[::-1])
        )
        pages = [
            pattern.sub(lambda m, table=mentions: table[m.group(0)], page)
            for page in record["entity_pages"]["wiki_context"]
        ]
        own = [" ".join(s for s in re.split(r"(?<=\.) ", pages[0]) if entity.name in s)]
        for relation, value in swapped.items():
            evidence = own if rng.random() < easy_fraction else pages
            aliases, kind = render(relation, value)
            question = rng.choice(gen.RELATIONS[relation][0]).format(s=entity.name)
            answer = {
                **record["answer"],
                "aliases": aliases,
                "normalized_aliases": list(dict.fromkeys(gen.normalize_answer(a) for a in aliases)),
                "normalized_value": gen.normalize_answer(aliases[0]),
                "type": kind,
                "value": aliases[0],
            }
            out.append({
                **record,
                "question": question[:1].upper() + question[1:],
                "question_id": f"{record['question_id']}_{relation}",
                "entity_pages": {**record["entity_pages"], "wiki_context": evidence},
                "answer": answer,
            })  # fmt: skip
    return out


def model_input_text(task: Mapping[str, Any], example: Example, decoder_only: bool) -> str:
    """The untruncated model input (T5 template or decoder-only prompt) of ``example``."""
    template = task["prompt_template"] if decoder_only else task["input_template"]
    return template.format(**example.fields)


def train_tokenizer(texts: Sequence[str], vocab_size: int, decoder_only: bool):
    """A Metaspace BPE tokenizer (T5-like, no byte fallback) trained on ``texts``.

    T5's special tokens come first (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2); a T5 tokenizer appends
    ``</s>``, a decoder-only one also has ``<s>`` (= 3) and prepends it.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS + (["<s>"] if decoder_only else [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if decoder_only:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 3)])
        extra = {"bos_token": "<s>"}
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        extra = {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", **extra
    )


@dataclass
class Pair:
    """One tokenized training example: model input (prompt) and target ids (ending in EOS)."""

    task: str
    source: list[int]
    target: list[int]


def encode_pairs(
    task: Mapping[str, Any],
    examples: Sequence[Example],
    tokenizer,
    decoder_only: bool,
    max_input_tokens: int | None = None,
) -> list[Pair]:
    """Tokenize ``examples`` as evaluation does (``gqa_eval.tasks.encode``), with targets.

    Args:
        task: the task config; its ``max_input_tokens`` bounds the input, ``max_new_tokens`` the target.
        examples: the examples.
        tokenizer: the model's tokenizer.
        decoder_only: build the decoder-only prompt instead of the T5 input.
        max_input_tokens: a tighter input bound for quick runs (None: the task's own).

    Returns:
        One ``Pair`` per example; the target is ``references[0]`` plus EOS, cut to ``max_new_tokens``.
    """
    if max_input_tokens is not None:
        task = {**task, "max_input_tokens": min(int(max_input_tokens), task["max_input_tokens"])}
    sources = encode(task, examples, tokenizer, decoder_only)
    limit = task["max_new_tokens"]
    pairs = []
    for ex, source in zip(examples, sources, strict=True):
        target = tokenizer.encode(ex.references[0], add_special_tokens=False)[: limit - 1]
        pairs.append(Pair(task["name"], source, target + [tokenizer.eos_token_id]))
    return pairs


def plan_epoch(
    lengths: Sequence[int], batch_tokens: int, seed: int, epoch: int, pool: int = 2048
) -> list[list[int]]:
    """The batches of one epoch, each at most ``batch_tokens`` tokens with padding (batch x longest).

    A seeded shuffle is cut into pools of ``pool`` examples, each sorted by length and packed greedily
    (so a batch carries little padding, and short examples come many to a batch), then the batches are
    shuffled. The same (seed, epoch) gives the same plan, which is what makes a resumed run see the
    data an uninterrupted run would. An example longer than ``batch_tokens`` gets a batch of its own.
    """
    rng = random.Random(f"{seed}/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        batch: list[int] = []
        for i in sorted(order[start : start + pool], key=lambda i: lengths[i]):
            if batch and (len(batch) + 1) * lengths[i] > batch_tokens:
                batches.append(batch)
                batch = []
            batch.append(i)
        batches.append(batch)
    rng.shuffle(batches)
    return batches


class BatchStream:
    """The batches of consecutive epochs (``plan_epoch``), from global step ``start`` on."""

    def __init__(self, lengths: Sequence[int], batch_tokens: int, seed: int, start: int = 0):
        self.lengths, self.batch_tokens, self.seed = lengths, batch_tokens, seed
        self.epoch, self.index = 0, start
        self.plan = self._plan()
        while self.index >= len(self.plan):  # epochs differ in their number of batches
            self.index -= len(self.plan)
            self.epoch += 1
            self.plan = self._plan()

    def _plan(self) -> list[list[int]]:
        return plan_epoch(self.lengths, self.batch_tokens, self.seed, self.epoch)

    def next(self) -> tuple[int, list[int]]:
        """(epoch, example indices) of the next batch."""
        if self.index >= len(self.plan):
            self.epoch, self.index = self.epoch + 1, 0
            self.plan = self._plan()
        self.index += 1
        return self.epoch, self.plan[self.index - 1]


def collate(pairs: Sequence[Pair], pad_id: int, decoder_only: bool) -> dict[str, torch.Tensor]:
    """Padded model inputs and labels (-100 where no loss is taken).

    Encoder-decoder: ``input_ids`` / ``attention_mask`` from the source, ``labels`` the target (T5 shifts
    it right itself). Decoder-only: prompt + target in one sequence, loss on the target tokens only.
    """
    if decoder_only:
        seqs = [p.source + p.target for p in pairs]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (p, s) in enumerate(zip(pairs, seqs, strict=True)):
            input_ids[i, : len(s)] = torch.tensor(s)
            labels[i, len(p.source) : len(s)] = torch.tensor(p.target)
            mask[i, : len(s)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    width = max(len(p.source) for p in pairs)
    out_width = max(len(p.target) for p in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), out_width), -100, dtype=torch.long)
    for i, p in enumerate(pairs):
        input_ids[i, : len(p.source)] = torch.tensor(p.source)
        mask[i, : len(p.source)] = 1
        labels[i, : len(p.target)] = torch.tensor(p.target)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
