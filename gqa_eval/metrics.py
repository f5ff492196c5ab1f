"""Score stage: turn predictions and references into the paper's metrics, each on a 0-100 scale.

Metrics are code registered by name in `METRICS` (task YAML files list them): ROUGE-1/2/L/Lsum from
google-research rouge-score, corpus BLEU from sacrebleu (its signature kept for the result file), and
TriviaQA exact match / F1 with the official evaluation script's normalisation, each the max over the
answer aliases. `score` runs them; `describe` and `score_with_details` return the settings needed to
reproduce the numbers. Nothing here downloads anything: the rougeLsum sentence splitter is a regex,
not nltk's punkt model.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import multiprocessing
import os
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

DEFAULT_OPTIONS: dict[str, object] = {
    "use_stemmer": True,  # ROUGE: Porter stemmer (T5's own evaluation used none; record it).
    "bleu_tokenize": "intl",  # BLEU: as T5 reported WMT.
    "bleu_smooth": "exp",
    "bleu_lowercase": False,
    "n_jobs": None,  # ROUGE worker processes; None picks one (serial below _PARALLEL_MIN_EXAMPLES).
}
_PARALLEL_MIN_EXAMPLES = 1000  # below this, starting worker processes costs more than it saves
_STEM_CACHE_SIZE = 1 << 18

# Sentence splitting for rougeLsum. A boundary is . ! or ? (plus closing quotes/brackets) followed by
# whitespace and an uppercase letter, a digit or an opening quote; no boundary after a title, a month,
# an initial ("J. K. Rowling") or a dotted acronym ("U.S.", "e.g.").
_BOUNDARY_RE = re.compile(r"([.!?][.!?]*[\"'”’»)\]]*)(\s+)")
_OPEN_QUOTES = frozenset("\"'“‘«")
_DOTTED_RE = re.compile(r"[A-Z]|(?:[A-Za-z]\.)+[A-Za-z]")
_NUMBERING = frozenset({"no", "nos", "vol", "fig", "p", "pp"})  # abbreviations before a digit only
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft gen col lt sgt capt cmdr adm gov sen rep rev hon pres vs approx dept"
    " jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
SENTENCE_SPLIT = (
    "text with a newline kept as is; otherwise split at . ! ? (+ closing quotes) followed by whitespace "
    "and an uppercase letter/digit/opening quote, not after titles, months, initials or dotted acronyms"
)

# TriviaQA official normalisation (mandarjoshi90/triviaqa, evaluation/triviaqa_evaluation.py).
_TRIVIAQA_PUNCT = frozenset(string.punctuation + "‘’´`")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")

ROUGE_NAMES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _require(module: str, package: str, what: str):
    """Import `module` or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{what} needs the '{package}' package: pip install {package}") from err


def split_sentences(text: str) -> str:
    """Put each sentence of `text` on its own line, for rougeLsum's summary-level LCS.

    Text that already contains a newline is returned unchanged (its lines are taken as sentences, as
    rouge-score does). Otherwise only the whitespace at a sentence boundary is replaced by a newline,
    so the tokens that ROUGE-1/2/L see are unchanged.

    Args:
        text: A prediction or reference.

    Returns:
        The text with sentences separated by newlines.
    """
    if "\n" in text:
        return text
    parts, start = [], 0
    for match in _BOUNDARY_RE.finditer(text):
        follower = text[match.end() : match.end() + 1]
        if not (follower.isupper() or follower.isdigit() or follower in _OPEN_QUOTES):
            continue
        if match.group(1) == ".":
            before = text[start : match.start()].rsplit(None, 1)
            word = before[-1].lstrip("\"'“‘«([") if before else ""
            if word.lower() in _ABBREVIATIONS or _DOTTED_RE.fullmatch(word):
                continue
            if word.lower() in _NUMBERING and follower.isdigit():  # "No. 10", "p. 5"
                continue
        parts.append(text[start : match.end(1)])
        start = match.end(2)
    parts.append(text[start:])
    return "\n".join(parts)


class _CachedStemmer:
    """nltk's Porter stemmer with `stem` memoised (rouge-score only ever calls `stemmer.stem(word)`)."""

    def __init__(self):
        porter = importlib.import_module("nltk.stem.porter")
        self.stem = functools.lru_cache(maxsize=_STEM_CACHE_SIZE)(porter.PorterStemmer().stem)


class _CachedTokenizer:
    """rouge-score's default tokenizer with a memoised Porter stemmer.

    Stemming is a pure function of the word and dominates rouge-score's run time; the tokenization
    itself is rouge-score's own `tokenize.tokenize`, so tokens are identical to
    `RougeScorer(types, use_stemmer=...)`.
    """

    def __init__(self, use_stemmer: bool):
        self._tokenize = importlib.import_module("rouge_score.tokenize").tokenize
        self._stemmer = _CachedStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        return self._tokenize(text, self._stemmer)


@functools.lru_cache(maxsize=8)
def _rouge_scorer(types: tuple[str, ...], use_stemmer: bool):
    """One RougeScorer per (types, stemmer) per process, so the stem cache outlives a call."""
    rouge_scorer = importlib.import_module("rouge_score.rouge_scorer")
    return rouge_scorer.RougeScorer(list(types), tokenizer=_CachedTokenizer(use_stemmer))


def _rouge_chunk(
    types: tuple[str, ...], use_stemmer: bool, pairs: list[tuple[str, list[str]]]
) -> list[tuple[float, ...]]:
    """Per-example F-measures (in `types` order) for (prediction, references) pairs."""
    scorer = _rouge_scorer(types, use_stemmer)
    out = []
    for prediction, refs in pairs:
        scores = scorer.score(refs[0], prediction) if len(refs) == 1 else scorer.score_multi(refs, prediction)
        out.append(tuple(scores[t].fmeasure for t in types))
    return out


def _n_workers(n_jobs: int | None, n_examples: int) -> int:
    if n_jobs is None:
        if n_examples < _PARALLEL_MIN_EXAMPLES:
            return 1
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(cpus, n_examples // (_PARALLEL_MIN_EXAMPLES // 2)))
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int or None, got {n_jobs!r}")
    return min(n_jobs, n_examples)


def _rouge(names: list[str], predictions: list[str], references: list[list[str]], **options) -> dict:
    """ROUGE F-measures x 100 averaged over examples (plain mean, not rouge-score's bootstrap mid)."""
    _require("rouge_score.rouge_scorer", "rouge-score", "ROUGE")
    types = tuple(name for name in ROUGE_NAMES if name in names)
    if "rougeLsum" in types:
        # Only whitespace becomes "\n", so rouge1/2/L tokens are the same as on the unsplit text.
        predictions = [split_sentences(p) for p in predictions]
        references = [[split_sentences(r) for r in refs] for refs in references]
    pairs = list(zip(predictions, references, strict=True))
    workers = _n_workers(options["n_jobs"], len(pairs))
    if workers == 1:
        per_example = _rouge_chunk(types, options["use_stemmer"], pairs)
    else:
        size = -(-len(pairs) // (4 * workers))  # ~4 chunks per worker balances uneven lengths
        chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        # forkserver/spawn, not fork: the caller may hold CUDA and threads that a fork would copy.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            job = functools.partial(_rouge_chunk, types, options["use_stemmer"])
            per_example = [row for rows in pool.map(job, chunks) for row in rows]
    return {t: _mean_x100([row[i] for row in per_example]) for i, t in enumerate(types)}


def _bleu_metric(options: dict):
    sacrebleu_metrics = _require("sacrebleu.metrics", "sacrebleu", "BLEU")
    bleu_cls = sacrebleu_metrics.BLEU
    if options["bleu_tokenize"] not in bleu_cls.TOKENIZERS:
        raise ValueError(f"bleu_tokenize {options['bleu_tokenize']!r} not in {sorted(bleu_cls.TOKENIZERS)}")
    if options["bleu_smooth"] not in bleu_cls.SMOOTH_DEFAULTS:
        raise ValueError(f"bleu_smooth {options['bleu_smooth']!r} not in {sorted(bleu_cls.SMOOTH_DEFAULTS)}")
    tokenize, smooth, lowercase = options["bleu_tokenize"], options["bleu_smooth"], options["bleu_lowercase"]
    return bleu_cls(tokenize=tokenize, smooth_method=smooth, lowercase=bool(lowercase))


def _bleu(names: list[str], predictions: list[str], references: list[list[str]], **options) -> dict:
    """sacrebleu corpus BLEU; several references per example become reference streams."""
    bleu = _bleu_metric(options)
    # sacrebleu wants equal-length streams and drops None entries per segment (an "" would count as
    # an empty reference and change the brevity penalty), so shorter reference lists are padded with None.
    streams = [
        [refs[i] if i < len(refs) else None for refs in references] for i in range(max(map(len, references)))
    ]
    return {"bleu": bleu.corpus_score(predictions, streams).score}


def normalize_answer(text: str) -> str:
    """The official TriviaQA answer normalisation.

    Replace "_" with a space, lower-case, replace punctuation (string.punctuation and ‘’´`) with
    spaces, remove the articles a/an/the, collapse whitespace.

    Args:
        text: A predicted answer or an alias.

    Returns:
        The normalised answer.
    """
    text = text.replace("_", " ").lower()
    text = "".join(" " if ch in _TRIVIAQA_PUNCT else ch for ch in text)
    return " ".join(_ARTICLES_RE.sub(" ", text).split())


def _token_f1(prediction: list[str], reference: list[str]) -> float:
    same = sum((Counter(prediction) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def _triviaqa(names: list[str], predictions: list[str], references: list[list[str]], **options) -> dict:
    """TriviaQA EM and token F1, each the max over the aliases, averaged over all questions."""
    exact, f1 = [], []
    for prediction, aliases in zip(predictions, references, strict=True):
        pred = normalize_answer(prediction)
        gold = [normalize_answer(a) for a in aliases]
        exact.append(max(float(pred == g) for g in gold))
        f1.append(max(_token_f1(pred.split(), g.split()) for g in gold))
    result = {"exact_match": _mean_x100(exact), "f1": _mean_x100(f1)}
    return {name: result[name] for name in names}


def _mean_x100(values: list[float]) -> float:
    # Summed in example order, as the official TriviaQA script does; identical serial or parallel.
    return 100.0 * sum(values) / len(values)


# name -> fn(names, predictions, references as lists of strings, **options) -> {name: score}. Names that
# share a function (the ROUGE family, EM/F1) are computed together, in one pass.
METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "rouge1": _rouge,
    "rouge2": _rouge,
    "rougeL": _rouge,
    "rougeLsum": _rouge,
    "bleu": _bleu,
    "exact_match": _triviaqa,
    "f1": _triviaqa,
}


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty list of metric names from {sorted(METRICS)}")
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; registered: {sorted(METRICS)}")
    return list(dict.fromkeys(names))


def _check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise TypeError(f"unknown metric option(s) {unknown}; known: {sorted(DEFAULT_OPTIONS)}")
    return {**DEFAULT_OPTIONS, **options}


def describe(names: list[str], *, n_refs: int | str = 1, **options) -> dict[str, str]:
    """The settings needed to reproduce the scores of `names`.

    Prefer `score_with_details`, which derives `n_refs` from the references actually scored; use this
    when the data is not at hand.

    Args:
        names: Metric names from `METRICS`.
        n_refs: References per example, or "var" when the count varies (sacrebleu's nrefs field).
        **options: As for `score`.

    Returns:
        "bleu_signature" (sacrebleu's signature string), "rouge" and "triviaqa", each only when one of
        its metrics is in `names`.
    """
    names, opts = _check_names(names), _check_options(options)
    settings = {}
    if any(name in ROUGE_NAMES for name in names):
        _require("rouge_score.rouge_scorer", "rouge-score", "ROUGE")
        settings["rouge"] = (
            f"rouge-score {importlib.metadata.version('rouge-score')}, use_stemmer={opts['use_stemmer']}, "
            "F-measure x100, plain mean over examples, max over references (score_multi)"
        )
        if "rougeLsum" in names:
            settings["rouge"] += f", rougeLsum sentence split: {SENTENCE_SPLIT}"
    if "bleu" in names:
        bleu = _bleu_metric(opts)
        bleu.num_refs = -1 if n_refs == "var" else int(n_refs)  # sacrebleu sets this when scoring
        settings["bleu_signature"] = str(bleu.get_signature())
    if "exact_match" in names or "f1" in names:
        settings["triviaqa"] = (
            "official triviaqa_evaluation.py normalisation, max over aliases, mean over all questions x100"
        )
    return settings


def score_with_details(
    names: list[str], predictions: list[str], references: list[str] | list[list[str]], **options
) -> tuple[dict[str, float], dict[str, str]]:
    """`score` and `describe` together, with sacrebleu's nrefs taken from `references`.

    Args:
        names: Metric names from `METRICS`.
        predictions: One string per example; None counts as a missing (empty) prediction.
        references: One string per example, or a list of strings per example.
        **options: As for `score`.

    Returns:
        (scores, settings) as returned by `score` and `describe`.
    """
    names, opts = _check_names(names), _check_options(options)
    if not predictions:
        raise ValueError("no predictions to score")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    predictions = ["" if p is None else p for p in predictions]
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, example in enumerate(refs):
        if not example or not all(isinstance(r, str) for r in example):
            raise ValueError(f"example {i}: references must be a string or a non-empty list of strings")
    if not all(isinstance(p, str) for p in predictions):
        raise TypeError("predictions must be strings (or None for a missing prediction)")
    scores: dict[str, float] = {}
    for fn in dict.fromkeys(METRICS[name] for name in names):
        scores.update(fn([n for n in names if METRICS[n] is fn], predictions, refs, **opts))
    counts = {len(r) for r in refs}
    settings = describe(names, n_refs=counts.pop() if len(counts) == 1 else "var", **options)
    return {name: scores[name] for name in names}, settings


def score(
    names: list[str], predictions: list[str], references: list[str] | list[list[str]], **options
) -> dict[str, float]:
    """Score predictions against references with the named metrics, each on a 0-100 scale.

    Args:
        names: Metric names from `METRICS` ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu",
            "exact_match", "f1").
        predictions: One string per example; None counts as a missing (empty) prediction.
        references: One string per example, or a list of strings per example (several references:
            ROUGE takes the max over them, BLEU uses them as reference streams, TriviaQA as aliases).
        **options: use_stemmer (True), bleu_tokenize ("intl"), bleu_smooth ("exp"), bleu_lowercase
            (False), n_jobs (None: serial for fewer than 1000 examples, else one ROUGE process per CPU).

    Returns:
        {name: score} in the order of `names`.

    Raises:
        ValueError: Unknown metric, empty input, or predictions and references of different lengths.
        ImportError: A metric's package is not installed.
    """
    return score_with_details(names, predictions, references, **options)[0]
