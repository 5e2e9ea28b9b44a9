"""The watermark's cost and robustness: embedding time per frame, detection rate under attacks, PSNR.

Run: `python -m bench.watermark [--frames 50] [--image PATH] [--timing-frames 500]`. Single-threaded
on purpose (cv2 and BLAS pinned to one thread), like the per-frame path. Renders a talking-face clip
(bundled demo coefficients on the portrait), marks it, attacks it as calls and files do (H.264 and
VP8 at call bitrates, rescaling, cropping, brightening) and counts frames where the mark is found.
Prints markdown tables; quote medians, these machines are shared and noisy (DESIGN.md, "Measuring").
"""

from __future__ import annotations

import os

# BLAS reads these once, when numpy loads: they must be set before the first numpy import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import imageio_ffmpeg  # noqa: E402
import numpy as np  # noqa: E402

from models.watermark import Marker, detect  # noqa: E402

__all__ = ["ATTACKS", "encode_decode", "psnr", "render_clip", "main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT / "assets" / "portrait.png"
DEFAULT_COEFFS = ROOT / "assets" / "demo_coeffs.npz"
FPS = 25

Attack = Callable[[list[np.ndarray]], list[np.ndarray]]


def encode_decode(frames: list[np.ndarray], codec: str, bitrate: str, *, fps: int = FPS) -> list[np.ndarray]:
    """Encodes RGB frames the way a call does (constant bitrate, real-time settings) and decodes them.

    codec: "h264" (libx264, zerolatency) or "vp8" (libvpx, realtime deadline); bitrate e.g. "500k".
    """
    height, width = frames[0].shape[:2]
    if codec == "h264":
        encoder = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-f", "mp4"]
    elif codec == "vp8":
        encoder = [
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-minrate",
            bitrate,
            "-f",
            "webm",
        ]
    else:
        raise ValueError(f"codec must be 'h264' or 'vp8', got {codec!r}")
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory(prefix="wm-attack-") as tmp:
        raw, coded = Path(tmp) / "in.rgb", Path(tmp) / "coded"
        raw.write_bytes(b"".join(np.ascontiguousarray(f).tobytes() for f in frames))
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", f"{width}x{height}", "-framerate", str(fps), "-i", str(raw), "-pix_fmt", "yuv420p",
             "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-g", str(10 * fps), *encoder,
             str(coded)],
            check=True,
        )  # fmt: skip
        decoded = subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(coded), "-f", "rawvideo",
             "-pix_fmt", "rgb24", "-"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
    out = np.frombuffer(decoded, np.uint8).reshape(-1, height, width, 3)
    return list(out)


def _resize(side: int) -> Attack:
    def attack(frames: list[np.ndarray]) -> list[np.ndarray]:
        height, width = frames[0].shape[:2]
        size = (round(width * side / height), side)
        interp = cv2.INTER_AREA if side < height else cv2.INTER_CUBIC
        return [cv2.resize(f, size, interpolation=interp) for f in frames]

    return attack


def _crop(fraction: float, *, resize_back: bool) -> Attack:
    """Cuts ``fraction`` of the width and height, unevenly (60% from the top-left), optionally rescaling."""

    def attack(frames: list[np.ndarray]) -> list[np.ndarray]:
        height, width = frames[0].shape[:2]
        dy, dx = round(height * fraction), round(width * fraction)
        y0, x0 = round(dy * 0.6), round(dx * 0.6)
        out = [f[y0 : y0 + height - dy, x0 : x0 + width - dx] for f in frames]
        if resize_back:
            out = [cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in out]
        return out

    return attack


def _brighten(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.convertScaleAbs(f, alpha=1.2, beta=25) for f in frames]


def _codec(codec: str, bitrate: str) -> Attack:
    return lambda frames: encode_decode(frames, codec, bitrate)


def _chain(*attacks: Attack) -> Attack:
    def attack(frames: list[np.ndarray]) -> list[np.ndarray]:
        for a in attacks:
            frames = a(frames)
        return frames

    return attack


# The attack suite; each takes and returns a list of RGB uint8 frames.
ATTACKS: dict[str, Attack] = {
    "none": lambda frames: list(frames),
    "H.264 1 Mbit/s": _codec("h264", "1000k"),
    "H.264 0.5 Mbit/s": _codec("h264", "500k"),
    "VP8 1 Mbit/s": _codec("vp8", "1000k"),
    "VP8 0.5 Mbit/s": _codec("vp8", "500k"),
    "rescale to 256": _resize(256),
    "rescale to 720": _resize(720),
    "crop 5%": _crop(0.05, resize_back=False),
    "crop 5% + rescale back": _crop(0.05, resize_back=True),
    "brighten (x1.2 + 25)": _brighten,
}

# Harder combinations, for the sweep (bench and slow tests).
COMBINED: dict[str, Attack] = {
    "crop 5% + VP8 0.5 Mbit/s": _chain(_crop(0.05, resize_back=False), _codec("vp8", "500k")),
    "rescale 256 + H.264 0.25 Mbit/s": _chain(_resize(256), _codec("h264", "250k")),
    "H.264 0.5 Mbit/s + rescale 720": _chain(_codec("h264", "500k"), _resize(720)),
    "brighten + crop 5% + H.264 0.5 Mbit/s": _chain(_brighten, _crop(0.05, resize_back=True), _codec("h264", "500k")),
}  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def render_clip(image: Path = DEFAULT_IMAGE, num_frames: int = 50) -> list[np.ndarray]:
    """``num_frames`` unmarked 512x512 frames: the demo coefficients rendered on ``image`` by MeshWarp."""
    from agent.commands import load_portrait
    from models.coeffs import load_coeffs
    from models.meshwarp import MeshWarp

    source = load_portrait(image)
    seq = load_coeffs(DEFAULT_COEFFS)
    warp = MeshWarp(source.image, source.landmarks)
    return [warp.render(seq.exp[t % len(seq)], seq.pose[t % len(seq)]) for t in range(num_frames)]


def _time_embed(frame: np.ndarray, n: int) -> tuple[float, float, float]:
    marker = Marker(0x123456)
    marker.prepare(*frame.shape[:2])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        marker.apply(frame)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 90)), float(np.percentile(ms, 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watermark", description=__doc__)
    parser.add_argument("--frames", type=int, default=50, help="frames per attack (%(default)s)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="portrait to render (%(default)s)")
    parser.add_argument("--timing-frames", type=int, default=500, help="frames to time (%(default)s)")
    parser.add_argument("--combined", action="store_true", help="also run the harder combined attacks")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    clean = render_clip(args.image, args.frames)
    run_id = 0x5EED42
    marked = [Marker(run_id, badge=False).apply(f) for f in clean]
    badged = [Marker(run_id).apply(f) for f in clean]
    expected = Marker(run_id).payload

    print("Embedding, one thread, 512x512 RGB uint8 (ms per frame)\n")
    print("| what | median ms | p90 | p99 |")
    print("|---|---:|---:|---:|")
    for label, badge in (("watermark only", False), ("watermark + badge", True)):
        marker = Marker(run_id, badge=badge)
        marker.prepare(512, 512)
        times = []
        for i in range(args.timing_frames):
            frame = clean[i % len(clean)]
            t0 = time.perf_counter()
            marker.apply(frame)
            times.append(time.perf_counter() - t0)
        ms = np.array(times) * 1e3
        print(
            f"| {label} | {np.median(ms):.3f} | {np.percentile(ms, 90):.3f} | {np.percentile(ms, 99):.3f} |"
        )
    t0 = time.perf_counter()
    for f in marked[:20]:
        detect(f)
    detect_ms = (time.perf_counter() - t0) / 20 * 1e3
    print(f"| detect (for reference) | {detect_ms:.1f} | | |")

    psnrs = [psnr(m, c) for m, c in zip(marked, clean, strict=True)]
    print(f"\nPSNR of the invisible mark against the unmarked frame: median {np.median(psnrs):.2f} dB, "
          f"min {np.min(psnrs):.2f} dB over {len(psnrs)} frames\n")  # fmt: skip

    attacks = dict(ATTACKS)
    if args.combined:
        attacks.update(COMBINED)
    print(f"Detection on {args.frames} attacked frames each (payload {expected}; badge on)\n")
    print("| attack | detected | right payload | median score | min score |")
    print("|---|---:|---:|---:|---:|")
    for name, attack in attacks.items():
        results = [detect(f) for f in attack(badged)]
        found = sum(r.found for r in results)
        right = sum(r.payload == expected for r in results)
        scores = [r.score for r in results]
        n = len(results)
        print(f"| {name} | {found}/{n} ({100 * found / n:.0f}%) | {right}/{n} ({100 * right / n:.0f}%) | "
              f"{np.median(scores):.1f} | {np.min(scores):.1f} |")  # fmt: skip
    unmarked = [detect(f) for f in clean]
    false = sum(r.found for r in unmarked)
    print(f"\nUnmarked renders: {false}/{len(unmarked)} false detections, "
          f"max score {max(r.score for r in unmarked):.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
