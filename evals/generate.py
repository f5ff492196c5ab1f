"""Deterministic generator of the bundled offline evaluation sets (and, later, synthetic training data).

Every task gets examples in the exact schema of the real hub dataset it stands in for (field names,
nesting, types), but all text is written here, from a small synthetic world: invented people, places,
organisations, objects and numbers, combined by templates. Nothing is copied from the real datasets.

The tasks are built so that a small model *can* learn them but has to attend to its input:

* Summarisation (cnn_dm, arxiv, pubmed, mediasum, multi_news): a document is a sequence of sentences.
  Some are *key facts* about one event or study (each opens a paragraph, or is a guest's answer in an
  interview); the rest are filler and distractors (other entities, "in a separate case ..."). The
  reference summary is a shorter template of exactly the key facts, in document order, so it is a
  function of the input that needs copying names and numbers from the right places.
* Translation (wmt_en_de): English sentences from a small grammar; the German side is a deterministic
  lexicon plus German word order (verb second after a fronted adverbial, verb-final "weil"/"dass"/"wenn"
  clauses, perfect tense with the participle last, separable prefixes), with case and gender agreement.
* TriviaQA: questions about a fixed, seeded fact world (capitals, founders, birthplaces, ...); the
  evidence is a wiki-like page with the answer among the subject's other facts and facts about other
  entities of the same kind.

Splits are disjoint by construction, not by luck. Each example has a *split key* that can be read off
the example itself (see :func:`split_key`): the reference summary for the summarisation tasks, the
English sentence for WMT, the subject entity (the first evidence page's title) for TriviaQA. The key is
hashed with SHA-256 (``task`` + key) into 100 buckets; buckets 0-9 are ``validation``, 10-19 ``test``,
20-99 ``train`` (:data:`SPLIT_BUCKETS`). ``generate`` samples candidates and keeps only those whose
bucket belongs to the requested split, so whatever the seed, a training example never shares its key
(its summary, its source sentence, or for TriviaQA any fact about its subject: subjects themselves are
partitioned, and evidence only mentions subjects of the same split) with a validation example.

Determinism: only ``random.Random`` seeded with integers derived by SHA-256, lists (never sets) for
iteration order, no time, no ``hash()``. ``generate(task, split, n, seed)`` returns the first ``n``
examples of a fixed stream, so a larger ``n`` extends a smaller one. Running ``python evals/generate.py``
twice writes byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import string
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

TASKS = ("cnn_dm", "arxiv", "pubmed", "mediasum", "multi_news", "wmt_en_de", "trivia_qa")
SPLITS = ("validation", "test", "train")
#: Hash buckets (of 100) owned by each split; see the module docstring.
SPLIT_BUCKETS = {"validation": range(0, 10), "test": range(10, 20), "train": range(20, 100)}
#: Seeds used when none is given. The bundled validation files are generated with these.
DEFAULT_SEEDS = {"validation": 2305, "test": 13245, "train": 1}
#: Seed of the fixed TriviaQA fact world (shared by all splits).
WORLD_SEED = 20230513
DEFAULT_N = 64
#: File name stem of each split in the Multi-News raw format.
MULTI_NEWS_STEMS = {"validation": "val", "test": "test", "train": "train"}

# --------------------------------------------------------------------------------------------------
# The synthetic vocabulary (our own lists)
# --------------------------------------------------------------------------------------------------

FIRST_NAMES = [
    "Adrin", "Belka", "Corvin", "Dalia", "Edric", "Fenna", "Galen", "Hesper", "Ilka", "Jorund",
    "Kaira", "Lioren", "Maelis", "Nerin", "Orla", "Petrik", "Quilla", "Ravel", "Saskia", "Tobin",
    "Ulla", "Varen", "Wenna", "Yorick", "Zelda", "Anouk", "Bastin", "Cilla", "Dorran", "Elske",
    "Falko", "Greta", "Hollis", "Ingrid", "Jasper", "Kestra", "Linnea", "Marek", "Nadia", "Osric",
    "Pella", "Rasmus", "Selka", "Tamsin", "Ulric", "Vesna", "Wilmar", "Yara", "Zorin", "Mirela",
]  # fmt: skip
SURNAMES = [
    "Toman", "Arvest", "Brandel", "Castrow", "Dunmere", "Elsby", "Farrow", "Gaskell", "Holloway", "Ivers",
    "Jessop", "Kettering", "Lomax", "Marlow", "Norcott", "Oakhurst", "Pennick", "Quarles", "Redfern",
    "Stowell", "Thorne", "Umbridge", "Vance", "Wexley", "Yarrow", "Velasko", "Brannoch", "Tiskell",
    "Morvane", "Halvard", "Kessler", "Lindqvist", "Ostrander", "Petrova", "Renwick", "Sandor", "Tervo",
    "Ulven", "Varga", "Whitlock",
]  # fmt: skip
CITY_HEADS = [
    "Varn", "Brem", "Dun", "Ell", "Fen", "Gal", "Harr", "Ist", "Kel", "Lor", "Mar", "Nor", "Oster",
    "Pell", "Quarn", "Rav", "Sel", "Tarn", "Ulm", "Wyn", "Wend", "Yar",
]  # fmt: skip
CITY_TAILS = ["holm", "by", "moor", "ford", "wick", "stead", "bridge", "haven", "port", "burg"]
COUNTRY_HEADS = [
    "Vel", "Tar", "Cas", "Dor", "Esk", "Fal", "Gor", "Hal", "Ith", "Jun", "Kor", "Lum", "Mer", "Nal",
    "Or", "Pan", "Quel", "Ros", "Sar", "Tel", "Ul", "Var", "Wes", "Zan",
]  # fmt: skip
COUNTRY_TAILS = ["oria", "avia", "esta", "mark", "onia", "ovia", "aria", "edia", "ura", "istan"]
REGIONS = [
    "Amber Coast", "Northern Marches", "Upper Vale", "Saltmarsh", "Greywater", "High Moors", "Lantern Bay",
    "Iron Hills", "Willow Plain", "East Reach", "Stone Valley", "Silver Lakes",
]  # fmt: skip
ORG_HEADS = [
    "Orvane", "Kestrel", "Halden", "Brightwater", "Corvane", "Silverline", "Northgate", "Ambergrove",
    "Ironvale", "Bluefield", "Redmount", "Stonebridge", "Greyhaven", "Westmarch", "Eastwold", "Highcombe",
]  # fmt: skip
ORG_KINDS = [
    "Institute", "Foundation", "Mining Group", "Rail Company", "Shipping Line", "Savings Bank", "Press",
    "Observatory", "Trading Company", "Laboratories",
]  # fmt: skip
RIVERS = [
    "Amsel", "Brenna", "Corran", "Dovey", "Elster", "Fyne", "Garra", "Hollin", "Isen", "Jessa", "Kelda",
    "Lune", "Marra", "Nairn", "Orrin", "Pellow", "Quill", "Rusk", "Skerra", "Tolla", "Usk", "Vella",
]  # fmt: skip
CURRENCIES = [
    "dorsel", "marren", "tallet", "quint", "sovel", "brack", "lira", "nessel", "pennet", "gorran",
    "kestel", "ambrin", "holt", "varsk", "thaler", "crownet",
]  # fmt: skip
ANIMALS = [
    "snow lynx", "marsh heron", "red stag", "river otter", "grey falcon", "silver fox", "mountain goat",
    "golden eagle", "sea turtle", "brown bear", "white crane", "striped badger", "blue kingfisher",
    "black swan", "spotted owl", "wild boar",
]  # fmt: skip
INSTRUMENTS = ["violin", "cello", "harp", "flute", "clarinet", "oboe", "piano", "horn", "lute", "trumpet"]
BOOK_ADJS = [
    "Silent", "Glass", "Hollow", "Burning", "Distant", "Copper", "Sleeping", "Broken", "Winter", "Hidden",
    "Crimson", "Last", "Quiet", "Painted", "Salt",
]  # fmt: skip
BOOK_NOUNS = [
    "Harbour", "Orchard", "Lantern", "Bridge", "Garden", "Tower", "River", "Kingdom", "Road", "Mirror",
    "Island", "Meadow", "Clock", "Forest", "Letter",
]  # fmt: skip
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
]  # fmt: skip
STOLEN_GOODS = [
    "bicycles", "copper kettles", "laptops", "paintings", "solar lamps", "outboard motors",
    "sewing machines", "brass lanterns", "wrist watches", "garden tools", "violins", "cameras",
]  # fmt: skip
PRODUCTS = [
    "electric bicycles", "solar panels", "glass bottles", "turbine blades", "railway carriages",
    "copper cables", "ceramic tiles", "water pumps", "fishing nets", "paper bags",
]  # fmt: skip
MASCOTS = ["Rovers", "United", "Wanderers", "Athletic", "Harriers", "Falcons", "Rangers", "Albion"]
FACILITIES = ["schools", "libraries", "bus lines", "parks", "health centres", "bridges", "swimming pools"]
JOBS = ["teacher", "nurse", "fisherman", "carpenter", "lawyer", "baker", "engineer", "farmer", "pilot"]
FINDS = ["bronze helmet", "silver coin", "wooden boat", "stone tablet", "gold ring", "clay jar"]
MATERIALS = ["bronze", "silver", "oak", "granite", "gold", "clay", "iron"]
ROLES = ["professor", "spokesperson", "director", "senior analyst", "chief engineer", "historian"]
PROGRAMS = ["Evening Ledger", "Morning Crossing", "The Open Line", "Weekend Desk", "Talk of the Valley"]
OUTLETS = ["Courier", "Herald Wire", "Valley Post", "Daily Lantern"]

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


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _derive_seed(*parts: object) -> int:
    return int(_sha("\x1f".join(str(p) for p in parts))[:16], 16)


def bucket(task: str, key: str) -> int:
    """The hash bucket (0-99) of an example's split key."""
    return int(_sha(f"{task}\x1f{key}")[:16], 16) % 100


def split_of(task: str, key: str) -> str:
    """The split that owns ``key`` for ``task``."""
    b = bucket(task, key)
    for name, owned in SPLIT_BUCKETS.items():
        if b in owned:
            return name
    raise AssertionError(b)  # pragma: no cover - the ranges cover 0..99


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _words(text: str) -> int:
    return len(text.split())


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _sample(rng: random.Random, seq: Sequence[Any], k: int) -> list[Any]:
    return rng.sample(list(seq), k)


def normalize_answer(text: str) -> str:
    """TriviaQA's official answer normalisation (underscores, case, punctuation, articles, spaces)."""
    text = text.replace("_", " ").lower()
    exclude = set(string.punctuation + "‘’´`")
    text = "".join(" " if ch in exclude else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def _people(rng: random.Random, k: int) -> list[str]:
    out: list[str] = []
    while len(out) < k:
        p = _person(rng)
        if p not in out and p.split()[1] not in [q.split()[1] for q in out]:
            out.append(p)
    return out


def _city(rng: random.Random) -> str:
    return rng.choice(CITY_HEADS) + rng.choice(CITY_TAILS)


def _cities(rng: random.Random, k: int) -> list[str]:
    out: list[str] = []
    while len(out) < k:
        c = _city(rng)
        if c not in out:
            out.append(c)
    return out


def _org(rng: random.Random) -> str:
    return f"{rng.choice(ORG_HEADS)} {rng.choice(ORG_KINDS)}"


# --------------------------------------------------------------------------------------------------
# News events: key facts (several long phrasings + one short phrasing) and filler
# --------------------------------------------------------------------------------------------------

# Each event kind: (slot sampler, facts, title template, topic template). A fact is
# (long phrasings, short phrasing). The first fact is the lead and is always reported.
Fact = tuple[list[str], str]


def _crime_slots(rng: random.Random) -> dict[str, Any]:
    person, official = _people(rng, 2)
    city, city2 = _cities(rng, 2)
    day, day2 = _sample(rng, WEEKDAYS, 2)
    return {
        "person": person,
        "last": person.split()[1],
        "official": official,
        "age": rng.randint(19, 78),
        "city": city,
        "city2": city2,
        "day": day,
        "day2": day2,
        "num": rng.randint(12, 480),
        "goods": rng.choice(STOLEN_GOODS),
        "shops": rng.randint(3, 40),
        "months": rng.randint(2, 18),
        "region": rng.choice(REGIONS),
        "org": _org(rng),
        "money": rng.randint(2, 90) * 1000,
    }


CRIME_FACTS: list[Fact] = [
    (
        [
            "Police in {city} arrested {person}, {age}, on {day} after {num} stolen {goods} were found "
            "in a warehouse near the old harbour.",
            "{person}, a {age}-year-old from {city}, was arrested on {day} when officers found {num} "
            "stolen {goods} in a warehouse.",
            "Officers in {city} detained {person}, {age}, on {day}, after discovering {num} stolen {goods} "
            "in a locked warehouse.",
        ],
        "{person}, {age}, arrested in {city} after {num} stolen {goods} were found",
    ),
    (
        [
            "{person} is due to appear before the district court in {city2} on {day2}, a police "
            "spokesperson said.",
            "A police spokesperson said {last} would appear before the district court in {city2} on {day2}.",
        ],
        "{last} is due in court in {city2} on {day2}",
    ),
    (
        [
            "Detective {official} said the {goods} had been taken from {shops} shops across the {region} "
            "region over {months} months.",
            "According to detective {official}, the {goods} were stolen from {shops} different shops in the "
            "{region} region during the past {months} months.",
        ],
        "Detective {official} says the {goods} were taken from {shops} shops over {months} months",
    ),
    (
        [
            "The owners of the shops have been offered {money} crowns in compensation by the {org}.",
            "The {org} has promised {money} crowns in compensation to the owners of the shops.",
        ],
        "The {org} offers {money} crowns to the shop owners",
    ),
    (
        [
            "{last} has denied any involvement, telling reporters that the {goods} were a gift from a "
            "stranger.",
            "Speaking outside the police station, {last} denied any involvement and said the {goods} had "
            "been a gift from a stranger.",
        ],
        "{last} denies involvement and says the {goods} were a gift",
    ),
]


def _business_slots(rng: random.Random) -> dict[str, Any]:
    ceo, official = _people(rng, 2)
    return {
        "org": _org(rng),
        "city": _city(rng),
        "day": rng.choice(WEEKDAYS),
        "jobs": rng.randint(40, 2400),
        "product": rng.choice(PRODUCTS),
        "money": rng.randint(12, 900),
        "ceo": ceo,
        "official": official,
        "month": rng.choice(MONTHS),
        "year": rng.randint(2031, 2049),
        "years": rng.randint(8, 60),
        "pct": rng.randint(2, 19),
    }


BUSINESS_FACTS: list[Fact] = [
    (
        [
            "The {org} announced on {day} that it will open a new factory in {city}, creating {jobs} jobs.",
            "The {org} said on {day} it would build a factory in {city} that is expected to employ "
            "{jobs} people.",
            "A new factory run by the {org} will open in {city}, bringing {jobs} jobs to the town, the "
            "company said on {day}.",
        ],
        "The {org} will open a factory in {city}, creating {jobs} jobs",
    ),
    (
        [
            "The factory will produce {product} and is expected to cost about {money} million crowns.",
            "Building the plant, which will make {product}, will cost an estimated {money} million crowns.",
        ],
        "The plant will make {product} and cost {money} million crowns",
    ),
    (
        [
            "Chief executive {ceo} said production should begin in {month} {year}.",
            "{ceo}, the chief executive, told reporters that the first {product} would leave the factory "
            "in {month} {year}.",
        ],
        "Production is due to begin in {month} {year}, says chief executive {ceo}",
    ),
    (
        [
            "The mayor of {city}, {official}, welcomed the decision and said it was the largest investment "
            "in the town for {years} years.",
            "{official}, the mayor of {city}, called it the largest investment the town had seen in "
            "{years} years.",
        ],
        "Mayor {official} calls it the largest investment in {years} years",
    ),
    (
        [
            "Shares in the {org} rose by {pct} percent after the announcement.",
            "After the news, shares in the {org} climbed {pct} percent.",
        ],
        "Shares in the {org} rose {pct} percent",
    ),
]


def _sport_slots(rng: random.Random) -> dict[str, Any]:
    city, city2 = _cities(rng, 2)
    scorer, coach = _people(rng, 2)
    a = rng.randint(1, 6)
    day, day2 = _sample(rng, WEEKDAYS, 2)
    return {
        "team1": f"{city} {rng.choice(MASCOTS)}",
        "team2": f"{city2} {rng.choice(MASCOTS)}",
        "city": city,
        "a": a,
        "b": rng.randint(0, a - 1),
        "cup": f"{rng.choice(REGIONS)} Cup",
        "day": day,
        "day2": day2,
        "scorer": scorer,
        "coach": coach,
        "minute": _ordinal(rng.randint(3, 90)),
        "crowd": rng.randint(800, 60000),
        "stadium": f"{rng.choice(ORG_HEADS)} Stadium",
        "years": rng.randint(3, 70),
    }


SPORT_FACTS: list[Fact] = [
    (
        [
            "{team1} beat {team2} {a}-{b} in the final of the {cup} on {day}.",
            "{team1} won the {cup} on {day} after a {a}-{b} victory over {team2}.",
            "In the final of the {cup} on {day}, {team1} defeated {team2} {a}-{b}.",
        ],
        "{team1} beat {team2} {a}-{b} to win the {cup}",
    ),
    (
        [
            "{scorer} scored the winning goal in the {minute} minute.",
            "The decisive goal came from {scorer} in the {minute} minute.",
        ],
        "{scorer} scored the winner in the {minute} minute",
    ),
    (
        [
            "A crowd of {crowd} people watched the match at the {stadium}.",
            "The match at the {stadium} was watched by {crowd} spectators.",
        ],
        "{crowd} fans watched the match at the {stadium}",
    ),
    (
        [
            "It is the first time in {years} years that {team1} have won the trophy.",
            "{team1} had not won the trophy for {years} years.",
        ],
        "It is the first title for {team1} in {years} years",
    ),
    (
        [
            "Coach {coach} said the team would celebrate with a parade through {city} on {day2}.",
            "A parade through {city} is planned for {day2}, coach {coach} said.",
        ],
        "Coach {coach} says a parade will be held in {city} on {day2}",
    ),
]


def _storm_slots(rng: random.Random) -> dict[str, Any]:
    city, city2 = _cities(rng, 2)
    day, day2 = _sample(rng, WEEKDAYS, 2)
    return {
        "city": city,
        "city2": city2,
        "day": day,
        "day2": day2,
        "homes": rng.randint(300, 90000),
        "region": rng.choice(REGIONS),
        "wind": rng.randint(80, 190),
        "place": rng.choice(ORG_HEADS) + " Point",
        "trees": rng.randint(3, 60),
        "official": _person(rng),
        "schools": rng.randint(4, 80),
    }


STORM_FACTS: list[Fact] = [
    (
        [
            "A storm hit {city} on {day}, leaving {homes} homes without power.",
            "About {homes} homes in {city} lost power on {day} when a severe storm swept through the "
            "{region} region.",
            "On {day} a severe storm cut power to {homes} homes in {city}.",
        ],
        "Storm leaves {homes} homes in {city} without power",
    ),
    (
        [
            "Wind speeds of up to {wind} kilometres per hour were recorded near {place}.",
            "Near {place}, gusts reached {wind} kilometres per hour.",
        ],
        "Winds reached {wind} kilometres per hour near {place}",
    ),
    (
        [
            "The road between {city} and {city2} was closed after {trees} trees fell across it.",
            "{trees} fallen trees blocked the road between {city} and {city2}, which remains closed.",
        ],
        "The road between {city} and {city2} is closed by {trees} fallen trees",
    ),
    (
        [
            "{official}, who leads the regional emergency service, said power should be restored by {day2}.",
            "Power should be back by {day2}, according to {official} of the regional emergency service.",
        ],
        "Power is expected back by {day2}, says {official}",
    ),
    (
        [
            "{schools} schools in the {region} region will stay closed until the roads are cleared.",
            "Officials said {schools} schools in the {region} region would remain closed.",
        ],
        "{schools} schools in the {region} region remain closed",
    ),
]


def _election_slots(rng: random.Random) -> dict[str, Any]:
    person, rival = _people(rng, 2)
    pct = rng.randint(41, 78)
    day, day2 = _sample(rng, WEEKDAYS, 2)
    return {
        "person": person,
        "last": person.split()[1],
        "rival": rival,
        "city": _city(rng),
        "day": day,
        "day2": day2,
        "pct": pct,
        "pct2": rng.randint(10, 100 - pct),
        "turnout": rng.randint(35, 88),
        "year": rng.randint(1961, 2019),
        "n": rng.randint(2, 30),
        "facility": rng.choice(FACILITIES),
        "job": rng.choice(JOBS),
    }


ELECTION_FACTS: list[Fact] = [
    (
        [
            "{person} was elected mayor of {city} on {day} with {pct} percent of the vote.",
            "{person} won the race for mayor of {city} on {day}, taking {pct} percent of the vote.",
            "Voters in {city} chose {person} as their new mayor on {day}, with {pct} percent backing the "
            "winner.",
        ],
        "{person} is elected mayor of {city} with {pct} percent of the vote",
    ),
    (
        [
            "{rival}, the outgoing mayor, received {pct2} percent.",
            "The outgoing mayor, {rival}, finished with {pct2} percent.",
        ],
        "Outgoing mayor {rival} got {pct2} percent",
    ),
    (
        [
            "Turnout was {turnout} percent, the highest since {year}.",
            "With {turnout} percent of voters taking part, turnout was the highest since {year}.",
        ],
        "Turnout of {turnout} percent was the highest since {year}",
    ),
    (
        [
            "{last} has promised to build {n} new {facility} during the first year in office.",
            "During the campaign {last} promised {n} new {facility} within a year.",
        ],
        "{last} promises {n} new {facility}",
    ),
    (
        [
            "{last}, a former {job}, will take office on {day2}.",
            "The new mayor, who used to work as a {job}, takes office on {day2}.",
        ],
        "{last} takes office on {day2}",
    ),
]


def _discovery_slots(rng: random.Random) -> dict[str, Any]:
    city, city2 = _cities(rng, 2)
    person, official = _people(rng, 2)
    return {
        "org": _org(rng),
        "city": city,
        "city2": city2,
        "find": rng.choice(FINDS),
        "age": rng.randint(3, 40) * 100,
        "person": person,
        "official": official,
        "job": rng.choice(JOBS),
        "river": rng.choice(RIVERS),
        "length": rng.randint(4, 180),
        "material": rng.choice(MATERIALS),
        "month": rng.choice(MONTHS),
        "region": rng.choice(REGIONS),
    }


DISCOVERY_FACTS: list[Fact] = [
    (
        [
            "Researchers from the {org} have identified a {find} found near {city} as about {age} years old.",
            "A {find} discovered near {city} is about {age} years old, researchers from the {org} said.",
        ],
        "The {org} dates a {find} found near {city} to about {age} years ago",
    ),
    (
        [
            "The {find} was found by {person}, a {job} who was walking along the {river} River.",
            "{person}, a local {job}, spotted the {find} while walking along the {river} River.",
        ],
        "It was found by {person} by the {river} River",
    ),
    (
        [
            "The {find} measures {length} centimetres and is made of {material}.",
            "Made of {material}, the {find} is {length} centimetres long.",
        ],
        "The {find} is {length} centimetres long and made of {material}",
    ),
    (
        [
            "It will be shown at the museum in {city2} from {month}.",
            "From {month}, visitors will be able to see the {find} at the museum in {city2}.",
        ],
        "It goes on display in {city2} from {month}",
    ),
    (
        [
            "{official}, a historian at the {org}, said the discovery could change what is known about the "
            "early history of the {region} region.",
            "The find could rewrite the early history of the {region} region, said {official}, a historian "
            "at the {org}.",
        ],
        "Historian {official} says it could change the history of the {region} region",
    ),
]

# kind -> (sampler, facts, title, topic)
EVENTS: dict[str, tuple[Callable[[random.Random], dict[str, Any]], list[Fact], str, str]] = {
    "crime": (_crime_slots, CRIME_FACTS, "Arrest in {city} Over Stolen {Goods}", "the arrest of {person}"),
    "business": (
        _business_slots,
        BUSINESS_FACTS,
        "New {Product} Factory for {city}",
        "a new factory in {city}",
    ),
    "sport": (_sport_slots, SPORT_FACTS, "{team1} Win the {cup}", "the final of the {cup}"),
    "storm": (_storm_slots, STORM_FACTS, "Storm Hits {city}", "the storm in {city}"),
    "election": (_election_slots, ELECTION_FACTS, "{city} Elects {person}", "the mayoral election in {city}"),
    "discovery": (
        _discovery_slots,
        DISCOVERY_FACTS,
        "Ancient {Find} Found Near {city}",
        "the {find} found near {city}",
    ),
}
EVENT_KINDS = list(EVENTS)

NEWS_FILLERS = [
    "Residents said the neighbourhood is usually quiet.",
    "The weather in {cityx} remained mild for most of the week.",
    "Local radio stations reported heavy traffic on the roads around {cityx}.",
    "A spokesperson for the {orgx} declined to comment further.",
    "{personx}, who lives nearby, said the street had been quiet all week.",
    "The town council is expected to discuss the matter at its next meeting.",
    "Last year, {personx} opened a small bakery in {cityx}.",
    "Further details are expected to be released later this week.",
    "The {orgx} has offices in {cityx} and {cityy}.",
    "Many shops in the centre of {cityx} stayed open late on {dayx}.",
    "Photographs shared online showed long queues outside the town hall.",
    "The regional newspaper in {cityx} first reported the story on {dayx}.",
    "Elsewhere in the region, a music festival in {cityx} drew {numx} visitors.",
    "In a separate case, police in {cityx} are looking for a missing van.",
    "Earlier this year, {personx} was named head of the {orgx}.",
    "The train line from {cityx} to {cityy} reopened on {dayx} after repairs.",
    "Visitors to {cityx} have been asked to check travel updates before setting out.",
    "{personx} of the {orgx} said it was too early to draw conclusions.",
    "Volunteers handed out hot drinks outside the station in {cityx}.",
    "Market traders in {cityx} said business had been slow since the spring.",
    "The {regionx} region has a population of about {numx} thousand people.",
    "A bridge in {cityx} will be closed for maintenance on {dayx}.",
    "Schools in {cityx} held a charity run on {dayx}, raising {numx} crowns.",
    "The ferry between {cityx} and {cityy} was delayed by fog.",
    "A new cycle path between {cityx} and {cityy} is due to open in the spring.",
    "The library in {cityx} has extended its opening hours until the end of the month.",
    "{personx}, a shopkeeper in {cityx}, said customers had been asking about little else.",
    "The {orgx} said it would publish its annual figures on {dayx}.",
    "Heavy rain is forecast for the {regionx} region later in the week.",
    "A local choir in {cityx} will perform at the town hall on {dayx}.",
    "Parking in the centre of {cityx} will be free on {dayx}.",
    "In a separate case, a fishing boat ran aground near {cityx} but nobody was hurt.",
    "Last month, the {orgx} moved its offices from {cityx} to {cityy}.",
    "The bus company serving {cityx} has added {numx} extra seats on its evening routes.",
    "Elsewhere, the harbour in {cityy} welcomed its first cruise ship of the season.",
    "A petition calling for a new playground in {cityx} has gathered {numx} signatures.",
    "The old cinema in {cityx} is being turned into a community centre.",
    "{personx} told the local paper that the town had seen worse winters.",
    "Earlier in the week, a water pipe burst on the main street of {cityx}.",
    "Tickets for the autumn fair in {cityy} went on sale on {dayx}.",
    "A spokesperson for the {regionx} regional council said the budget would be reviewed.",
    "The post office in {cityx} will close early on {dayx}.",
]


def _filler_slots(rng: random.Random) -> dict[str, Any]:
    personx = _person(rng)
    cityx, cityy = _cities(rng, 2)
    return {
        "personx": personx,
        "firstx": personx.split()[0],
        "cityx": cityx,
        "cityy": cityy,
        "orgx": _org(rng),
        "dayx": rng.choice(WEEKDAYS),
        "numx": rng.randint(20, 900),
        "regionx": rng.choice(REGIONS),
    }


def _filler(rng: random.Random, templates: Sequence[str], used: list[str], **extra: Any) -> str:
    """A filler sentence from ``templates`` not used yet in this document (when possible)."""
    choices = [t for t in templates if t not in used] or list(templates)
    template = rng.choice(choices)
    used.append(template)
    return template.format(**_filler_slots(rng), **extra)


class _Event:
    """One sampled news event: slots, the chosen facts (indices into the kind's fact list)."""

    def __init__(self, rng: random.Random, n_facts: tuple[int, int], kind: str | None = None):
        self.kind = kind or rng.choice(EVENT_KINDS)
        sampler, facts, self._title, self._topic = EVENTS[self.kind]
        self.slots = sampler(rng)
        extra = {}
        for key, value in self.slots.items():
            if isinstance(value, str):
                extra[key[:1].upper() + key[1:]] = " ".join(_cap(w) for w in value.split())
        self.slots.update(extra)
        self.facts = facts
        k = rng.randint(*n_facts)
        self.chosen = [0] + sorted(_sample(rng, range(1, len(facts)), k - 1))

    def long(self, rng: random.Random, i: int) -> str:
        return _cap(rng.choice(self.facts[i][0]).format(**self.slots))

    def short(self, i: int) -> str:
        return _cap(self.facts[i][1].format(**self.slots))

    def title(self) -> str:
        return self._title.format(**self.slots)

    def topic(self) -> str:
        return self._topic.format(**self.slots)


def _grow(rng: random.Random, paragraphs: list[list[str]], target: int, make: Callable[[], str]) -> None:
    """Add filler sentences after each paragraph's first sentence until ``target`` words."""
    total = sum(_words(s) for p in paragraphs for s in p)
    misses = 0
    while misses < 8:  # stop once several candidates in a row would overshoot
        sentence = make()
        if total + _words(sentence) > target:
            misses += 1
            continue
        paragraphs[rng.randrange(len(paragraphs))].append(sentence)
        total += _words(sentence)


def _with_min_words(rng: random.Random, make: Callable[[], tuple[Any, str]], lo: int, hi: int) -> Any:
    """Resample ``make`` until its summary has ``lo``..``hi`` words."""
    for _ in range(1000):
        value, summary = make()
        if lo <= _words(summary) <= hi:
            return value
    raise RuntimeError("could not meet the summary length bounds")  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# cnn_dm
# --------------------------------------------------------------------------------------------------


def _make_cnn_dm(rng: random.Random) -> tuple[dict[str, Any], str]:
    def attempt() -> tuple[_Event, str]:
        event = _Event(rng, (2, 4))
        return event, " ".join(event.short(i) for i in event.chosen)

    event = _with_min_words(rng, attempt, 20, 80)
    paragraphs = [[event.long(rng, i)] for i in event.chosen]
    used: list[str] = []
    _grow(rng, paragraphs, rng.randint(170, 330), lambda: _filler(rng, NEWS_FILLERS, used))
    city = event.slots.get("city", _city(rng)).upper()
    if rng.random() < 0.5:
        prefix = f"{city} ({rng.choice(OUTLETS)}) -- "
    else:
        prefix = f"By . {_person(rng)} . PUBLISHED: . {rng.randint(1, 28)} {rng.choice(MONTHS)} . "
    article = prefix + " ".join(s for p in paragraphs for s in p)
    highlights = "\n".join(event.short(i) + " ." for i in event.chosen)
    example = {"article": article, "highlights": highlights, "id": hashlib.sha1(article.encode()).hexdigest()}
    return example, highlights


# --------------------------------------------------------------------------------------------------
# multi_news
# --------------------------------------------------------------------------------------------------


def _make_multi_news(rng: random.Random) -> tuple[dict[str, Any], str]:
    def attempt() -> tuple[_Event, str]:
        event = _Event(rng, (3, 5))
        return event, " ".join(event.short(i) + "." for i in event.chosen)

    event = _with_min_words(rng, attempt, 20, 80)
    n_docs = rng.randint(2, 4)
    # every chosen fact is reported by at least one document; the lead by the first
    coverage: list[list[int]] = [[] for _ in range(n_docs)]
    for j, i in enumerate(event.chosen):
        docs = {0} if j == 0 else {rng.randrange(n_docs)}
        docs |= {d for d in range(n_docs) if rng.random() < 0.35}
        for d in sorted(docs):
            coverage[d].append(i)
    for d in range(n_docs):  # a document with no key fact still talks about the event
        if not coverage[d]:
            coverage[d].append(0)
    docs_paragraphs = [[[event.long(rng, i)] for i in coverage[d]] for d in range(n_docs)]
    key_words = sum(_words(s) for doc in docs_paragraphs for p in doc for s in p)
    filler_budget = max(0, rng.randint(290, 570) - key_words) // n_docs
    documents = []
    for paragraphs in docs_paragraphs:
        used: list[str] = []
        if len(paragraphs) == 1:  # news pages have several paragraphs
            paragraphs.append([_filler(rng, NEWS_FILLERS, used)])
        target = sum(_words(s) for p in paragraphs for s in p) + filler_budget
        _grow(rng, paragraphs, target, lambda used=used: _filler(rng, NEWS_FILLERS, used))
        documents.append("\n\n".join(" ".join(p) for p in paragraphs))
    summary = " ".join(event.short(i) + "." for i in event.chosen)
    return {"document": " ||||| ".join(documents), "summary": summary}, summary


def multi_news_raw(example: dict[str, str]) -> tuple[str, str]:
    """One example as its lines in the raw ``.src.cleaned`` / ``.tgt`` files of alexfabbri/multi_news:
    newlines written as ``NEWLINE_CHAR`` tokens, the summary led by an en dash."""
    src = example["document"].replace("\n\n", " NEWLINE_CHAR NEWLINE_CHAR ").replace("\n", " NEWLINE_CHAR ")
    return src, "– " + example["summary"]


# --------------------------------------------------------------------------------------------------
# mediasum
# --------------------------------------------------------------------------------------------------

HOST_OPENERS = [
    "So, what happened?",
    "Let's start with the basics. What happened?",
    "Tell us what you know.",
    "Walk us through it. What happened?",
]
HOST_QUESTIONS = [
    "Can you tell us more about that?",
    "And what do we know so far?",
    "What else should our listeners know?",
    "What are people saying about it?",
    "What comes next?",
    "Is there anything that surprised you?",
    "And what is the latest?",
    "What other details have come out?",
]
HOST_FILLERS = [
    "That is remarkable.",
    "Interesting.",
    "For those just joining us, this is {program}.",
    "We have a lot of calls coming in on this.",
    "Let me read an email from {firstx} in {cityx}, who writes that the traffic there was terrible.",
    "We will take a short break in a moment.",
    "I have to say, I was surprised when I first heard about it.",
    "Our producer tells me the phone lines are full.",
]
HOST_PROMPTS = [
    "Go on.",
    "Please, go ahead.",
    "Before we go, any last thoughts?",
    "How are people in the area coping?",
    "What is the mood like there?",
    "How long have you been following this?",
]
GUEST_FILLERS = [
    "I think a lot of people were caught by surprise.",
    "We are still gathering information, to be honest.",
    "It has been a very long week for everyone involved.",
    "I was in {cityx} on {dayx} and people were talking about little else.",
    "Of course, we will know more in a few days.",
    "I would not want to speculate beyond that.",
    "My colleagues at the {orgx} have been working on it around the clock.",
    "People have been very patient, I have to say.",
    "I have been doing this job for {numx} weeks and I have not seen anything like it.",
    "There is a lot of rumour going around, so I want to be careful.",
    "The best thing people can do is follow the official updates.",
    "We spoke to {personx} about it, who was very helpful.",
    "It reminds me a little of what happened in {cityx} a few years ago.",
    "Honestly, the community has been wonderful.",
]
CALLER_LINES = [
    "Hi, thanks for taking my call. In a separate case, my neighbour in {cityx} lost {numx} chickens last "
    "month.",
    "I just wanted to say that the bus from {cityx} to {cityy} was late again on {dayx}.",
    "I used to live in {cityx} and the {orgx} was always very quiet back then.",
    "Thank you. My question is whether the market in {cityx} will still open on {dayx}.",
    "Hello. I drive through {cityx} every day and the roads have been terrible for {numx} days.",
    "I wanted to ask whether the {orgx} is still hiring in {cityy}.",
    "Good morning. My sister works in {cityx} and she says everyone is talking about it.",
    "Hi. I just want to thank everyone at the {orgx} for their work this year.",
    "I have a question about the ferry to {cityy}. Is it running on {dayx}?",
    "Thanks. Last year I visited {cityx} and met {personx}, who told me a very different story.",
]


def _make_mediasum(rng: random.Random) -> tuple[dict[str, Any], str]:
    def attempt() -> tuple[tuple[_Event, str, str, str, str], str]:
        event = _Event(rng, (2, 4))
        guest = _person(rng)
        role = rng.choice(ROLES)
        org = _org(rng)
        intro = f"{guest}, {role} at the {org}, discusses {event.topic()}."
        summary = " ".join([intro] + [event.short(i) + "." for i in event.chosen])
        return (event, guest, role, org, summary), summary

    event, guest, role, org, summary = _with_min_words(rng, attempt, 20, 80)
    host = _person(rng)
    program = rng.choice(PROGRAMS)
    host_tag = f"{host.upper()}, host"
    guest_tag = f"{guest.upper()} ({_cap(role)}, {org})"
    Turn = tuple[str, str]
    host_used: list[str] = []
    guest_used: list[str] = []
    prompt_used: list[str] = []
    caller_used: list[str] = []

    # key-fact blocks: a host question, then the guest's answer opening with the fact
    questions = _sample(rng, HOST_QUESTIONS, len(HOST_QUESTIONS))
    fact_blocks: list[list[Turn]] = []
    for j, i in enumerate(event.chosen):
        question = rng.choice(HOST_OPENERS) if j == 0 else questions[j % len(questions)]
        answer = [event.long(rng, i)]
        if rng.random() < 0.5:
            answer.append(_filler(rng, GUEST_FILLERS, guest_used))
        fact_blocks.append([(host_tag, question), (guest_tag, " ".join(answer))])

    def digression() -> list[Turn]:
        r = rng.random()
        if r < 0.35:
            caller = _person(rng)
            return [
                (host_tag, f"Let's go to {caller.split()[0]} in {_city(rng)}. Go ahead."),
                (f"{caller.upper()} (Caller)", _filler(rng, CALLER_LINES, caller_used)),
                (host_tag, rng.choice(["Thanks for the call.", "Thank you for calling.", "Thanks."])),
            ]
        if r < 0.65:
            return [
                (host_tag, _filler(rng, HOST_FILLERS, host_used, program=program)),
                (guest_tag, _filler(rng, GUEST_FILLERS, guest_used)),
            ]
        return [
            (host_tag, _filler(rng, HOST_PROMPTS, prompt_used)),
            (guest_tag, _filler(rng, GUEST_FILLERS, guest_used)),
        ]

    opening: list[Turn] = [
        (
            host_tag,
            f"This is {program}. I'm {host}. Today we are talking about {event.topic()}. "
            f"Joining us is {guest}, {role} at the {org}. Welcome.",
        ),
        (guest_tag, rng.choice(["Thank you for having me.", "Thanks. Good to be here.", "Glad to be here."])),
    ]
    closing: list[Turn] = [(host_tag, f"{guest}, thank you very much."), (guest_tag, "Thank you.")]
    # digressions go between (never inside) the fact blocks, which keep their order
    slots: list[list[list[Turn]]] = [[] for _ in range(len(fact_blocks) + 1)]
    target = rng.randint(280, 560)

    def words() -> int:
        turns = opening + closing + [t for b in fact_blocks for t in b]
        turns += [t for slot in slots for block in slot for t in block]
        return sum(_words(u) for _, u in turns)

    while True:
        block = digression()
        if words() + sum(_words(u) for _, u in block) > target:
            break
        slots[rng.randint(1, len(slots) - 1)].append(block)
    turns = list(opening)
    for k in range(len(slots)):
        if k > 0:
            turns += fact_blocks[k - 1]
        for block in slots[k]:
            turns += block
    turns += closing
    utt = [u for _, u in turns]
    speaker = [s for s, _ in turns]
    year = rng.randint(2001, 2019)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    number = int(_sha(summary + "\x1f".join(utt))[:10], 16) % 10**8
    slug = program.lower().replace(" ", "-")
    example = {
        "id": f"RADIO-{number}",
        "program": program,
        "date": f"{year:04d}-{month:02d}-{day:02d}",
        "url": f"https://radio.example.org/{slug}/{year:04d}/{month:02d}/{day:02d}/{number}",
        "title": event.title(),
        "summary": summary,
        "utt": utt,
        "speaker": speaker,
    }
    return example, summary


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


def _sci_article(
    rng: random.Random,
    facts: list[Fact],
    slots_fn: Callable[[random.Random], dict[str, Any]],
    fillers: list[str],
    filler_slots: Callable[[random.Random], dict[str, Any]],
    join_abstract: Callable[[list[str]], str],
) -> tuple[dict[str, str], str]:
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
        return _fill_sci(rng, fillers, used, extra)

    _grow(rng, paragraphs, rng.randint(270, 580), make)
    article = "\n".join(" ".join(p) for p in paragraphs)
    counter = iter(range(10_000))
    article = re.sub(r"@xmath(?!\d)", lambda _: f"@xmath{next(counter)}", article)
    abstract = join_abstract([facts[i][1].format(**slots) for i in chosen])
    return {"article": article, "abstract": abstract}, abstract


def _fill_sci(rng: random.Random, templates: list[str], used: list[str], slots: dict[str, Any]) -> str:
    choices = [t for t in templates if t not in used] or templates
    template = rng.choice(choices)
    used.append(template)
    return template.format(**slots)


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


# --------------------------------------------------------------------------------------------------
# wmt_en_de: a small English grammar and its German rendering
# --------------------------------------------------------------------------------------------------

# nouns: english, german, gender, kind
NOUNS = [
    ("teacher", "Lehrer", "m", "person"), ("doctor", "Ärztin", "f", "person"),
    ("fisherman", "Fischer", "m", "person"), ("painter", "Malerin", "f", "person"),
    ("baker", "Bäcker", "m", "person"), ("judge", "Richterin", "f", "person"),
    ("cook", "Koch", "m", "person"), ("singer", "Sängerin", "f", "person"),
    ("mayor", "Bürgermeister", "m", "person"), ("journalist", "Journalistin", "f", "person"),
    ("waiter", "Kellner", "m", "person"), ("pilot", "Pilotin", "f", "person"),
    ("merchant", "Händler", "m", "person"), ("pupil", "Schülerin", "f", "person"),
    ("driver", "Fahrer", "m", "person"), ("neighbour", "Nachbarin", "f", "person"),
    ("letter", "Brief", "m", "thing"), ("book", "Buch", "n", "thing"), ("car", "Auto", "n", "thing"),
    ("key", "Schlüssel", "m", "thing"), ("table", "Tisch", "m", "thing"),
    ("newspaper", "Zeitung", "f", "thing"), ("boat", "Boot", "n", "thing"),
    ("window", "Fenster", "n", "thing"), ("door", "Tür", "f", "thing"), ("lamp", "Lampe", "f", "thing"),
    ("map", "Karte", "f", "thing"), ("gift", "Geschenk", "n", "thing"), ("picture", "Bild", "n", "thing"),
    ("suitcase", "Koffer", "m", "thing"), ("bicycle", "Fahrrad", "n", "thing"),
    ("clock", "Uhr", "f", "thing"),
    ("museum", "Museum", "n", "place"), ("station", "Bahnhof", "m", "place"),
    ("market", "Markt", "m", "place"), ("church", "Kirche", "f", "place"),
    ("school", "Schule", "f", "place"), ("harbour", "Hafen", "m", "place"),
    ("garden", "Garten", "m", "place"), ("bridge", "Brücke", "f", "place"),
    ("house", "Haus", "n", "place"), ("library", "Bibliothek", "f", "place"),
]  # fmt: skip
# adjectives: english, german stem, applies to (person / thing / both)
ADJECTIVES = [
    ("old", "alt", "b"), ("new", "neu", "b"), ("small", "klein", "b"), ("big", "groß", "b"),
    ("quiet", "ruhig", "p"), ("famous", "berühmt", "b"), ("beautiful", "schön", "b"),
    ("young", "jung", "p"), ("friendly", "freundlich", "p"), ("clever", "klug", "p"),
    ("happy", "glücklich", "p"), ("curious", "neugierig", "p"), ("hard-working", "fleißig", "p"),
    ("red", "rot", "t"), ("heavy", "schwer", "t"), ("empty", "leer", "t"), ("blue", "blau", "t"),
    ("white", "weiß", "t"), ("cheap", "billig", "t"), ("strange", "seltsam", "t"), ("green", "grün", "t"),
]  # fmt: skip
# transitive verbs: (base, 3sg, past), german 3sg present, participle, separable prefix, object kinds
TRANSITIVE = [
    (("visit", "visits", "visited"), "besucht", "besucht", "", ("person", "place")),
    (("see", "sees", "saw"), "sieht", "gesehen", "", ("person", "thing", "place")),
    (("find", "finds", "found"), "findet", "gefunden", "", ("thing",)),
    (("buy", "buys", "bought"), "kauft", "gekauft", "", ("thing",)),
    (("sell", "sells", "sold"), "verkauft", "verkauft", "", ("thing",)),
    (("paint", "paints", "painted"), "malt", "gemalt", "", ("thing", "place", "person")),
    (("repair", "repairs", "repaired"), "repariert", "repariert", "", ("thing",)),
    (("carry", "carries", "carried"), "trägt", "getragen", "", ("thing",)),
    (("lose", "loses", "lost"), "verliert", "verloren", "", ("thing",)),
    (("describe", "describes", "described"), "beschreibt", "beschrieben", "", ("person", "thing", "place")),
    (("meet", "meets", "met"), "trifft", "getroffen", "", ("person",)),
    (("greet", "greets", "greeted"), "begrüßt", "begrüßt", "", ("person",)),
    (("clean", "cleans", "cleaned"), "putzt", "geputzt", "", ("thing",)),
    (("photograph", "photographs", "photographed"), "fotografiert", "fotografiert", "",
     ("person", "thing", "place")),
    (("call", "calls", "called"), "ruft", "angerufen", "an", ("person",)),
    (("invite", "invites", "invited"), "lädt", "eingeladen", "ein", ("person",)),
    (("collect", "collects", "collected"), "holt", "abgeholt", "ab", ("person", "thing")),
]  # fmt: skip
# motion verbs with a destination city ("to X" -> "nach X"); perfect with "sein"
MOTION = [
    (("travel", "travels", "travelled"), "reist", "gereist", ""),
    (("drive", "drives", "drove"), "fährt", "gefahren", ""),
    (("fly", "flies", "flew"), "fliegt", "geflogen", ""),
    (("walk", "walks", "walked"), "läuft", "gelaufen", ""),
    (("return", "returns", "returned"), "kehrt", "zurückgekehrt", "zurück"),
]
# time adverbials: english, german, tenses allowed
TIMES = [
    ("on Monday", "am Montag", "both"), ("on Tuesday", "am Dienstag", "both"),
    ("on Wednesday", "am Mittwoch", "both"), ("on Thursday", "am Donnerstag", "both"),
    ("on Friday", "am Freitag", "both"), ("on Saturday", "am Samstag", "both"),
    ("on Sunday", "am Sonntag", "both"), ("in the evening", "am Abend", "both"),
    ("in the morning", "am Morgen", "both"), ("after lunch", "nach dem Mittagessen", "both"),
    ("in the summer", "im Sommer", "both"), ("yesterday", "gestern", "past"),
    ("last week", "letzte Woche", "past"), ("today", "heute", "present"),
    ("every morning", "jeden Morgen", "present"),
]  # fmt: skip
MANNERS = [
    ("quickly", "schnell"),
    ("carefully", "vorsichtig"),
    ("quietly", "leise"),
    ("again", "wieder"),
    ("proudly", "stolz"),
]
# locative prepositions taking the dative
LOC_PREPS = [("next to", "neben"), ("behind", "hinter"), ("in front of", "vor")]
DE_ART = {
    ("def", "nom"): {"m": "der", "f": "die", "n": "das"},
    ("def", "acc"): {"m": "den", "f": "die", "n": "das"},
    ("def", "dat"): {"m": "dem", "f": "der", "n": "dem"},
    ("indef", "nom"): {"m": "ein", "f": "eine", "n": "ein"},
    ("indef", "acc"): {"m": "einen", "f": "eine", "n": "ein"},
    ("indef", "dat"): {"m": "einem", "f": "einer", "n": "einem"},
}
SAY_VERBS = [(("said", "says"), ("sagte", "sagt")), (("believed", "believes"), ("glaubte", "glaubt"))]


def _adj_ending(det: str, case: str, gender: str) -> str:
    if case == "dat":
        return "en"
    if det == "def":
        return "en" if (case == "acc" and gender == "m") else "e"
    if case == "nom":
        return {"m": "er", "f": "e", "n": "es"}[gender]
    return {"m": "en", "f": "e", "n": "es"}[gender]


class _NP:
    """A noun phrase: a bare name, or determiner + optional adjective + noun."""

    def __init__(self, rng: random.Random, kind: str, allow_name: bool = True):
        self.name = None
        if kind == "person" and allow_name and rng.random() < 0.35:
            self.name = rng.choice(FIRST_NAMES)
            return
        self.noun = rng.choice([n for n in NOUNS if n[3] == kind])
        self.det = "def" if rng.random() < 0.7 else "indef"
        wanted = "p" if kind == "person" else "t"
        self.adj = (
            rng.choice([a for a in ADJECTIVES if a[2] in ("b", wanted)]) if rng.random() < 0.6 else None
        )

    def en(self) -> str:
        if self.name:
            return self.name
        words = ([self.adj[0]] if self.adj else []) + [self.noun[0]]
        if self.det == "def":
            det = "the"
        else:
            det = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([det] + words)

    def de(self, case: str) -> str:
        if self.name:
            return self.name
        gender = self.noun[2]
        words = [DE_ART[(self.det, case)][gender]]
        if self.adj:
            words.append(self.adj[1] + _adj_ending(self.det, case, gender))
        words.append(self.noun[1])
        return " ".join(words)


class _Clause:
    """Subject + verb (+ object) (+ manner) (+ place) (+ time), rendered in English and in German."""

    def __init__(self, rng: random.Random, tense: str, with_time: bool = True):
        self.tense = tense
        self.subj = _NP(rng, "person")
        self.motion = rng.random() < 0.25
        if self.motion:
            forms, self.v3, self.pp, self.sep = rng.choice(MOTION)
            self.obj = None
            self.aux = ("ist", "sind")
            self.dest = _city(rng)
        else:
            forms, self.v3, self.pp, self.sep, kinds = rng.choice(TRANSITIVE)
            self.obj = _NP(rng, rng.choice(kinds))
            self.aux = ("hat", "haben")
            self.dest = None
        self.forms = forms
        self.manner = rng.choice(MANNERS) if rng.random() < 0.3 else None
        self.loc = None
        if not self.motion and rng.random() < 0.45:
            if rng.random() < 0.5:
                self.loc = ("in " + (city := _city(rng)), "in " + city)
            else:
                prep = rng.choice(LOC_PREPS)
                place = _NP(rng, "place", allow_name=False)
                self.loc = (f"{prep[0]} {place.en()}", f"{prep[1]} {place.de('dat')}")
        allowed = [t for t in TIMES if t[2] in ("both", tense)]
        self.time = rng.choice(allowed) if with_time and rng.random() < 0.7 else None

    def en_verb(self) -> str:
        return self.forms[1] if self.tense == "present" else self.forms[2]

    def en(self, front_time: bool = False) -> str:
        parts = [self.subj.en(), self.en_verb()]
        if self.obj:
            parts.append(self.obj.en())
        if self.dest:
            parts.append("to " + self.dest)
        if self.manner:
            parts.append(self.manner[0])
        if self.loc:
            parts.append(self.loc[0])
        if self.time and not front_time:
            parts.append(self.time[0])
        return " ".join(parts)

    def _midfield(self, skip_time: bool) -> list[str]:
        parts = []
        if self.time and not skip_time:
            parts.append(self.time[1])
        if self.manner:
            parts.append(self.manner[1])
        if self.obj:
            parts.append(self.obj.de("acc"))
        if self.loc:
            parts.append(self.loc[1])
        if self.dest:
            parts.append("nach " + self.dest)
        return parts

    def de(self, order: str, skip_time: bool = False) -> str:
        """``order``: "main" (subject first, verb second), "inv" (verb first: something was fronted),
        "sub" (subordinate clause, finite verb last)."""
        subj = self.subj.de("nom")
        mid = self._midfield(skip_time)
        if self.tense == "present":
            if order == "sub":
                return " ".join([subj, *mid, self.sep + self.v3])
            tail = [self.sep] if self.sep else []
            head = [subj, self.v3] if order == "main" else [self.v3, subj]
            return " ".join(head + mid + tail)
        aux = self.aux[0]
        if order == "sub":
            return " ".join([subj, *mid, self.pp, aux])
        head = [subj, aux] if order == "main" else [aux, subj]
        return " ".join(head + mid + [self.pp])


def _make_wmt(rng: random.Random) -> tuple[dict[str, Any], str]:
    for _ in range(1000):
        tense = rng.choice(["present", "past"])
        form = rng.choices(["simple", "fronted", "because", "that", "when", "and"], [2, 2, 3, 2, 2, 2])[0]
        if form == "when":
            tense = "present"
        c1 = _Clause(rng, tense)
        if form == "simple":
            en, de = c1.en(), c1.de("main")
        elif form == "fronted":
            if not c1.time:
                continue
            en = f"{_cap(c1.time[0])}, {c1.en(front_time=True)}"
            de = f"{_cap(c1.time[1])} {c1.de('inv', skip_time=True)}"
        elif form == "because":
            c2 = _Clause(rng, rng.choice(["present", "past"]))
            en, de = f"{c1.en()}, because {c2.en()}", f"{c1.de('main')}, weil {c2.de('sub')}"
        elif form == "that":
            sayer = _NP(rng, "person")
            en_say, de_say = rng.choice(SAY_VERBS)
            k = 0 if tense == "past" else 1
            en = f"{sayer.en()} {en_say[k]} that {c1.en()}"
            de = f"{sayer.de('nom')} {de_say[k]}, dass {c1.de('sub')}"
        elif form == "when":
            c2 = _Clause(rng, "present", with_time=False)
            en = f"When {c1.en()}, {c2.en()}"
            de = f"Wenn {c1.de('sub')}, {c2.de('inv')}"
        else:
            c2 = _Clause(rng, tense, with_time=False)
            en, de = f"{c1.en()} and {c2.en()}", f"{c1.de('main')} und {c2.de('main')}"
        en, de = _cap(en) + ".", _cap(de) + "."
        if 10 <= _words(en) <= 30:
            return {"translation": {"de": de, "en": en}}, en
    raise RuntimeError("no sentence of the right length")  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# trivia_qa: a fixed fact world
# --------------------------------------------------------------------------------------------------

# relation -> (question templates, evidence templates); evidence must contain the answer's value.
RELATIONS: dict[str, tuple[list[str], list[str]]] = {
    "capital": (
        [
            "Which city is the capital of {s}?",
            "What is the capital of {s}?",
            "{s} is governed from which city?",
        ],
        ["The capital of {s} is {o}.", "{o} is the capital and largest city of {s}."],
    ),
    "river": (
        ["What is the longest river in {s}?", "Which river is the longest in {s}?"],
        ["The longest river in {s} is the {o}.", "The {o} is the longest river in {s}."],
    ),
    "currency": (
        ["What is the currency of {s}?", "In {s}, prices are paid in which currency?"],
        ["The currency of {s} is the {o}.", "Prices in {s} are paid in the {o}."],
    ),
    "animal": (
        ["What is the national animal of {s}?", "Which animal is the national symbol of {s}?"],
        [
            "The national animal of {s} is the {o}.",
            "The {o} appears on the coat of arms of {s} as its national animal.",
        ],
    ),
    "independence": (
        ["In which year did {s} become independent?", "When did {s} gain independence?"],
        ["{s} became independent in {o}.", "{s} gained its independence in {o}."],
    ),
    "president": (
        ["Who was the first president of {s}?", "Who served as the first president of {s}?"],
        ["The first president of {s} was {o}.", "{o} served as the first president of {s}."],
    ),
    "birthplace": (
        ["In which city was {s} born?", "What is the birthplace of {s}?"],
        ["{s} was born in {o}.", "Born in {o}, {s} later moved abroad."],
    ),
    "birth_year": (
        ["In which year was {s} born?", "When was {s} born?"],
        ["{s} was born in the year {o}.", "Records show that {s} was born in {o}."],
    ),
    "book": (
        ["Which book is {s} best known for?", "What is the best-known book by {s}?"],
        ["{s} is best known as the author of {o}.", "The novel {o} made {s} famous."],
    ),
    "instrument": (
        ["Which instrument did {s} play?", "{s} was a famous player of which instrument?"],
        ["{s} played the {o} in several orchestras.", "As a young musician, {s} took up the {o}."],
    ),
    "founder": (
        ["Who founded the {s}?", "Who was the founder of the {s}?"],
        ["The {s} was founded by {o}.", "{o} founded the {s}."],
    ),
    "headquarters": (
        ["In which city is the {s} based?", "Where does the {s} have its headquarters?"],
        ["The {s} has its headquarters in {o}.", "The {s} is based in {o}."],
    ),
    "founded": (
        ["In which year was the {s} founded?", "When was the {s} established?"],
        ["The {s} was established in {o}.", "Since its founding in {o}, the {s} has grown steadily."],
    ),
}
SUBJECT_INTROS = {
    "country": [
        "{s} is a country in the {region} region.",
        "{s} is a small state on the edge of the {region} region.",
    ],
    "person": ["{s} was a writer and musician from {country}.", "{s} was an artist born in {country}."],
    "org": [
        "The {s} is an organisation based in {country}.",
        "The {s} is one of the oldest bodies in {country}.",
    ],
}
PAGE_FILLERS = {
    "country": [
        "Its economy is based on farming, fishing and trade.",
        "The country has a mild climate with wet winters.",
        "Its population is about {num} thousand people.",
        "Tourism has grown steadily in recent decades.",
    ],
    "person": [
        "Little is known about their early education.",
        "Their letters were published after their death.",
        "They travelled widely and spoke several languages.",
        "A street in {city} is named after them.",
    ],
    "org": [
        "It employs about {num} people.",
        "Its annual report is published each spring.",
        "It has opened several branch offices abroad.",
        "Its archive is open to researchers by appointment.",
    ],
}


class _Entity:
    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind
        self.facts: dict[str, Any] = {}  # relation -> answer (see _answer)
        self.attrs: dict[str, Any] = {}


def _answer_aliases(kind: str, value: Any) -> tuple[list[str], str]:
    if kind == "city":
        return [value, f"City of {value}"], "WikipediaEntity"
    if kind == "person":
        first, last = value.split()
        return [value, last, f"{first[0]}. {last}"], "WikipediaEntity"
    if kind == "river":
        return [f"{value} River", value, f"River {value}"], "WikipediaEntity"
    if kind == "currency":
        return [value, value + "s"], "WikipediaEntity"
    if kind == "book":
        return [value, value.removeprefix("The ")], "WikipediaEntity"
    if kind == "year":
        return [str(value)], "FreeForm"
    return [value], "WikipediaEntity"  # animal, instrument


RELATION_KINDS = {
    "capital": "city", "river": "river", "currency": "currency", "animal": "animal", "independence": "year",
    "president": "person", "birthplace": "city", "birth_year": "year", "book": "book",
    "instrument": "instrument", "founder": "person", "headquarters": "city", "founded": "year",
}  # fmt: skip


@lru_cache(maxsize=1)
def _world() -> list[_Entity]:
    """The fixed fact world (same for every split and seed): countries, people, organisations."""
    rng = random.Random(WORLD_SEED)
    cities = [h + t for h in CITY_HEADS for t in CITY_TAILS]
    rng.shuffle(cities)
    countries = [h + t for h in COUNTRY_HEADS for t in COUNTRY_TAILS]
    rng.shuffle(countries)
    countries = countries[:150]
    people = [f"{f} {s}" for f in FIRST_NAMES for s in SURNAMES]
    rng.shuffle(people)
    orgs = [f"{h} {k}" for h in ORG_HEADS for k in ORG_KINDS]
    rng.shuffle(orgs)
    books = [f"The {a} {n}" for a in BOOK_ADJS for n in BOOK_NOUNS]
    rng.shuffle(books)
    entities: list[_Entity] = []
    # an entity's page may name a country; keep that country in the entity's own split
    by_split = {sp: [c for c in countries if split_of("trivia_qa", c) == sp] for sp in SPLITS}

    def home(name: str) -> str:
        return rng.choice(by_split[split_of("trivia_qa", name)])

    presidents = people[:150]
    for i, name in enumerate(countries):
        e = _Entity(name, "country")
        e.facts = {
            "capital": cities[i],
            "river": rng.choice(RIVERS),
            "currency": rng.choice(CURRENCIES),
            "animal": rng.choice(ANIMALS),
            "independence": rng.randint(1650, 1990),
            "president": presidents[i],
        }
        e.attrs = {"region": rng.choice(REGIONS), "num": rng.randint(80, 9000)}
        entities.append(e)
    for i, name in enumerate(people[150:350]):
        e = _Entity(name, "person")
        e.facts = {
            "birthplace": rng.choice(cities),
            "birth_year": rng.randint(1700, 1980),
            "book": books[i],
            "instrument": rng.choice(INSTRUMENTS),
        }
        e.attrs = {"country": home(name), "city": rng.choice(cities)}
        entities.append(e)
    founders = people[350:]
    for i, name in enumerate(orgs):
        e = _Entity(name, "org")
        e.facts = {
            "founder": founders[i],
            "headquarters": rng.choice(cities),
            "founded": rng.randint(1750, 2005),
        }
        e.attrs = {"country": home(name), "num": rng.randint(20, 5000)}
        entities.append(e)
    return entities


@cache
def _world_split(split: str) -> list[_Entity]:
    return [e for e in _world() if split_of("trivia_qa", e.name) == split]


def _fact_sentence(rng: random.Random, entity: _Entity, relation: str) -> str:
    value = entity.facts[relation]
    rendered = _answer_aliases(RELATION_KINDS[relation], value)[0][0]
    template = rng.choice(RELATIONS[relation][1])
    return _cap(template.format(s=entity.name, o=rendered))


def _page(rng: random.Random, entity: _Entity, others: list[_Entity]) -> str:
    """A wiki-like page about ``entity``: intro, its facts in random order, filler, and a few facts
    about other entities of the same kind (the distractors)."""
    fill = {"s": entity.name, **entity.attrs}
    sentences = [_cap(rng.choice(SUBJECT_INTROS[entity.kind]).format(**fill))]
    body = [_fact_sentence(rng, entity, r) for r in entity.facts]
    body += [f.format(**fill) for f in _sample(rng, PAGE_FILLERS[entity.kind], 2)]
    rng.shuffle(body)
    sentences += body
    for other in others:
        relation = rng.choice(list(other.facts))
        link = rng.choice(["It is often compared with {o}.", "It is sometimes confused with {o}."])
        sentences.append(link.format(o=("the " if other.kind == "org" else "") + other.name))
        sentences.append(_fact_sentence(rng, other, relation))
    return " ".join(sentences)


def _make_trivia(rng: random.Random, split: str) -> tuple[dict[str, Any], str]:
    pool = _world_split(split)
    entity = rng.choice(pool)
    relation = rng.choice(list(entity.facts))
    same_kind = [e for e in pool if e.kind == entity.kind and e is not entity]
    value = entity.facts[relation]
    aliases, answer_type = _answer_aliases(RELATION_KINDS[relation], value)
    question = _cap(rng.choice(RELATIONS[relation][0]).format(s=entity.name))
    pages = [(entity, _page(rng, entity, _sample(rng, same_kind, rng.randint(1, 3))))]
    if rng.random() < 0.5:
        second = rng.choice(same_kind)
        pages.append((second, _page(rng, second, _sample(rng, [e for e in same_kind if e is not second], 1))))
    normalized = []
    for alias in aliases:
        if normalize_answer(alias) not in normalized:
            normalized.append(normalize_answer(alias))
    entity_name = aliases[0] if answer_type == "WikipediaEntity" else ""
    body = question + "\x1f" + "\x1f".join(text for _, text in pages)
    example = {
        "question": question,
        "question_id": f"tc_{int(_sha(body)[:12], 16) % 10**9}",
        "question_source": "https://quiz.example.org/",
        "entity_pages": {
            "doc_source": ["TagMe" for _ in pages],
            "filename": [e.name.replace(" ", "_") + ".txt" for e, _ in pages],
            "title": [e.name for e, _ in pages],
            "wiki_context": [text for _, text in pages],
        },
        "search_results": {
            "description": [],
            "filename": [],
            "rank": [],
            "title": [],
            "url": [],
            "search_context": [],
        },
        "answer": {
            "aliases": aliases,
            "normalized_aliases": normalized,
            "matched_wiki_entity_name": entity_name,
            "normalized_matched_wiki_entity_name": normalize_answer(entity_name),
            "normalized_value": normalize_answer(aliases[0]),
            "type": answer_type,
            "value": aliases[0],
        },
    }
    return example, f"{entity.name}\x1f{relation}"


# --------------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------------

MAKERS: dict[str, Callable[[random.Random], tuple[dict[str, Any], str]]] = {
    "cnn_dm": _make_cnn_dm,
    "arxiv": _make_arxiv,
    "pubmed": _make_pubmed,
    "mediasum": _make_mediasum,
    "multi_news": _make_multi_news,
    "wmt_en_de": _make_wmt,
}


def split_key(task: str, example: dict[str, Any]) -> str:
    """The text an example's split is decided by, read off the example itself."""
    if task == "cnn_dm":
        return example["highlights"]
    if task in ("arxiv", "pubmed"):
        return example["abstract"]
    if task in ("mediasum", "multi_news"):
        return example["summary"]
    if task == "wmt_en_de":
        return example["translation"]["en"]
    if task == "trivia_qa":
        return example["entity_pages"]["title"][0]
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def generate(task: str, split: str, n: int, seed: int | None = None) -> list[dict[str, Any]]:
    """``n`` examples of ``task`` for ``split`` in the hub dataset's schema (multi_news: the processed
    form ``{"document", "summary"}``, documents joined by ``" ||||| "``). Deterministic in
    (task, split, n, seed); every example's :func:`split_key` hashes into ``split``'s buckets, and no
    two examples of a validation/test call share a key (nor, in a train call, the same content)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    seed = DEFAULT_SEEDS[split] if seed is None else seed
    rng = random.Random(_derive_seed(task, split, seed))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    max_attempts = 200 * n + 10_000
    for _ in range(max_attempts):
        if len(out) >= n:
            break
        if task == "trivia_qa":
            example, unique = _make_trivia(rng, split)
        else:
            example, unique = MAKERS[task](rng)
        if split_of(task, split_key(task, example)) != split:
            continue
        if split == "train":
            unique = json.dumps(example, sort_keys=True, ensure_ascii=False)
        if unique in seen:
            continue
        seen.add(unique)
        out.append(example)
    if len(out) < n:
        raise RuntimeError(f"{task}/{split}: only {len(out)} distinct examples after {max_attempts} tries")
    return out


def _jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_split(task: str, split: str, examples: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Write ``examples`` under ``out/<task>/`` in the file layout of the real dataset; returns the paths."""
    folder = out / task
    folder.mkdir(parents=True, exist_ok=True)
    if task == "multi_news":
        stem = MULTI_NEWS_STEMS[split]
        lines = [multi_news_raw(e) for e in examples]
        src, tgt = folder / f"{stem}.src.cleaned", folder / f"{stem}.tgt"
        src.write_text("".join(s + "\n" for s, _ in lines), encoding="utf-8", newline="\n")
        tgt.write_text("".join(t + "\n" for _, t in lines), encoding="utf-8", newline="\n")
        return [src, tgt]
    path = folder / f"{split}.jsonl"
    path.write_text(_jsonl(examples), encoding="utf-8", newline="\n")
    return [path]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "data", help="default: evals/data"
    )
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="examples per task and split")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=["validation"])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seed", type=int, default=None, help="default: the split's fixed seed")
    args = parser.parse_args(argv)
    for split in args.splits:
        for task in args.tasks:
            examples = generate(task, split, args.n, args.seed)
            for path in write_split(task, split, examples, args.out):
                print(f"{path}: {len(examples)} examples, {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
