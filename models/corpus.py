"""Sentences for synthesized training speech, written here from templates and word lists.

Every word is a lower-case entry of the CMU dictionary that pocketsphinx ships, so forced
alignment needs no new pronunciations. Deterministic for a seed; split by index into
training and validation sentences.
"""

from __future__ import annotations

import random

__all__ = ["sentences"]

_SUBJECTS = [
    "the old man", "my sister", "a young woman", "the teacher", "our neighbor", "the little boy",
    "his father", "the doctor", "a tired farmer", "the pilot", "her brother", "the baker",
    "my best friend", "the new driver", "a quiet student", "the captain", "your mother", "the singer",
]  # fmt: skip
_VERBS = [
    "opened", "painted", "carried", "found", "watched", "pulled", "cleaned", "bought", "sold",
    "moved", "fixed", "brought", "dropped", "checked", "lifted", "packed", "tested", "ordered",
]  # fmt: skip
_OBJECTS = [
    "the heavy box", "a blue window", "the wooden chair", "an empty bottle", "the broken clock",
    "a warm blanket", "the yellow boat", "some fresh bread", "the silver key", "a paper map",
    "the big table", "a small garden", "the white car", "her red shoes", "the long rope", "a cup of tea",
]  # fmt: skip
_PLACES = [
    "in the morning", "near the river", "before lunch", "at the station", "after the rain",
    "on a cold day", "by the old bridge", "in the kitchen", "at the market", "late at night",
    "under the trees", "behind the school", "along the beach", "during the storm",
]  # fmt: skip
_QUESTIONS = [
    "did you see where {s} went", "why would {s} say that", "can you tell me what {s} wanted",
    "how long will it take to get there", "is it going to rain again today", "what time does the shop open",
    "where did you put the keys", "who left the door open", "have you ever been to the mountains",
]  # fmt: skip
_EXCLAIM = [
    "that was the best day of my life", "i can not believe it is already over",
    "please do not touch anything on the table", "we have to leave right now",
    "this is exactly what i was looking for", "thank you so much for your help",
    "look at the size of that fish", "i told you it would work", "stop making so much noise",
    "what a beautiful view from up here", "maybe we should wait a little longer",
    "i think we missed the last bus", "nobody knows the answer to that question",
]  # fmt: skip
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twenty"]
_THINGS = ["apples", "books", "chairs", "boxes", "letters", "pictures", "birds", "boats", "cups", "stones"]


def _make(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        return s + (f" {rng.choice(_PLACES)}" if rng.random() < 0.6 else "")
    if kind < 0.6:
        return rng.choice(_QUESTIONS).format(s=rng.choice(_SUBJECTS))
    if kind < 0.8:
        return rng.choice(_EXCLAIM)
    return (
        f"{rng.choice(_SUBJECTS)} counted {rng.choice(_NUMBERS)} {rng.choice(_THINGS)} {rng.choice(_PLACES)}"
    )


def sentences(count: int, *, seed: int = 0, split: str = "train") -> list[str]:
    """``count`` sentences; "train" and "val" draw from disjoint seeds and never share a sentence."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    rng = random.Random(seed * 2 + (0 if split == "train" else 1))
    out: list[str] = []
    seen: set[str] = set()
    other = set() if split == "val" else set(_val_pool(seed))
    while len(out) < count:
        s = _make(rng)
        if s in seen or s in other:
            if len(seen) > 50_000:
                break
            seen.add(s)
            continue
        seen.add(s)
        out.append(s)
    return out


def _val_pool(seed: int) -> list[str]:
    rng = random.Random(seed * 2 + 1)
    return [_make(rng) for _ in range(200)]
