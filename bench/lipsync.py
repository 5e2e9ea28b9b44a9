"""Lip sync of the FCG on speech it never saw: mouth aperture against the speech envelope.

    python -m bench.lipsync [--checkpoint assets/fcg] [--audio FILE ...] [--val data/val.npz]

For each clip: generate coefficients, measure the mouth aperture they give on the bundled
portrait's rig (inner-lip gap, in inter-ocular distances), cross-correlate it with the speech
envelope (RMS per video frame) over offsets of -8..8 frames, and report the best offset (> 0: the
mouth lags the sound), the correlation there and at 0, how closed the mouth is in silences and
how open in speech, blinks per minute, and head motion (spread and jitter). Prints one table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from agent.commands import DEFAULT_FCG, load_fcg, speech_coefficients
from models.audio import load_audio
from models.landmarks import FaceLandmarker, load_image
from models.metrics import av_sync, speech_envelope
from models.rig import BLENDSHAPE_NAMES, EMOTIONS, LOWER_INNER_LIP, UPPER_INNER_LIP, Rig

ROOT = Path(__file__).resolve().parent.parent
BLINK = BLENDSHAPE_NAMES.index("eyeBlinkLeft")


def aperture(rig: Rig, exp: np.ndarray) -> np.ndarray:
    """Inner-lip gap (IOD units) for each frame's blendshapes, (T,)."""
    out = np.empty(len(exp))
    up, lo = list(UPPER_INNER_LIP[1:-1]), list(LOWER_INNER_LIP[1:-1])
    for t, e in enumerate(exp):
        s = rig.shape(e)
        out[t] = float((s[lo, 1] - s[up, 1]).max())
    return out


def measure(model: object, rig: Rig, audio: np.ndarray, seed: int = 0) -> dict[str, float]:
    seq = speech_coefficients(model, audio, seed=seed)  # type: ignore[arg-type]
    ap = aperture(rig, seq.exp)
    env = speech_envelope(audio, len(ap))
    lag, _, r, r0 = av_sync(ap, env, max_offset=8)
    loud = env > 0.1 * env.max()
    speech = np.convolve(loud, np.ones(5), "same") > 0  # within 2 frames of sound
    blinks = int(((seq.exp[1:, BLINK] > 0.5) & (seq.exp[:-1, BLINK] <= 0.5)).sum())
    return {
        "seconds": len(audio) / 16000,
        "offset": lag,
        "r_best": r,
        "r0": r0,
        "open_speech": float(ap[speech].mean()) if speech.any() else float("nan"),
        "open_silence": float(ap[~speech].mean()) if (~speech).any() else float("nan"),
        "blinks_per_min": blinks / (len(audio) / 16000 / 60),
        # Head motion: spread of yaw/pitch/roll, and frame-to-frame jitter (mean |second difference|).
        "head_std_deg": float(np.degrees(seq.pose[:, :3].std(0)).mean()),
        "head_jitter_deg": float(np.degrees(np.abs(np.diff(seq.pose[:, :3], 2, axis=0))).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_FCG)
    parser.add_argument("--audio", type=Path, nargs="*", default=[ROOT / "assets" / "demo_speech.wav"])
    parser.add_argument("--val", type=Path, default=None, help="a models.synth dataset of held-out voices")
    parser.add_argument("--clips", type=int, default=20, help="utterances to take from --val")
    args = parser.parse_args(argv)
    model = load_fcg(args.checkpoint)
    image = load_image(ROOT / "assets" / "portrait.png")
    with FaceLandmarker() as fl:
        rig = Rig(fl.detect(image))
    clips: list[tuple[str, np.ndarray]] = [(p.name, load_audio(p)) for p in args.audio]
    if args.val is not None:
        from models.synth import load_dataset

        data = load_dataset(args.val)
        off = data.audio_offsets
        for u in range(min(args.clips, len(data))):
            pcm = data.audio[off[u] : off[u + 1]].astype(np.float32) / 32768.0
            clips.append((f"{data.voice[u]} ({EMOTIONS[data.emotion[u]]})", pcm))
    print(
        "| clip | s | offset (frames) | r at offset | r at 0 | open in speech | open in silence | blinks/min "
        "| head std (deg) | head jitter (deg) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, audio in clips:
        m = measure(model, rig, audio)
        rows.append(m)
        print(
            f"| {name} | {m['seconds']:.1f} | {m['offset']:+d} | {m['r_best']:.2f} | {m['r0']:.2f} | "
            f"{m['open_speech']:.3f} | {m['open_silence']:.3f} | {m['blinks_per_min']:.0f} | "
            f"{m['head_std_deg']:.1f} | {m['head_jitter_deg']:.2f} |"
        )
    if len(rows) > 1:
        offsets = np.array([r["offset"] for r in rows])
        print(
            f"| **median of {len(rows)}** | | {np.median(offsets):+.0f} | {np.median([r['r_best'] for r in rows]):.2f} | "
            f"{np.median([r['r0'] for r in rows]):.2f} | {np.median([r['open_speech'] for r in rows]):.3f} | "
            f"{np.nanmedian([r['open_silence'] for r in rows]):.3f} | "
            f"{np.median([r['blinks_per_min'] for r in rows]):.0f} | "
            f"{np.median([r['head_std_deg'] for r in rows]):.1f} | {np.median([r['head_jitter_deg'] for r in rows]):.2f} |"
        )
        print(f"\nclips with |offset| <= 1 frame: {int((np.abs(offsets) <= 1).sum())} of {len(rows)}")


if __name__ == "__main__":
    main()
