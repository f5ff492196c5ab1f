"""What every synthetic world shares: the task and split constants, the split hashing, the seeds,
the shared word lists (people, places, organisations, days), and small text and document helpers.

Nothing here depends on a task: a world module samples from these lists and builds its documents with
:func:`_grow` (filler up to a word budget) and :func:`_with_min_words` (resampling until the reference
has the right length).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

TASKS = ("cnn_dm", "arxiv", "pubmed", "mediasum", "multi_news", "wmt_en_de", "trivia_qa")
SPLITS = ("validation", "test", "train")
#: Hash buckets (of 100) owned by each split; see the package docstring.
SPLIT_BUCKETS = {"validation": range(0, 10), "test": range(10, 20), "train": range(20, 100)}
#: Seeds used when none is given. The bundled validation files are generated with these.
DEFAULT_SEEDS = {"validation": 2305, "test": 13245, "train": 1}
DEFAULT_N = 64

# --------------------------------------------------------------------------------------------------
# The shared vocabulary (our own lists)
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
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Hashing, seeds and splits
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


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _words(text: str) -> int:
    return len(text.split())


def _sample(rng: random.Random, seq: Sequence[Any], k: int) -> list[Any]:
    return rng.sample(list(seq), k)


def _pick_unused(rng: random.Random, templates: Sequence[str], used: list[str]) -> str:
    """A template not in ``used`` yet (any, once all are), recorded in ``used``: a document does not
    repeat a filler sentence while it has others left."""
    template = rng.choice([t for t in templates if t not in used] or list(templates))
    used.append(template)
    return template


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
# Documents: key facts, filler up to a word budget, references of bounded length
# --------------------------------------------------------------------------------------------------

# A key fact: (long phrasings for the document, short phrasing for the reference).
Fact = tuple[list[str], str]


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
