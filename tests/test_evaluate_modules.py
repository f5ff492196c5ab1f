"""gqa-eval's metrics as 🤗 evaluate modules (gqa_eval/metric_modules): each loads offline from the installed
package and returns exactly `gqa_eval.metrics.score` on the same strings, alone, in evaluate.combine, fed by
add/add_batch, and with each option. The comparison with the hub's own "rouge" and "sacrebleu" modules
runs only where huggingface.co is reachable.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import evaluate
import pytest
from omegaconf import OmegaConf

from gqa_eval import metric_modules, metrics

ROUGE = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"

# Several sentences (rougeLsum splits them), words the Porter stemmer conflates, a missing prediction,
# and references of 1, 2 and 3 strings.
SUMMARIES = [
    "The cats were running quickly across the gardens. They stopped! Why? Nobody knows.",
    "Revenue rose 3.5 million to 12,400 in 2019. Dr. Smith said the U.S. figures were final.",
    None,
    "the dog barked loudly while the cat sat on the mat",
    'J. K. Rowling wrote it. "Great," said Mr. Jones. 42 people agreed.',
]
SUMMARY_REFS = [
    ["Cats ran quickly across the garden. They stopped running.", "A cat runs in gardens."],
    ["Revenue rose by 3.5 million in 2019. Smith said the figures were final."],
    ["An empty prediction scores zero."],
    ["The cat sat on the mat. The dog barked.", "A dog barks.", "Cats sit on mats while dogs bark loudly."],
    ["Rowling wrote it, and Mr. Jones said it was great. Forty-two people agreed."],
]

# German with punctuation and digits that tokenize="intl" and "13a" split differently, capitals that
# lowercase=True folds, and references of 1, 2 and 3 strings (sacrebleu reference streams padded with None).
TRANSLATIONS = [
    "Der Hund bellte laut, während die Katze auf der Matte saß.",
    "Die Einnahmen stiegen 2019 um 3,5 Millionen – sagte Dr. Schmidt.",
    "„Großartig“, sagte Herr Jones; 42 Leute stimmten zu.",
    "DAS WETTER IST HEUTE SCHÖN.",
]
TRANSLATION_REFS = [
    [
        "Der Hund bellte laut, als die Katze auf der Matte saß.",
        "Der Hund bellte, die Katze saß auf der Matte.",
    ],
    ["Die Einnahmen stiegen 2019 um 3,5 Millionen, sagte Dr. Schmidt."],
    [
        "„Großartig“, sagte Herr Jones. 42 Leute stimmten zu.",
        "Herr Jones sagte: „Großartig“.",
        "42 stimmten zu.",
    ],
    ["Das Wetter ist heute schön."],
]

# Case, punctuation, articles and "_" that the official normalisation removes, partial overlaps (F1 only).
ANSWERS = ["The Beatles!", "Sir Winston_Churchill", "paris, france", None, "the river thames in london"]
ALIASES = [
    ["Beatles", "The Fab Four"],
    ["Winston Churchill", "Churchill"],
    ["Paris"],
    ["Mount Everest"],
    ["Thames", "River Thames", "The Thames"],
]

CASES = {
    "gqa_rouge": (ROUGE, SUMMARIES, SUMMARY_REFS),
    "gqa_bleu": (["bleu"], TRANSLATIONS, TRANSLATION_REFS),
    "gqa_trivia_qa": (["exact_match", "f1"], ANSWERS, ALIASES),
}


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("evaluate_cache"))
    return {name: metric_modules.load(name, cache_dir=cache) for name in metric_modules.NAMES}


def test_module_path_is_the_script_inside_the_package():
    package = Path(metric_modules.__file__).parent
    for name in metric_modules.NAMES:
        path = Path(metric_modules.module_path(name))
        assert path == package / name / f"{name}.py" and path.is_file()
        # evaluate.load also takes the directory, the hub's layout
        assert evaluate.load(str(path.parent)).name == name
    with pytest.raises(ValueError, match="gqa_rouge"):
        metric_modules.module_path("rouge")


def test_loads_offline_and_quickly_in_a_fresh_process(tmp_path):
    """A fresh process with the hub switched off, empty HF caches and every socket refused loads all three
    modules and scores, within seconds of importing evaluate."""
    script = textwrap.dedent(
        """
        import json, socket, sys, time

        def refuse(*args, **kwargs):
            raise OSError("network access")

        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        import evaluate
        from gqa_eval import metric_modules

        start = time.perf_counter()
        out = {}
        for name, (predictions, references) in json.loads(sys.argv[1]).items():
            module = evaluate.load(metric_modules.module_path(name))
            out[name] = module.compute(predictions=predictions, references=references)
        out["seconds"] = time.perf_counter() - start
        print(json.dumps(out))
        """
    )
    cases = {name: (predictions, refs) for name, (_, predictions, refs) in CASES.items()}
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("seconds") < 30
    for name, (names, predictions, refs) in CASES.items():
        assert out[name] == metrics.score(names, predictions, refs)


@pytest.mark.parametrize("name", list(CASES))
def test_compute_equals_metrics_score(modules, name):
    names, predictions, refs = CASES[name]
    expected = metrics.score(names, predictions, refs)
    got = modules[name].compute(predictions=predictions, references=refs)
    assert got == expected
    assert list(got) == names  # the same keys, in score's order
    assert all(0 < value < 100 for value in got.values())  # nontrivial inputs: no all-or-nothing score


@pytest.mark.parametrize("name", list(CASES))
def test_single_string_references_equal_metrics_score(modules, name):
    names, predictions, refs = CASES[name]
    firsts = [r[0] for r in refs]
    assert modules[name].compute(predictions=predictions, references=firsts) == metrics.score(
        names, predictions, firsts
    )


@pytest.mark.parametrize("name", list(CASES))
def test_string_and_list_references_mix_in_one_batch(modules, name):
    """evaluate fixes the input format from the first example; a later string must still be one reference
    (not a list of characters), a later list several (not its repr)."""
    names, predictions, refs = CASES[name]
    for first_is_string in (False, True):
        mixed = [r[0] if (i % 2 == 0) == first_is_string else r for i, r in enumerate(refs)]
        assert modules[name].compute(predictions=predictions, references=mixed) == metrics.score(
            names, predictions, mixed
        )


@pytest.mark.parametrize("name", list(CASES))
def test_add_batch_and_add_then_compute(modules, name):
    names, predictions, refs = CASES[name]
    module = modules[name]
    module.add_batch(predictions=predictions[:2], references=refs[:2])
    module.add(prediction=predictions[2], reference=refs[2][0])
    module.add_batch(predictions=predictions[3:], references=refs[3:])
    expected_refs = refs[:2] + [refs[2][0]] + refs[3:]
    assert module.compute() == metrics.score(names, predictions, expected_refs)


def test_rouge_options_change_the_numbers_as_in_score(modules):
    rouge = modules["gqa_rouge"]
    stemmed = rouge.compute(predictions=SUMMARIES, references=SUMMARY_REFS)
    unstemmed = rouge.compute(predictions=SUMMARIES, references=SUMMARY_REFS, use_stemmer=False)
    assert unstemmed == metrics.score(ROUGE, SUMMARIES, SUMMARY_REFS, use_stemmer=False)
    assert stemmed == metrics.score(ROUGE, SUMMARIES, SUMMARY_REFS, use_stemmer=True)
    assert all(unstemmed[t] < stemmed[t] for t in ROUGE)
    subset = rouge.compute(
        predictions=SUMMARIES, references=SUMMARY_REFS, rouge_types=["rougeLsum", "rouge2"]
    )
    assert subset == metrics.score(["rougeLsum", "rouge2"], SUMMARIES, SUMMARY_REFS)
    assert list(subset) == ["rougeLsum", "rouge2"]
    assert subset["rougeLsum"] != stemmed["rougeL"]  # the summary-level LCS over Punkt-split sentences
    for bad in ("rouge1", ["rouge3"], []):
        with pytest.raises(ValueError, match="rouge_types"):
            rouge.compute(predictions=SUMMARIES, references=SUMMARY_REFS, rouge_types=bad)


# No 4-gram of the prediction is in the reference: only smoothing keeps corpus BLEU above zero.
UNSMOOTHED = (["Der Hund bellte heute laut."], [["Der Hund bellte gestern laut."]])


@pytest.mark.parametrize(
    ("option", "value", "score_option", "data"),
    [
        ("tokenize", "13a", "bleu_tokenize", (TRANSLATIONS, TRANSLATION_REFS)),
        ("lowercase", True, "bleu_lowercase", (TRANSLATIONS, TRANSLATION_REFS)),
        ("smooth_method", "none", "bleu_smooth", UNSMOOTHED),
        ("smooth_method", "floor", "bleu_smooth", UNSMOOTHED),
    ],
)
def test_bleu_options_change_the_number_as_in_score(modules, option, value, score_option, data):
    predictions, refs = data
    bleu = modules["gqa_bleu"]
    default = bleu.compute(predictions=predictions, references=refs)
    assert default == metrics.score(["bleu"], predictions, refs) and default["bleu"] > 0
    got = bleu.compute(predictions=predictions, references=refs, **{option: value})
    assert got == metrics.score(["bleu"], predictions, refs, **{score_option: value})
    assert got != default


def test_defaults_are_the_task_configs_options(modules):
    """Each option's default is what conf/task/*.yaml scores with (and gqa_eval.metrics' default)."""
    rename = {"bleu_tokenize": "tokenize", "bleu_smooth": "smooth_method", "bleu_lowercase": "lowercase"}
    module_of = {"rouge1": "gqa_rouge", "bleu": "gqa_bleu", "f1": "gqa_trivia_qa"}
    checked = set()
    for path in sorted(TASK_DIR.glob("*.yaml")):
        task = OmegaConf.load(path)
        name = next(module_of[m] for m in task.metrics if m in module_of)
        params = inspect.signature(type(modules[name])._compute).parameters
        for option, value in OmegaConf.to_container(task.metric_options).items():
            assert params[rename.get(option, option)].default == value, (path.name, option)
            checked.add(option)
        assert set(params) - {"self", "predictions", "references", "other"} == set(
            metric_modules.OPTIONS[name]
        )
    assert {"use_stemmer", "bleu_tokenize", "bleu_smooth", "bleu_lowercase"} <= checked


def test_combine_equals_score(modules):
    combined = evaluate.combine([modules["gqa_rouge"], modules["gqa_trivia_qa"]])
    got = combined.compute(predictions=ANSWERS, references=ALIASES)
    assert got == {
        **metrics.score(ROUGE, ANSWERS, ALIASES),
        **metrics.score(["exact_match", "f1"], ANSWERS, ALIASES),
    }
    combined.add_batch(predictions=ANSWERS[:3], references=ALIASES[:3])
    combined.add_batch(predictions=ANSWERS[3:], references=ALIASES[3:])
    assert combined.compute() == got


def test_combine_passes_options(modules):
    """evaluate.combine hands every keyword to every module (evaluate >= 0.4.1; 0.4.0 dropped them)."""
    combined = evaluate.combine([modules["gqa_rouge"], modules["gqa_bleu"]])
    got = combined.compute(
        predictions=TRANSLATIONS, references=TRANSLATION_REFS, use_stemmer=False, tokenize="13a"
    )
    expected = {
        **metrics.score(ROUGE, TRANSLATIONS, TRANSLATION_REFS, use_stemmer=False),
        **metrics.score(["bleu"], TRANSLATIONS, TRANSLATION_REFS, bleu_tokenize="13a"),
    }
    assert got == expected
    assert got != combined.compute(predictions=TRANSLATIONS, references=TRANSLATION_REFS)


@pytest.mark.parametrize("name", list(CASES))
def test_unknown_option_raises(modules, name):
    _, predictions, refs = CASES[name]
    with pytest.raises(TypeError, match="use_stemer"):
        modules[name].compute(predictions=predictions, references=refs, use_stemer=False)
    with pytest.raises(TypeError, match="use_stemer"):
        evaluate.combine([modules[name]]).compute(predictions=predictions, references=refs, use_stemer=False)


def _hub_reachable() -> bool:
    if any(
        os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE")
    ):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _hub_reachable(), reason="huggingface.co is not reachable (or HF_*_OFFLINE is set)")
def test_agrees_with_the_hubs_rouge_and_sacrebleu(modules):
    """The hub's modules on the same strings. rouge: use_stemmer=True and use_aggregator=False (its
    aggregator reports a bootstrap median, gqa-eval the plain mean), F-measures x100; its rougeLsum expects
    sentences on lines, so it is given gqa-eval's own split (split_sentences). sacrebleu: the same
    tokenize/smooth_method, equal numbers of references per example (the hub module requires it)."""
    import numpy as np

    predictions = [p or "" for p in SUMMARIES]
    hub = evaluate.load("rouge").compute(
        predictions=[metrics.split_sentences(p) for p in predictions],
        references=[[metrics.split_sentences(r) for r in refs] for refs in SUMMARY_REFS],
        use_stemmer=True,
        use_aggregator=False,
    )
    ours = modules["gqa_rouge"].compute(predictions=predictions, references=SUMMARY_REFS)
    for t in ROUGE:
        assert ours[t] == pytest.approx(100 * float(np.mean(hub[t])), abs=1e-9), t

    refs = [r[:1] for r in TRANSLATION_REFS]
    for tokenize in ("intl", "13a"):
        hub_bleu = evaluate.load("sacrebleu").compute(
            predictions=TRANSLATIONS, references=refs, tokenize=tokenize, smooth_method="exp"
        )
        assert modules["gqa_bleu"].compute(predictions=TRANSLATIONS, references=refs, tokenize=tokenize)[
            "bleu"
        ] == pytest.approx(hub_bleu["score"], abs=1e-9)
