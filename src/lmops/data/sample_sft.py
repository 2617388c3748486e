"""Prompt -> response pairs of the built-in sample (``finetune.task: sft`` offline).

Data-to-text in the spirit of the E2E NLG set: the prompt lists a weather report's slots, the
response says them in a sentence. The sample corpus holds weather reports in prose, so a
pretrained model has seen the words and the register: what fine-tuning adds is following the
slots. Each prompt has two references (two phrasings), so BLEU and ROUGE see several.
"""

from __future__ import annotations

import random

from lmops.data.sample import DAYS, WEATHER, _town

__all__ = ["generate_sft"]

WINDS = ("north", "south", "east", "west")


def _slots(rng: random.Random) -> dict[str, str | int]:
    morning, afternoon = rng.sample(WEATHER, 2)
    low = rng.randrange(-5, 30)
    return {
        "town": _town(rng),
        "day": rng.choice(DAYS),
        "morning": morning,
        "afternoon": afternoon,
        "low": low,
        "high": low + rng.randrange(1, 8),
        "wind": rng.choice(WINDS),
    }


def _references(s: dict[str, str | int]) -> tuple[str, str]:
    first = (
        f"On {s['day']} the morning in {s['town']} will be {s['morning']} with temperatures "
        f"around {s['low']} degrees. In the afternoon it will turn {s['afternoon']} and rise "
        f"to {s['high']} degrees, with a light wind from the {s['wind']}."
    )
    second = (
        f"{s['town']} can expect a {s['morning']} {s['day']} morning at around {s['low']} "
        f"degrees, turning {s['afternoon']} in the afternoon at {s['high']} degrees. A light "
        f"wind will blow from the {s['wind']}."
    )
    return first, second


def generate_sft(n_prompts: int, seed: int) -> list[tuple[str, str]]:
    """``(prompt, response)`` rows for ``n_prompts`` distinct prompts, two rows (references) each,
    the rows of one prompt next to each other."""
    if n_prompts < 0:
        raise ValueError("n_prompts must be >= 0")
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(seen) < n_prompts:
        slots = _slots(rng)
        prompt = "; ".join(f"{key}: {value}" for key, value in slots.items())
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.extend((prompt, reference) for reference in _references(slots))
    return rows
