"""Training data made here: synthesized speech with the face coefficients that go with it.

No talking-face dataset can be downloaded, so each sample is built: a sentence (models.corpus)
spoken by a speech engine (espeak-ng or flite), phone timings by forced alignment with the known
text (pocketsphinx), phones -> visemes -> mouth blendshapes with coarticulation (models.visemes),
an emotion from the FACS prototypes with natural variation, blinks, gaze, brow accents, head
motion tied to the speech rhythm, and quiet idle motion in silences. Audio augmentation
(noise, reverberation, gain, band-limiting) is applied at training time by ``augment``.

    python -m models.synth OUT_DIR --minutes 20 --split train
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

from models.corpus import sentences
from models.rig import BLENDSHAPE_NAMES, EMOTIONS, NUM_BLENDSHAPES, emotion_coefficients
from models.visemes import phone_curves

__all__ = [
    "FPS",
    "SAMPLE_RATE",
    "Sample",
    "Voice",
    "align",
    "augment",
    "available_voices",
    "build_dataset",
    "load_dataset",
    "make_sample",
    "synthesize",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FPS = 25.0
_I = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}
_MOUTH = [i for i, n in enumerate(BLENDSHAPE_NAMES) if n.startswith(("mouth", "jaw", "tongue"))]


@dataclass(frozen=True)
class Voice:
    """A speech engine voice. rate: words per minute (espeak) or a duration stretch (flite)."""

    engine: str  # "espeak" | "flite"
    name: str
    rate: float = 1.0
    pitch: int = 50  # espeak only, 0-99

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}@{self.rate:g}/{self.pitch}"


# Voices for training; the validation voices are never trained on.
_TRAIN_VOICES = [
    Voice("espeak", "en-us", 165, 50), Voice("espeak", "en-us+f3", 150, 60), Voice("espeak", "en+m3", 175, 40),
    Voice("espeak", "en-gb+f2", 160, 55), Voice("espeak", "en-us+m7", 140, 35), Voice("espeak", "en+f5", 185, 65),
    Voice("espeak", "en-gb-x-rp+m1", 155, 45), Voice("espeak", "en-us+f1", 170, 70),
    Voice("flite", "kal16", 1.0), Voice("flite", "awb", 1.05), Voice("flite", "rms", 0.95),
]  # fmt: skip
_VAL_VOICES = [
    Voice("flite", "slt", 1.0),
    Voice("espeak", "en-us+f4", 160, 58),
    Voice("espeak", "en-gb+m4", 150, 42),
]


def available_voices(split: str = "train") -> list[Voice]:
    """The voices of a split whose engine is installed here."""
    voices = _TRAIN_VOICES if split == "train" else _VAL_VOICES
    have = {"espeak": shutil.which("espeak-ng") is not None, "flite": shutil.which("flite") is not None}
    for engine, ok in have.items():
        if not ok:
            log.info("speech engine %s is not installed; its voices are skipped", engine)
    return [v for v in voices if have[v.engine]]


def _read_wav_any(path: Path) -> np.ndarray:
    """Decode any audio file to float32 mono at SAMPLE_RATE with the bundled ffmpeg."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-ac", "1",
           "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"]  # fmt: skip
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak ``text`` with ``voice``: float32 mono audio at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(int(voice.rate)), "-p", str(voice.pitch),
                   "-w", str(wav), text]  # fmt: skip
        elif voice.engine == "flite":
            cmd = [
                "flite",
                "-voice",
                voice.name,
                "--setf",
                f"duration_stretch={voice.rate}",
                "-t",
                text,
                "-o",
                str(wav),
            ]
        else:
            raise ValueError(f"unknown speech engine {voice.engine!r}")
        subprocess.run(cmd, capture_output=True, check=True)
        return _read_wav_any(wav)


_DECODERS: dict[bool, object] = {}


def align(audio: np.ndarray, text: str) -> list[tuple[str, float, float]] | None:
    """Phone timings (phone, start_s, end_s) of ``text`` in 16 kHz ``audio``; None if alignment fails."""
    from pocketsphinx import Decoder

    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    for wide in (False, True):
        if wide not in _DECODERS:
            beams = (
                {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}
                if wide
                else {"beam": 1e-60, "wbeam": 1e-40, "pbeam": 1e-60}
            )
            _DECODERS[wide] = Decoder(loglevel="FATAL", bestpath=False, **beams)
        d = _DECODERS[wide]
        try:
            d.set_align_text(text)  # type: ignore[attr-defined]
            d.start_utt()  # type: ignore[attr-defined]
            d.process_raw(pcm, full_utt=True)  # type: ignore[attr-defined]
            d.end_utt()  # type: ignore[attr-defined]
            d.set_alignment()  # type: ignore[attr-defined]
            d.start_utt()  # type: ignore[attr-defined]
            d.process_raw(pcm, full_utt=True)  # type: ignore[attr-defined]
            d.end_utt()  # type: ignore[attr-defined]
            al = d.get_alignment()  # type: ignore[attr-defined]
        except RuntimeError:
            continue
        if al is None:
            continue
        phones = []
        for word in al:
            for p in word:
                phones.append((p.name, p.start * 0.01, (p.start + p.duration) * 0.01))
        if phones:
            return phones
    return None


@dataclass(frozen=True, eq=False)
class Sample:
    """One utterance: audio (16 kHz float32) and per-frame targets at 25 fps."""

    audio: np.ndarray
    exp: np.ndarray  # (T, 52) float32 in [0, 1]
    pose: np.ndarray  # (T, 6) float32
    emotion: int  # index into EMOTIONS
    intensity: float
    text: str
    voice: str


def _smooth_noise(rng: np.random.Generator, n: int, sigma_frames: float, scale: float) -> np.ndarray:
    x = gaussian_filter1d(rng.normal(0.0, 1.0, n + 100), sigma_frames)[50 : 50 + n]
    return x / (x.std() + 1e-9) * scale


def _blinks(rng: np.random.Generator, n: int, pauses: np.ndarray) -> np.ndarray:
    """Blink curve (n,): a renewal process of about 10-30 blinks/min, likelier in pauses."""
    out = np.zeros(n)
    rate = rng.uniform(12, 26) / 60.0  # blinks per second
    t = rng.uniform(0.0, 1.5)
    while t * FPS < n:
        k = int(t * FPS)
        close = rng.uniform(0.06, 0.1)
        hold = rng.uniform(0.0, 0.05)
        opening = rng.uniform(0.1, 0.17)
        times = np.arange(n) / FPS - t
        c = np.clip(times / close, 0, 1)
        o = np.clip(1 - (times - close - hold) / opening, 0, 1)
        shape = np.where(times < close, c, np.where(times < close + hold, 1.0, o))
        shape[times < 0] = 0.0
        out = np.maximum(out, shape * rng.uniform(0.85, 1.0))
        gap = rng.exponential(1.0 / rate) + 0.4
        # At the end of a phrase a blink comes sooner.
        if k < n and pauses[min(k + int(gap * FPS), n - 1)]:
            gap *= 0.6
        t += gap
    return out


def make_sample(
    text: str, voice: Voice, emotion: str, intensity: float, rng: np.random.Generator
) -> Sample | None:
    """Synthesize, align and build the targets of one utterance (None if alignment fails)."""
    speech = synthesize(text, voice)
    lead = rng.uniform(0.2, 1.0)
    tail = rng.uniform(0.2, 1.0)
    audio = np.concatenate([np.zeros(int(lead * SAMPLE_RATE)), speech, np.zeros(int(tail * SAMPLE_RATE))])
    audio = audio.astype(np.float32)
    # Aligned with its silences: the aligner needs frames after the last word to finish it.
    phones = align(audio, text)
    if phones is None:
        return None
    n = int(np.ceil(len(audio) / SAMPLE_RATE * FPS))
    exp = phone_curves(phones, n, FPS).astype(np.float64)
    t = np.arange(n) / FPS
    speaking = np.zeros(n, dtype=bool)
    for p, s, e in phones:
        if p not in ("SIL", "+SPN+", "+NSN+"):
            speaking |= (t >= s) & (t < e)
    pauses = gaussian_filter1d(speaking.astype(float), 2) < 0.3

    # Emotion, with slow variation of its intensity and a little asymmetry.
    level = np.clip(intensity * (1.0 + _smooth_noise(rng, n, 12, 0.12)), 0.0, 1.0)
    emo = emotion_coefficients(emotion, 1.0).astype(np.float64)
    asym = 1.0 + rng.normal(0.0, 0.06, NUM_BLENDSHAPES)
    overlay = level[:, None] * emo[None, :] * asym[None, :]
    # While talking the mouth is busy: the emotion's mouth part yields a little to the visemes.
    mouth_busy = exp[:, _MOUTH].max(1, keepdims=True)
    overlay[:, _MOUTH] *= 1.0 - 0.4 * mouth_busy
    energy = {"sad": 0.75, "angry": 1.1, "happy": 1.05, "surprised": 1.1, "fear": 0.9}.get(emotion, 1.0)
    exp *= energy
    exp = exp + overlay

    blink = _blinks(rng, n, pauses)
    exp[:, _I["eyeBlinkLeft"]] = np.maximum(exp[:, _I["eyeBlinkLeft"]], blink)
    exp[:, _I["eyeBlinkRight"]] = np.maximum(exp[:, _I["eyeBlinkRight"]], blink * rng.uniform(0.93, 1.0))
    # Gaze: occasional small saccades and drift.
    gaze_x = np.round(_smooth_noise(rng, n, 15, 1.0) * 2) / 2 * 0.25
    gaze_y = _smooth_noise(rng, n, 20, 0.15)
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        right = np.clip(gaze_x, 0, 1)  # looking to the image right
        left = np.clip(-gaze_x, 0, 1)
        exp[:, _I[f"eyeLookOut{side}"]] += right if sign > 0 else left
        exp[:, _I[f"eyeLookIn{side}"]] += left if sign > 0 else right
        exp[:, _I[f"eyeLookUp{side}"]] += np.clip(-gaze_y, 0, 1)
        exp[:, _I[f"eyeLookDown{side}"]] += np.clip(gaze_y, 0, 1)
    # Brow accents on some stressed vowels.
    for p, s, e in phones:
        if p.endswith("1") and rng.random() < 0.12:
            bump = np.exp(-0.5 * ((t - 0.5 * (s + e)) / 0.15) ** 2) * rng.uniform(0.3, 0.7)
            exp[:, _I["browInnerUp"]] += bump
            exp[:, _I["browOuterUpLeft"]] += bump * 0.7
            exp[:, _I["browOuterUpRight"]] += bump * 0.7

    # Head motion: slow drift + nods following the speech energy, quieter in silences.
    env = np.zeros(n)
    hop = SAMPLE_RATE / FPS
    for k in range(n):
        seg = audio[int(k * hop) : int((k + 1) * hop)]
        env[k] = float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0
    env = gaussian_filter1d(env / (env.max() + 1e-9), 2)
    activity = 0.4 + 0.6 * gaussian_filter1d(speaking.astype(float), 6)
    pose = np.zeros((n, 6))
    pose[:, 0] = _smooth_noise(rng, n, 25, 0.05) * activity
    pose[:, 1] = _smooth_noise(rng, n, 20, 0.03) + 0.05 * (env - env.mean()) * rng.uniform(0.5, 1.5)
    pose[:, 2] = _smooth_noise(rng, n, 30, 0.025) * activity
    pose[:, 3] = _smooth_noise(rng, n, 30, 0.02)
    pose[:, 4] = _smooth_noise(rng, n, 30, 0.015)
    pose[:, 5] = _smooth_noise(rng, n, 40, 0.03)
    pose[:, :3] = np.clip(pose[:, :3], -0.15, 0.15)
    return Sample(
        audio=audio,
        exp=np.clip(exp, 0.0, 1.0).astype(np.float32),
        pose=pose.astype(np.float32),
        emotion=EMOTIONS.index(emotion),
        intensity=float(intensity),
        text=text,
        voice=str(voice),
    )


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Time-preserving audio augmentation: gain, band-limiting, reverberation, noise, clipping.

    Timing is untouched (no tempo or pitch change), so the targets stay aligned.
    """
    x = audio.astype(np.float64)
    if rng.random() < 0.5:  # a phone or laptop microphone: band-limited
        lo, hi = rng.uniform(80, 300), rng.uniform(3400, 7800)
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
        spec *= 1.0 / (1.0 + (lo / np.maximum(f, 1.0)) ** 4) / (1.0 + (f / hi) ** 8)
        x = np.fft.irfft(spec, len(x))
    if rng.random() < 0.4:  # a room: exponentially decaying noise impulse response
        rt60 = rng.uniform(0.1, 0.5)
        m = int(rt60 * SAMPLE_RATE)
        ir = rng.normal(0, 1, m) * np.exp(-6.9 * np.arange(m) / m)
        ir[0] = 1.0 / rng.uniform(0.3, 1.0)
        wet = np.convolve(x, ir / np.abs(ir).sum() * 4.0)[: len(x)]
        x = 0.6 * x + 0.4 * wet
    gain = 10 ** (rng.uniform(-12, 6) / 20)
    x = x * gain
    if rng.random() < 0.7:  # noise at 15-40 dB SNR, white or pink
        power = float(np.mean(x**2)) + 1e-12
        snr = rng.uniform(15, 40)
        noise = rng.normal(0, 1, len(x))
        if rng.random() < 0.5:
            noise = lfilter(
                [0.049922, -0.095993, 0.050612, -0.004408], [1, -2.494956, 2.017265, -0.522189], noise
            )
        noise *= np.sqrt(power / 10 ** (snr / 10) / (np.mean(noise**2) + 1e-12))
        x = x + noise
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def build_dataset(
    out: str | Path, *, minutes: float, seed: int = 0, split: str = "train", progress: bool = True
) -> Path:
    """Synthesize about ``minutes`` of aligned speech with targets into one .npz file."""
    from tqdm import tqdm

    out = Path(out)
    voices = available_voices(split)
    if not voices:
        raise RuntimeError("no speech engine found: install espeak-ng (and optionally flite)")
    rng = np.random.default_rng(seed)
    texts = sentences(5000 if split == "train" else 200, seed=seed, split=split)
    audio, exp, pose, emotion, intensity, a_off, f_off, meta = [], [], [], [], [], [0], [0], []
    failures = 0
    total_s = 0.0
    start = time.monotonic()
    bar = tqdm(total=round(minutes * 60), unit="s", desc=f"synth {split}", disable=not progress)
    i = 0
    while total_s < minutes * 60:
        voice = voices[i % len(voices)]
        emo = EMOTIONS[(i // len(voices)) % len(EMOTIONS)]
        level = 0.0 if emo == "neutral" else float(rng.uniform(0.3, 1.0))
        text = texts[i % len(texts)]
        if voice.engine == "flite" or rng.random() < 0.5:  # variety of rate beyond the voice list
            voice = Voice(voice.engine, voice.name, voice.rate * rng.uniform(0.9, 1.1), voice.pitch)
        i += 1
        s = make_sample(text, voice, emo, level, rng)
        if s is None:
            failures += 1
            continue
        pcm = (np.clip(s.audio, -1, 1) * 32767).astype(np.int16)
        audio.append(pcm)
        exp.append(s.exp)
        pose.append(s.pose)
        emotion.append(s.emotion)
        intensity.append(s.intensity)
        a_off.append(a_off[-1] + len(pcm))
        f_off.append(f_off[-1] + len(s.exp))
        meta.append(f"{s.voice}|{s.text}")
        dur = len(pcm) / SAMPLE_RATE
        total_s += dur
        bar.update(round(dur))
    bar.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.npz")
    np.savez_compressed(
        tmp, audio=np.concatenate(audio), audio_offsets=np.array(a_off), exp=np.concatenate(exp),
        pose=np.concatenate(pose), frame_offsets=np.array(f_off), emotion=np.array(emotion, dtype=np.int64),
        intensity=np.array(intensity, dtype=np.float32), meta=np.array(meta), fps=FPS, sample_rate=SAMPLE_RATE,
        names=np.array(BLENDSHAPE_NAMES),
    )  # fmt: skip
    tmp.replace(out)
    exp_all = np.concatenate(exp)
    blinks = int(((exp_all[1:, _I["eyeBlinkLeft"]] > 0.5) & (exp_all[:-1, _I["eyeBlinkLeft"]] <= 0.5)).sum())
    log.info(
        "%s: %d utterances, %.1f min, %d alignment failures, %.1f blinks/min, %.0f s",
        out, len(meta), total_s / 60, failures, blinks / (total_s / 60), time.monotonic() - start,
    )  # fmt: skip
    return out


def load_dataset(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a dataset file (see build_dataset)."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if list(data["names"]) != list(BLENDSHAPE_NAMES):
        raise ValueError(f"{path}: blendshape names differ from models.rig.BLENDSHAPE_NAMES")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Synthesize talking-face training data.")
    parser.add_argument("out", type=Path, help="output .npz")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--split", choices=["train", "val"], default="train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_dataset(args.out, minutes=args.minutes, seed=args.seed, split=args.split)


if __name__ == "__main__":
    main()
