"""Per-frame cost of the analytic renderer: MeshWarp render (warp vs painted layers), rig fit, MediaPipe.

Run: `python -m bench.meshwarp [--frames 500] [--image PATH] [--json PATH]`. Single-threaded on purpose
(cv2 and BLAS pinned to one thread), the way the per-frame path runs. Prints one markdown table; quote
medians and ratios, these machines are shared and noisy (DESIGN.md, "Measuring").
"""

from __future__ import annotations

import os

# BLAS reads these once, when numpy loads: they must be set before the first numpy import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from models.landmarks import FaceLandmarker, load_image  # noqa: E402
from models.meshwarp import MeshWarp  # noqa: E402
from models.rig import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, Rig  # noqa: E402

__all__ = ["Stage", "make_sequence", "run", "main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT / "assets" / "portrait.png"
FPS = 25  # the sequence's frame rate; sets how fast blinks and head motion are
WARMUP_FRAMES = 20
DETECT_FRAMES = 100  # MediaPipe is slow next to the rest: time it on a subsample
TARGETS_MS = {"render (total)": 10.0, "rig.fit": 5.0}
_IDX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}


class Stage(NamedTuple):
    name: str
    times_ms: list[float]
    target_ms: float | None = None

    def stats(self) -> dict[str, float]:
        t = np.asarray(self.times_ms, dtype=np.float64)
        med = float(np.median(t))
        return {
            "median_ms": med,
            "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)),
            "fps": 1000.0 / med if med > 0 else math.inf,
            "n": float(len(t)),
        }


def _smooth_noise(rng: np.random.Generator, n: int, sigma_frames: float) -> np.ndarray:
    """Gaussian-filtered white noise of length n, scaled to std 1."""
    half = int(3 * sigma_frames) + 1
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_frames) ** 2)
    x = np.convolve(rng.standard_normal(n + 2 * half), k / k.sum(), mode="valid")[:n]
    return (x - x.mean()) / (x.std() + 1e-12)


def make_sequence(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A talking-like sequence: exp (n, 52) in [0, 1] and pose (n, 6), smooth at 25 fps.

    Speech-rate jawOpen (with a little funnel/pucker), a slow smile, blinks every 2-5 s lasting
    ~200 ms, and head pose wandering within +-0.2 rad with small translations.
    """
    rng = np.random.default_rng(seed)
    exp = np.zeros((n, NUM_BLENDSHAPES))
    jaw = np.clip(0.3 + 0.25 * _smooth_noise(rng, n, 2.0), 0.0, 0.9)  # syllables, ~4 Hz
    exp[:, _IDX["jawOpen"]] = jaw
    exp[:, _IDX["mouthFunnel"]] = np.clip(0.15 * _smooth_noise(rng, n, 3.0), 0.0, 0.4)
    exp[:, _IDX["mouthPucker"]] = np.clip(0.15 * _smooth_noise(rng, n, 3.0), 0.0, 0.4)
    smile = np.clip(0.3 + 0.3 * _smooth_noise(rng, n, 25.0), 0.0, 0.8)
    exp[:, _IDX["mouthSmileLeft"]] = smile
    exp[:, _IDX["mouthSmileRight"]] = np.clip(smile + 0.05 * _smooth_noise(rng, n, 10.0), 0.0, 1.0)
    exp[:, _IDX["browInnerUp"]] = np.clip(0.2 * _smooth_noise(rng, n, 15.0), 0.0, 0.5)
    blink = np.zeros(n)
    t = int(rng.integers(0, 2 * FPS))
    profile = np.array([0.3, 0.8, 1.0, 0.9, 0.5, 0.2])  # ~240 ms close-open
    while t < n:
        m = min(len(profile), n - t)
        blink[t : t + m] = np.maximum(blink[t : t + m], profile[:m])
        t += int(rng.integers(2 * FPS, 5 * FPS))
    exp[:, _IDX["eyeBlinkLeft"]] = blink
    exp[:, _IDX["eyeBlinkRight"]] = blink
    pose = np.zeros((n, 6))
    for k, amp in enumerate((0.1, 0.07, 0.05)):  # yaw, pitch, roll (rad), ~2 std inside +-0.2
        pose[:, k] = np.clip(amp * _smooth_noise(rng, n, 20.0), -0.2, 0.2)
    pose[:, 3] = 0.03 * _smooth_noise(rng, n, 30.0)  # tx, ty, tz in IOD units
    pose[:, 4] = 0.03 * _smooth_noise(rng, n, 30.0)
    pose[:, 5] = 0.1 * _smooth_noise(rng, n, 40.0)
    return np.clip(exp, 0.0, 1.0), pose


def _time_ms(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter_ns()
    out = fn(*args)
    return (time.perf_counter_ns() - t0) / 1e6, out


def _split_render(mw: MeshWarp) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, list[float]]] | None:
    """render() as its stages (warp, mouth, eyes), timed; None when the renderer does not expose them.

    Mirrors MeshWarp.render; the caller checks the output equals render()'s before trusting it.
    """
    if not all(hasattr(mw, a) for a in ("target_vertices", "_warp", "mouth", "eyes", "rig")):
        return None

    def staged(exp: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, list[float]]:
        t0 = time.perf_counter_ns()
        tgt, lm = mw.target_vertices(exp, pose)
        frame = mw._warp(tgt, lm[:, 2])
        t1 = time.perf_counter_ns()
        if mw.mouth is not None:
            mw.mouth.paint(frame, lm, exp)
        t2 = time.perf_counter_ns()
        for eye in mw.eyes:
            eye.paint(frame, lm, mw.rig.iod)
        t3 = time.perf_counter_ns()
        return frame, [(t1 - t0) / 1e6, (t2 - t1) / 1e6, (t3 - t2) / 1e6]

    return staged


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(
    image_path: Path, frames: int, seed: int = 0, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the benchmark; returns {"stages": [...], "notes": [...], "machine": {...}}."""
    log = log or (lambda s: None)
    cv2.setNumThreads(1)
    notes: list[str] = []
    image = load_image(image_path)
    with FaceLandmarker() as lmk:
        src_lm = lmk.detect(image)

    ms_rig, rig = _time_ms(Rig, src_lm)
    ms_mw, mw = _time_ms(MeshWarp, image, src_lm, rig)
    exp_seq, pose_seq = make_sequence(frames + WARMUP_FRAMES, seed)

    staged = _split_render(mw)
    if staged is not None:
        # Only trust the split if it reproduces render() exactly (internals may have moved on).
        e, p = exp_seq[WARMUP_FRAMES // 2], pose_seq[WARMUP_FRAMES // 2]
        if not np.array_equal(staged(e, p)[0], mw.render(e, p)):
            notes.append("stage split skipped: replaying render()'s stages no longer reproduces its output")
            staged = None
    else:
        notes.append("stage split skipped: the renderer does not expose _warp / mouth / eyes")

    log(f"warming up ({WARMUP_FRAMES} frames)")
    for i in range(WARMUP_FRAMES):
        mw.render(exp_seq[i], pose_seq[i])
        rig.fit(rig.landmarks(exp_seq[i], pose_seq[i]))

    log(f"timing {frames} frames")
    render_ms, warp_ms, mouth_ms, eyes_ms, fit_ms = [], [], [], [], []
    fit_err = []
    for i in range(WARMUP_FRAMES, WARMUP_FRAMES + frames):
        e, p = exp_seq[i], pose_seq[i]
        ms, _ = _time_ms(mw.render, e, p)
        render_ms.append(ms)
        if staged is not None:
            _, (a, b, c) = staged(e, p)
            warp_ms.append(a)
            mouth_ms.append(b)
            eyes_ms.append(c)
        target = rig.landmarks(e, p)
        ms, fit = _time_ms(rig.fit, target)
        fit_ms.append(ms)
        fit_err.append(fit.residual)
    rss_render_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    # Frames are re-rendered here (untimed) rather than kept, so peak memory stays the renderer's.
    n_det = min(DETECT_FRAMES, frames)
    spread = np.linspace(WARMUP_FRAMES, WARMUP_FRAMES + frames - 1, n_det).round().astype(int)
    log(f"MediaPipe on {n_det} rendered frames, spread over the sequence and consecutive")
    det_static, det_video, misses = [], [], 0
    with FaceLandmarker() as lmk:
        lmk.detect_or_none(mw.render(exp_seq[0], pose_seq[0]))  # the first face logs and allocates
        for i in spread:
            f = mw.render(exp_seq[i], pose_seq[i])
            ms, out = _time_ms(lmk.detect_or_none, f)
            det_static.append(ms)
            misses += out is None
    with FaceLandmarker(video=True) as lmk:
        # Tracking wants consecutive frames: the warm-up frames start the track, untimed.
        for i in range(WARMUP_FRAMES):
            lmk.detect_or_none(mw.render(exp_seq[i], pose_seq[i]))
        for i in range(WARMUP_FRAMES, WARMUP_FRAMES + n_det):
            f = mw.render(exp_seq[i], pose_seq[i])
            ms, out = _time_ms(lmk.detect_or_none, f)
            det_video.append(ms)
            misses += out is None
    if misses:
        notes.append(f"MediaPipe found no face in {misses} rendered frames")
    err = np.asarray(fit_err)
    notes.append(f"fit residual on exact rig landmarks: median {np.median(err):.4f}, max {err.max():.4f} IOD")

    stages = [
        Stage("Rig construction (once)", [ms_rig]),
        Stage("MeshWarp construction (once)", [ms_mw]),
        Stage("render (total)", render_ms, TARGETS_MS["render (total)"]),
    ]
    if staged is not None:
        stages += [
            Stage("  warp (target + remap)", warp_ms),
            Stage("  mouth paint", mouth_ms),
            Stage("  eyes paint (both)", eyes_ms),
        ]
    stages += [
        Stage("rig.fit", fit_ms, TARGETS_MS["rig.fit"]),
        Stage("MediaPipe detect (static)", det_static),
        Stage("MediaPipe track (video)", det_video),
    ]
    peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    machine = {
        "cpu": _cpu_model(),
        "cpus_visible": os.cpu_count(),
        "cv2_threads": cv2.getNumThreads(),
        "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    return {
        "image": str(image_path),
        "frames": frames,
        "image_size": list(image.shape[:2]),
        "stages": [{"stage": s.name, "target_ms": s.target_ms, **s.stats()} for s in stages],
        "peak_rss_mib": peak_rss_kb / 1024.0,
        "peak_rss_render_fit_mib": rss_render_kb / 1024.0,
        "machine": machine,
        "notes": notes,
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as one markdown table plus machine/memory lines."""
    lines = [
        "| stage | median ms | p90 ms | p99 ms | frames/s | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in result["stages"]:
        tgt = s["target_ms"]
        if tgt is None:
            target = ""
        else:
            target = f"< {tgt:g} ms " + ("(ok)" if s["median_ms"] < tgt else "(MISSED)")
        once = s["n"] == 1
        p90 = "" if once else f"{s['p90_ms']:.2f}"
        p99 = "" if once else f"{s['p99_ms']:.2f}"
        fps = "" if once else f"{s['fps']:.0f}"
        lines.append(f"| {s['stage']} | {s['median_ms']:.2f} | {p90} | {p99} | {fps} | {target} |")
    m = result["machine"]
    h, w = result["image_size"]
    lines += [
        "",
        f"frames: {result['frames']} at {w}x{h}; peak RSS: {result['peak_rss_render_fit_mib']:.0f} MiB after "
        f"render+fit, {result['peak_rss_mib']:.0f} MiB at the end (two MediaPipe graphs loaded)",
        f"machine: {m['cpu']} ({m['cpus_visible']} CPUs visible); threads used: cv2 {m['cv2_threads']}, "
        f"BLAS {m['blas_threads_env']}; python {m['python']}, numpy {m['numpy']}, opencv {m['opencv']}",
    ]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames must be >= 1, got {args.frames}")
    result = run(args.image, args.frames, args.seed, log=lambda s: print(s, file=sys.stderr))
    print(format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
