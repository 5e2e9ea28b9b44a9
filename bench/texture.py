"""Per-frame cost of the expression texture layer (wrinkle maps, mouth interior, eyes) at 512x512.

Run: `python -m bench.texture [--frames 300] [--image PATH]`. One thread (cv2 and BLAS pinned), the
way the per-frame path runs. Frames are a talking sequence (bench.meshwarp) with each emotion preset
in turn mixed in at full intensity, so every crease group, the teeth and the widened eyes are on
somewhere. Prints one markdown table of medians; these machines are shared and noisy (DESIGN.md).
"""

from __future__ import annotations

import os

# BLAS reads these once, when numpy loads: they must be set before the first numpy import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.meshwarp import make_sequence  # noqa: E402
from models.landmarks import FaceLandmarker, load_image  # noqa: E402
from models.meshwarp import MeshWarp, MeshWarpConfig  # noqa: E402
from models.rig import EMOTIONS, Rig, emotion_coefficients  # noqa: E402

__all__ = ["main", "run"]

ROOT = Path(__file__).resolve().parent.parent
TARGET_ADDED_MS = 5.0  # issue 3: the layer adds at most this per 512x512 frame
WARMUP_FRAMES = 10


def emotion_sequence(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """exp (n, 52), pose (n, 6): talking motion with every emotion preset in turn at intensity 1."""
    exp, pose = make_sequence(n, seed)
    block = max(n // len(EMOTIONS), 1)
    for i in range(n):
        emo = emotion_coefficients(EMOTIONS[(i // block) % len(EMOTIONS)], 1.0)
        exp[i] = np.maximum(exp[i], emo)
    return np.clip(exp, 0.0, 1.0), pose


def _interleaved_medians(
    fns: dict[str, Callable[[np.ndarray, np.ndarray], object]], frames: list[tuple[np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """Median ms per frame of each function, timed round-robin frame by frame so that load from
    other processes on a shared machine falls on all of them alike."""
    for e, p in frames[:WARMUP_FRAMES]:
        for fn in fns.values():
            fn(e, p)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for e, p in frames:
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn(e, p)
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
    return {k: float(np.median(v)) for k, v in times.items()}


def run(image_path: Path, n: int) -> list[tuple[str, float]]:
    """(row label, median ms per frame) for each configuration and stage."""
    cv2.setNumThreads(1)
    image = load_image(image_path)
    with FaceLandmarker() as lmk:
        lm = lmk.detect(image)
    rig = Rig(lm)
    exp, pose = emotion_sequence(n)
    frames = list(zip(exp, pose, strict=True))
    off = MeshWarpConfig(paint_mouth=False, paint_eyes=False, paint_wrinkles=False, rigid_glasses=False)
    bare = MeshWarp(image, lm, rig, off)
    full = MeshWarp(image, lm, rig)
    no_wrinkles = MeshWarp(image, lm, rig, MeshWarpConfig(paint_wrinkles=False, rigid_glasses=False))
    assert full.wrinkles is not None and full.mouth is not None
    wl, mouth = full.wrinkles, full.mouth
    lms = [full.rig.landmarks(e, p) for e, p in frames]
    base = bare.render(frames[0][0], frames[0][1])
    index = {id(e): i for i, (e, _) in enumerate(frames)}
    fns: dict[str, Callable[[np.ndarray, np.ndarray], object]] = {
        "render, warp only (no texture layer)": bare.render,
        "render, mouth + eyes (no wrinkles, no rigid glasses)": no_wrinkles.render,
        "render, full texture layer": full.render,
        "  wrinkles.apply": lambda e, p: wl.apply(e),
        "  mouth.paint (incl. a frame copy)": lambda e, p: mouth.paint(base.copy(), lms[index[id(e)]], e),
    }
    if full.glasses is not None:
        glasses = full.glasses
        rest = full.rig.landmarks(np.zeros_like(frames[0][0]), np.zeros(6))
        fns["  glasses.paint (incl. a frame copy)"] = lambda e, p: glasses.paint(
            base.copy(), rest, full.rig.landmarks(np.zeros_like(e), p)
        )
    return list(_interleaved_medians(fns, frames).items())


def format_table(rows: list[tuple[str, float]]) -> str:
    lines = ["| stage | median ms/frame |", "|---|---:|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in rows]
    by = dict(rows)
    added = by["render, full texture layer"] - by["render, warp only (no texture layer)"]
    ok = "ok" if added <= TARGET_ADDED_MS else "MISSED"
    lines.append(
        f"| texture layer added (full - warp only) | {added:.2f} (target <= {TARGET_ADDED_MS:g}: {ok}) |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "portrait.png")
    args = parser.parse_args(argv)
    if args.frames < WARMUP_FRAMES:
        parser.error(f"--frames must be >= {WARMUP_FRAMES}, got {args.frames}")
    rows = run(args.image, args.frames)
    print(format_table(rows))
    print(f"image: {args.image}, {args.frames} frames, 1 thread", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
