"""Synthesized training data for the FCG: speech audio with the face coefficients that go with it.

No talking-face dataset can be downloaded, so each utterance is built: a sentence (models.corpus)
spoken by a speech engine (espeak-ng, flite, festival), phone timings by forced alignment with the
known text (pocketsphinx), phones -> mouth curves with coarticulation (models.visemes), an emotion
prototype (models.rig) with slow variation and asymmetry, blinks, gaze, brow accents, head motion
tied to the speech rhythm, and idle motion in the silences around it. ``augment`` adds
time-preserving audio corruption (noise, reverb, gain, band-limiting) at training time.

    python -m models.synth OUT_DIR --minutes 5 --split train [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import multiprocessing
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import butter, fftconvolve, resample_poly, sosfiltfilt

from models.corpus import sentences
from models.rig import BLENDSHAPE_NAMES, EMOTIONS, NUM_BLENDSHAPES, POSE_NAMES, emotion_coefficients
from models.visemes import SILENCE, VOWELS, close_lips, mouth_curves, normalize_phone

__all__ = [
    "FORMAT_VERSION",
    "FPS",
    "POSE_LIMIT_RAD",
    "SAMPLE_RATE",
    "TRANSLATION_LIMIT",
    "TRAIN_VOICES",
    "VAL_VOICES",
    "Aligner",
    "Alignment",
    "AlignmentError",
    "Sample",
    "SynthDataset",
    "Targets",
    "Voice",
    "align",
    "augment",
    "available_voices",
    "build_dataset",
    "load_dataset",
    "make_sample",
    "make_targets",
    "synthesize",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FPS = 25
FORMAT_VERSION = 1
POSE_LIMIT_RAD = 0.15  # |yaw|, |pitch|, |roll| stay below this
TRANSLATION_LIMIT = 0.1  # |tx|, |ty|, |tz| in inter-ocular distances

_I = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}
_MOUTH = np.array([n.startswith(("mouth", "jaw", "tongue")) for n in BLENDSHAPE_NAMES])

Engine = Literal["espeak", "flite", "festival"]


# --- voices and speech engines -----------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """A speech-engine voice.

    rate: speed relative to the engine's default (espeak 175 words/min; flite and festival through
    their duration stretch). pitch: mean f0 relative to the voice's own (espeak ``-p 50 * pitch``;
    flite ``int_f0_target_mean``; festival diphone voices ``target_f0_mean``; ignored by HTS voices
    and flite rms).
    """

    engine: Engine
    name: str
    rate: float = 1.0
    pitch: float = 1.0

    def __post_init__(self) -> None:
        if self.engine not in ("espeak", "flite", "festival"):
            raise ValueError(f"engine must be espeak, flite or festival, got {self.engine!r}")
        if not (0.3 <= self.rate <= 3.0 and 0.3 <= self.pitch <= 2.0):
            raise ValueError(f"rate must be in [0.3, 3] and pitch in [0.3, 2], got {self.rate}, {self.pitch}")

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}@{self.rate:.2f}/{self.pitch:.2f}"

    @property
    def speaker(self) -> str:
        """The voice without rate and pitch, e.g. ``flite:slt``."""
        return f"{self.engine}:{self.name}"


# Training voices. The validation voices are never trained on: flite's slt and festival's HTS slt
# are the same CMU ARCTIC speaker, so both are held out; plus one espeak accent + variant.
TRAIN_VOICES: tuple[Voice, ...] = (
    Voice("espeak", "en-us"), Voice("espeak", "en-us+m3", 0.95, 0.9), Voice("espeak", "en-us+f3", 1.0, 1.15),
    Voice("espeak", "en+m7", 1.05, 0.85), Voice("espeak", "en-gb+f2", 0.95, 1.1),
    Voice("espeak", "en-gb-x-rp+m1"), Voice("espeak", "en-us+f1", 1.1, 1.2), Voice("espeak", "en+f5", 0.9, 1.05),
    Voice("espeak", "en-gb-x-gbclan+m2", 1.0, 0.95), Voice("espeak", "en-029+m4", 0.95),
    Voice("espeak", "en-us+klatt2"),
    Voice("flite", "kal"), Voice("flite", "kal16"), Voice("flite", "awb"), Voice("flite", "rms"),
    Voice("festival", "kal_diphone"), Voice("festival", "ked_diphone"),
)  # fmt: skip
VAL_VOICES: tuple[Voice, ...] = (
    Voice("flite", "slt"),
    Voice("festival", "cmu_us_slt_arctic_hts"),
    Voice("espeak", "en-gb-scotland+f4", 1.0, 1.1),
)
_ENGINE_BINARY = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}
_FLITE_F0 = {"kal": 100.0, "kal16": 100.0, "awb": 120.0, "rms": 105.0, "slt": 170.0}  # Hz, measured
_FESTIVAL_F0 = 105.0  # target_f0_mean of the Debian diphone voices


@functools.cache
def _festival_voices() -> frozenset[str]:
    try:
        out = subprocess.run(
            ["festival", "--pipe"], input="(print (voice.list))", capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(out.strip().strip("()").split())


@functools.cache
def _festival_voice_ok(name: str) -> bool:
    if name not in _festival_voices():
        log.info("festival voice %s is not installed; skipped", name)
        return False
    return True


@functools.cache
def _engine_ok(engine: str) -> bool:
    binary = _ENGINE_BINARY[engine]
    if shutil.which(binary) is None:
        log.info("speech engine %s is not installed (no %s on PATH); its voices are skipped", engine, binary)
        return False
    return True


def available_voices(split: Literal["train", "val"] | None = None) -> list[Voice]:
    """Voices of a split (both when None) whose engine and voice are installed on this machine."""
    if split not in ("train", "val", None):
        raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
    voices = {"train": TRAIN_VOICES, "val": VAL_VOICES, None: TRAIN_VOICES + VAL_VOICES}[split]
    return [
        v for v in voices if _engine_ok(v.engine) and (v.engine != "festival" or _festival_voice_ok(v.name))
    ]


def _read_wav(path: Path) -> np.ndarray:
    """16-bit PCM WAV -> float32 mono at SAMPLE_RATE."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
    x = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return x


def _engine_command(text: str, voice: Voice, wav: Path) -> tuple[list[str], str | None]:
    """The command line (and its stdin) that speaks ``text`` into ``wav``."""
    if voice.engine == "espeak":
        rate = round(175 * voice.rate)
        pitch = min(99, max(0, round(50 * voice.pitch)))
        return ["espeak-ng", "-v", voice.name, "-s", str(rate), "-p", str(pitch), "-w", str(wav), text], None
    if voice.engine == "flite":
        f0 = _FLITE_F0.get(voice.name, 110.0) * voice.pitch
        cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / voice.rate:.4f}"]
        return [*cmd, "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(wav)], None
    evals = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.4f})"]
    if voice.pitch != 1.0:
        evals.append(
            f"(set! int_lr_params (cons (list 'target_f0_mean {_FESTIVAL_F0 * voice.pitch:.1f}) int_lr_params))"
        )
    cmd = ["text2wave", "-o", str(wav)]
    for e in evals:
        cmd += ["-eval", e]
    return cmd, text + "\n"


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak ``text`` with ``voice``: float32 mono audio at 16 kHz, as the engine makes it."""
    if not text.strip():
        raise ValueError("text is empty")
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd, stdin = _engine_command(text, voice, wav)
        try:
            subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True, timeout=120)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(
                f"{voice.engine} failed for voice {voice.name}: {e.stderr.strip()[:300]}"
            ) from e
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{voice.engine} timed out for voice {voice.name}") from e
        audio = _read_wav(wav)
    if len(audio) == 0 or not np.any(audio):
        raise RuntimeError(f"{voice} produced no audio for {text!r}")
    return audio


def _trim(audio: np.ndarray, floor_db: float = -40.0, margin_s: float = 0.01) -> np.ndarray:
    """Cut the engine's own leading and trailing silence (10 ms RMS below floor_db of its maximum)."""
    win = int(0.01 * SAMPLE_RATE)
    env = np.sqrt(np.convolve(audio.astype(np.float64) ** 2, np.ones(win) / win, mode="same"))
    loud = np.flatnonzero(env > env.max() * 10 ** (floor_db / 20))
    if len(loud) == 0:
        return audio
    m = int(margin_s * SAMPLE_RATE)
    return audio[max(loud[0] - m, 0) : loud[-1] + m + 1]


# --- forced alignment --------------------------------------------------------------------------


class AlignmentError(RuntimeError):
    """pocketsphinx could not align the text to the audio, even with wide beams."""


class Alignment(NamedTuple):
    words: list[tuple[str, float, float]]  # (word, start_s, end_s), spoken words only, in order
    phones: list[tuple[str, float, float]]  # (phone, start_s, end_s) including SIL, covering the audio
    wide_beam: bool  # True when the default beams failed and the wide ones succeeded


_DEFAULT_BEAMS = {"beam": 1e-48, "wbeam": 7e-29, "pbeam": 1e-48}  # pocketsphinx 5 defaults
_WIDE_BEAMS = {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}


class Aligner:
    """Word and phone forced alignment with pocketsphinx's bundled US English model.

    Two passes as pocketsphinx does it: word alignment with optional silences between words
    (set_align_text), then phone and state alignment along that path (set_alignment). Three
    settings matter on synthesized speech (measured, 30 sentences x 20 voices): ``bestpath=False``,
    or the lattice's best path hands the second pass a one-frame ``<s>`` it cannot align
    ("impossible duration"; a third of the utterances failed); a noise floor, since long stretches
    of digital silence skew the cepstral mean and let the silence model swallow the words (espeak
    voices aligned 1-10 of 30 without it); and ``reinit_feat()`` before each utterance, without
    which the front end's state makes timings depend on the previous utterance. The audio is aligned
    with white noise 40 dB below the speech (on a copy); failures are retried with wide beams.
    With all three, 600 of 600 aligned at the first try.
    """

    def __init__(self) -> None:
        self._decoders: dict[bool, Any] = {}

    def _decoder(self, wide: bool) -> Any:
        if wide not in self._decoders:
            try:
                from pocketsphinx import Decoder
            except ImportError as e:
                raise ImportError("forced alignment needs pocketsphinx: pip install pocketsphinx") from e

            beams = _WIDE_BEAMS if wide else _DEFAULT_BEAMS
            self._decoders[wide] = Decoder(lm=None, bestpath=False, loglevel="FATAL", **beams)
        return self._decoders[wide]

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` missing from the pronunciation dictionary."""
        d = self._decoder(False)
        return [w for w in text.split() if d.lookup_word(w) is None]

    def align(self, audio: np.ndarray, text: str) -> Alignment:
        """Align ``text`` (lower-case dictionary words) to 16 kHz float ``audio``; AlignmentError if it fails."""
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio (N,), got shape {audio.shape}")
        if not text.split():
            raise ValueError("text is empty")
        unknown = self.unknown_words(text)
        if unknown:
            raise AlignmentError(f"words not in the pronunciation dictionary: {unknown}")
        x = audio.astype(np.float64)
        loud = np.abs(x) > 0.05 * (np.abs(x).max() + 1e-12)
        speech_rms = math.sqrt(float(np.mean(x[loud] ** 2))) if loud.any() else 1e-3
        noise = np.random.default_rng(len(x)).normal(0.0, speech_rms * 10 ** (-40 / 20), len(x))
        pcm = (np.clip(x + noise, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
        expected = text.split()
        for wide in (False, True):
            result = self._try(self._decoder(wide), pcm, text, expected, len(x) / SAMPLE_RATE)
            if result is not None:
                return Alignment(result[0], result[1], wide)
        raise AlignmentError(f"could not align {text!r}")

    @staticmethod
    def _try(
        d: Any, pcm: bytes, text: str, expected: list[str], duration_s: float
    ) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]] | None:
        try:
            d.reinit_feat()  # the front end keeps state between utterances; reset it for reproducible timings
            d.set_align_text(text)
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            hyp = d.hyp()
            if hyp is None or hyp.hypstr.split() != expected:  # the search ended before the last word
                return None
            d.set_alignment()
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            al = d.get_alignment()
        except RuntimeError:
            return None
        if al is None:
            return None
        words, phones = [], []
        for w in al:
            name = w.name.split("(")[0]  # "the(2)": the second pronunciation of "the"
            if name not in ("<s>", "</s>", "<sil>") and not name.startswith("["):
                words.append((name, w.start * 0.01, (w.start + w.duration) * 0.01))
            for p in w:
                phones.append((p.name, p.start * 0.01, (p.start + p.duration) * 0.01))
        if [w for w, _, _ in words] != expected or not phones or phones[-1][2] > duration_s + 0.02:
            return None
        return words, phones


def _clamp_to_speech(
    phones: list[tuple[str, float, float]], start_s: float, end_s: float, duration_s: float
) -> list[tuple[str, float, float]]:
    """Keep the phones inside the known speech span [start_s, end_s]; SIL before and after it.

    The aligner sometimes stretches a weak first or last consonant (TH, F, HH) over the silence
    next to it; where we made the silence ourselves we know better.
    """
    speech = []
    for p, s, e in phones:
        if normalize_phone(p) != SILENCE:
            s, e = min(max(s, start_s), end_s - 0.01), max(min(e, end_s), start_s + 0.01)
            if e - s >= 0.005:
                speech.append((p, s, e))
    if not speech:
        return [(SILENCE, 0.0, duration_s)]
    # SIL fills every gap: before, between (pauses) and after the phones.
    bounds = [0.0] + [x for _, s, e in speech for x in (s, e)] + [max(duration_s, speech[-1][2])]
    gaps = [(SILENCE, a, b) for a, b in zip(bounds[0::2], bounds[1::2], strict=True) if b - a > 1e-6]
    return sorted(speech + gaps, key=lambda x: x[1])


_ALIGNER: Aligner | None = None


def align(audio: np.ndarray, text: str) -> Alignment:
    """Forced alignment with this process's shared :class:`Aligner`."""
    global _ALIGNER
    if _ALIGNER is None:
        _ALIGNER = Aligner()
    return _ALIGNER.align(audio, text)


# --- per-frame targets -------------------------------------------------------------------------


class Targets(NamedTuple):
    exp: np.ndarray  # (T, 52) float32 in [0, 1]
    pose: np.ndarray  # (T, 6) float32: yaw, pitch, roll (rad), tx, ty, tz (IOD)
    blinks: int  # blinks started in this clip


@dataclass(frozen=True, eq=False)
class Sample:
    """One utterance: audio at 16 kHz and its targets at ``fps``; frame k shows time k / fps."""

    audio: np.ndarray  # (N,) float32 in [-1, 1]
    exp: np.ndarray  # (T, 52) float32 in [0, 1], T = ceil(N / SAMPLE_RATE * fps)
    pose: np.ndarray  # (T, 6) float32
    emotion: int  # index into EMOTIONS
    intensity: float
    text: str
    voice: Voice
    phones: list[tuple[str, float, float]]
    blinks: int
    fps: int = FPS


# Emotion shapes that hold the lips shut; they give way while the face speaks.
_LIPS_SHUT = (
    "mouthPressLeft", "mouthPressRight", "mouthShrugLower", "mouthShrugUpper", "mouthRollLower",
    "mouthRollUpper",
)  # fmt: skip
# Per-emotion gains on the viseme channels (at intensity 1; interpolated towards 1 below).
_VISEME_GAIN: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"mouthPucker": 0.7, "mouthFunnel": 0.8, "mouthStretch": 1.1},
    "sad": {"*": 0.72},
    "angry": {"jawOpen": 0.8, "mouthStretch": 1.2, "mouthUpperUp": 1.3},
    "fear": {"jawOpen": 0.9, "mouthStretch": 1.3},
    "surprised": {"jawOpen": 1.2, "mouthFunnel": 1.2},
    "disgusted": {"jawOpen": 0.85, "mouthUpperUp": 1.4},
    "contempt": {"jawOpen": 0.85, "*": 0.9},
}
# Head: motion scale, pitch offset (rad, + = chin down), |yaw| and |roll| offsets, tz (IOD, + = away).
_HEAD_STYLE: dict[str, tuple[float, float, float, float, float]] = {
    "neutral": (1.0, 0.0, 0.0, 0.0, 0.0),
    "happy": (1.2, -0.01, 0.0, 0.03, 0.0),
    "sad": (0.6, 0.06, 0.0, 0.02, 0.02),
    "angry": (1.2, 0.03, 0.0, 0.0, -0.05),
    "fear": (0.8, 0.02, 0.04, 0.0, 0.07),
    "surprised": (1.1, -0.05, 0.0, 0.0, 0.04),
    "disgusted": (0.9, -0.02, 0.04, 0.01, 0.04),
    "contempt": (0.9, -0.03, 0.03, 0.04, 0.0),
}
_BLINK_RATE_SCALE = {"surprised": 0.85, "fear": 1.15, "angry": 0.9}
_BROW_ACCENT_P = {"surprised": 0.45, "happy": 0.3, "fear": 0.3, "sad": 0.1, "angry": 0.3}
# Speaking style: rate and pitch multipliers at intensity 1 (make_sample's emotional prosody).
_PROSODY = {
    "neutral": (1.0, 1.0), "happy": (1.05, 1.12), "sad": (0.85, 0.9), "angry": (1.08, 1.05),
    "fear": (1.1, 1.12), "surprised": (1.0, 1.15), "disgusted": (0.92, 0.95), "contempt": (0.95, 0.97),
}  # fmt: skip


def _smooth_noise(rng: np.random.Generator, n: int, sigma_frames: float) -> np.ndarray:
    """Low-pass Gaussian noise (n,) with unit standard deviation (in expectation, not per clip)."""
    pad = int(4 * sigma_frames) + 1
    x = gaussian_filter1d(rng.normal(size=n + 2 * pad), sigma_frames)[pad : pad + n]
    return x * math.sqrt(2.0 * math.sqrt(math.pi) * sigma_frames)


def _speaking(phones: list[tuple[str, float, float]], t: np.ndarray) -> np.ndarray:
    out = np.zeros(len(t), dtype=bool)
    for p, s, e in phones:
        if normalize_phone(p) != SILENCE:
            out |= (t >= s) & (t < e)
    return out


def _phrase_ends(phones: list[tuple[str, float, float]]) -> list[float]:
    """Times where speech stops for at least 150 ms (or for good)."""
    ends, speech_end = [], None
    for p, s, e in phones:
        if normalize_phone(p) != SILENCE:
            speech_end = e
        elif speech_end is not None and e - s >= 0.15:
            ends.append(speech_end)
            speech_end = None
    if speech_end is not None:
        ends.append(speech_end)
    return ends


def _blink_curves(
    rng: np.random.Generator,
    t: np.ndarray,
    speaking: np.ndarray,
    phrase_ends: list[float],
    rate_per_min: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Left and right blink curves (T,) and the blink count.

    A renewal process: after each blink a 0.5 s refractory time, then a hazard that is 3.3 times
    higher in pauses than during speech and 5 times higher in the 0.6 s after a phrase ends,
    scaled so the mean rate is ``rate_per_min``. Each blink lasts 150-310 ms: a fast close, a
    short hold and a slower opening, left and right a few ms and percent apart.
    """
    n = len(t)
    dt = 1.0 / FPS
    refractory = 0.5
    weight = np.where(speaking, 0.6, 2.0)
    for e in phrase_ends:
        weight[(t >= e) & (t < e + 0.6)] = 3.0
    weight /= weight.mean() if n else 1.0
    rate = rate_per_min / 60.0
    mean_blink_s = 0.23
    # So that blink + refractory + mean wait = 1 / rate.
    hazard = 1.0 / max(1.0 / rate - refractory - mean_blink_s, 0.2)
    left, right = np.zeros(n), np.zeros(n)
    since = rng.uniform(0.0, 3.0)  # time since the last blink, before the clip starts
    count = 0
    for k in range(n):
        since += dt
        if since < refractory or rng.random() >= 1.0 - math.exp(-hazard * weight[k] * dt):
            continue
        start = t[k] + rng.uniform(0.0, dt)
        close, hold, opening = rng.uniform(0.05, 0.09), rng.uniform(0.01, 0.04), rng.uniform(0.09, 0.18)
        depth = rng.uniform(0.9, 1.0)
        w = slice(k, min(n, k + int((close + hold + opening + 0.05) * FPS) + 2))
        for curve, lag, amp in (
            (left, 0.0, 1.0),
            (right, rng.uniform(-0.008, 0.008), rng.uniform(0.95, 1.02)),
        ):
            u = t[w] - start - lag
            rise = np.clip(u / close, 0.0, 1.0)
            fall = np.clip((u - close - hold) / opening, 0.0, 1.0)
            shape = np.where(
                u < close + hold, rise * rise * (3 - 2 * rise), 1.0 - fall * fall * (3 - 2 * fall)
            )
            np.maximum(curve[w], np.clip(depth * amp * shape, 0.0, 1.0), out=curve[w])
        since = -(close + hold + opening) + (t[k] - start)
        count += 1
    return left, right, count


def _stressed_vowels(
    phones: list[tuple[str, float, float]], energy: np.ndarray | None, t: np.ndarray
) -> list[tuple[float, float]]:
    """(centre_s, loudness in [0, 1]) of the likely stressed vowels: the longest and loudest third.

    pocketsphinx's dictionary has no stress marks, so stress is read from duration and energy.
    """
    vowels = [(s, e) for p, s, e in phones if normalize_phone(p) in VOWELS and e - s >= 0.05]
    if not vowels:
        return []
    loud = []
    for s, e in vowels:
        if energy is None or len(t) == 0:
            loud.append(1.0)
        else:
            k = np.clip(np.searchsorted(t, 0.5 * (s + e)), 0, len(t) - 1)
            loud.append(float(energy[k]))
    score = np.array([(e - s) * (0.3 + v) for (s, e), v in zip(vowels, loud, strict=True)])
    cut = np.quantile(score, 0.66)
    return [(0.5 * (s + e), v) for (s, e), v, sc in zip(vowels, loud, score, strict=True) if sc >= cut]


def _energy(audio: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Loudness (T,) in [0, 1] over 40 ms around each frame time: 0 at -50 dB of the peak or below."""
    half = int(0.02 * SAMPLE_RATE)
    x = np.pad(audio.astype(np.float64) ** 2, (half, half))
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.clip((t * SAMPLE_RATE).astype(int), 0, len(audio))
    rms = np.sqrt((c[idx + 2 * half] - c[idx]) / (2 * half) + 1e-12)
    db = 20 * np.log10(rms / (rms.max() + 1e-12) + 1e-12)
    return np.clip((db + 50.0) / 50.0, 0.0, 1.0)


def _bump(t: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / sigma) ** 2)


def _soft_clip(x: np.ndarray, limit: float) -> np.ndarray:
    return limit * np.tanh(x / limit)


def make_targets(
    phones: list[tuple[str, float, float]],
    duration_s: float,
    emotion: str,
    intensity: float,
    rng: np.random.Generator,
    *,
    audio: np.ndarray | None = None,
) -> Targets:
    """Expression and pose at 25 fps for an aligned utterance (T = ceil(duration_s * 25) frames).

    ``audio`` (16 kHz), when given, drives head motion and emphasis by its loudness.
    """
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    n = math.ceil(duration_s * FPS - 1e-9)
    t = np.arange(n) / FPS
    speaking = _speaking(phones, t)
    activity = gaussian_filter1d(speaking.astype(np.float64), 0.3 * FPS) if n else np.zeros(0)
    energy = _energy(audio, t) if audio is not None else None
    stressed = _stressed_vowels(phones, energy, t)

    # Mouth: visemes, reshaped by the emotion.
    mouth = mouth_curves(phones, n, FPS)
    exp = mouth.exp.astype(np.float64)
    gain = np.ones(NUM_BLENDSHAPES)
    for key, g in _VISEME_GAIN[emotion].items():
        sel = _MOUTH if key == "*" else np.array([name.startswith(key) for name in BLENDSHAPE_NAMES])
        gain[sel] *= g
    exp *= 1.0 + (gain - 1.0) * intensity

    # Emotion prototype: intensity fluctuating slowly by about +-15 %, left and right a little different.
    level = np.clip(intensity * (1.0 + 0.15 * np.tanh(_smooth_noise(rng, n, 1.5 * FPS))), 0.0, 1.0)
    proto = emotion_coefficients(emotion, 1.0).astype(np.float64)
    for i, name in enumerate(BLENDSHAPE_NAMES):
        if name.endswith("Left"):
            a = rng.uniform(-0.1, 0.1)
            proto[i] *= 1.0 + a
            proto[_I[name[:-4] + "Right"]] *= 1.0 - a
    overlay = level[:, None] * proto[None, :]
    # The emotion's own jaw gives way to speech; a smile yields where the lips round.
    jaw = _I["jawOpen"]
    overlay[:, jaw] *= 1.0 - 0.5 * activity
    # So do the shapes that hold the lips shut (an angry press, a sad pushed-up lower lip): speech
    # still parts the lips.
    for name in _LIPS_SHUT:
        overlay[:, _I[name]] *= 1.0 - 0.7 * activity
    rounding = np.maximum(exp[:, _I["mouthPucker"]], exp[:, _I["mouthFunnel"]])
    for side in ("Left", "Right"):
        overlay[:, _I["mouthSmile" + side]] *= 1.0 - 0.5 * rounding
    exp[:, jaw] = exp[:, jaw] + overlay[:, jaw] * (1.0 - exp[:, jaw])
    overlay[:, jaw] = 0.0
    exp += overlay

    # Brow accents on some stressed syllables (angry speakers lower the brows instead).
    p_brow = _BROW_ACCENT_P.get(emotion, 0.2)
    for centre, loud in stressed:
        if rng.random() < p_brow:
            b = _bump(t, centre - 0.03, rng.uniform(0.08, 0.14)) * rng.uniform(0.2, 0.5) * (0.5 + 0.5 * loud)
            if emotion == "angry":
                exp[:, _I["browDownLeft"]] += b
                exp[:, _I["browDownRight"]] += b
            else:
                exp[:, _I["browInnerUp"]] += b
                exp[:, _I["browOuterUpLeft"]] += b * rng.uniform(0.5, 0.9)
                exp[:, _I["browOuterUpRight"]] += b * rng.uniform(0.5, 0.9)

    # Gaze: fixations held for a while, saccades between them, mostly back at the camera.
    gaze = np.zeros((n, 2))  # (x: towards the subject's left, y: up), in eyeLook weight units
    k = 0
    while k < n:
        hold = rng.exponential(2.5 if speaking[k] else 1.5) + 0.3
        if rng.random() >= 0.55:
            gaze[k:] = (rng.uniform(-0.35, 0.35), rng.uniform(-0.25, 0.15))
        else:
            gaze[k:] = 0.0
        k += max(1, int(hold * FPS))
    gaze += 0.02 * np.stack([_smooth_noise(rng, n, 5), _smooth_noise(rng, n, 5)], axis=1)  # fixational drift
    gx, gy = gaze[:, 0], gaze[:, 1]
    exp[:, _I["eyeLookOutLeft"]] += np.clip(gx, 0, 1)
    exp[:, _I["eyeLookInRight"]] += np.clip(gx, 0, 1)
    exp[:, _I["eyeLookInLeft"]] += np.clip(-gx, 0, 1)
    exp[:, _I["eyeLookOutRight"]] += np.clip(-gx, 0, 1)
    for side in ("Left", "Right"):
        exp[:, _I["eyeLookUp" + side]] += np.clip(gy, 0, 1)
        exp[:, _I["eyeLookDown" + side]] += np.clip(-gy, 0, 1)

    # Blinks: the upper lid also follows the gaze down a little; wide eyes give way during a blink.
    rate = rng.uniform(14.0, 24.0) * _BLINK_RATE_SCALE.get(emotion, 1.0)  # blinks/min, 11.9-27.6
    b_left, b_right, blinks = _blink_curves(rng, t, speaking, _phrase_ends(phones), rate)
    for side, b in (("Left", b_left), ("Right", b_right)):
        lid = _I["eyeBlink" + side]
        # A held droop (sad lids, a lowered gaze) stays under half closed: only a blink shuts the eye.
        exp[:, lid] = np.maximum(np.minimum(exp[:, lid] + 0.3 * np.clip(-gy, 0, 1), 0.45), b)
        exp[:, _I["eyeWide" + side]] *= 1.0 - b

    close_lips(exp, mouth.closure.astype(np.float64))
    pose = _head_pose(rng, t, activity, stressed, energy, emotion, level)
    return Targets(np.clip(exp, 0.0, 1.0).astype(np.float32), pose, blinks)


def _head_pose(
    rng: np.random.Generator,
    t: np.ndarray,
    activity: np.ndarray,
    stressed: list[tuple[float, float]],
    energy: np.ndarray | None,
    emotion: str,
    level: np.ndarray,
) -> np.ndarray:
    """(T, 6) pose: slow drift, livelier while talking, nods on stressed syllables, emotion posture."""
    n = len(t)
    scale, pitch0, yaw0, roll0, tz0 = _HEAD_STYLE[emotion]
    motion = scale * (0.45 + 0.55 * activity)
    pose = np.zeros((n, 6))
    pose[:, 0] = 0.05 * _smooth_noise(rng, n, 0.8 * FPS) * motion
    pose[:, 1] = 0.03 * _smooth_noise(rng, n, 0.6 * FPS) * motion
    pose[:, 2] = 0.025 * _smooth_noise(rng, n, 1.0 * FPS) * motion
    pose[:, 3] = 0.02 * _smooth_noise(rng, n, 1.0 * FPS)
    pose[:, 4] = 0.015 * _smooth_noise(rng, n, 1.0 * FPS)
    pose[:, 5] = 0.025 * _smooth_noise(rng, n, 1.5 * FPS)
    for centre, loud in stressed:
        if rng.random() < 0.6:
            nod = (
                _bump(t, centre + 0.05, rng.uniform(0.07, 0.12))
                * rng.uniform(0.01, 0.035)
                * (0.4 + 0.6 * loud)
            )
            pose[:, 1] += nod * scale
            pose[:, 0] += nod * rng.uniform(-0.3, 0.3)
            pose[:, 2] += nod * rng.uniform(-0.3, 0.3)
            pose[:, 4] += 0.3 * nod
    if energy is not None:  # the head rides the loudness a little
        pose[:, 1] += 0.012 * scale * (gaussian_filter1d(energy, 2.0) - 0.5) * activity
    # Emotional posture, following the (fluctuating) intensity.
    pose[:, 1] += pitch0 * level
    pose[:, 0] += yaw0 * rng.choice((-1.0, 1.0)) * level
    pose[:, 2] += roll0 * rng.choice((-1.0, 1.0)) * level
    pose[:, 5] += tz0 * level
    pose[:, :3] = _soft_clip(pose[:, :3], POSE_LIMIT_RAD)
    pose[:, 3:] = _soft_clip(pose[:, 3:], TRANSLATION_LIMIT)
    return pose.astype(np.float32)


def make_sample(
    text: str,
    voice: Voice,
    emotion: str,
    intensity: float,
    rng: np.random.Generator,
    *,
    emotional_prosody: bool = True,
) -> Sample:
    """Synthesize, align and build the targets of one utterance; AlignmentError if alignment fails.

    With ``emotional_prosody`` the voice speaks faster or slower and higher or lower with the
    emotion (sad: slower and lower); ``Sample.voice`` records the voice actually used. The speech is
    trimmed and padded with 0.2-1.0 s of silence on each side, with a 1-LSB dither.
    """
    return _make_sample(text, voice, emotion, intensity, rng, emotional_prosody).sample


class _Made(NamedTuple):
    sample: Sample
    synth_s: float
    align_s: float
    wide_beam: bool


def _make_sample(
    text: str, voice: Voice, emotion: str, intensity: float, rng: np.random.Generator, emotional_prosody: bool
) -> _Made:
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    if emotional_prosody:
        r, p = _PROSODY[emotion]
        voice = replace(voice, rate=voice.rate * r**intensity, pitch=voice.pitch * p**intensity)
    t0 = time.perf_counter()
    speech = _trim(synthesize(text, voice))
    t1 = time.perf_counter()
    lead, tail = (int(rng.uniform(0.2, 1.0) * SAMPLE_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    audio = np.clip(audio + rng.normal(0.0, 1.0 / 32768, len(audio)), -1.0, 1.0).astype(np.float32)
    alignment = align(audio, text)
    t2 = time.perf_counter()
    span = (lead / SAMPLE_RATE, (lead + len(speech)) / SAMPLE_RATE)
    phones = _clamp_to_speech(alignment.phones, *span, len(audio) / SAMPLE_RATE)
    targets = make_targets(phones, len(audio) / SAMPLE_RATE, emotion, intensity, rng, audio=audio)
    sample = Sample(
        audio=audio,
        exp=targets.exp,
        pose=targets.pose,
        emotion=EMOTIONS.index(emotion),
        intensity=float(intensity),
        text=text,
        voice=voice,
        phones=phones,
        blinks=targets.blinks,
    )
    return _Made(sample, t1 - t0, t2 - t1, alignment.wide_beam)


# --- audio augmentation ------------------------------------------------------------------------


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spec /= np.sqrt(np.maximum(f, 20.0))
    return np.fft.irfft(spec, n)


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Time-preserving audio corruption for training: same length, sample k still at time k / 16 kHz.

    In order, each with some probability: band-limiting like a phone or laptop microphone
    (zero-phase filters, so no delay), a synthetic room (exponentially decaying noise impulse
    response, RT60 0.1-0.5 s, direct path at lag 0), white or pink noise at 15-40 dB SNR, and a gain
    of -12..+6 dB with hard clipping at full scale. No tempo or pitch change: those would move the
    speech against its targets; rate and pitch vary at synthesis time instead (Voice, before alignment).
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (N,), got shape {audio.shape}")
    x = audio.astype(np.float64)
    n = len(x)
    if n < 64:
        return audio.astype(np.float32)
    if rng.random() < 0.4:
        lo, hi = (rng.uniform(200, 400), rng.uniform(3000, 3800)) if rng.random() < 0.5 else (
            rng.uniform(60, 150), rng.uniform(5000, 7500))  # fmt: skip
        sos = butter(4, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        if n > 3 * (2 * len(sos) + 1):
            x = sosfiltfilt(sos, x)
    if rng.random() < 0.35:
        rt60 = rng.uniform(0.1, 0.5)
        m = int(rt60 * SAMPLE_RATE)
        tail = rng.normal(size=m) * np.exp(-6.9 * np.arange(m) / m)  # -60 dB at rt60
        tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # the first reflection after 2 ms
        ir = np.concatenate([[1.0], tail * rng.uniform(0.05, 0.2) / math.sqrt(m / SAMPLE_RATE / 0.1)])
        x = fftconvolve(x, ir)[:n]
    if rng.random() < 0.8:
        speech_power = float(np.mean(x[np.abs(x) > 0.02 * np.abs(x).max()] ** 2)) if np.any(x) else 1e-6
        noise = rng.normal(size=n) if rng.random() < 0.5 else _pink(rng, n)
        snr_db = rng.uniform(15.0, 40.0)
        x = x + noise * math.sqrt(speech_power / 10 ** (snr_db / 10) / (np.mean(noise**2) + 1e-12))
    x *= 10 ** (rng.uniform(-12.0, 6.0) / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


# --- dataset -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    index: int
    seed: int
    split: str
    text: str
    voice: Voice
    emotion: str


class _Result(NamedTuple):
    sample: Sample | None
    wide_beam: bool
    synth_s: float
    align_s: float
    error: str


def _run_job(job: _Job) -> _Result:
    rng = np.random.default_rng([job.seed, 0 if job.split == "train" else 1, job.index])
    intensity = float(rng.uniform(0.3, 1.0))
    v = job.voice
    v = replace(v, rate=v.rate * rng.uniform(0.9, 1.1), pitch=v.pitch * rng.uniform(0.93, 1.07))
    try:
        made = _make_sample(job.text, v, job.emotion, intensity, rng, True)
    except RuntimeError as e:  # AlignmentError, or a speech engine that failed on this sentence
        return _Result(None, False, 0.0, 0.0, f"{type(e).__name__}: {v}: {e}")
    return _Result(made.sample, made.wide_beam, made.synth_s, made.align_s, "")


def _jobs(split: str, seed: int, voices: list[Voice], limit: int) -> Iterator[_Job]:
    texts = sentences(split=split, seed=seed)  # type: ignore[arg-type]
    order = np.random.default_rng([seed, 7]).permutation(len(texts))
    for i in range(limit):
        v = voices[i % len(voices)]
        emotion = EMOTIONS[(i // len(voices)) % len(EMOTIONS)]
        yield _Job(i, seed, split, texts[order[i % len(texts)]], v, emotion)


def _phones_str(phones: list[tuple[str, float, float]]) -> str:
    return " ".join(f"{p}:{s:.2f}:{e:.2f}" for p, s, e in phones)


class _ShardWriter:
    """Writes ``{split}-00000.npz``, ... into a directory, or everything into one ``.npz`` file."""

    def __init__(self, out: Path, split: str, per_shard: int) -> None:
        self.single = out.suffix == ".npz"
        self.out, self.split = out, split
        self.per_shard = 2**62 if self.single else per_shard
        self.files: list[Path] = []
        self._reset()

    def _reset(self) -> None:
        self.samples: list[Sample] = []

    def add(self, s: Sample) -> None:
        self.samples.append(s)
        if len(self.samples) >= self.per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.samples:
            return
        ss = self.samples
        pcm = [np.round(np.clip(s.audio, -1.0, 1.0) * 32767.0).astype(np.int16) for s in ss]
        path = self.out if self.single else self.out / f"{self.split}-{len(self.files):05d}.npz"
        np.savez_compressed(
            path,
            format_version=np.int64(FORMAT_VERSION),
            sample_rate=np.int64(SAMPLE_RATE),
            fps=np.int64(FPS),
            blendshape_names=np.array(BLENDSHAPE_NAMES),
            pose_names=np.array(POSE_NAMES),
            audio=np.concatenate(pcm),
            audio_offsets=np.cumsum([0] + [len(p) for p in pcm]).astype(np.int64),
            exp=np.concatenate([s.exp for s in ss]),
            pose=np.concatenate([s.pose for s in ss]),
            frame_offsets=np.cumsum([0] + [len(s.exp) for s in ss]).astype(np.int64),
            emotion=np.array([s.emotion for s in ss], dtype=np.int64),
            intensity=np.array([s.intensity for s in ss], dtype=np.float32),
            text=np.array([s.text for s in ss]),
            voice=np.array([str(s.voice) for s in ss]),
            phones=np.array([_phones_str(s.phones) for s in ss]),
        )
        self.files.append(path)
        self._reset()


def build_dataset(
    out_dir: str | Path,
    *,
    minutes: float,
    seed: int = 0,
    split: Literal["train", "val"] = "train",
    workers: int = 1,
    progress: bool = True,
    shard_utterances: int = 500,
) -> Path:
    """Synthesize about ``minutes`` of aligned speech with targets into ``out_dir`` (or one ``.npz``).

    Utterance i uses voice i mod V of the split, emotion (i div V) mod 8, an intensity drawn in
    [0.3, 1], and the rate and pitch jittered by +-10 % and +-7 %; utterance i's random draws
    depend only on (seed, split, i), so the result is the same for any number of workers.
    Utterances that cannot be synthesized or aligned are dropped and counted. Returns out_dir.

    Writes ``{split}-00000.npz``, ... (``shard_utterances`` utterances each, compressed) and
    ``summary-{split}.json`` into the directory ``out_dir``; or, when ``out_dir`` ends in ``.npz``,
    all utterances into that one file and the summary beside it (``NAME.summary.json``). A shard holds, for N utterances: ``audio`` (S,) int16 at 16 kHz, all
    utterances concatenated, with ``audio_offsets`` (N+1,); ``exp`` (F, 52) and ``pose`` (F, 6)
    float32 at 25 fps (frame k of an utterance shows time k / 25 s; F_i = ceil(S_i / 640)), with
    ``frame_offsets`` (N+1,); ``emotion`` (N,) index into EMOTIONS; ``intensity`` (N,); ``text``,
    ``voice`` and ``phones`` ("PHONE:start:end ...", seconds) per utterance; plus
    ``format_version``, ``sample_rate``, ``fps``, ``blendshape_names``, ``pose_names``. The audio is
    clean (1-LSB dither only): apply :func:`augment` at training time.
    """
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    from tqdm import tqdm

    voices = available_voices(split)
    if not voices:
        raise RuntimeError(f"no {split} voice is installed: install espeak-ng (apt-get install espeak-ng)")
    out = Path(out_dir)
    if out.suffix == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        summary_path = out.with_suffix(".summary.json")
    else:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob(f"{split}-[0-9]*.npz"):
            old.unlink()
        summary_path = out / f"summary-{split}.json"
    target_s = minutes * 60.0
    limit = int(target_s / 0.5) + 100  # utterances last at least 0.5 s: an upper bound on the jobs
    jobs = _jobs(split, seed, voices, limit)
    writer = _ShardWriter(out, split, shard_utterances)
    stats: dict[str, Any] = {"utterances": 0, "failures": 0, "synth_failures": 0, "wide": 0, "audio_s": 0.0}
    stats |= {"frames": 0, "blinks": 0}
    per_voice: dict[str, list[float]] = {}
    errors: list[str] = []
    start = time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    results = pool.imap(_run_job, jobs) if pool is not None else map(_run_job, jobs)
    bar = tqdm(total=round(target_s), unit="s", desc=f"synth {split}", disable=not progress)
    try:
        for res in results:
            if res.sample is None:
                stats["failures" if res.error.startswith("AlignmentError") else "synth_failures"] += 1
                errors.append(res.error)
                continue
            s = res.sample
            dur = len(s.audio) / SAMPLE_RATE
            writer.add(s)
            stats["utterances"] += 1
            stats["audio_s"] += dur
            stats["frames"] += len(s.exp)
            stats["blinks"] += s.blinks
            stats["wide"] += res.wide_beam
            pv = per_voice.setdefault(s.voice.speaker, [0.0, 0.0, 0.0])
            pv[0] += dur
            pv[1] += res.synth_s
            pv[2] += res.align_s
            bar.update(round(stats["audio_s"]) - bar.n)
            if stats["audio_s"] >= target_s:
                break
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    writer.flush()
    elapsed = time.perf_counter() - start
    minutes_done = stats["audio_s"] / 60.0
    summary = {
        "split": split,
        "seed": seed,
        "utterances": stats["utterances"],
        "minutes": round(minutes_done, 3),
        "frames": stats["frames"],
        "alignment_failures": stats["failures"],
        "aligned_with_wide_beams": stats["wide"],
        "synthesis_failures": stats["synth_failures"],
        "failure_examples": errors[:5],
        "blinks_per_minute": round(stats["blinks"] / max(minutes_done, 1e-9), 2),
        "seconds_taken": round(elapsed, 1),
        "x_real_time": round(stats["audio_s"] / max(elapsed, 1e-9), 1),
        "workers": workers,
        "voices": {
            k: {
                "minutes": round(d / 60, 2),
                "synthesis_x_rt": round(d / max(ts, 1e-9), 1),
                "alignment_x_rt": round(d / max(ta, 1e-9), 1),
            }
            for k, (d, ts, ta) in sorted(per_voice.items())
        },  # fmt: skip
        "shards": [p.name for p in writer.files],
    }
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "%s: %d utterances, %.1f min, %d alignment failures, %.1f blinks/min, %.0f s (%.0fx real time)",
        out, summary["utterances"], minutes_done, stats["failures"], summary["blinks_per_minute"], elapsed,
        summary["x_real_time"],
    )  # fmt: skip
    return out


_ARRAYS = ("audio", "audio_offsets", "exp", "pose", "frame_offsets", "emotion", "intensity")


@dataclass(frozen=True, eq=False)
class SynthDataset:
    """A loaded dataset: utterances concatenated, with offsets and slices into the arrays.

    Utterance i's audio is ``audio[audio_slices[i]]`` and its frames ``exp[frame_slices[i]]``. The
    arrays can also be looked up by their shard names: ``data["exp"]`` is ``data.exp``.
    """

    audio: np.ndarray  # (S,) int16 at sample_rate; divide by 32768 for float
    audio_offsets: np.ndarray  # (N+1,) int64
    exp: np.ndarray  # (F, 52) float32
    pose: np.ndarray  # (F, 6) float32
    frame_offsets: np.ndarray  # (N+1,) int64
    emotion: np.ndarray  # (N,) int64, index into EMOTIONS
    intensity: np.ndarray  # (N,) float32
    text: list[str]
    voice: list[str]  # str(Voice), e.g. "espeak:en-us@1.02/0.97"
    phones: list[str]  # "PHONE:start_s:end_s ..." per utterance
    sample_rate: int = SAMPLE_RATE
    fps: int = FPS

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in _ARRAYS:
            raise KeyError(f"{key!r}; the arrays are {', '.join(_ARRAYS)}")
        return getattr(self, key)

    @functools.cached_property
    def audio_slices(self) -> list[slice]:
        o = self.audio_offsets.tolist()
        return [slice(a, b) for a, b in zip(o[:-1], o[1:], strict=True)]

    @functools.cached_property
    def frame_slices(self) -> list[slice]:
        o = self.frame_offsets.tolist()
        return [slice(a, b) for a, b in zip(o[:-1], o[1:], strict=True)]

    def utterance_audio(self, i: int) -> np.ndarray:
        """Utterance i's audio as float32 in [-1, 1]."""
        return self.audio[self.audio_slices[i]].astype(np.float32) / 32768.0


def load_dataset(path: str | Path, split: Literal["train", "val"] | None = None) -> SynthDataset:
    """Load a dataset written by :func:`build_dataset`: a directory of shards, or one ``.npz`` file.

    A directory holding both splits needs ``split``.
    """
    path = Path(path)
    if path.is_dir():
        if split is None:
            splits = {f.name.split("-")[0] for f in path.glob("*-[0-9]*.npz")}
            if len(splits) > 1:
                raise ValueError(f"{path} holds the splits {sorted(splits)}: pass split=")
        files = sorted(path.glob(f"{split or '*'}-[0-9]*.npz"))
    else:
        files = [path]
    if not files:
        raise FileNotFoundError(f"no {split or ''} shards in {path}")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _ARRAYS}
    text: list[str] = []
    voice: list[str] = []
    phones: list[str] = []
    a_base = f_base = 0
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            if int(z["format_version"]) != FORMAT_VERSION:
                raise ValueError(f"{f}: format_version {int(z['format_version'])}, expected {FORMAT_VERSION}")
            if tuple(z["blendshape_names"]) != BLENDSHAPE_NAMES:
                raise ValueError(f"{f}: blendshape names differ from models.rig.BLENDSHAPE_NAMES")
            if int(z["sample_rate"]) != SAMPLE_RATE or int(z["fps"]) != FPS:
                raise ValueError(
                    f"{f}: expected {SAMPLE_RATE} Hz and {FPS} fps, got {z['sample_rate']}, {z['fps']}"
                )
            for k in ("audio", "exp", "pose", "emotion", "intensity"):
                parts[k].append(z[k])
            skip = 1 if text else 0  # a later shard's leading 0 is the previous shard's end
            parts["audio_offsets"].append(z["audio_offsets"][skip:] + a_base)
            parts["frame_offsets"].append(z["frame_offsets"][skip:] + f_base)
            a_base += int(z["audio_offsets"][-1])
            f_base += int(z["frame_offsets"][-1])
            text += [str(s) for s in z["text"]]
            voice += [str(s) for s in z["voice"]]
            phones += [str(s) for s in z["phones"]]
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return SynthDataset(**arrays, text=text, voice=voice, phones=phones)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.synth", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="output directory (shards + summary)")
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes of audio to make")
    parser.add_argument("--split", choices=["train", "val"], default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes")
    parser.add_argument("--shard-utterances", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_dataset(
        args.out_dir, minutes=args.minutes, seed=args.seed, split=args.split, workers=args.workers,
        shard_utterances=args.shard_utterances,
    )  # fmt: skip


if __name__ == "__main__":
    main()
