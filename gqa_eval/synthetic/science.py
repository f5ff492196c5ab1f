"""The scientific-paper worlds: arxiv (a methods paper: problem, method, results, speed,
robustness) and pubmed (a randomised trial: aim, methods, results, adverse events, conclusion).

An article is the key facts' long phrasings, each opening a paragraph, padded with the field's boilerplate
sentences (``@xmath``/``@xcite`` placeholders as in the real datasets, or bracketed citations); the
abstract is the facts' short phrasings.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from gqa_eval.synthetic.common import (
    CITY_HEADS,
    SURNAMES,
    Fact,
    _city,
    _grow,
    _person,
    _pick_unused,
    _sample,
    _with_min_words,
)

# science vocabulary (arxiv)
SCI_ADJS = [
    "sparse", "stochastic", "adaptive", "hierarchical", "robust", "low-rank", "bayesian", "spectral",
    "distributed", "nonlinear", "online", "multiscale",
]  # fmt: skip
SCI_NOUNS = [
    "graph", "lattice", "kernel", "tensor", "signal", "manifold", "network", "spin chain", "sensor array",
    "time series", "point cloud", "random field",
]  # fmt: skip
SCI_TASKS = [
    "estimation", "clustering", "reconstruction", "classification", "denoising", "sampling", "inference",
    "segmentation",
]  # fmt: skip
SCI_METHOD_KINDS = ["sampling", "iteration", "embedding", "transform", "descent", "relaxation", "filter"]
SCI_MECHANISMS = [
    "reuses partial solutions across scales",
    "replaces the exact projection by a cheap randomized sketch",
    "combines a local update with a global correction step",
    "learns the step size from the data",
    "prunes redundant components before each update",
    "shares statistics between neighbouring nodes",
]  # fmt: skip
SCI_METRICS = ["accuracy", "f1 score", "recall", "precision", "reconstruction error", "log likelihood"]
SCI_FIELDS = ["signal processing", "condensed matter physics", "machine learning", "astronomy", "genomics"]

# medicine vocabulary (pubmed)
DRUG_HEADS = ["velo", "tara", "mino", "cresa", "dulo", "fena", "lomi", "prava", "quina", "resto"]
DRUG_TAILS = ["mab", "pril", "statin", "zole", "cillin", "tide", "parin", "sartan"]
ORGANS = ["renal", "hepatic", "pulmonary", "cardiac", "gastric", "dermal", "retinal", "pancreatic"]
LESIONS = ["fibrosis", "inflammation", "insufficiency", "neuropathy", "sclerosis", "dysplasia"]
OUTCOMES = [
    "systolic blood pressure", "pain score", "fasting glucose", "serum creatinine", "symptom score",
    "heart rate", "body weight",
]  # fmt: skip
ADVERSE = ["headache", "nausea", "dizziness", "mild rash", "fatigue", "dry mouth"]


def _sci_article(
    rng: random.Random,
    facts: list[Fact],
    slots_fn: Callable[[random.Random], dict[str, Any]],
    fillers: list[str],
    filler_slots: Callable[[random.Random], dict[str, Any]],
    join_abstract: Callable[[list[str]], str],
) -> tuple[dict[str, str], str]:
    """One paper: ``{"article", "abstract"}`` and its abstract. The lead two facts (the problem and the
    method) and some of the others are reported; each opens a paragraph that ``fillers`` pad out."""

    def attempt() -> tuple[tuple[dict[str, Any], list[int]], str]:
        slots = slots_fn(rng)
        chosen = [0, 1] + sorted(_sample(rng, range(2, len(facts)), rng.randint(1, len(facts) - 2)))
        return (slots, chosen), join_abstract([facts[i][1].format(**slots) for i in chosen])

    slots, chosen = _with_min_words(rng, attempt, 20, 80)
    paragraphs = [[rng.choice(facts[i][0]).format(**slots)] for i in chosen]
    used: list[str] = []

    def make() -> str:
        extra = filler_slots(rng)
        extra.update(slots)
        return _pick_unused(rng, fillers, used).format(**extra)

    _grow(rng, paragraphs, rng.randint(270, 580), make)
    article = "\n".join(" ".join(p) for p in paragraphs)
    counter = iter(range(10_000))
    article = re.sub(r"@xmath(?!\d)", lambda _: f"@xmath{next(counter)}", article)
    abstract = join_abstract([facts[i][1].format(**slots) for i in chosen])
    return {"article": article, "abstract": abstract}, abstract


# --------------------------------------------------------------------------------------------------
# arxiv
# --------------------------------------------------------------------------------------------------

ARXIV_FACTS: list[Fact] = [
    (
        [
            "in this paper we study the problem of {problem} , which arises naturally in {field} @xcite .",
            "we consider {problem} , a central task in {field} @xcite .",
        ],
        "we study {problem} .",
    ),
    (
        [
            "we propose a new method , which we call {method} , that {mechanism} .",
            "our main contribution is {method} , an algorithm that {mechanism} .",
        ],
        "we propose {method} , which {mechanism} .",
    ),
    (
        [
            "on the {dataset} benchmark , {method} improves the {metric} from {a} to {b} compared with "
            "{baseline} @xcite .",
            "experiments on {dataset} show that the {metric} increases from {a} for {baseline} to {b} for "
            "{method} .",
        ],
        "on {dataset} , {method} improves the {metric} from {a} to {b} over {baseline} .",
    ),
    (
        [
            "in addition , {method} runs {speed} times faster than {baseline} on the largest instances we "
            "tried .",
            "we also observe that {method} is {speed} times faster than {baseline} .",
        ],
        "it is also {speed} times faster than {baseline} .",
    ),
    (
        [
            "finally , we show that {method} remains stable when up to {pct} % of the {unit}s are "
            "corrupted .",
            "our analysis further shows that {method} tolerates up to {pct} % corrupted {unit}s .",
        ],
        "{method} stays stable with up to {pct} % corrupted {unit}s .",
    ),
]
ARXIV_FILLERS = [
    "the problem has a long history , and early approaches relied on exhaustive search @xcite .",
    "let @xmath denote the set of observed {unit}s and let @xmath be its size .",
    "we assume throughout that @xmath is bounded and that @xmath holds for all @xmath .",
    "several authors have studied related questions for {other} @xcite .",
    "the remainder of this section fixes notation and recalls standard definitions .",
    "a closely related line of work considers {other} under additional smoothness assumptions @xcite .",
    "the proof follows the standard argument of @xcite and is given in the appendix .",
    "we note that the constant in @xmath can be improved , but we do not pursue this here .",
    "all experiments were run on a single workstation , and the code will be made available .",
    "for completeness , we also report results for the setting of @xcite in the supplementary material .",
    "table [ tab : results ] summarizes the results of all methods .",
    "figure [ fig : scaling ] shows the running time as a function of @xmath .",
    "it is worth emphasizing that no tuning of @xmath was required .",
    "these observations are consistent with the theory developed in section [ sec : theory ] .",
    "in the classical setting @xcite , one assumes that @xmath is known in advance .",
    "we leave the extension to {other} for future work .",
    "the authors thank {personx} for helpful discussions .",
    "a similar bound was obtained for {other} in @xcite , with a different technique .",
    "in what follows , we write @xmath for the empirical estimate and @xmath for its expectation .",
    "the main difficulty is that @xmath is not convex in general .",
    "this choice is standard in the literature @xcite and simplifies the analysis .",
    "we initialize all methods with the same random seed to make the comparison fair .",
    "error bars show one standard deviation over ten independent runs .",
    "the first step of the proof is a concentration inequality for @xmath .",
    "related ideas appear in the study of {other} @xcite , although in a different form .",
    "we emphasize that the assumption @xmath is only needed for the lower bound .",
    "a naive implementation requires @xmath operations per step .",
    "the hyperparameters of the baselines were taken from the original papers @xcite .",
    "for small values of @xmath all methods perform similarly .",
    "the paper is organized as follows .",
    "section [ sec : method ] introduces the method and section [ sec : experiments ] reports experiments .",
    "we also tried a variant based on {other} , but it performed worse .",
    "the dependence on @xmath is optimal up to logarithmic factors @xcite .",
    "numerical experiments confirm that the bound is tight in practice .",
]


def _arxiv_slots(rng: random.Random) -> dict[str, Any]:
    noun = rng.choice(SCI_NOUNS)
    a = round(rng.uniform(40, 85), 1)
    letters = "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(2)).rstrip("aeiou")
    return {
        "problem": f"{rng.choice(SCI_ADJS)} {noun} {rng.choice(SCI_TASKS)}",
        "unit": noun.split()[-1],
        "field": rng.choice(SCI_FIELDS),
        "method": f"{letters} {rng.choice(SCI_METHOD_KINDS)}",
        "mechanism": rng.choice(SCI_MECHANISMS),
        "dataset": f"{rng.choice(CITY_HEADS).lower()}-{rng.randint(2, 99)}",
        "metric": rng.choice(SCI_METRICS),
        "a": a,
        "b": round(a + rng.uniform(0.5, 12.0), 1),
        "baseline": f"{rng.choice(SURNAMES).lower()} {rng.choice(SCI_METHOD_KINDS)}",
        "speed": rng.randint(2, 40),
        "pct": rng.randint(5, 45),
    }


def _arxiv_filler_slots(rng: random.Random) -> dict[str, Any]:
    return {
        "other": f"{rng.choice(SCI_ADJS)} {rng.choice(SCI_NOUNS)} {rng.choice(SCI_TASKS)}",
        "personx": _person(rng).lower(),
    }


def _make_arxiv(rng: random.Random) -> tuple[dict[str, str], str]:
    return _sci_article(rng, ARXIV_FACTS, _arxiv_slots, ARXIV_FILLERS, _arxiv_filler_slots, " ".join)


# --------------------------------------------------------------------------------------------------
# pubmed
# --------------------------------------------------------------------------------------------------

PUBMED_FACTS: list[Fact] = [
    (
        [
            "the aim of this study was to evaluate the effect of {drug} on {outcome} in patients with "
            "{condition} .",
            "we therefore designed a trial to test whether {drug} lowers {outcome} in patients with "
            "{condition} .",
        ],
        "background : we evaluated {drug} in patients with {condition} .",
    ),
    (
        [
            "a total of {n} patients aged {age1} - {age2} years were recruited at {hospital} and randomly "
            "assigned to {drug} or placebo for {weeks} weeks .",
            "{n} patients ( aged {age1} - {age2} years ) from {hospital} were randomized to {drug} or "
            "placebo and followed for {weeks} weeks .",
        ],
        "methods : {n} patients were randomized to {drug} or placebo for {weeks} weeks .",
    ),
    (
        [
            "after {weeks} weeks , mean {outcome} decreased from {x} to {y} in the {drug} group "
            "( p = {p} ) .",
            "in the {drug} group , the mean {outcome} fell from {x} at baseline to {y} at week {weeks} "
            "( p = {p} ) .",
        ],
        "results : {outcome} fell from {x} to {y} ( p = {p} ) .",
    ),
    (
        [
            "adverse events were reported in {ae_pct} % of patients , most commonly {ae} .",
            "the most common adverse event was {ae} , and adverse events occurred in {ae_pct} % of "
            "patients overall .",
        ],
        "adverse events , mainly {ae} , occurred in {ae_pct} % .",
    ),
    (
        [
            "in conclusion , {drug} appears to be a safe and effective option for patients with "
            "{condition} .",
            "taken together , these findings support the use of {drug} in {condition} .",
        ],
        "conclusions : {drug} may be useful in {condition} .",
    ),
]
PUBMED_FILLERS = [
    "{condition} remains a common cause of hospital admission worldwide [ {c1} ] .",
    "the prevalence of {condition} has increased over the last two decades [ {c1} , {c2} ] .",
    "previous studies of {other} reported conflicting results [ {c1} ] .",
    "written informed consent was obtained from all participants .",
    "the study protocol was approved by the local ethics committee .",
    "data are presented as mean plus or minus standard deviation .",
    "statistical analysis was performed with a two - sided significance level of 0.05 .",
    "patients with a history of {other} were excluded .",
    "baseline characteristics were similar in the two groups ( table 1 ) .",
    "blood samples were collected in the morning after an overnight fast .",
    "the sample size was calculated to detect a difference of {c2} % with a power of 80 % .",
    "several limitations of this study should be noted .",
    "first , the follow - up period was relatively short .",
    "second , all patients were recruited at a single centre , which may limit generalizability .",
    "further multicentre trials are needed to confirm these results [ {c2} ] .",
    "the mechanism underlying this effect is not fully understood [ {c1} ] .",
    "dropout rates did not differ between the groups .",
    "compliance was assessed by counting the returned tablets at each visit .",
    "patients were seen every four weeks at the outpatient clinic .",
    "the primary end point was defined before the start of the trial .",
    "randomization was performed with a computer - generated list .",
    "both patients and investigators were blinded to the treatment allocation .",
    "laboratory tests were performed at baseline and at the end of the study .",
    "the results were analyzed on an intention - to - treat basis .",
    "there were no deaths during the study period .",
    "subgroup analyses by age and sex showed similar trends .",
    "treatment options for {condition} are currently limited [ {c1} ] .",
    "most patients with {condition} are diagnosed after the age of {c2} [ {c1} ] .",
    "a small pilot study suggested a possible benefit in {other} [ {c2} ] .",
    "the study drug and placebo tablets were identical in appearance .",
    "missing values were handled by multiple imputation .",
    "quality of life was assessed with a validated questionnaire .",
    "the trial was registered before enrolment of the first patient .",
    "our results are in line with those of earlier observational studies [ {c1} , {c2} ] .",
]


def _pubmed_slots(rng: random.Random) -> dict[str, Any]:
    x = round(rng.uniform(20, 180), 1)
    age1 = rng.randint(18, 50)
    return {
        "drug": rng.choice(DRUG_HEADS) + rng.choice(DRUG_TAILS),
        "condition": f"{rng.choice(ORGANS)} {rng.choice(LESIONS)}",
        "outcome": rng.choice(OUTCOMES),
        "n": rng.randint(24, 900),
        "age1": age1,
        "age2": age1 + rng.randint(10, 40),
        "hospital": f"{_city(rng).lower()} general hospital",
        "weeks": rng.randint(4, 52),
        "x": x,
        "y": round(x * rng.uniform(0.55, 0.95), 1),
        "p": rng.choice(["0.001", "0.002", "0.01", "0.02", "0.03", "0.04"]),
        "ae_pct": rng.randint(2, 35),
        "ae": rng.choice(ADVERSE),
    }


def _pubmed_filler_slots(rng: random.Random) -> dict[str, Any]:
    return {
        "other": f"{rng.choice(ORGANS)} {rng.choice(LESIONS)}",
        "c1": rng.randint(1, 12),
        "c2": rng.randint(13, 30),
    }


def _make_pubmed(rng: random.Random) -> tuple[dict[str, str], str]:
    return _sci_article(rng, PUBMED_FACTS, _pubmed_slots, PUBMED_FILLERS, _pubmed_filler_slots, " ".join)
