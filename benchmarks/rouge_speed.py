"""Benchmark: ROUGE with gqa_eval.metrics vs single-process plain rouge-score, on identical inputs.

Synthetic CNN/DailyMail-like data (references: 3-4 newline-separated highlight sentences; predictions:
one line of 3-4 sentences, edited copies of the reference sentences, as an abstractive model would
write), words drawn Zipf-like from a made-up vocabulary with English suffixes so that the Porter
stemmer does real work. rougeLsum's sentence split (Punkt, as nltk.sent_tokenize) is done for the
baseline before its clock starts and inside gqa_eval's timed call; its serial cost is printed too.
Asserts the scores are identical, then prints the times and the speed-up.

    python benchmarks/rouge_speed.py --n 2000 --jobs 2 --repeat 3
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import time

from rouge_score import rouge_scorer

from gqa_eval import metrics

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
SUFFIXES = ["", "", "", "s", "ed", "ing", "ly", "ation", "ment", "ness", "er", "ies", "ful", "ize"]
FUNCTION_WORDS = (
    "the a of to in and for on that with was is by at as from has have said it he she they".split()
)


def make_vocabulary(rng: random.Random, size: int) -> list[str]:
    """Made-up content words: 2-3 syllables plus a suffix, some capitalised (names, places)."""
    onsets, vowels, codas = (
        "b c d f g h j k l m n p r s t v w z br st tr pl gr ch sh".split(),
        "aeiou",
        "nrstlmk",
    )
    words = set()
    while len(words) < size:
        stem = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))
        word = stem + rng.choice(["", rng.choice(codas)]) + rng.choice(SUFFIXES)
        words.add(word.capitalize() if rng.random() < 0.15 else word)
    return sorted(words)


def make_sentence(rng: random.Random, vocab: list[str], cum_weights: list[float]) -> list[str]:
    n_words = rng.randint(10, 24)
    words = rng.choices(vocab, cum_weights=cum_weights, k=n_words)
    for i in range(n_words):
        roll = rng.random()
        if roll < 0.35:
            words[i] = rng.choice(FUNCTION_WORDS)
        elif roll < 0.38:
            words[i] = str(rng.randint(2, 2024))
    words[0] = words[0].capitalize()
    return words


def make_data(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = make_vocabulary(rng, 30_000)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocab))))
    rng.shuffle(vocab)
    predictions, references = [], []
    for _ in range(n):
        ref_sents = [make_sentence(rng, vocab, cum_weights) for _ in range(rng.randint(3, 4))]
        pred_sents = []
        for sent in ref_sents[: rng.randint(3, 4)]:
            edited = []
            replacements = rng.choices(vocab, cum_weights=cum_weights, k=len(sent))
            for word, replacement in zip(sent, replacements, strict=True):
                roll = rng.random()
                if roll < 0.15:
                    continue  # dropped
                edited.append(replacement if roll < 0.30 else word)
                if rng.random() < 0.05:
                    edited.append(rng.choice(FUNCTION_WORDS))
            pred_sents.append(" ".join(edited or sent) + ".")
        references.append("\n".join(" ".join(s) + "." for s in ref_sents))
        predictions.append(" ".join(pred_sents))
    return predictions, references


def plain_rouge(predictions: list[str], references: list[str], use_stemmer: bool) -> dict[str, float]:
    """What a user would write with rouge-score alone: one process, the default tokenizer."""
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=use_stemmer)
    per_example = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {t: 100.0 * sum(s[t].fmeasure for s in per_example) / len(per_example) for t in TYPES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of examples")
    parser.add_argument("--jobs", type=int, default=None, help="gqa_eval n_jobs (default: automatic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of this many timings")
    parser.add_argument("--no-stemmer", action="store_true", help="use_stemmer=False for both")
    args = parser.parse_args()
    use_stemmer = not args.no_stemmer

    predictions, references = make_data(args.n, args.seed)
    words = sum(len(p.split()) + len(r.split()) for p, r in zip(predictions, references, strict=True))
    print(f"{args.n} examples, {words / args.n:.0f} words per (prediction, reference) pair")
    # The baseline gets sentence-split predictions and references up front (rougeLsum's lines, as a
    # user of rouge-score would split them with nltk.sent_tokenize), so its time is rouge-score's
    # alone; gqa_eval.metrics splits inside its timed call.
    start = time.perf_counter()
    split_predictions = [metrics.split_sentences(p) for p in predictions]
    split_references = [metrics.split_sentences(r) for r in references]
    t_split = time.perf_counter() - start

    t_plain = t_ours = float("inf")
    for _ in range(args.repeat):  # best of k: robust to other processes competing for the cores
        start = time.perf_counter()
        plain = plain_rouge(split_predictions, split_references, use_stemmer)
        t_plain = min(t_plain, time.perf_counter() - start)

        metrics._rouge_scorer.cache_clear()  # start from a cold stem cache every time, as a fresh run does
        start = time.perf_counter()
        ours = metrics.score(TYPES, predictions, references, use_stemmer=use_stemmer, n_jobs=args.jobs)
        t_ours = min(t_ours, time.perf_counter() - start)

    assert ours == plain, f"scores differ:\n  rouge-score {plain}\n  gqa_eval    {ours}"
    print("scores identical:", {t: round(v, 4) for t, v in ours.items()})
    print(f"best of {args.repeat}, {os.cpu_count()} CPUs")
    print(f"  Punkt sentence split, 1 process: {t_split:6.2f} s (not in the rouge-score time)")
    print(f"  rouge-score, 1 process:         {t_plain:7.2f} s")
    print(f"  gqa_eval.metrics, n_jobs={str(args.jobs):5s}: {t_ours:7.2f} s")
    print(f"  speed-up:                       {t_plain / t_ours:7.2f}x")


if __name__ == "__main__":
    main()
