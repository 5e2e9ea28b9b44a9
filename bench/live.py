"""The live pipeline in real time: fps, stage times, CPU, memory, latency, audio/video skew.

    python -m bench.live --seconds 60            # the demo speech, cut into utterances, looped
    python -m bench.live --seconds 600 --viewer  # 10 minutes, with a WebRTC viewer attached

Speech is played at real-time pace through the agent's file source (utterances separated by
silence, so there are onsets to measure); the agent runs exactly as ``run_agent.py`` runs it
(watermark, websocket server and all) with no virtual webcam. Prints one table:

- sustained fps (whole run, and the slowest 10 s window), frames skipped or dropped;
- per-stage medians (FCG step, MeshWarp, post = watermark) and per-frame latency percentiles
  (frame handed to the sinks minus arrival of the audio it depicts);
- mic-to-frame latency: for each speech onset (after at least 0.4 s of silence), the first frame
  whose jawOpen passes 0.15, handed to the sinks, minus the arrival of the onset's audio;
- CPU use of the process (100% = one core) and memory (RSS) at start and end;
- with ``--viewer``: an aiortc viewer's audio/video skew (RTP packets as they arrive, and decoded);
- with ``--virtual-mic`` (needs a PulseAudio server): the voice recorded from the virtual microphone
  against the frames.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import platform
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "assets" / "demo_speech.wav"
# jawOpen that counts as an open mouth: 0.05 the lips part (silent frames stay below 0.01), 0.15
# clearly open.
OPEN = (0.05, 0.15)


def speech_track(seconds: float, path: Path) -> tuple[Path, np.ndarray]:
    """Utterances of the demo speech (split at its pauses) with 0.8-1.6 s of silence between, looped
    to ``seconds``; written as 16 kHz mono WAV. Returns the path and the onset sample indices."""
    from models.audio import load_audio

    speech = load_audio(SPEECH)
    env = np.sqrt(np.convolve(speech**2, np.ones(320) / 320, "same"))
    voiced = env > 0.02
    # utterances: voiced runs separated by >= 0.25 s of quiet
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    runs, start = [], None
    for e in edges:
        if voiced[e + 1] and start is None:
            start = e + 1
        elif not voiced[e + 1] and start is not None:
            runs.append([start, e + 1])
            start = None
    merged: list[list[int]] = []
    for r in runs:
        if merged and r[0] - merged[-1][1] < 4000:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    utterances = [speech[max(a - 800, 0) : b + 800] for a, b in merged if b - a > 3200]
    rng = np.random.default_rng(0)
    out, onsets, n = [np.zeros(16000)], [], 16000
    k = 0
    while n < seconds * 16000:
        u = utterances[k % len(utterances)]
        onsets.append(n + int(np.argmax(np.sqrt(np.convolve(u**2, np.ones(160) / 160, "same")) > 0.02)))
        gap = np.zeros(int(rng.uniform(0.8, 1.6) * 16000))
        out += [u, gap]
        n += len(u) + len(gap)
        k += 1
    audio = np.concatenate(out)[: int(seconds * 16000)]
    onsets = [o for o in onsets if o < len(audio) - 8000]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path, np.asarray(onsets)


async def run(args: argparse.Namespace) -> dict:
    from agent.live import LiveAgent, LiveOptions
    from models.rig import BLENDSHAPE_NAMES

    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    wav, _ = speech_track(args.seconds + 2, tmp / "speech.wav")
    proc = psutil.Process()
    agent = LiveAgent(LiveOptions(audio_source=f"file:{wav}", virtualcam=False, virtual_mic=args.virtual_mic,
                                  port=0, seed=0))  # fmt: skip
    await agent.start()
    rss_start = proc.memory_info().rss
    pipeline = agent.pipeline
    pipeline.animator.stage_ms = {k: collections.deque() for k in pipeline.animator.stage_ms}
    frames: list[tuple] = []
    blocks: dict[int, float] = {}
    # Keep numbers, not images: the frames themselves would fill the memory being measured.
    pipeline.on_frame = lambda f: frames.append(
        (f.index, f.pts, f.ready, f.audio_arrival, float(f.coeffs[jaw]))
    )
    audio_q = pipeline.audio.subscribe(maxsize=500, name="bench audio")

    async def arrivals() -> None:  # arrival and loudness of each block, on the pipeline's timeline
        while True:
            b = await audio_q.get()
            blocks[b.pts] = (b.arrival, float(np.sqrt(np.mean(b.samples.astype(np.float64) ** 2))) / 32768)

    recorder = asyncio.ensure_future(arrivals())
    viewer = None
    if args.viewer:
        from streaming.viewer import view

        viewer = asyncio.ensure_future(
            view(f"ws://127.0.0.1:{agent.port}/ws", args.seconds - 2, keep_images=False, keep_audio=False)
        )
    cpu0, t0 = proc.cpu_times(), time.monotonic()
    rss_samples = []
    end = t0 + args.seconds
    while time.monotonic() < end:
        await asyncio.sleep(min(5.0, end - time.monotonic()))
        rss_samples.append(proc.memory_info().rss)
        print(f"  {time.monotonic() - t0:5.0f} s  frames {pipeline.stats.frames}  "
              f"latency {pipeline.stats.latency_ms()}", file=sys.stderr)  # fmt: skip
    cpu1, t1 = proc.cpu_times(), time.monotonic()
    got = await viewer if viewer is not None else None
    tracks = None
    recorder.cancel()
    stats = {
        "skipped": pipeline.stats.skipped,
        "dropped": pipeline.frames.dropped,
        "filled": pipeline.stats.filled_blocks,
        "stage_ms": {k: float(np.median(v)) for k, v in pipeline.animator.stage_ms.items() if v},
        "stage_p95": {k: float(np.percentile(v, 95)) for k, v in pipeline.animator.stage_ms.items() if v},
    }
    if got is not None:
        tracks = agent.peers  # closed by now; first pts were kept on the tracks
    await agent.stop()
    rss_end = proc.memory_info().rss
    return {
        "frames": np.array(frames),
        "blocks": blocks,
        "wall": t1 - t0,
        "cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0),
        "rss_start": rss_start,
        "rss_end": rss_end,
        "rss_samples": rss_samples,
        "viewer": got,
        "tracks": tracks,
        **stats,
    }


def speech_onsets(blocks: dict[int, tuple[float, float]]) -> list[int]:
    """Blocks (pts) where speech starts after at least 0.4 s of quiet, found in the audio the pipeline
    got (its timeline: silence it filled in while a source stalled shifts it against the file)."""
    onsets, quiet = [], 0
    for pts in sorted(blocks):
        rms = blocks[pts][1]
        if rms > 0.02 and quiet >= 20:
            onsets.append(pts)
        quiet = quiet + 1 if rms < 0.005 else 0
    return onsets


def onset_latencies(
    frames: np.ndarray, blocks: dict[int, tuple[float, float]], threshold: float
) -> np.ndarray:
    """Per onset: ready time of the first frame (depicting >= onset - 0.2 s) with jawOpen above
    ``threshold``, minus the arrival of the onset's block."""
    index, pts, ready, _, jaw = frames.T
    out = []
    for onset in speech_onsets(blocks):
        candidates = np.flatnonzero((pts >= onset - 3200) & (jaw > threshold))
        if len(candidates):
            out.append(ready[candidates[0]] - blocks[onset][0])
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (%(default)s)")
    parser.add_argument("--viewer", action="store_true", help="attach an aiortc WebRTC viewer")
    parser.add_argument(
        "--virtual-mic", action="store_true", help="play into a virtual microphone (PulseAudio)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    r = asyncio.run(run(args))
    frames = r["frames"]
    index, pts, ready, arrival, jaw = frames.T
    lat = (ready - arrival) * 1000
    span = ready[-1] - ready[0]
    fps = (len(frames) - 1) / span
    windows = [((ready >= t) & (ready < t + 10)).sum() / 10 for t in np.arange(ready[0], ready[-1] - 10, 5)]
    missing = int(index[-1] - index[0] + 1 - len(frames))
    onset = {th: onset_latencies(frames, r["blocks"], th) * 1000 for th in OPEN}
    rows = [
        ("machine", f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, torch 1 thread"),
        ("run", f"{r['wall']:.0f} s, {len(frames)} frames"),
        ("fps, whole run", f"{fps:.2f}"),
        ("fps, slowest 10 s window", f"{min(windows) if windows else fps:.1f}"),
        ("frames skipped / missing / dropped by sinks", f"{r['skipped']} / {missing} / {r['dropped']}"),
        ("silence filled (source stalls)", f"{r['filled']} blocks"),
        *[(f"stage {k}, median (p95)", f"{v:.2f} ms ({r['stage_p95'][k]:.2f})") for k, v in r["stage_ms"].items()],
        ("frame latency p50 / p95 / max", f"{np.percentile(lat, 50):.1f} / {np.percentile(lat, 95):.1f} / {lat.max():.1f} ms"),
        *[(f"mic-to-frame, onset -> jawOpen > {th}: p50 / p95", f"{np.percentile(v, 50):.1f} / "
           f"{np.percentile(v, 95):.1f} ms over {len(v)} onsets" if len(v) else "no onsets measured")
          for th, v in onset.items()],
        ("CPU (100% = one core)", f"{100 * r['cpu']:.0f}%"),
        ("memory start / at 20% / 60% / end", " / ".join(
            f"{m / 2**20:.0f}" for m in (r["rss_start"], *[r["rss_samples"][int(len(r["rss_samples"]) * q)]
                                                           for q in (0.2, 0.6)], r["rss_end"])) + " MiB"),
    ]  # fmt: skip
    got = r["viewer"]
    if got is not None and got.video:
        from streaming.viewer import av_skew

        rate = (len(got.video) - 1) / (got.video[-1][0] - got.video[0][0])
        rows.append(("WebRTC viewer: frames, fps", f"{len(got.video)}, {rate:.1f}"))
        first = getattr(r["tracks"], "first_pts_log", None)
        if first:
            packets, decoded = av_skew(got, *first[0])
            rows.append(
                (
                    "WebRTC skew audio - video (packets / decoded)",
                    f"{1000 * packets:+.1f} / {1000 * decoded:+.1f} ms",
                )
            )
    width = max(len(k) for k, _ in rows)
    print(f"\nbench.live: {args.seconds:.0f} s of speech at real-time pace, 512x512\n")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
