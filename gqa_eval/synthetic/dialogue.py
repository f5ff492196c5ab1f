"""The interview world of mediasum: a radio programme in which a host asks a guest about a news
event (:mod:`.events`), with callers, host asides and the guest's small talk in between.

Each key fact opens one of the guest's answers, in the event's order; the reference is the guest's
introduction followed by the facts' short phrasings.
"""

from __future__ import annotations

import random
from typing import Any

from gqa_eval.synthetic.common import _cap, _city, _org, _person, _sample, _sha, _with_min_words, _words
from gqa_eval.synthetic.events import _Event
from gqa_eval.synthetic.news import _filler

ROLES = ["professor", "spokesperson", "director", "senior analyst", "chief engineer", "historian"]
PROGRAMS = ["Evening Ledger", "Morning Crossing", "The Open Line", "Weekend Desk", "Talk of the Valley"]

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
