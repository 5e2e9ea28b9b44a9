"""Phones -> mouth blendshape curves with coarticulation (Cohen and Massaro's dominance functions).

Each phone has a viseme target (weights of the mouth blendshapes) and a dominance
D(t) = alpha * exp(-theta * |t - centre| ** c) spreading over its neighbours; the curve at time t
is sum_i D_i(t) T_i / sum_i D_i(t). Bilabials and labiodentals are strongly dominant, so the lips
really close on P B M and tuck on F V whatever the vowels around them do.
"""

from __future__ import annotations

import numpy as np

from models.rig import BLENDSHAPE_NAMES, NUM_BLENDSHAPES

__all__ = ["VISEMES", "phone_curves"]

_I = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}

# Targets: jaw and lip shapes of each ARPAbet phone (stress digits stripped), plus dominance
# (alpha, theta 1/s). Values are this project's own, by articulation class.
_CLOSED = {"jawOpen": 0.03, "mouthClose": 0.0, "mouthPressLeft": 0.45, "mouthPressRight": 0.45,
           "mouthRollLower": 0.15, "mouthRollUpper": 0.1}  # fmt: skip
_LABIODENTAL = {"jawOpen": 0.08, "mouthRollLower": 0.55, "mouthUpperUpLeft": 0.25, "mouthUpperUpRight": 0.25,
                "mouthLowerDownLeft": 0.0}  # fmt: skip
_ROUND = {"jawOpen": 0.2, "mouthPucker": 0.7, "mouthFunnel": 0.35}
_W = {"jawOpen": 0.1, "mouthPucker": 0.85, "mouthFunnel": 0.2}
_OPEN = {"jawOpen": 0.55, "mouthLowerDownLeft": 0.25, "mouthLowerDownRight": 0.25}
_MID = {"jawOpen": 0.35, "mouthLowerDownLeft": 0.15, "mouthLowerDownRight": 0.15}
_SPREAD = {"jawOpen": 0.2, "mouthStretchLeft": 0.35, "mouthStretchRight": 0.35, "mouthSmileLeft": 0.15,
           "mouthSmileRight": 0.15}  # fmt: skip
_TEETH = {"jawOpen": 0.12, "mouthStretchLeft": 0.2, "mouthStretchRight": 0.2, "mouthUpperUpLeft": 0.15,
          "mouthUpperUpRight": 0.15, "mouthLowerDownLeft": 0.15, "mouthLowerDownRight": 0.15}  # fmt: skip
_TONGUE = {"jawOpen": 0.15, "tongueOut": 0.35, "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1}
_ALVEOLAR = {"jawOpen": 0.15, "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1}
_VELAR = {"jawOpen": 0.22}
_POSTALV = {"jawOpen": 0.15, "mouthFunnel": 0.45, "mouthPucker": 0.25, "mouthUpperUpLeft": 0.1,
            "mouthUpperUpRight": 0.1}  # fmt: skip
_R = {"jawOpen": 0.15, "mouthPucker": 0.4, "mouthFunnel": 0.2}
_REST: dict[str, float] = {}

# phone -> (target, alpha, theta)
VISEMES: dict[str, tuple[dict[str, float], float, float]] = {
    "P": (_CLOSED, 1.0, 9.0), "B": (_CLOSED, 1.0, 9.0), "M": (_CLOSED, 1.0, 9.0),
    "F": (_LABIODENTAL, 0.9, 10.0), "V": (_LABIODENTAL, 0.9, 10.0),
    "UW": (_ROUND, 0.7, 12.0), "OW": (_ROUND, 0.6, 12.0), "AO": ({**_ROUND, "jawOpen": 0.4}, 0.55, 12.0),
    "UH": ({**_ROUND, "jawOpen": 0.25, "mouthPucker": 0.45}, 0.5, 14.0), "OY": (_ROUND, 0.55, 12.0),
    "W": (_W, 0.8, 10.0),
    "AA": (_OPEN, 0.55, 12.0), "AE": ({**_OPEN, "mouthStretchLeft": 0.2, "mouthStretchRight": 0.2}, 0.55, 12.0),
    "AH": (_MID, 0.45, 14.0), "AY": (_OPEN, 0.5, 12.0), "AW": (_OPEN, 0.5, 12.0),
    "EH": ({**_MID, "mouthStretchLeft": 0.15, "mouthStretchRight": 0.15}, 0.45, 14.0),
    "ER": (_R, 0.45, 13.0), "EY": (_SPREAD, 0.45, 13.0), "IH": (_SPREAD, 0.4, 14.0),
    "IY": ({**_SPREAD, "jawOpen": 0.12}, 0.5, 13.0),
    "TH": (_TONGUE, 0.6, 13.0), "DH": (_TONGUE, 0.5, 14.0),
    "S": (_TEETH, 0.6, 13.0), "Z": (_TEETH, 0.55, 13.0),
    "SH": (_POSTALV, 0.7, 12.0), "ZH": (_POSTALV, 0.65, 12.0), "CH": (_POSTALV, 0.7, 12.0),
    "JH": (_POSTALV, 0.65, 12.0), "R": (_R, 0.5, 13.0),
    "T": (_ALVEOLAR, 0.3, 16.0), "D": (_ALVEOLAR, 0.3, 16.0), "N": (_ALVEOLAR, 0.3, 16.0),
    "L": ({**_ALVEOLAR, "jawOpen": 0.2}, 0.3, 16.0), "Y": (_SPREAD, 0.35, 15.0),
    "K": (_VELAR, 0.25, 16.0), "G": (_VELAR, 0.25, 16.0), "NG": (_VELAR, 0.25, 16.0),
    "HH": ({"jawOpen": 0.25}, 0.15, 18.0),
    "SIL": (_REST, 0.8, 6.0),
}  # fmt: skip
_EXPONENT = 1.0  # c in D(t); 1 gives the classic exponential


def _target_vector(target: dict[str, float]) -> np.ndarray:
    v = np.zeros(NUM_BLENDSHAPES, dtype=np.float64)
    for name, w in target.items():
        v[_I[name]] = w
    return v


_TARGETS = {p: (_target_vector(t), a, th) for p, (t, a, th) in VISEMES.items()}


def phone_curves(phones: list[tuple[str, float, float]], num_frames: int, fps: float) -> np.ndarray:
    """Mouth blendshape curves (num_frames, 52) for (phone, start_s, end_s) segments.

    A frame's value is the curve at the frame's time, t = k / fps. Unknown phones (noise
    markers) count as silence. Time outside every segment is silence: mouth closed, relaxed.
    """
    t = np.arange(num_frames, dtype=np.float64) / fps
    num = np.zeros((num_frames, NUM_BLENDSHAPES))
    den = np.full(num_frames, 1e-6)
    rest, rest_alpha, rest_theta = _TARGETS["SIL"]
    segments = [(p.rstrip("012").upper(), s, e) for p, s, e in phones]
    start = min((s for _, s, _ in segments), default=0.0)
    end = max((e for _, _, e in segments), default=0.0)
    for phone, s, e in segments:
        target, alpha, theta = _TARGETS.get(phone, _TARGETS["SIL"])
        centre = 0.5 * (s + e)
        # Inside its own segment a phone is fully dominant; outside it decays.
        dist = np.maximum(np.abs(t - centre) - 0.5 * (e - s), 0.0)
        d = alpha * np.exp(-theta * dist**_EXPONENT)
        num += d[:, None] * target
        den += d
    # Before the first and after the last phone: silence.
    outside = np.maximum(np.maximum(start - t, t - end), 0.0)
    d = rest_alpha * (1.0 - np.exp(-rest_theta * outside * 4.0))
    num += d[:, None] * rest
    den += d
    return np.clip(num / den[:, None], 0.0, 1.0).astype(np.float32)
