"""Task data: the bundled copies load through the same readers as the hub path, fields map as the
paper's tasks need, inputs are truncated by tokens, and bad data fails naming task, source and field."""

from __future__ import annotations

import json
import time

import datasets
import pytest
from conftest import task_cfg

from gqa_eval import tasks
from gqa_eval.paths import PROJECT_ROOT

TASKS = ["cnn_dm", "arxiv", "pubmed", "mediasum", "multi_news", "wmt_en_de", "trivia_qa"]


@pytest.mark.parametrize("name", TASKS)
def test_bundled_sets_load(name):
    examples = tasks.load_examples(task_cfg(name))
    assert len(examples) >= 50
    assert len({ex.id for ex in examples}) == len(examples)
    for ex in examples:
        assert ex.references and all(isinstance(r, str) and r.strip() for r in ex.references)
        assert all(isinstance(v, str) and v for v in ex.fields.values())


def test_mediasum_turns_become_speaker_lines():
    record = json.loads((PROJECT_ROOT / "evals/data/mediasum/validation.jsonl").read_text().splitlines()[0])
    ex = tasks.load_examples(task_cfg("mediasum"), limit=1)[0]
    lines = ex.fields["document"].split("\n")
    assert len(lines) == len(record["utt"])
    assert lines[0] == f"{record['speaker'][0]}: {record['utt'][0]}"
    assert ex.references == [record["summary"]]


def test_multi_news_raw_format(tmp_path):
    (tmp_path / "val.src.cleaned").write_text(
        "Doc one line. NEWLINE_CHAR NEWLINE_CHAR Para two. ||||| Doc two.\nSecond example. ||||| Other.\n",
        encoding="utf-8",
    )
    (tmp_path / "val.tgt").write_text("– A summary.\n– Another one.\n", encoding="utf-8")
    examples = tasks.load_examples(task_cfg("multi_news", **{"data.path": str(tmp_path)}))
    assert [ex.references for ex in examples] == [["A summary."], ["Another one."]]
    assert examples[0].fields["document"] == "Doc one line.\n\nPara two. ||||| Doc two."
    assert "NEWLINE_CHAR" not in examples[0].fields["document"]


def test_multi_news_mismatched_files_fail(tmp_path):
    (tmp_path / "val.src.cleaned").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "val.tgt").write_text("– a\n", encoding="utf-8")
    with pytest.raises(tasks.TaskDataError, match="2 lines but .* has 1"):
        tasks.load_examples(task_cfg("multi_news", **{"data.path": str(tmp_path)}))


def test_wmt_and_trivia_fields():
    wmt = tasks.load_examples(task_cfg("wmt_en_de"), limit=3)
    raw = [json.loads(line) for line in (PROJECT_ROOT / "evals/data/wmt_en_de/validation.jsonl").open()][:3]
    assert [ex.fields["source"] for ex in wmt] == [r["translation"]["en"] for r in raw]
    assert [ex.references for ex in wmt] == [[r["translation"]["de"]] for r in raw]
    trivia = tasks.load_examples(task_cfg("trivia_qa"), limit=5)
    raw = [json.loads(line) for line in (PROJECT_ROOT / "evals/data/trivia_qa/validation.jsonl").open()][:5]
    for ex, r in zip(trivia, raw, strict=True):
        assert ex.id == r["question_id"]
        assert ex.references[0] == r["answer"]["value"]
        assert set(r["answer"]["normalized_aliases"]) <= set(ex.references)
        assert r["answer"]["value"] in ex.fields["context"]


@pytest.mark.parametrize("suffix", ["parquet", "csv", "json"])
def test_local_copy_in_other_formats(tmp_path, suffix):
    bundled = datasets.load_dataset(
        "json", data_files=str(PROJECT_ROOT / "evals/data/cnn_dm/validation.jsonl")
    )
    path = tmp_path / f"validation.{suffix}"
    getattr(bundled["train"], f"to_{suffix}")(str(path))
    got = tasks.load_examples(task_cfg("cnn_dm", **{"data.path": str(tmp_path)}), limit=5)
    want = tasks.load_examples(task_cfg("cnn_dm"), limit=5)
    assert [(e.id, e.fields, e.references) for e in got] == [(e.id, e.fields, e.references) for e in want]


@pytest.fixture
def hub_has_it(monkeypatch):
    """The hub, asked before datasets fetches (gqa_eval.hub.ask), answers that it has the dataset; the
    questions are recorded."""
    import gqa_eval.hub

    asked = []
    monkeypatch.setattr(
        gqa_eval.hub, "ask", lambda repo, revision, repo_type: asked.append((repo, repo_type))
    )
    return asked


def test_hub_source_goes_through_load_dataset(monkeypatch, hub_has_it):
    """The hub path asks datasets for the configured id/config/revision; served here from the local copy."""
    calls = []
    local = datasets.load_dataset(
        "json", data_files=str(PROJECT_ROOT / "evals/data/mediasum/validation.jsonl"), split="train"
    )

    def fake_load_dataset(path, name=None, split=None, revision=None, **kwargs):
        calls.append((path, name, split, revision))
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = tasks.load_examples(task_cfg("mediasum", **{"data.source": "hub"}), limit=2)
    assert calls == [("nbroad/mediasum", None, "validation", "refs/convert/parquet")]
    assert hub_has_it == [("nbroad/mediasum", "dataset")]  # asked once, before datasets fetched
    assert len(examples) == 2


def test_multi_news_hub_reads_raw_files(monkeypatch, hub_has_it):
    import huggingface_hub

    asked = []

    def fake_download(repo_id, filename, repo_type=None, revision=None):
        asked.append((repo_id, filename, repo_type))
        return str(PROJECT_ROOT / "evals/data/multi_news" / filename.removeprefix("data/"))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    hub = tasks.load_examples(task_cfg("multi_news", **{"data.source": "hub"}), limit=3)
    local = tasks.load_examples(task_cfg("multi_news"), limit=3)
    assert asked == [
        ("alexfabbri/multi_news", f"data/val.{ext}", "dataset") for ext in ("src.cleaned", "tgt")
    ]
    assert [e.fields for e in hub] == [e.fields for e in local]


def test_missing_field_names_task_source_and_field(tmp_path):
    (tmp_path / "validation.jsonl").write_text(json.dumps({"article": "a", "id": "1"}) + "\n")
    with pytest.raises(
        tasks.TaskDataError, match=r"task cnn_dm: field 'highlights' is missing in .*validation"
    ):
        tasks.load_examples(task_cfg("cnn_dm", **{"data.path": str(tmp_path)}))


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(tasks.TaskDataError, match="does not exist"):
        tasks.load_examples(task_cfg("cnn_dm", **{"data.path": str(tmp_path / "nope")}))
    with pytest.raises(ValueError, match="limit must be a positive"):
        tasks.load_examples(task_cfg("cnn_dm"), limit=0)
    (tmp_path / "validation.jsonl").write_bytes(
        '{"article": "caf\xe9", "highlights": "x", "id": "1"}\n'.encode("latin-1")
    )
    with pytest.raises(tasks.TaskDataError, match="cnn_dm"):
        tasks.load_examples(task_cfg("cnn_dm", **{"data.path": str(tmp_path)}))
    with pytest.raises(tasks.TaskDataError, match="unknown data source 'ftp'"):
        tasks.load_examples(task_cfg("cnn_dm", **{"data.source": "ftp"}))


def test_encode_exact_when_it_fits_and_truncates_document_by_tokens(t5_tokenizer):
    task = task_cfg("cnn_dm", max_input_tokens=40)
    ex = tasks.Example(id="x", fields={"document": "Short text."}, references=["r"])
    assert tasks.encode(task, [ex], t5_tokenizer, False)[0] == t5_tokenizer.encode("summarize: Short text.")
    long = tasks.Example(
        id="y", fields={"document": " ".join(f"word{i}" for i in range(200))}, references=["r"]
    )
    ids = tasks.encode(task, [long], t5_tokenizer, False)[0]
    assert len(ids) <= 40 and ids[-1] == t5_tokenizer.eos_token_id
    text = t5_tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("summarize: word0 word1") and "word199" not in text
    # decoder-only: the text after the document survives truncation
    prompt = tasks.encode(task, [long], t5_tokenizer, True)[0]
    assert len(prompt) <= 40 and t5_tokenizer.decode(prompt, skip_special_tokens=True).endswith("Summary:")


def _never_fetched(*args, **kwargs):
    raise AssertionError("datasets was asked to fetch from a hub that cannot serve the dataset")


def test_an_unreachable_hub_source_is_one_line_at_once(hub, monkeypatch):
    """task.data.source=hub with the hub unreachable and nothing cached: one line naming the key and the
    fix, after one refused connection (datasets alone retries for ~30 s)."""
    monkeypatch.setattr(datasets, "load_dataset", _never_fetched)
    start = time.perf_counter()
    with pytest.raises(tasks.TaskDataError) as err:
        tasks.load_examples(task_cfg("cnn_dm", **{"data.source": "hub"}), limit=2)
    assert time.perf_counter() - start < 2
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "task cnn_dm: task.data.source=hub cannot reach the Hugging Face hub (http://127."
    )
    assert (
        "to fetch abisee/cnn_dailymail (offline?): use the bundled copy (task.data.source=local)" in message
    )


def test_an_offline_hub_source_names_the_cache(hub, monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", _never_fetched)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(
        tasks.TaskDataError, match=rf"the hub is offline \(HF_HUB_OFFLINE\) and its cache \({hub}\)"
    ):
        tasks.load_examples(task_cfg("trivia_qa", **{"data.source": "hub"}), limit=2)


@pytest.mark.parametrize("offline", [False, True])
def test_a_cached_hub_source_loads_unreachable_or_offline(hub, monkeypatch, offline):
    """Where the hub cache holds a snapshot of the dataset, datasets is left to load it from there."""
    snapshot = hub / "datasets--abisee--cnn_dailymail" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (hub / "datasets--abisee--cnn_dailymail" / "refs").mkdir()
    (hub / "datasets--abisee--cnn_dailymail" / "refs" / "main").write_text("a" * 40)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = tasks.load_records(task_cfg("cnn_dm"))
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: local)
    assert len(tasks.load_examples(task_cfg("cnn_dm", **{"data.source": "hub"}), limit=2)) == 2


def test_an_unreachable_hub_source_is_refused_before_a_run_directory(app, hub, tmp_path):
    code, _ = app("task=cnn_dm", "task.data.source=hub", "limit=2", f"output_root={tmp_path / 'out'}")
    assert isinstance(code, str) and code.startswith(
        "gqa-eval: error: task cnn_dm: task.data.source=hub cannot reach the Hugging Face hub"
    )
    assert not (tmp_path / "out").exists()
