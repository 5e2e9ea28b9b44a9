"""English sentences for synthesized training speech, built here from our own templates and word lists.

Every word is a lower-case entry of the CMU dictionary that pocketsphinx ships, so forced alignment
needs no new pronunciations (tests/test_synth.py checks this). The lists favour visible mouth
shapes: bilabials (p b m), labiodentals (f v), rounded (oo, oh, w) and open (ah) vowels, th.
"""

from __future__ import annotations

import random
from typing import Literal

__all__ = ["NUM_SENTENCES", "VAL_EVERY", "all_sentences", "sentences"]

NUM_SENTENCES = 1000  # distinct sentences per seed: 900 for training, 100 for validation
VAL_EVERY = 10  # sentence i is a validation sentence when i % VAL_EVERY == 0

_PEOPLE = (
    "the old man", "my sister", "a young woman", "our teacher", "the neighbor", "the little boy",
    "his father", "the doctor", "a tired farmer", "the pilot", "her brother", "the baker", "my best friend",
    "the new driver", "a quiet student", "the captain", "your mother", "the singer", "my uncle", "the nurse",
    "a famous painter", "the mayor", "our boss", "the waiter", "my cousin", "a stranger", "the police officer",
    "the mechanic", "his wife", "the twins",
)  # fmt: skip
_PAST = (
    "opened", "painted", "carried", "found", "watched", "pulled", "cleaned", "bought", "sold", "moved",
    "fixed", "brought", "dropped", "checked", "lifted", "packed", "tested", "ordered", "borrowed", "wrapped",
    "pushed", "measured", "polished", "pointed at", "forgot", "remembered", "hid", "threw away", "built",
    "described",
)  # fmt: skip
_BASE = (
    "open", "paint", "carry", "find", "watch", "pull", "clean", "buy", "sell", "move", "fix", "bring",
    "check", "lift", "pack", "test", "order", "borrow", "wrap", "push", "measure", "bake", "fold", "share",
)  # fmt: skip
_THINGS = (
    "the heavy box", "a blue window", "the wooden chair", "an empty bottle", "the broken clock",
    "a warm blanket", "the yellow boat", "some fresh bread", "the silver key", "a paper map", "the big table",
    "a small garden", "the white car", "her red shoes", "the long rope", "a cup of coffee", "the purple book",
    "my phone", "the movie tickets", "a bowl of soup", "the photo album", "the brown bag", "a pair of boots",
    "the map of the valley", "the piano", "a basket of plums", "the old fence", "the mirror", "a bunch of bananas",
    "the five boxes", "the moon map", "a bottle of milk", "the smooth stone", "the funny hat",
)  # fmt: skip
_PLACES = (
    "in the morning", "near the river", "before lunch", "at the station", "after the rain", "on a cold day",
    "by the old bridge", "in the kitchen", "at the market", "late at night", "under the trees",
    "behind the school", "along the beach", "during the storm", "on the way home", "in the museum",
    "at the bottom of the hill", "before breakfast", "over the weekend", "by the pool", "in the office",
    "at the movie theater", "next to the fountain", "in the parking lot",
)  # fmt: skip
_ADJ = (
    "beautiful", "boring", "funny", "heavy", "perfect", "strange", "smooth", "warm", "awful", "brave",
    "proud", "happy", "angry", "afraid", "tired", "busy", "quiet", "loud", "friendly", "famous", "cheap",
    "expensive", "bright", "dark", "huge", "tiny", "wonderful", "terrible",
)  # fmt: skip
_ADV = ("very", "really", "pretty", "quite", "so", "a bit", "way too", "almost")
_FEELINGS = (
    "happy", "sad", "angry", "surprised", "worried", "excited", "upset", "proud", "afraid", "pleased",
    "disappointed", "amazed", "nervous", "grateful", "furious", "calm",
)  # fmt: skip
_NUMBERS = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "fifteen", "twenty", "thirty", "forty", "fifty", "ninety", "a hundred",
)  # fmt: skip
_PLURALS = (
    "apples", "books", "chairs", "boxes", "letters", "pictures", "birds", "boats", "cups", "stones",
    "potatoes", "pumpkins", "balloons", "bottles", "blankets", "flowers", "envelopes", "spoons", "maps",
)  # fmt: skip
_TIMES = (
    "today", "tomorrow", "tonight", "this morning", "next week", "on monday", "on friday", "last summer",
    "every day", "in a few minutes", "right now", "some other time", "before noon", "after dinner",
)  # fmt: skip
_WEATHER = ("warm", "cold", "windy", "sunny", "foggy", "wet", "humid", "freezing", "beautiful", "awful")
_SHORT = (
    "oh no", "yes of course", "well maybe not", "thank you very much", "good morning everybody",
    "see you soon", "wait for me", "how about that", "not bad at all", "you must be joking",
    "move over please", "why not", "that is perfect", "absolutely not", "very funny", "be careful",
    "my pleasure", "of course it is", "welcome back", "give me a break", "believe me", "what a mess",
)  # fmt: skip
_OPENERS = ("well", "so", "honestly", "you know", "look", "by the way", "oh", "actually", "listen")
_LINKS = ("but", "because", "so", "and then", "while", "although", "before", "after")


def _clause(rng: random.Random) -> str:
    return f"{rng.choice(_PEOPLE)} {rng.choice(_PAST)} {rng.choice(_THINGS)}"


def _make(rng: random.Random) -> str:
    """One sentence from a randomly chosen template."""
    c = rng.choice
    kind = rng.randrange(14)
    if kind == 0:
        return f"{_clause(rng)} {c(_PLACES)}"
    if kind == 1:
        return f"{_clause(rng)} {c(_LINKS)} {_clause(rng)}"
    if kind == 2:
        return f"did {c(_PEOPLE)} {c(_BASE)} {c(_THINGS)} {c(_TIMES)}"
    if kind == 3:
        return f"where did you {c(_BASE)} {c(_THINGS)}"
    if kind == 4:
        return f"why is {c(_PEOPLE)} {c(_ADV)} {c(_ADJ)} {c(_TIMES)}"
    if kind == 5:
        return f"please {c(_BASE)} {c(_THINGS)} {c(_PLACES)}"
    if kind == 6:
        return f"do not {c(_BASE)} {c(_THINGS)} {c(_TIMES)}"
    if kind == 7:
        return f"i was {c(_ADV)} {c(_FEELINGS)} when {_clause(rng)}"
    if kind == 8:
        return f"{c(_PEOPLE)} bought {c(_NUMBERS)} {c(_PLURALS)} for {c(_NUMBERS)} dollars"
    if kind == 9:
        return f"it will be {c(_ADV)} {c(_WEATHER)} {c(_TIMES)} {c(_PLACES)}"
    if kind == 10:
        return f"{c(_OPENERS)} {c(_THINGS)} looked {c(_ADV)} {c(_ADJ)} {c(_PLACES)}"
    if kind == 11:
        return c(_SHORT)
    if kind == 12:
        return f"{c(_SHORT)} {c(_PEOPLE)} is {c(_FEELINGS)}"
    return f"can we {c(_BASE)} {c(_NUMBERS)} {c(_PLURALS)} {c(_TIMES)} or {c(_TIMES)}"


def all_sentences(seed: int = 0, count: int = NUM_SENTENCES) -> list[str]:
    """``count`` distinct sentences, the same for the same seed."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(count * 50):
        s = _make(rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
            if len(out) == count:
                return out
    raise ValueError(f"could only make {len(out)} distinct sentences, asked for {count}")


def sentences(
    count: int | None = None, *, split: Literal["train", "val"] = "train", seed: int = 0
) -> list[str]:
    """The first ``count`` (default all) sentences of a split; validation takes every VAL_EVERY-th.

    The splits never share a sentence, and a shorter list is a prefix of a longer one.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    pool = all_sentences(seed)
    keep_val = split == "val"
    out = [s for i, s in enumerate(pool) if (i % VAL_EVERY == 0) == keep_val]
    if count is not None and not 0 <= count <= len(out):
        raise ValueError(f"count must be in [0, {len(out)}] for split {split!r}, got {count}")
    return out if count is None else out[:count]
