"""FCG speed: one step() of both flows, and rendering a 10 s clip end to end, on one thread.

    python -m bench.fcg [--checkpoint assets/fcg] [--steps 500]

Prints one table: step() median/p90/p99 (target < 10 ms), and the stages of `render` on 10 s of
speech (features, generation, MeshWarp frames, H.264 encoding) with the real-time factor
(target > 1: faster than real time).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from agent.commands import DEFAULT_FCG, load_fcg, load_portrait, speech_coefficients  # noqa: E402
from models.audio import LogMel, load_audio, mel_windows, num_video_frames  # noqa: E402
from models.fcg import FCG, PRESETS, emotion_label  # noqa: E402
from models.meshwarp import MeshWarp  # noqa: E402
from streaming.file import Mp4Writer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _stats(ms: list[float]) -> tuple[float, float, float]:
    a = np.array(ms)
    return float(np.median(a)), float(np.percentile(a, 90)), float(np.percentile(a, 99))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_FCG)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the rendered clip")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if (args.checkpoint / "model.safetensors").exists():
        model = load_fcg(args.checkpoint)
        which = str(args.checkpoint)
    else:
        model = FCG(PRESETS["paper"]).prepare_for_inference()
        which = "untrained paper preset (no checkpoint)"
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    rows: list[tuple[str, str, str, str, str]] = []

    mel = torch.randn(cfg.window_frames, cfg.n_mels)
    label = emotion_label(torch.eye(cfg.num_emotions)[4:5], torch.tensor([0.8]))[0]
    gen = torch.Generator().manual_seed(0)
    state = model.initial_state()
    times = []
    for i in range(args.steps + 20):
        t0 = time.perf_counter()
        _, state = model.step(state, mel, label, temperature=0.8, generator=gen)
        if i >= 20:
            times.append((time.perf_counter() - t0) * 1e3)
    med, p90, p99 = _stats(times)
    rows.append(("FCG step() (both flows)", f"{med:.2f}", f"{p90:.2f}", f"{p99:.2f}", "< 10 ms"))

    speech = load_audio(ROOT / "assets" / "demo_speech.wav")
    reps = int(np.ceil(args.seconds * 16000 / len(speech)))
    audio = np.tile(speech, reps)[: int(args.seconds * 16000)]
    audio_cfg = cfg.audio_config()
    t0 = time.perf_counter()
    windows = mel_windows(LogMel(audio_cfg)(audio), num_video_frames(len(audio), audio_cfg), audio_cfg)
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    seq = speech_coefficients(model, audio, emotion="happy", seed=0)
    t_gen = time.perf_counter() - t0
    source = load_portrait(ROOT / "assets" / "portrait.png")
    warp = MeshWarp(source.image, source.landmarks)
    frames = []
    t0 = time.perf_counter()
    for t in range(len(seq)):
        frames.append(warp.render(seq.exp[t], seq.pose[t]))
    t_render = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        import wave

        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
        t0 = time.perf_counter()
        with Mp4Writer(Path(tmp) / "o.mp4", fps=seq.fps, size=(512, 512), audio=wav) as writer:
            for f in frames:
                writer.write(f)
        t_enc = time.perf_counter() - t0
    total = t_feat + t_gen + t_render + t_enc
    n = len(seq)
    for name, t in (("features (log-mel, windows)", t_feat), ("FCG generate", t_gen),
                    ("MeshWarp render", t_render), ("H.264 encode + mux", t_enc)):  # fmt: skip
        rows.append((f"render {args.seconds:.0f} s: {name}", f"{t / n * 1e3:.2f}", "", "", ""))
    rows.append(
        (
            f"render {args.seconds:.0f} s: total",
            f"{total / n * 1e3:.2f}",
            "",
            "",
            f"{args.seconds / total:.1f}x real time",
        )
    )
    print(f"model: {which}, {params / 1e6:.2f} M parameters, one thread; {len(windows)} frames")
    print("| stage | median ms/frame | p90 | p99 | target / result |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
