"""The bundled evaluation-set generator (gqa_eval.synthetic, written out by evals/build_data.py):
determinism, split disjointness, the hub schemas, and that the committed files under evals/data equal a
fresh regeneration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import gqa_eval.synthetic as gen

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "evals" / "data"

TASKS = gen.TASKS
N = gen.DEFAULT_N


@pytest.fixture(scope="module")
def validation():
    return {task: gen.generate(task, "validation", N) for task in TASKS}


def _words(text: str) -> int:
    return len(text.split())


def test_deterministic_and_prefix_stable(validation):
    for task in TASKS:
        again = gen.generate(task, "validation", N)
        assert again == validation[task], task
        assert gen.generate(task, "validation", 5) == validation[task][:5], task
        assert gen.generate(task, "train", 4, seed=7) == gen.generate(task, "train", 4, seed=7), task
        assert gen.generate(task, "train", 4, seed=7) != gen.generate(task, "train", 4, seed=8), task


def test_split_keys_fall_in_their_split(validation):
    for task in TASKS:
        keys = [gen.split_key(task, ex) for ex in validation[task]]
        assert all(gen.split_of(task, k) == "validation" for k in keys), task
        if task != "trivia_qa":  # trivia questions are unique per (subject, relation), not per subject
            assert len(set(keys)) == N, task
    questions = [ex["question"] for ex in validation["trivia_qa"]]
    assert len(set(questions)) == N


@pytest.mark.parametrize("task", TASKS)
def test_train_never_emits_validation_examples(task, validation):
    n_train = 100 if task in ("arxiv", "pubmed", "mediasum", "multi_news") else 300
    train = gen.generate(task, "train", n_train, seed=12345)
    test = gen.generate(task, "test", 20)
    val_keys = {gen.split_key(task, ex) for ex in validation[task]}
    val_text = {json.dumps(ex, sort_keys=True) for ex in validation[task]}
    for other, name in ((train, "train"), (test, "test")):
        assert all(gen.split_of(task, gen.split_key(task, ex)) == name for ex in other)
        assert not val_keys & {gen.split_key(task, ex) for ex in other}
        assert not val_text & {json.dumps(ex, sort_keys=True) for ex in other}
    if task == "trivia_qa":
        # subjects are partitioned: no training page is about, or even names, a validation subject
        subjects = {ex["entity_pages"]["title"][0] for ex in validation[task]}
        subjects |= {t for ex in validation[task] for t in ex["entity_pages"]["title"]}
        for ex in train:
            assert not subjects & set(ex["entity_pages"]["title"])
            text = " ".join(ex["entity_pages"]["wiki_context"])
            assert not [s for s in subjects if s in text]


def test_bad_arguments():
    with pytest.raises(ValueError):
        gen.generate("squad", "validation", 1)
    with pytest.raises(ValueError):
        gen.generate("cnn_dm", "dev", 1)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def test_cnn_dm_schema(validation):
    for ex in validation["cnn_dm"]:
        assert list(ex) == ["article", "highlights", "id"]
        assert all(isinstance(v, str) for v in ex.values())
        assert re.fullmatch(r"[0-9a-f]{40}", ex["id"])
        lines = ex["highlights"].split("\n")
        assert 2 <= len(lines) <= 4 and all(line.endswith(" .") for line in lines)
        assert 150 <= _words(ex["article"]) <= 350
        assert 20 <= _words(ex["highlights"]) <= 80
    assert len({ex["id"] for ex in validation["cnn_dm"]}) == N


@pytest.mark.parametrize("task", ["arxiv", "pubmed"])
def test_scientific_schema(task, validation):
    for ex in validation[task]:
        assert list(ex) == ["article", "abstract"]
        assert isinstance(ex["article"], str) and isinstance(ex["abstract"], str)
        assert "\n" in ex["article"]  # paragraphs on their own lines, as ccdv's version
        assert 250 <= _words(ex["article"]) <= 600
        assert 20 <= _words(ex["abstract"]) <= 80
    if task == "pubmed":
        assert all(ex["abstract"].startswith("background : ") for ex in validation[task])


def test_mediasum_schema(validation):
    keys = ["id", "program", "date", "url", "title", "summary", "utt", "speaker"]
    for ex in validation["mediasum"]:
        assert list(ex) == keys
        assert all(isinstance(ex[k], str) for k in keys[:6])
        assert _is_str_list(ex["utt"]) and _is_str_list(ex["speaker"])
        assert len(ex["utt"]) == len(ex["speaker"]) >= 4
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ex["date"])
        assert 250 <= sum(_words(u) for u in ex["utt"]) <= 600
        assert 20 <= _words(ex["summary"]) <= 80
    assert len({ex["id"] for ex in validation["mediasum"]}) == N


def test_multi_news_schema_and_raw_files(validation, tmp_path):
    examples = validation["multi_news"]
    for ex in examples:
        assert list(ex) == ["document", "summary"]
        docs = ex["document"].split(" ||||| ")
        assert 2 <= len(docs) <= 4
        assert "NEWLINE_CHAR" not in ex["document"] and not ex["summary"].startswith("–")
        assert 250 <= _words(ex["document"].replace("|||||", "")) <= 600
        assert 20 <= _words(ex["summary"]) <= 80
    paths = gen.write_split("multi_news", "validation", examples, tmp_path)
    assert [p.name for p in paths] == ["val.src.cleaned", "val.tgt"]
    src = paths[0].read_text(encoding="utf-8").split("\n")
    tgt = paths[1].read_text(encoding="utf-8").split("\n")
    assert src[-1] == "" and tgt[-1] == ""  # newline-terminated, one example a line
    src, tgt = src[:-1], tgt[:-1]
    assert len(src) == len(tgt) == N
    assert all(" ||||| " in line and "NEWLINE_CHAR" in line for line in src)
    assert all(line.startswith("– ") for line in tgt)
    for line, ex in zip(src, examples, strict=True):
        # the hub loader's restoration (NEWLINE_CHAR -> newline) gives the document back, up to spaces
        restored = line.strip().replace("NEWLINE_CHAR", "\n")
        assert restored.split() == ex["document"].split()
    assert [line[2:] for line in tgt] == [ex["summary"] for ex in examples]


def test_wmt_schema(validation):
    for ex in validation["wmt_en_de"]:
        assert list(ex) == ["translation"] and list(ex["translation"]) == ["de", "en"]
        de, en = ex["translation"]["de"], ex["translation"]["en"]
        assert isinstance(de, str) and isinstance(en, str) and de != en
        assert 10 <= _words(en) <= 30
        assert en[0].isupper() and de[0].isupper() and en.endswith(".") and de.endswith(".")


def test_wmt_german_word_order():
    finite = {"hat", "ist"}
    for _forms, v3, _pp, sep, *_ in gen.TRANSITIVE + gen.MOTION:
        finite |= {v3, sep + v3}
    pairs = [
        (ex["translation"]["en"], ex["translation"]["de"]) for ex in gen.generate("wmt_en_de", "train", 400)
    ]
    seen = set()
    for en, de in pairs:
        if ", because " in en:  # verb-final subordinate clause
            seen.add("weil")
            assert ", weil " in de and de[:-1].split()[-1] in finite, de
        if " that " in en:
            seen.add("dass")
            assert ", dass " in de and de[:-1].split()[-1] in finite, de
        if en.startswith("When "):  # verb-final "wenn" clause, then the main clause starts with its verb
            seen.add("wenn")
            clause, main = de.split(", ", 1)
            assert clause.startswith("Wenn ") and clause.split()[-1] in finite and main.split()[0] in finite
        if en.startswith("On Monday, "):  # verb second after a fronted adverbial
            seen.add("fronted")
            assert de.split()[2] in finite, de
    assert seen == {"weil", "dass", "wenn", "fronted"}


def test_trivia_schema(validation):
    for ex in validation["trivia_qa"]:
        assert list(ex) == [
            "question", "question_id", "question_source", "entity_pages", "search_results", "answer",
        ]  # fmt: skip
        assert re.fullmatch(r"tc_\d+", ex["question_id"])
        pages = ex["entity_pages"]
        assert list(pages) == ["doc_source", "filename", "title", "wiki_context"]
        assert all(_is_str_list(v) for v in pages.values())
        assert len({len(v) for v in pages.values()}) == 1 and len(pages["title"]) >= 1
        assert list(ex["search_results"]) == [
            "description",
            "filename",
            "rank",
            "title",
            "url",
            "search_context",
        ]
        assert all(v == [] for v in ex["search_results"].values())
        answer = ex["answer"]
        assert list(answer) == [
            "aliases", "normalized_aliases", "matched_wiki_entity_name",
            "normalized_matched_wiki_entity_name", "normalized_value", "type", "value",
        ]  # fmt: skip
        assert _is_str_list(answer["aliases"]) and 1 <= len(answer["aliases"]) <= 3
        assert answer["value"] in answer["aliases"]
        assert answer["type"] in ("WikipediaEntity", "FreeForm")
        assert answer["normalized_value"] == gen.normalize_answer(answer["value"])
        assert answer["normalized_aliases"] == list(
            dict.fromkeys(gen.normalize_answer(a) for a in answer["aliases"])
        )
        assert answer["normalized_matched_wiki_entity_name"] == gen.normalize_answer(
            answer["matched_wiki_entity_name"]
        )
        # the evidence about the question's subject contains the answer
        assert answer["value"] in pages["wiki_context"][0]
        assert pages["title"][0] in ex["question"]


def test_normalize_answer():
    assert gen.normalize_answer("The  River_Amsel!") == "river amsel"
    assert gen.normalize_answer("M. Toman") == "m toman"
    assert gen.normalize_answer("an ‘odd’ one") == "odd one"


def test_committed_files_equal_a_fresh_regeneration(tmp_path):
    assert gen.main(["--out", str(tmp_path)]) == 0
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DATA) for p in DATA.rglob("*") if p.is_file() and p.name != "README.md")
    assert fresh == committed
    for rel in fresh:
        assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), f"evals/data/{rel} drifted"
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024
