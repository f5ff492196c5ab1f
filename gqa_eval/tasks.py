"""Task-data stage: load a task's split, map its fields, and build token-truncated model inputs.

A task is data (``conf/task/*.yaml``): where its examples come from (a local copy in the hub schema, by
default the bundled one in ``evals/data``, or the hub dataset itself), which fields hold the document,
the reference(s) and the id, the T5 input template and the decoder-only prompt, and the paper's input
and output lengths. Hub and local copies go through the same readers, so what is tested on the bundled
copies is what runs on the real data.
"""

from __future__ import annotations

import codecs
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gqa_eval.paths import resolve

DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
MULTI_NEWS_DOC_SEP = "|||||"


class TaskDataError(ValueError):
    """A task's data cannot be loaded or lacks what its config names."""


@dataclass
class Example:
    """One evaluation example: its id, the template fields and its reference answer(s)."""

    id: str
    fields: dict[str, str]
    references: list[str]


def _get(record: Mapping[str, Any], dotted: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``; raises KeyError naming the missing part."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(part)
        value = value[part]
    return value


def _text(value: Any, joiner: str = "\n") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return joiner.join(str(v) for v in value)
    return "" if value is None else str(value)


def dialogue(utterances: Sequence[str], speakers: Sequence[str]) -> str:
    """MediaSum's ``utt``/``speaker`` lists as one transcript, a ``SPEAKER: utterance`` line per turn."""
    return "\n".join(f"{s}: {u}" for s, u in zip(speakers, utterances, strict=True))


def read_multi_news(src_path: Path, tgt_path: Path) -> dict[str, list[str]]:
    """Multi-News raw files (``{split}.src.cleaned`` / ``.tgt``): one example a line, documents joined by
    ``|||||``, newlines written as ``NEWLINE_CHAR``; summaries start with ``– ``."""
    src = src_path.read_text(encoding="utf-8").splitlines()
    tgt = tgt_path.read_text(encoding="utf-8").splitlines()
    if len(src) != len(tgt):
        raise TaskDataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: the files must pair up"
        )

    def clean(line: str) -> str:
        return re.sub(r"[ \t]*\n[ \t]*", "\n", line.replace("NEWLINE_CHAR", "\n")).strip()

    documents = [
        f" {MULTI_NEWS_DOC_SEP} ".join(clean(doc) for doc in line.split(MULTI_NEWS_DOC_SEP)) for line in src
    ]
    summaries = [clean(line).removeprefix("– ").strip() for line in tgt]
    return {"document": documents, "summary": summaries}


def _check_utf8(task: Mapping[str, Any], paths: Sequence[str | Path]) -> None:
    """Fail early, naming the file and byte, on a text data file that is not UTF-8."""
    for path in paths:
        if Path(path).suffix == ".parquet":
            continue
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    raise TaskDataError(
                        f"task {task['name']}: data file {path} is not UTF-8 (byte {offset + err.start}: "
                        f"{err.reason}); re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8"
                    ) from None
                offset += len(chunk)
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as err:
                raise TaskDataError(
                    f"task {task['name']}: data file {path} ends mid-character ({err.reason})"
                ) from None


def _local_files(task: Mapping[str, Any], root: Path, split: str) -> tuple[str, list[str]]:
    """The ``datasets`` builder and files of ``split`` in a local file or directory."""
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.rglob(f"{split}*") if p.suffix in DATA_SUFFIXES)
        if not files:
            files = sorted(p for p in root.rglob(f"*{split}*") if p.suffix in DATA_SUFFIXES)
    if not files:
        raise TaskDataError(
            f"task {task['name']}: no {split!r} data files ({', '.join(DATA_SUFFIXES)}) under {root}; "
            "name a file with task.data.path or put files named like '{split}.jsonl' in the directory"
        )
    builders = {DATA_SUFFIXES[p.suffix] for p in files}
    if len(builders) > 1:
        raise TaskDataError(f"task {task['name']}: mixed file types under {root}: {sorted(builders)}")
    return builders.pop(), [str(p) for p in files]


def _check_not_empty(task: Mapping[str, Any], paths: Sequence[str | Path]) -> None:
    """Fail, naming the file, on a data file with nothing in it (datasets says only ``StopIteration``)."""
    for path in paths:
        p = Path(path)
        if p.suffix != ".parquet" and not p.read_bytes().strip():
            raise TaskDataError(
                f"task {task['name']}: data file {path} is empty; point task.data.path at the split's records"
            )


def _diagnose_json(task: Mapping[str, Any], paths: Sequence[str | Path]) -> str | None:
    """After ``datasets`` failed on JSON files: the first file and line that is not valid JSON, if any.

    A file is read as one JSON document if it parses as one, else as JSON lines (one record a line).
    """
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        try:
            json.loads(text)
            continue
        except json.JSONDecodeError as whole:
            document_error = whole
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as line_error:
                err = line_error
                if n == 1 and Path(path).suffix == ".json":  # not JSON lines: report the document's error
                    err, n = document_error, document_error.lineno
                return (
                    f"task {task['name']}: data file {path} line {n} is not valid JSON ({err.msg} at column "
                    f"{err.colno}); fix or remove that line (one JSON record a line)"
                )
    return None


def load_records(task: Mapping[str, Any], split: str | None = None):
    """Load the task's split as a ``datasets.Dataset`` (hub or local, as ``task.data.source`` says)."""
    import datasets

    data = task["data"]
    split = split or task["split"]
    source = data["source"]
    fmt = data.get("format", "records")
    try:
        if source == "local":
            root = resolve(data["path"])
            if not root.exists():
                raise TaskDataError(
                    f"task {task['name']}: data path {data['path']} does not exist; "
                    "set task.data.path to a file or directory in the hub schema"
                )
            if fmt == "multi_news_raw":
                stem = data.get("split_files", {}).get(split, split)
                pair = [root / f"{stem}.src.cleaned", root / f"{stem}.tgt"]
                _check_utf8(task, pair)
                return datasets.Dataset.from_dict(read_multi_news(*pair))
            builder, files = _local_files(task, root, split)
            _check_utf8(task, files)
            _check_not_empty(task, files)
            try:
                return datasets.load_dataset(builder, data_files={split: files}, split=split)
            except Exception:
                problem = _diagnose_json(task, files) if builder == "json" else None
                if problem:
                    raise TaskDataError(problem) from None
                raise
        if source == "hub":
            hub = data["hub"]
            check_hub_source(task)
            if fmt == "multi_news_raw":
                from huggingface_hub import hf_hub_download

                stem = data.get("split_files", {}).get(split, split)
                paths = [
                    hf_hub_download(
                        hub["path"], f"data/{stem}.{ext}", repo_type="dataset", revision=hub.get("revision")
                    )
                    for ext in ("src.cleaned", "tgt")
                ]
                return datasets.Dataset.from_dict(read_multi_news(Path(paths[0]), Path(paths[1])))
            return datasets.load_dataset(
                hub["path"], hub.get("name"), split=split, revision=hub.get("revision")
            )
    except TaskDataError:
        raise
    except UnicodeDecodeError as err:
        raise TaskDataError(
            f"task {task['name']}: a data file is not UTF-8 ({err}); re-encode it as UTF-8"
        ) from err
    except Exception as err:  # datasets and the hub raise many types; say which task and source failed
        raise TaskDataError(
            f"task {task['name']}: cannot load split {split!r} from {source} source "
            f"({_describe_source(data)}): {type(err).__name__}: {err}"
        ) from err
    raise TaskDataError(f"task {task['name']}: unknown data source {source!r}; use 'local' or 'hub'")


def check_hub_source(task: Mapping[str, Any]) -> None:
    """Ask the hub once whether ``task.data.source=hub`` can be served, before datasets fetches it.

    datasets retries an unreachable hub for ~30 s and then fails naming neither the setting nor the fix;
    here the hub is asked once (no retries, the hub's metadata timeout) and, where it cannot answer, the
    hub cache is checked. Does nothing for a local source, or when the hub has the dataset or the cache
    holds it (datasets then loads it from the cache).

    Raises:
        TaskDataError: in one line naming ``task.data.source`` and what to set instead.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    from gqa_eval.hub import ask, cached, hub_offline

    data = task["data"]
    if data.get("source") != "hub":
        return
    repo, revision = data["hub"]["path"], data["hub"].get("revision")
    at = f" (revision {revision})" if revision else ""
    where = f"task {task['name']}: task.data.source=hub"
    local = (
        "use the bundled copy (task.data.source=local), or a local copy in the hub schema "
        "(task.data.source=local task.data.path=DIR)"
    )
    if hub_offline("DATASETS"):
        if cached(repo, revision, "dataset"):
            return
        raise TaskDataError(
            f"{where}, but the hub is offline (HF_HUB_OFFLINE) and its cache ({constants.HF_HUB_CACHE}) does "
            f"not hold the dataset {repo}{at}: {local}, or fetch it once with the hub reachable"
        )
    err = ask(repo, revision, "dataset")
    if err is None:
        return
    if isinstance(err, RevisionNotFoundError):
        raise TaskDataError(
            f"{where}: the hub dataset {repo} has no revision {revision!r}; set task.data.hub.revision to a "
            "branch, tag or commit it has"
        )
    if isinstance(err, GatedRepoError):  # a subclass of RepositoryNotFoundError: access is refused
        raise TaskDataError(
            f"{where}: the hub dataset {repo} is gated: accept its terms on the hub and log in "
            f"(hf auth login or HF_TOKEN), or {local}"
        )
    if isinstance(err, RepositoryNotFoundError):
        raise TaskDataError(
            f"{where}: no hub dataset {repo} (or it is private: log in with hf auth login or HF_TOKEN); set "
            f"task.data.hub.path to one that exists, or {local}"
        )
    if cached(repo, revision, "dataset"):
        return  # the hub cannot answer: datasets falls back to the cached copy
    raise TaskDataError(
        f"{where} cannot reach the Hugging Face hub ({constants.ENDPOINT}: {type(err).__name__}) to fetch "
        f"{repo}{at} (offline?): {local}, or HF_HUB_OFFLINE=1 with a populated hub cache"
    )


def _describe_source(data: Mapping[str, Any]) -> str:
    if data["source"] == "hub":
        hub = data["hub"]
        return f"{hub['path']}" + (f", config {hub['name']}" if hub.get("name") else "")
    return str(data.get("path"))


def load_examples(task: Mapping[str, Any], limit: int | None = None) -> list[Example]:
    """Load and map the task's examples; fails before any model is loaded if a field is missing.

    Args:
        task: the task config (``conf/task/*.yaml``).
        limit: keep the first ``limit`` examples (None = all).

    Returns:
        The examples, in dataset order.
    """
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of examples or null for all, got {limit}")
    records = load_records(task)
    if len(records) == 0:
        raise TaskDataError(
            f"task {task['name']}: split {task['split']!r} of {_describe_source(task['data'])} is empty"
        )
    if limit is not None:
        records = records.select(range(min(limit, len(records))))
    fields: Mapping[str, Any] = task["fields"]
    examples = []
    for i, record in enumerate(records):
        try:
            examples.append(_map_record(task, fields, record, i))
        except KeyError as err:
            raise TaskDataError(
                f"task {task['name']}: field {err.args[0]!r} is missing in {_describe_source(task['data'])} "
                f"(split {task['split']}); the records have fields {sorted(record)}. "
                "Fix task.fields or point task.data at a copy in the hub schema"
            ) from None
    return examples


def parse_shard(value: Any) -> tuple[int, int] | None:
    """``shard=K/N`` as ``(K, N)``: part K, counted from 0, of N (None = the whole task).

    Raises:
        ValueError: in one line naming the problem and the fix, for anything but ``K/N`` with
            ``0 <= K < N`` (``3/2``, ``0/0``, ``a/b``, a bare number).
    """
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"shard must be K/N, part K (counted from 0) of N, got shard={value!r}; set shard=K/N "
            "(shard=0/4 ... shard=3/4 split a task in four) or shard=null for the whole task"
        )
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1:
        raise ValueError(f"shard={value}: N, the number of parts, must be at least 1; set shard=K/N, N >= 1")
    if k >= n:
        raise ValueError(
            f"shard={value}: K must be less than N (K counts from 0: the parts of {n} are 0/{n} to "
            f"{n - 1}/{n}); set shard={min(k, n - 1)}/{n}, or shard={k}/{k + 1} for {k + 1} parts"
        )
    return k, n


def shard_text(shard: tuple[int, int] | None) -> str | None:
    """``(K, N)`` as ``"K/N"`` (None stays None): how result.json and the summary write a shard."""
    return None if shard is None else f"{shard[0]}/{shard[1]}"


def shard_positions(n_examples: int, shard: tuple[int, int] | None) -> list[int]:
    """The indices, in the whole task's example list, of shard ``(K, N)``'s examples: K, K+N, K+2N, ..."""
    return list(range(n_examples)) if shard is None else list(range(shard[0], n_examples, shard[1]))


def shard_dir_tag(value: Any) -> str:
    """The run directory name's suffix for ``shard`` (conf/config.yaml): ``""`` unsharded, ``_shard0of4``
    for ``0/4``. A malformed value gets a tag with path separators removed, so that Hydra can make the
    directory and the run then refuses the value in one line."""
    if value is None:
        return ""
    try:
        k, n = parse_shard(value)  # type: ignore[misc]
    except ValueError:
        return "_shard-" + re.sub(r"[^0-9A-Za-z]+", "-", str(value)).strip("-")
    return f"_shard{k}of{n}"


def _map_record(
    task: Mapping[str, Any], fields: Mapping[str, Any], record: Mapping[str, Any], i: int
) -> Example:
    mapped: dict[str, str] = {}
    for name, spec in fields.get("inputs", {}).items():
        if name == "dialogue":
            mapped["document"] = dialogue(_get(record, spec["utterances"]), _get(record, spec["speakers"]))
        else:
            mapped[name] = _text(_get(record, spec), joiner=task.get("join_lists_with", "\n"))
    references: list[str] = []
    specs = fields["references"]
    for spec in [specs] if isinstance(specs, str) else specs:
        value = _get(record, spec)
        for ref in [value] if isinstance(value, str) else value:
            if ref not in references:
                references.append(ref)
    id_field = fields.get("id")
    ex_id = str(_get(record, id_field)) if id_field else f"{task['name']}-{task['split']}-{i}"
    return Example(id=ex_id, fields=mapped, references=references)


def _render(tokenizer, template: str, fields: Mapping[str, str], chat_template: bool) -> list[int]:
    """Token ids of the filled template: as one text, or as the user turn of the tokenizer's chat
    template followed by the assistant's generation prompt (the template adds its own special tokens)."""
    text = template.format(**fields)
    if not chat_template:
        return tokenizer.encode(text)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer.encode(prompt, add_special_tokens=False)


def encode(
    task: Mapping[str, Any],
    examples: Sequence[Example],
    tokenizer,
    decoder_only: bool,
    chat_template: bool = False,
) -> list[list[int]]:
    """Token ids of each example's model input, at most ``task.max_input_tokens`` long.

    The template (T5 prefix, or the decoder-only prompt) is filled with the example's fields and
    tokenized as one text (with ``chat_template``, as the user turn of the tokenizer's chat template), so
    an input that fits is exactly what the template says. One that does not fit has only the field named
    by ``task.truncate`` cut, by tokens, keeping its start: the instruction and any text after the
    document (``Summary:``, the chat template's assistant prompt) survive truncation.
    """
    template = task["prompt_template"] if decoder_only else task["input_template"]
    field = task["truncate"]
    if "{" + field + "}" not in template:
        raise TaskDataError(f"task {task['name']}: template {template!r} has no {{{field}}} to truncate")
    limit = task["max_input_tokens"]
    out = []
    for ex in examples:
        ids = _render(tokenizer, template, ex.fields, chat_template)
        if len(ids) > limit:
            body = tokenizer.encode(ex.fields[field], add_special_tokens=False)
            keep = len(body) - (len(ids) - limit)
            while len(ids) > limit:  # re-tokenizing at the cut can add a token or two: shrink until it fits
                if keep <= 0:
                    raise TaskDataError(
                        f"task {task['name']}: max_input_tokens={limit} leaves no room for the {field} "
                        "after the template; raise task.max_input_tokens"
                    )
                cut = tokenizer.decode(body[:keep], skip_special_tokens=True)
                ids = _render(tokenizer, template, {**ex.fields, field: cut}, chat_template)
                keep -= max(1, len(ids) - limit)
        out.append(ids)
    return out


# --- How a base checkpoint reads a task (conf/base/*.yaml: input_template, max_input_tokens, languages) ---

RAW = "raw"


def input_fields(task: Mapping[str, Any]) -> list[str]:
    """The template fields a task's examples fill (MediaSum's ``dialogue`` fills ``{document}``)."""
    return ["document" if name == "dialogue" else name for name in task["fields"].get("inputs", {})]


def task_for_base(task: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """``task`` as the base checkpoint reads it: its ``base.input_template`` and ``base.max_input_tokens``.

    ``base.input_template`` (absent or null: the task's own templates, T5's ``summarize:`` prefix for an
    encoder-decoder, the instruction prompt for a decoder-only model):

    - ``raw``: only the task's input field, nothing added (checkpoints fine-tuned on the task itself:
      BART, Pegasus, Marian read the bare article or source sentence). Refused for a task with more
      than one input field (TriviaQA's question and context), which a template has to join.
    - any other string: a template over the task's input fields (``">>de<< {source}"``), used in place
      of both of the task's templates, so it is the base's whether it is an encoder-decoder or not.

    ``base.max_input_tokens`` (absent or null: no cap) caps the task's: the longest input the checkpoint's
    position table takes (BART, Pegasus and mBART: 1024, Marian: 512; a longer input is an IndexError).

    Raises:
        TaskDataError: in one line naming the key and the fix, for a value that cannot work with the task.
    """
    out = dict(task)
    template = base.get("input_template")
    fields = input_fields(task)
    if template == RAW:
        if len(fields) != 1:
            raise TaskDataError(
                f"base.input_template=raw writes a task's one input field as it is, but task {task['name']} "
                f"has {len(fields)} ({', '.join(fields)}); set base.input_template to a template that joins "
                f"them (e.g. {' '.join('{' + f + '}' for f in fields)!r}) or null for the task's own"
            )
        template = "{" + fields[0] + "}"
    if template is not None:
        if not isinstance(template, str) or not template.strip():
            raise TaskDataError(
                f"base.input_template must be null, raw or a template string, got {template!r}"
            )
        try:
            named = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as err:
            raise TaskDataError(f"base.input_template={template!r} is not a valid template: {err}") from None
        unknown = sorted(named - set(fields))
        if unknown or task["truncate"] not in named:
            raise TaskDataError(
                f"base.input_template={template!r} must fill task {task['name']}'s input fields "
                f"({', '.join('{' + f + '}' for f in fields)}), including {{{task['truncate']}}}, the one "
                f"truncated to fit" + (f"; it names {', '.join(unknown)}" if unknown else "")
            )
        out["input_template"] = out["prompt_template"] = template
    cap = base.get("max_input_tokens")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise TaskDataError(
                f"base.max_input_tokens must be a whole number of tokens >= 1 or null, got {cap!r}"
            )
        out["max_input_tokens"] = min(int(task["max_input_tokens"]), cap)
    return out


def set_languages(tokenizer, base: Mapping[str, Any]) -> int | None:
    """Set up a multilingual checkpoint's language codes; the id of the token generation must start with.

    ``base.src_lang`` (mBART-50, M2M-100, NLLB: ``en_XX``, ``eng_Latn``) becomes the tokenizer's source
    language, so every encoded input carries its code; ``base.tgt_lang`` (``de_DE``) is the target
    language, whose token these models must be forced to generate first (``forced_bos_token_id``).
    Both null (the default): nothing to set, None returned; a single-pair checkpoint such as
    Helsinki-NLP/opus-mt-en-de needs no code (a multi-target Marian model takes ``>>de<<`` in the text:
    write it with ``base.input_template``).

    Raises:
        ValueError: in one line, for a language the tokenizer has no token for, or a source language
            set on a tokenizer that does not write language codes.
    """
    src, tgt = base.get("src_lang"), base.get("tgt_lang")
    name = type(tokenizer).__name__
    vocab = tokenizer.get_vocab()
    for key, code in (("src_lang", src), ("tgt_lang", tgt)):
        if code is not None and code not in vocab:
            raise ValueError(
                f"base.{key}={code!r}: the tokenizer ({name}) has no such token; give one of its language "
                "codes (mBART-50: en_XX, de_DE, ...) or null"
            )
    if src is not None:
        if not isinstance(getattr(type(tokenizer), "src_lang", None), property):
            raise ValueError(
                f"base.src_lang={src!r}: the tokenizer ({name}) does not write a source language code; set "
                "base.src_lang=null (or write the code in base.input_template)"
            )
        tokenizer.src_lang = src
        if vocab[src] not in tokenizer.encode("a"):
            raise ValueError(f"base.src_lang={src!r}: the tokenizer ({name}) does not add its code")
    if tgt is None:
        return None
    if hasattr(tokenizer, "tgt_lang"):
        tokenizer.tgt_lang = tgt
    return vocab[tgt]
