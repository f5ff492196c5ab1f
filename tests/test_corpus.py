"""Uptraining corpora: each local file type, a directory, a (monkeypatched, offline) hub dataset, the
error lines, on-the-fly tokenization, and the bundled synthetic corpus."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gqa_eval.training import corpus
from gqa_eval.training.corpus import iter_texts, synthetic_documents, tokenize_stream, write_synthetic_corpus
from gqa_eval.training.objectives import packed_blocks

DOCS = ["The first document.\nIt has two lines.", "A second one.", "And a third, the last."]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_txt_is_one_document_per_blank_line_separated_paragraph(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n" + DOCS[0] + "\n\n\n" + DOCS[1] + "\n  \n" + DOCS[2] + "\n", encoding="utf-8")
    assert list(iter_texts(path)) == DOCS


def test_jsonl_and_json_read_the_named_field(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"text": d, "id": i} for i, d in enumerate(DOCS)])
    path.write_text(path.read_text() + "\n", encoding="utf-8")  # a trailing blank line is fine
    assert list(iter_texts(path)) == DOCS
    other = tmp_path / "c.json"
    other.write_text(json.dumps([{"body": d} for d in DOCS]), encoding="utf-8")
    assert list(iter_texts(other, field="body")) == DOCS


def test_parquet_reads_the_named_column(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"content": DOCS, "n": [1, 2, 3]}), path, row_group_size=2)
    assert list(iter_texts(path, field="content")) == DOCS


def test_directory_reads_its_files_in_sorted_order_and_skips_others(tmp_path):
    (tmp_path / "b").mkdir()
    _jsonl(tmp_path / "b" / "2.jsonl", [{"text": DOCS[2]}])
    (tmp_path / "a.txt").write_text(DOCS[0] + "\n\n" + DOCS[1], encoding="utf-8")
    (tmp_path / "README.md").write_text("not a document", encoding="utf-8")
    assert list(iter_texts(tmp_path)) == DOCS


def test_hub_dataset_is_streamed(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, *, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        return iter([{"text": d, "url": "u"} for d in DOCS])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert list(iter_texts("allenai/c4", name="en", split="validation")) == DOCS
    assert list(iter_texts("hub:HuggingFaceFW/fineweb-edu")) == DOCS
    assert calls == [
        ("allenai/c4", "en", "validation", True),
        ("HuggingFaceFW/fineweb-edu", None, "train", True),
    ]
    with pytest.raises(
        ValueError, match=r"allenai/c4: record 0 has no text field 'content' \(it has: text, url\)"
    ):
        list(iter_texts("allenai/c4", field="content"))


def test_bad_sources_raise_one_line_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("went to the hub"))
    for missing in (tmp_path / "nope.jsonl", "corpus.txt", "./local_dir", "a/b/c"):
        with pytest.raises(ValueError, match=r"does not exist; give a \.txt/\.jsonl/\.json/\.parquet file"):
            list(iter_texts(missing))
    (tmp_path / "c.csv").write_text("text\nx\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.csv: unknown file type '\.csv'"):
        list(iter_texts(tmp_path / "c.csv"))
    path = _jsonl(tmp_path / "c.jsonl", [{"text": "ok"}, {"body": "no text"}])
    with pytest.raises(
        ValueError, match=r"record 1 has no text field 'text' \(it has: body\); set the corpus field"
    ):
        list(iter_texts(path))
    pq.write_table(pa.table({"body": DOCS}), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"no column 'text' \(it has: body\)"):
        list(iter_texts(tmp_path / "c.parquet"))
    (tmp_path / "c.json").write_text(json.dumps({"text": "x"}), encoding="utf-8")
    with pytest.raises(ValueError, match="must be a list of objects"):
        list(iter_texts(tmp_path / "c.json"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no .txt/.jsonl/.json/.parquet files"):
        list(iter_texts(tmp_path / "empty"))


def test_tokenize_stream_matches_the_tokenizer_text_by_text(tokenizer):
    texts = [d for d in DOCS for _ in range(2)] + ["tail"]  # 7 texts: batches of 3, 3, 1
    got = list(tokenize_stream(iter(texts), tokenizer, batch_size=3))
    assert got == [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert tokenizer.eos_token_id not in got[0]  # packed_blocks adds the separators


def test_bundled_corpus_regenerates_byte_identical(tmp_path):
    written = write_synthetic_corpus(tmp_path)
    assert written.read_bytes() == (corpus.BUNDLED_CORPUS / corpus.SYNTHETIC_FILE).read_bytes()
    texts = list(iter_texts("evals/corpus"))  # relative to the project, whatever the cwd
    assert texts == [r["text"] for r in synthetic_documents()]
    assert len(set(texts)) == len(texts)


def test_bundled_corpus_packs_into_full_blocks(tokenizer):
    blocks = list(
        packed_blocks(tokenize_stream(iter_texts("evals/corpus"), tokenizer), 128, tokenizer.eos_token_id)
    )
    assert len(blocks) > 100 and {len(b) for b in blocks} == {128}
