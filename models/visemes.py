"""Phones -> mouth blendshape curves, with Cohen-Massaro coarticulation.

Each phone has a viseme target T_i (ARKit mouth weights) and, per articulator (jaw, lips), a
dominance D_i(t) = alpha * exp(-theta * |t - centre_i| ** c), with separate theta before the centre
(anticipation) and after it (carry-over). A channel's curve is sum_i D_i T_i / sum_i D_i. Closures
are strongly dominant, so the lips meet on P B M whatever the vowels around them do, while T D K
borrow their shape from their neighbours. Silence is a state, not a point target: its dominance is
flat over its whole segment and ramps off outside it. Cohen & Massaro, "Modeling coarticulation in
synthetic visual speech", 1993.

A frame's value is the instantaneous value of the curve at the frame's time t = k / fps (like a
camera's short exposure), so a 30 ms lip closure still shows as closed in the frame nearest to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from models.rig import BLENDSHAPE_NAMES, NUM_BLENDSHAPES

__all__ = [
    "MOUTH_CHANNELS",
    "PHONES",
    "SILENCE",
    "VISEMES",
    "VOWELS",
    "MouthCurves",
    "Viseme",
    "close_lips",
    "mouth_curves",
    "normalize_phone",
    "phone_curves",
]

_I = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}
# Articulators: the jaw (and the tongue riding on it) and the lips, each with its own dominance.
_JAW = ("jawOpen", "tongueOut")
MOUTH_CHANNELS: tuple[str, ...] = tuple(
    n
    for n in BLENDSHAPE_NAMES
    if n.startswith(("mouth", "jaw", "tongue")) and n not in ("jawLeft", "jawRight")
)
_IS_JAW = np.array([n in _JAW for n in BLENDSHAPE_NAMES])

SILENCE = "SIL"
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})
_EXPONENT = 1.0  # c in D(t); 1 is the classic negative exponential


@dataclass(frozen=True)
class Viseme:
    """Mouth target of one phone and its dominance (alpha: strength; theta: 1/s, before/after centre)."""

    target: dict[str, float]
    jaw_alpha: float
    lip_alpha: float
    theta_before: float
    theta_after: float
    closure: float = 0.0  # 1 where the lips must meet (bilabials)
    vector: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v = np.zeros(NUM_BLENDSHAPES, dtype=np.float64)
        for name, w in self.target.items():
            v[_I[name]] = w
        object.__setattr__(self, "vector", v)


def _lr(**kw: float) -> dict[str, float]:
    """Expand keys like smile=0.2 into mouthSmileLeft/Right; jawOpen/mouthFunnel etc. pass through."""
    out: dict[str, float] = {}
    for k, w in kw.items():
        if k in ("smile", "stretch", "press", "upperUp", "lowerDown", "frown", "dimple"):
            name = "mouth" + k[0].upper() + k[1:]
            out[name + "Left"] = out[name + "Right"] = w
        else:
            out[k] = w
    return out


# Targets are this project's own, by articulation class; weights are ARKit [0, 1].
_CLOSED = _lr(jawOpen=0.04, press=0.45, mouthRollLower=0.12, mouthRollUpper=0.08)
_LABIODENTAL = _lr(jawOpen=0.08, mouthRollLower=0.6, upperUp=0.22, press=0.05)
_SIBILANT = _lr(jawOpen=0.08, stretch=0.25, upperUp=0.12, lowerDown=0.12)
_POSTALVEOLAR = _lr(jawOpen=0.12, mouthFunnel=0.5, mouthPucker=0.3, upperUp=0.15, lowerDown=0.15)
_DENTAL = _lr(jawOpen=0.15, tongueOut=0.3, lowerDown=0.12)
_ALVEOLAR = _lr(jawOpen=0.15, stretch=0.05)
_VELAR = _lr(jawOpen=0.22)

# phone -> Viseme(target, jaw_alpha, lip_alpha, theta_before, theta_after, closure)
VISEMES: dict[str, Viseme] = {
    SILENCE: Viseme({}, 1.5, 1.5, 14.0, 14.0),
    # Bilabial closure: strongest of all, short reach.
    "P": Viseme(_CLOSED, 6.0, 6.0, 50.0, 50.0, closure=1.0),
    "B": Viseme(_CLOSED, 6.0, 6.0, 50.0, 50.0, closure=1.0),
    "M": Viseme(_CLOSED, 6.0, 6.0, 50.0, 50.0, closure=1.0),
    # Lower lip under the upper teeth.
    "F": Viseme(_LABIODENTAL, 3.0, 5.0, 45.0, 45.0),
    "V": Viseme(_LABIODENTAL, 3.0, 5.0, 45.0, 45.0),
    # Rounded: lip rounding is anticipated over several phones (small theta_before on the lips).
    "UW": Viseme(_lr(jawOpen=0.15, mouthPucker=0.75, mouthFunnel=0.3), 1.0, 2.5, 15.0, 22.0),
    "OW": Viseme(_lr(jawOpen=0.28, mouthFunnel=0.5, mouthPucker=0.45), 1.0, 2.5, 15.0, 22.0),
    "AO": Viseme(_lr(jawOpen=0.42, mouthFunnel=0.45, mouthPucker=0.2, lowerDown=0.1), 1.0, 2.0, 18.0, 22.0),
    "UH": Viseme(_lr(jawOpen=0.2, mouthPucker=0.45, mouthFunnel=0.3), 1.0, 1.8, 18.0, 24.0),
    "OY": Viseme(_lr(jawOpen=0.3, mouthFunnel=0.4, mouthPucker=0.35), 1.0, 2.0, 18.0, 22.0),
    "W": Viseme(_lr(jawOpen=0.08, mouthPucker=0.85, mouthFunnel=0.25), 1.0, 3.0, 15.0, 25.0),
    # Open.
    "AA": Viseme(_lr(jawOpen=0.6, lowerDown=0.25), 1.2, 1.0, 25.0, 25.0),
    "AE": Viseme(_lr(jawOpen=0.5, stretch=0.2, lowerDown=0.2, upperUp=0.1), 1.2, 1.0, 25.0, 25.0),
    "AH": Viseme(_lr(jawOpen=0.4, lowerDown=0.15), 1.0, 0.8, 25.0, 25.0),
    "AY": Viseme(_lr(jawOpen=0.55, lowerDown=0.2, stretch=0.1), 1.2, 1.0, 25.0, 25.0),
    "AW": Viseme(_lr(jawOpen=0.5, lowerDown=0.15, mouthFunnel=0.25), 1.2, 1.0, 25.0, 25.0),
    # Mid and r-coloured.
    "EH": Viseme(_lr(jawOpen=0.35, stretch=0.2, lowerDown=0.15), 1.0, 0.8, 25.0, 25.0),
    "ER": Viseme(_lr(jawOpen=0.2, mouthFunnel=0.35, mouthPucker=0.3), 0.8, 1.2, 22.0, 25.0),
    # Spread.
    "IY": Viseme(_lr(jawOpen=0.12, stretch=0.4, smile=0.2, upperUp=0.1), 1.0, 1.5, 25.0, 25.0),
    "IH": Viseme(_lr(jawOpen=0.2, stretch=0.3, smile=0.1), 1.0, 1.2, 25.0, 25.0),
    "EY": Viseme(_lr(jawOpen=0.28, stretch=0.35, smile=0.15), 1.0, 1.2, 25.0, 25.0),
    "Y": Viseme(_lr(jawOpen=0.12, stretch=0.3, smile=0.1), 0.6, 0.8, 30.0, 30.0),
    # Tongue between the teeth, a little.
    "TH": Viseme(_DENTAL, 0.8, 0.8, 35.0, 35.0),
    "DH": Viseme(_lr(jawOpen=0.15, tongueOut=0.15, lowerDown=0.1), 0.8, 0.6, 35.0, 35.0),
    # Sibilants: the jaw nearly closes, teeth show.
    "S": Viseme(_SIBILANT, 2.0, 0.8, 35.0, 35.0),
    "Z": Viseme(_SIBILANT, 2.0, 0.8, 35.0, 35.0),
    "SH": Viseme(_POSTALVEOLAR, 1.5, 2.0, 25.0, 30.0),
    "ZH": Viseme(_POSTALVEOLAR, 1.5, 2.0, 25.0, 30.0),
    "CH": Viseme(_POSTALVEOLAR, 1.5, 2.0, 25.0, 30.0),
    "JH": Viseme(_POSTALVEOLAR, 1.5, 2.0, 25.0, 30.0),
    "R": Viseme(_lr(jawOpen=0.15, mouthPucker=0.35, mouthFunnel=0.25), 0.6, 1.0, 25.0, 30.0),
    # Visually weak consonants: they take their shape from the vowels around them.
    "T": Viseme(_ALVEOLAR, 0.6, 0.3, 40.0, 40.0),
    "D": Viseme(_ALVEOLAR, 0.6, 0.3, 40.0, 40.0),
    "N": Viseme(_ALVEOLAR, 0.6, 0.3, 40.0, 40.0),
    "L": Viseme(_lr(jawOpen=0.22), 0.4, 0.3, 40.0, 40.0),
    "K": Viseme(_VELAR, 0.4, 0.2, 40.0, 40.0),
    "G": Viseme(_VELAR, 0.4, 0.2, 40.0, 40.0),
    "NG": Viseme(_VELAR, 0.4, 0.2, 40.0, 40.0),
    "HH": Viseme(_lr(jawOpen=0.3), 0.1, 0.1, 40.0, 40.0),
}
PHONES: tuple[str, ...] = tuple(VISEMES)


class MouthCurves(NamedTuple):
    exp: np.ndarray  # (T, 52) float32 in [0, 1]: mouth channels set, the rest zero
    closure: np.ndarray  # (T,) float32 in [0, 1]: how firmly the lips must meet (1 on P B M)


def normalize_phone(phone: str) -> str:
    """ARPAbet phone as in VISEMES: stress digits dropped; noise and unknown phones are silence."""
    p = phone.upper().rstrip("012")
    return p if p in VISEMES else SILENCE


def close_lips(exp: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Make the lips meet where closure = 1, whatever the jaw does: mouthClose = closure * jawOpen.

    ARKit's mouthClose brings the lips together against an open jaw, so it never exceeds jawOpen.
    Call again after anything (an emotion) changes jawOpen. exp: (T, 52); closure: (T,). In place.
    """
    jaw = exp[:, _I["jawOpen"]]
    exp[:, _I["mouthClose"]] = np.minimum(np.maximum(exp[:, _I["mouthClose"]], closure * jaw), jaw)
    return exp


def phone_curves(phones: list[tuple[str, float, float]], num_frames: int, fps: float) -> np.ndarray:
    """Mouth blendshapes (num_frames, 52) float32 at t = k / fps for (phone, start_s, end_s) segments.

    Time before the first and after the last segment is silence (mouth closed and relaxed).
    """
    return mouth_curves(phones, num_frames, fps).exp


def mouth_curves(phones: list[tuple[str, float, float]], num_frames: int, fps: float) -> MouthCurves:
    """:func:`phone_curves` plus the lip-closure curve, for re-closing the lips after more jaw is added."""
    if num_frames < 0 or fps <= 0:
        raise ValueError(f"expected num_frames >= 0 and fps > 0, got {num_frames}, {fps}")
    t = np.arange(num_frames, dtype=np.float64) / fps
    segs = [(normalize_phone(p), float(s), float(e)) for p, s, e in phones if e > s]
    # Silence outside the aligned span, as two more segments.
    first = min((s for _, s, _ in segs), default=0.0)
    last = max((e for _, _, e in segs), default=0.0)
    horizon = max(num_frames / fps, last) + 1.0
    segs = [(SILENCE, -1.0, first), *segs, (SILENCE, last, horizon)]

    num = np.zeros((num_frames, NUM_BLENDSHAPES))
    den = np.full((num_frames, NUM_BLENDSHAPES), 1e-9)
    close_num = np.zeros(num_frames)
    close_den = np.full(num_frames, 1e-9)
    for phone, s, e in segs:
        v = VISEMES[phone]
        # Only frames where the dominance is above 1e-6 of its peak (exp(-14)): long clips stay cheap.
        reach = 14.0 / min(v.theta_before, v.theta_after)
        lo = max(int(np.floor((s - reach) * fps)), 0)
        hi = min(int(np.ceil((e + reach) * fps)) + 1, num_frames)
        if hi <= lo:
            continue
        centre = 0.5 * (s + e)
        tau = t[lo:hi] - centre
        if phone == SILENCE:
            # Flat over the segment; a short pause only half-closes the mouth.
            dist = np.maximum(np.abs(tau) - 0.5 * (e - s), 0.0)
            strength = min(1.0, (e - s) / 0.25)
        else:
            dist = np.abs(tau)
            strength = 1.0
        theta = np.where(tau < 0.0, v.theta_before, v.theta_after)
        shape = strength * np.exp(-theta * dist**_EXPONENT)  # (W,)
        d_jaw, d_lip = v.jaw_alpha * shape, v.lip_alpha * shape
        d = np.where(_IS_JAW[None, :], d_jaw[:, None], d_lip[:, None])  # (W, 52)
        num[lo:hi] += d * v.vector
        den[lo:hi] += d
        close_num[lo:hi] += d_lip * v.closure
        close_den[lo:hi] += d_lip
    exp = np.clip(num / den, 0.0, 1.0)
    closure = np.clip(close_num / close_den, 0.0, 1.0)
    close_lips(exp, closure)
    return MouthCurves(exp.astype(np.float32), closure.astype(np.float32))
