"""Uptraining corpora: read the documents of a corpus the user names and tokenize them on the fly.

A corpus is a local file (``.txt``, ``.jsonl``, ``.json``, ``.parquet``), a directory of such files, or a
Hugging Face hub dataset id (``allenai/c4`` with name ``en``, ``HuggingFaceFW/fineweb-edu``), streamed so
that a web-scale corpus is never downloaded whole. :func:`iter_texts` yields one string per document,
:func:`tokenize_stream` their token ids, ready for :func:`gqa_eval.training.objectives.packed_blocks`.
:func:`write_synthetic_corpus` regenerates the small bundled corpus under ``evals/corpus``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from gqa_eval.paths import PROJECT_ROOT, is_hub_id, resolve

FILE_TYPES = (".txt", ".jsonl", ".json", ".parquet")
BUNDLED_CORPUS = PROJECT_ROOT / "evals" / "corpus"
#: Suffixes that make a missing source a missing *file*, not a hub id (hub ids may hold dots: Qwen2.5)
_FILE_LIKE = (*FILE_TYPES, ".csv", ".tsv", ".gz", ".zst", ".arrow", ".md", ".html", ".xml")
#: What the bundled corpus holds: (task, documents) drawn from the synthetic generator's *train* split,
#: whose examples never share a key with the bundled validation sets (gqa_eval.synthetic), so uptraining
#: on it does not leak the evaluation sets.
SYNTHETIC_CORPUS = (("cnn_dm", 32), ("arxiv", 32), ("pubmed", 32))
SYNTHETIC_FILE = "synthetic_train.jsonl"
_FORMS = "a .txt/.jsonl/.json/.parquet file, a directory of them, or a hub dataset id such as allenai/c4"


def iter_texts(
    source: str | Path, field: str = "text", name: str | None = None, split: str = "train"
) -> Iterator[str]:
    """The documents of ``source``, one string each, in a fixed order.

    * ``.txt``: one document per paragraph; paragraphs are separated by blank lines (a file with one
      document per line therefore needs a blank line between lines, or use ``.jsonl``).
    * ``.jsonl``: one JSON object per line; ``.json``: a list of objects. The document is ``field``.
    * ``.parquet``: the ``field`` column.
    * a directory: every file of those types below it, in sorted path order; other files (a README)
      are skipped.
    * a string of the hub's id form (``owner/name``) that is no existing path and has no file suffix:
      a hub dataset, read with ``datasets.load_dataset(source, name, split=split, streaming=True)``;
      a ``hub:`` prefix forces this.

    A relative path is looked up in the working directory, then in the project (``evals/corpus``).

    Raises ``ValueError`` (one line, naming the fix) for a missing path, an unknown file type or a record
    without ``field``.
    """
    text = str(source)
    if text.startswith("hub:"):
        yield from _hub_texts(text.removeprefix("hub:"), field, name, split)
        return
    path = resolve(text)
    if path.is_dir():
        yield from _dir_texts(path, field)
    elif path.is_file():
        yield from _file_texts(path, field)
    elif is_hub_id(text) and Path(text).suffix.lower() not in _FILE_LIKE:
        yield from _hub_texts(text, field, name, split)
    else:
        raise ValueError(f"corpus {text!r} does not exist; give {_FORMS}")


def _file_texts(path: Path, field: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        yield from _paragraphs(path)
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as lines:
            records = (json.loads(line) for line in lines if line.strip())
            yield from _fields(records, field, path)
    elif suffix == ".json":
        records = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise ValueError(
                f"corpus {path.name}: a .json corpus must be a list of objects; use .jsonl otherwise"
            )
        yield from _fields(records, field, path)
    elif suffix == ".parquet":
        yield from _parquet_texts(path, field)
    else:
        raise ValueError(f"corpus {path.name}: unknown file type {path.suffix or '(none)'!r}; give {_FORMS}")


def _paragraphs(path: Path) -> Iterator[str]:
    """Blank-line-separated paragraphs, read line by line so a large file is never held whole."""
    lines: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line.rstrip("\n"))
            elif lines:
                yield "\n".join(lines).strip()
                lines = []
    if lines:
        yield "\n".join(lines).strip()


def _fields(records: Iterable[Any], field: str, where: Path | str) -> Iterator[str]:
    """The string ``field`` of each record; a missing or non-string one raises, naming the fields present."""
    name = where.name if isinstance(where, Path) else where
    for i, record in enumerate(records):
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            present = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"corpus {name}: record {i} has no text field {field!r} (it has: {present}); "
                f"set the corpus field to the one holding the text"
            )
        yield value


def _parquet_texts(path: Path, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    if field not in columns:
        raise ValueError(
            f"corpus {path.name}: no column {field!r} (it has: {', '.join(columns)}); "
            f"set the corpus field to the one holding the text"
        )
    for batch in parquet.iter_batches(columns=[field]):
        yield from _fields(({field: v} for v in batch.column(0).to_pylist()), field, path)


def _dir_texts(folder: Path, field: str) -> Iterator[str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FILE_TYPES)
    if not files:
        raise ValueError(
            f"corpus directory {folder.name!r} has no {'/'.join(FILE_TYPES)} files; give {_FORMS}"
        )
    for path in files:
        yield from _file_texts(path, field)


def _hub_texts(dataset_id: str, field: str, name: str | None, split: str) -> Iterator[str]:
    """Stream a hub dataset (no full download): ``datasets.load_dataset(..., streaming=True)``."""
    import datasets

    stream = datasets.load_dataset(dataset_id, name, split=split, streaming=True)
    yield from _fields(stream, field, dataset_id)


def tokenize_stream(texts: Iterable[str], tokenizer: Any, batch_size: int = 64) -> Iterator[list[int]]:
    """Token ids of each text, without special tokens (``packed_blocks`` adds the EOS between
    documents), tokenized ``batch_size`` texts at a time as they are read."""
    texts = iter(texts)
    while chunk := list(islice(texts, batch_size)):
        yield from tokenizer(chunk, add_special_tokens=False)["input_ids"]


def synthetic_documents() -> list[dict[str, str]]:
    """The bundled corpus's records: the articles of :data:`SYNTHETIC_CORPUS`, deterministic."""
    from gqa_eval.synthetic import generate

    return [
        {"text": example["article"], "source": f"synthetic/{task}"}
        for task, n in SYNTHETIC_CORPUS
        for example in generate(task, "train", n)
    ]


def write_synthetic_corpus(out: Path = BUNDLED_CORPUS) -> Path:
    """Write the bundled corpus to ``out/synthetic_train.jsonl`` (byte-identical on every run)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SYNTHETIC_FILE
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in synthetic_documents())
    path.write_text(lines, encoding="utf-8", newline="\n")
    return path
