"""Tests for the score stage: each metric equals its reference implementation called directly."""

from __future__ import annotations

import sys

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from gqa_eval import metrics

ROUGE = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

PREDICTIONS = [
    "",
    "The cats were running quickly across the gardens. They stopped! Why? Nobody knows.",
    "Café naïve résumé in Zürich — İstanbul’s “best” façade.",
    "Revenue rose 3.5 million to 12,400 in 2019. Dr. Smith said the U.S. figures were final.",
    "a single line without any sentence end",
    "Sentence one is here.\nSentence two is on its own line.",
    'J. K. Rowling wrote it. "Great," said Mr. Jones. 42 people agreed.',
    "!!! ... ???",
]
REFERENCES = [
    "An empty prediction must score zero.",
    "Cats ran quickly across the garden.\nThey stopped running.",
    "cafe naive resume in zurich, istanbul's best facade",
    "Revenue rose by 3.5 million in 2019. Smith said the figures were final.",
    "A single line with a sentence end.",
    "Sentence two is on its own line.\nSentence one is here.",
    'Rowling wrote it. "Great," said Jones.',
    "Punctuation only.",
]


def direct_rouge(predictions, references, use_stemmer=True, split=False):
    """rouge-score called directly; mean of per-example F x 100 in example order."""
    scorer = rouge_scorer.RougeScorer(ROUGE, use_stemmer=use_stemmer)
    prep = metrics.split_sentences if split else (lambda text: text)
    rows = [
        scorer.score(prep(r), prep(p))
        if isinstance(r, str)
        else scorer.score_multi([prep(x) for x in r], prep(p))
        for p, r in zip(predictions, references, strict=True)
    ]
    return {t: 100.0 * sum(row[t].fmeasure for row in rows) / len(rows) for t in ROUGE}


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_rouge_equals_rouge_score(use_stemmer):
    ours = metrics.score(ROUGE, PREDICTIONS, REFERENCES, use_stemmer=use_stemmer, n_jobs=1)
    split = direct_rouge(PREDICTIONS, REFERENCES, use_stemmer, split=True)
    unsplit = direct_rouge(PREDICTIONS, REFERENCES, use_stemmer, split=False)
    assert ours == split
    # Sentence splitting only turns whitespace into newlines: ROUGE-1/2/L equal those of the raw text.
    assert {t: ours[t] for t in ROUGE[:3]} == {t: unsplit[t] for t in ROUGE[:3]}
    assert all(0.0 < value < 100.0 for value in ours.values())


def test_rouge_single_metric_and_empty_prediction_scores_zero():
    assert metrics.score(["rougeLsum"], ["the cat sat."], ["The cat sat."]) == {"rougeLsum": 100.0}
    assert metrics.score(ROUGE, [""], ["Some reference."]) == dict.fromkeys(ROUGE, 0.0)


def test_rouge_multiple_references_is_score_multi():
    predictions = ["the cat sat on the mat", "Dogs bark loudly. Cats do not."]
    references = [
        ["a cat was on a mat", "the cat sat on the mat today"],
        ["Dogs bark.", "Cats do not bark loudly."],
    ]
    ours = metrics.score(ROUGE, predictions, references)
    assert ours == direct_rouge(predictions, references, split=True)
    assert ours["rouge1"] > metrics.score(["rouge1"], predictions, [r[0] for r in references])["rouge1"]


def test_rouge_parallel_equals_serial(monkeypatch):
    pools = []

    class RecordingPool(metrics.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(metrics, "ProcessPoolExecutor", RecordingPool)
    predictions, references = PREDICTIONS * 3, REFERENCES * 3
    parallel = metrics.score(ROUGE, predictions, references, n_jobs=2)
    assert pools == [(2,)]
    assert parallel == metrics.score(ROUGE, predictions, references, n_jobs=1)
    assert parallel == direct_rouge(predictions, references, split=True)


def test_n_jobs_default_is_serial_for_small_inputs_and_validated():
    assert metrics._n_workers(None, 10) == 1
    assert metrics._n_workers(5, 3) == 3
    with pytest.raises(ValueError, match="n_jobs"):
        metrics.score(["rouge1"], ["a"], ["a"], n_jobs=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? 4 is a digit.", "One.\nTwo!\nThree?\n4 is a digit."),
        ('He said "no." Then left.', 'He said "no."\nThen left.'),
        ("Mr. Smith met Dr. Jones in the U.S. on Jan. 5.", "Mr. Smith met Dr. Jones in the U.S. on Jan. 5."),
        ("J. K. Rowling wrote e.g. this. Next one.", "J. K. Rowling wrote e.g. this.\nNext one."),
        ("pi is 3.14 and e. coli is small. ok", "pi is 3.14 and e. coli is small. ok"),
        (
            "He lives at No. 10 Downing St. He said no. Then see p. 5. Done",
            "He lives at No. 10 Downing St. He said no.\nThen see p. 5.\nDone",
        ),
        ("Wait... What? 'Quoted' start.", "Wait...\nWhat?\n'Quoted' start."),
        ("Already split.\nKeep. As is.", "Already split.\nKeep. As is."),
        ("", ""),
    ],
)
def test_split_sentences(text, expected):
    assert metrics.split_sentences(text) == expected


def test_bleu_equals_sacrebleu_and_signature_reflects_options():
    predictions = ["Das ist ein kleiner Test.", "Wir sehen uns morgen um 10:30 Uhr!", ""]
    references = ["Das ist ein kleiner Test.", "Bis morgen um 10:30 Uhr.", "Leer."]
    scores, settings = metrics.score_with_details(["bleu"], predictions, references)
    direct = BLEU(tokenize="intl", smooth_method="exp", lowercase=False)
    assert scores["bleu"] == direct.corpus_score(predictions, [references]).score
    assert settings["bleu_signature"] == str(direct.get_signature())
    assert settings["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:intl|smooth:exp|version:")

    options = {"bleu_tokenize": "13a", "bleu_smooth": "floor", "bleu_lowercase": True}
    scores, settings = metrics.score_with_details(["bleu"], predictions, references, **options)
    direct = BLEU(tokenize="13a", smooth_method="floor", lowercase=True)
    assert scores["bleu"] == direct.corpus_score(predictions, [references]).score
    assert "case:lc" in settings["bleu_signature"] and "tok:13a" in settings["bleu_signature"]
    assert "smooth:floor" in settings["bleu_signature"]
    assert settings == metrics.describe(["bleu"], n_refs=1, **options)


def test_bleu_multiple_references():
    predictions = ["the quick brown fox jumps over the dog", "a b c d e f g"]
    two = [
        ["the fast brown fox jumps over the dog", "a quick brown fox leaps over the dog"],
        ["a b c d e f", "a b c d"],
    ]
    scores, settings = metrics.score_with_details(["bleu"], predictions, two)
    streams = [[r[0] for r in two], [r[1] for r in two]]
    assert scores["bleu"] == BLEU(tokenize="intl").corpus_score(predictions, streams).score
    assert settings["bleu_signature"].startswith("nrefs:2|")

    # A variable count is padded with None (sacrebleu skips it): a duplicated reference changes nothing,
    # whereas an "" pad would count as a zero-length reference.
    # The short second prediction (2 tokens vs 5) is where an "" pad (0 tokens) would be the closest length.
    predictions = ["the quick brown fox jumps over the dog", "a b"]
    variable = [
        ["the fast brown fox jumps over the dog", "the fast brown fox jumps over the dog"],
        ["a b c d e"],
    ]
    scores, settings = metrics.score_with_details(["bleu"], predictions, variable)
    single = BLEU(tokenize="intl").corpus_score(predictions, [[r[0] for r in variable]]).score
    assert scores["bleu"] == single > 0.0
    assert settings["bleu_signature"].startswith("nrefs:var|")
    assert metrics.describe(["bleu"], n_refs="var") == {"bleu_signature": settings["bleu_signature"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel_Tower!", "eiffel tower"),
        ("An apple a day, the theatre", "apple day theatre"),
        ("‘Rock’n´roll` — “quoted”", "rock n roll — “quoted”"),
        ("  Mount   St.  Helens  ", "mount st helens"),
        ("", ""),
    ],
)
def test_normalize_answer_follows_official_script(text, expected):
    assert metrics.normalize_answer(text) == expected


def test_triviaqa_exact_match_and_f1_hand_worked():
    predictions = ["The Eiffel_Tower!", "President Barack Obama", "", "Paris France"]
    aliases = [["eiffel tower"], ["Obama", "Barack Obama"], ["Anything"], "London"]
    # Per question EM: 1, 0, 0, 0.  F1: 1; max(1/3 & 1 -> 0.5, 2/3 & 1 -> 0.8) = 0.8; 0 (empty); 0.
    scores = metrics.score(["exact_match", "f1"], predictions, aliases)
    assert scores["exact_match"] == 100.0 * 1 / 4
    assert scores["f1"] == pytest.approx(100.0 * (1 + 0.8) / 4)
    # Repeated tokens count once per occurrence (Counter overlap): pred "a b b c", gold "b c c" -> 2 same.
    p, r = 2 / 4, 2 / 3
    assert metrics.score(["f1"], ["x y y z"], ["y z z"]) == {"f1": pytest.approx(100 * 2 * p * r / (p + r))}


def test_score_returns_requested_names_in_order_on_0_100_scale():
    scores = metrics.score(
        ["f1", "bleu", "rouge1", "f1"], ["the cat sat on the mat"], ["the cat sat on the mat"]
    )
    assert list(scores) == ["f1", "bleu", "rouge1"]
    assert scores == {"f1": 100.0, "bleu": pytest.approx(100.0), "rouge1": 100.0}
    assert set(metrics.METRICS) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1"}


def test_describe_records_rouge_settings_only_for_requested_metrics():
    settings = metrics.describe(["rouge1", "rougeLsum"], use_stemmer=False)
    assert set(settings) == {"rouge"}
    assert "rouge-score 0.1.2" in settings["rouge"] and "use_stemmer=False" in settings["rouge"]
    assert "sentence split" in settings["rouge"]
    assert "sentence split" not in metrics.describe(["rouge1"])["rouge"]
    assert set(metrics.describe(["f1", "bleu"])) == {"triviaqa", "bleu_signature"}


def test_unknown_metric_raises_listing_registered_names():
    with pytest.raises(ValueError, match=r"'meteor'.*'bleu'.*'rougeLsum'"):
        metrics.score(["rouge1", "meteor"], ["a"], ["a"])
    with pytest.raises(ValueError, match="non-empty"):
        metrics.score([], ["a"], ["a"])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"3 predictions but 2 references"):
        metrics.score(["rouge1"], ["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="no predictions"):
        metrics.score(["bleu"], [], [])
    with pytest.raises(ValueError, match="example 1"):
        metrics.score(["f1"], ["a", "b"], [["a"], []])
    with pytest.raises(TypeError, match="use_stemer"):
        metrics.score(["rouge1"], ["a"], ["a"], use_stemer=False)
    with pytest.raises(ValueError, match="bleu_tokenize"):
        metrics.score(["bleu"], ["a"], ["a"], bleu_tokenize="nope")


def test_missing_prediction_scores_zero():
    assert metrics.score(["f1", "rouge1"], [None, "a cat"], ["a dog", "a cat"]) == {
        "f1": 50.0,
        "rouge1": 50.0,
    }


@pytest.mark.parametrize(
    ("module", "name", "package"),
    [("sacrebleu.metrics", "bleu", "sacrebleu"), ("rouge_score.rouge_scorer", "rouge1", "rouge-score")],
)
def test_missing_dependency_raises_import_error_with_pip_command(monkeypatch, module, name, package):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=f"pip install {package}"):
        metrics.score([name], ["a b c d"], ["a b c d"])
