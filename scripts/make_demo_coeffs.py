"""Regenerate assets/demo_coeffs.npz: 8 s of procedural "talking" coefficients at 25 fps.

Three phrases of syllables at an irregular 3.5-6 Hz (jawOpen up to ~0.5, with rounded and spread
vowels), blinks every 2-5 s, brow raises on stressed syllables, slow head motion within +-0.1 rad,
and a smooth shift into a happy expression over the last third. Deterministic (fixed seed); the file
is byte-identical from run to run. Run from anywhere: `python scripts/make_demo_coeffs.py`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a plain script run puts scripts/, not the repo root, on sys.path

import numpy as np  # noqa: E402

from models.coeffs import CoeffSequence, save_coeffs  # noqa: E402
from models.rig import BLENDSHAPE_NAMES, emotion_coefficients  # noqa: E402

FPS = 25.0
DURATION_S = 8.0
SEED = 7
PHRASES_S = ((0.35, 2.55), (2.95, 5.05), (5.5, 7.65))  # speech; the gaps between are pauses
HAPPY_START_S, HAPPY_END_S = 4.6, 5.4  # the happy blend ramps in over this span, then holds
HAPPY_INTENSITY = 0.7
HEAD_PEAK_RAD = (0.08, 0.05, 0.04)  # largest |yaw|, |pitch|, |roll|
_IDX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


def _bump(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """sin^2 window: 0 outside [start, end], 1 at the middle, smooth at both ends."""
    x = np.clip((t - start) / (end - start), 0.0, 1.0)
    return np.sin(np.pi * x) ** 2


def _smoothstep(t: np.ndarray, start: float, end: float) -> np.ndarray:
    x = np.clip((t - start) / (end - start), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blink(t: np.ndarray, start: float, duration_s: float) -> np.ndarray:
    """A blink: the lid closes in 30% of ``duration_s``, stays shut for 25% and reopens more slowly.

    The shut plateau makes sure a frame at 25 fps (40 ms) sees the eye fully closed.
    """
    x = (t - start) / duration_s
    closing = np.clip(x / 0.3, 0.0, 1.0)
    opening = np.clip((1.0 - x) / 0.45, 0.0, 1.0)
    return np.where((x >= 0) & (x <= 1), np.sin(0.5 * np.pi * np.minimum(closing, opening)) ** 2, 0.0)


def make_demo(rng: np.random.Generator) -> CoeffSequence:
    num_frames = round(DURATION_S * FPS)
    t = np.arange(num_frames) / FPS  # frame times, s
    exp = np.zeros((num_frames, len(BLENDSHAPE_NAMES)))

    def add(name: str, curve: np.ndarray) -> None:
        exp[:, _IDX[name]] += curve

    # Syllables: each a jaw bump shaped by its vowel (open "a", rounded "o/u", spread "e/i").
    stresses: list[tuple[float, float]] = []  # (centre s, jaw peak) of each syllable
    for start, end in PHRASES_S:
        s = start
        while True:
            length = rng.uniform(0.17, 0.29)  # 3.5-6 Hz
            if s + length > end:
                break
            peak = rng.uniform(0.18, 0.5) * (0.4 if rng.random() < 0.15 else 1.0)  # some nearly closed
            window = _bump(t, s, s + length * 1.15)  # slight overlap: coarticulation
            vowel = rng.choice(["open", "round", "spread"], p=[0.45, 0.25, 0.3])
            add("jawOpen", peak * window * (0.7 if vowel == "round" else 1.0))
            if vowel == "round":
                add("mouthFunnel", rng.uniform(0.2, 0.45) * window)
                add("mouthPucker", rng.uniform(0.25, 0.55) * window)
            elif vowel == "spread":
                smile = rng.uniform(0.1, 0.3) * window
                add("mouthSmileLeft", smile)
                add("mouthSmileRight", smile)
                add("mouthStretchLeft", 0.5 * smile)
                add("mouthStretchRight", 0.5 * smile)
            stresses.append((s + length / 2, peak))
            s += length + (rng.uniform(0.05, 0.15) if rng.random() < 0.2 else 0.0)  # short hesitations
    # Brow raises on the three most open syllables, one per phrase at most.
    chosen: list[float] = []
    for centre, _ in sorted(stresses, key=lambda c: -c[1]):
        if all(abs(centre - other) > 1.5 for other in chosen):
            chosen.append(centre)
        if len(chosen) == 3:
            break
    for centre in chosen:
        raise_ = rng.uniform(0.35, 0.55) * _bump(t, centre - 0.3, centre + 0.45)
        add("browInnerUp", raise_)
        add("browOuterUpLeft", 0.8 * raise_)
        add("browOuterUpRight", 0.8 * raise_)

    # Blinks every 2-5 s, 150-250 ms each, both eyes together.
    blink_at = rng.uniform(0.6, 1.6)
    while blink_at < DURATION_S - 0.3:
        blink = _blink(t, blink_at, rng.uniform(0.15, 0.25))
        add("eyeBlinkLeft", blink)
        add("eyeBlinkRight", blink)
        blink_at += rng.uniform(2.0, 5.0)

    # Happy over the last third: rounded shapes fade, the jaw keeps the larger of the two openings.
    happy_w = _smoothstep(t, HAPPY_START_S, HAPPY_END_S)[:, None]
    happy = emotion_coefficients("happy", HAPPY_INTENSITY).astype(np.float64)
    jaw = _IDX["jawOpen"]
    for name in ("mouthFunnel", "mouthPucker"):
        exp[:, _IDX[name]] *= 1.0 - 0.6 * happy_w[:, 0]
    jaw_open = np.maximum(exp[:, jaw], happy_w[:, 0] * happy[jaw])
    exp = exp + happy_w * happy
    exp[:, jaw] = jaw_open

    # Head: a few slow sinusoids per angle (0.1-0.6 Hz) plus small nods on the stressed syllables,
    # starting from the photo's own pose and scaled to a peak of HEAD_PEAK_RAD per angle.
    pose = np.zeros((num_frames, 6))
    for axis in range(3):
        for _ in range(3):
            freq = rng.uniform(0.1, 0.6)
            pose[:, axis] += np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    for centre in chosen:
        pose[:, 1] += 1.0 * _bump(t, centre - 0.1, centre + 0.5)
    pose[:, :3] -= pose[0, :3]
    pose[:, :3] *= np.array(HEAD_PEAK_RAD) / np.abs(pose[:, :3]).max(axis=0)
    return CoeffSequence(exp=np.clip(exp, 0.0, 1.0), pose=pose, fps=FPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "demo_coeffs.npz")
    args = parser.parse_args()
    seq = make_demo(np.random.default_rng(SEED))
    save_coeffs(args.out, seq)
    jaw = seq.exp[:, _IDX["jawOpen"]]
    lid = seq.exp[:, _IDX["eyeBlinkLeft"]]
    blinks = int(((lid[1:] > 0.5) & (lid[:-1] <= 0.5)).sum())
    head = ", ".join(f"{v:.3f}" for v in np.abs(seq.pose[:, :3]).max(axis=0))
    print(
        f"wrote {args.out} ({len(seq)} frames, {seq.duration_s:.1f} s at {seq.fps:g} fps, "
        f"{args.out.stat().st_size / 1024:.1f} KB): jawOpen max {jaw.max():.2f}, {blinks} blinks, "
        f"max |yaw|, |pitch|, |roll| {head} rad"
    )


if __name__ == "__main__":
    main()
