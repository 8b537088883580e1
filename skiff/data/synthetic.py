"""The project's own demo dataset: synthetic customer-support messages, generated, not collected.

Every message is assembled from the phrase lists below with a seeded random generator, so
the data is reproducible, free of third-party text, and honest about being synthetic. Some
phrases are shared between topics and a small share of labels are flipped, so a model has
to learn from word combinations and cannot score 100 %.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from skiff.data.dataset import Example

# Phrases of each topic and part, separated by "|".
_PHRASES: dict[str, dict[str, str]] = {
    "billing": {
        "subject": ("my invoice|the last bill|my card|the refund|my subscription fee|the payment|a double charge"),
        "problem": (
            "shows the wrong amount|was charged twice|has not arrived|is higher than last month|was "
            "declined|needs a VAT number|is still pending"
        ),
        "ask": "can you refund it|please correct the invoice|when will the money be back|I want a receipt",
    },
    "delivery": {
        "subject": "my parcel|the package|order 4411|the courier|my shipment|the box|the delivery",
        "problem": (
            "has not arrived|arrived damaged|went to the wrong address|is stuck in transit|was left "
            "outside|is three days late|shows no tracking updates"
        ),
        "ask": "where is it now|please resend it|can I change the address|I need it by friday",
    },
    "technical": {
        "subject": "the app|the website|the login page|my router|the sync|the update|the dashboard",
        "problem": (
            "crashes on start|shows error 500|is very slow|will not connect|logs me out|freezes after "
            "the update|has not arrived"
        ),
        "ask": "how do I fix it|is there a workaround|is the service down|please escalate this bug",
    },
    "account": {
        "subject": "my password|my account|my email address|two factor login|my profile|my username",
        "problem": (
            "was changed without me|is locked|needs updating|does not accept the code|was deleted|is still pending"
        ),
        "ask": "please unlock it|how do I reset it|can you verify my identity|I want to close it",
    },
}
TOPICS = {topic: {part: text.split("|") for part, text in parts.items()} for topic, parts in _PHRASES.items()}

OPENERS = ["hi,", "hello,", "good morning,", "", "hey team,", "urgent:", "sorry to bother you,"]
CLOSERS = ["thanks", "thank you!", "", "regards", "cheers", "asap please", "!!"]


def _message(rng: random.Random, topic: str) -> str:
    words = TOPICS[topic]
    parts = [
        rng.choice(OPENERS),
        f"{rng.choice(words['subject'])} {rng.choice(words['problem'])}.",
        f"{rng.choice(words['ask'])}?",
        rng.choice(CLOSERS),
    ]
    return " ".join(p for p in parts if p).strip()


def generate(rows: int, seed: int = 7, label_noise: float = 0.03) -> Iterator[Example]:
    """``rows`` synthetic messages over all topics; ``label_noise`` of labels are wrong on purpose."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    for _ in range(rows):
        topic = rng.choice(topics)
        text = _message(rng, topic)
        label = rng.choice(topics) if rng.random() < label_noise else topic
        yield Example(text, label)
