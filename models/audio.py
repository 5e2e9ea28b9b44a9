"""Audio features: decoding, and one log-mel implementation for whole files and 20 ms streams.

Framing is causal (a mel frame is complete as soon as its last sample has arrived), so ``MelStream``
and ``LogMel`` give the same numbers and the live agent needs no more look-ahead than the mel window
asks for. The mel scale and filters are Slaney's (Auditory Toolbox; librosa's default).
numpy/scipy only: shared by the offline renderer and the live agent.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import resample_poly

__all__ = [
    "LOG_FLOOR",
    "AudioConfig",
    "AudioReadError",
    "LogMel",
    "MelStream",
    "frames_needed",
    "load_audio",
    "mel_window",
    "mel_windows",
    "num_video_frames",
    "resample",
    "to_mono",
]

_AMIN = 1e-5  # power floor before the log: silence maps to log(1e-5)
LOG_FLOOR = float(np.float32(np.log(_AMIN)))  # the value of silent mel bins and of window padding
# Boundary ties in the window timing count as "arrived": without this, (t/fps + lookahead) * sr / hop
# computed in floating point could land a hair under an exact integer and drop a frame.
_TIME_EPS = 1e-6  # in frames (mel or video): nanoseconds


class AudioReadError(ValueError):
    """An audio file is missing, empty, not audio, or holds no samples."""


@dataclass(frozen=True)
class AudioConfig:
    """Audio front end settings (paper values, plus the live look-ahead and stream block size)."""

    sample_rate: int = 16000  # Hz
    n_fft: int = 800  # samples per mel frame (50 ms)
    hop: int = 200  # samples between mel frames (12.5 ms: 80 mel frames/s)
    n_mels: int = 80
    fmin: float = 55.0  # Hz
    fmax: float = 7600.0  # Hz
    fps: float = 25.0  # video frames per second
    window_frames: int = 16  # mel frames in one video frame's window (200 ms)
    lookahead_ms: float = 40.0  # the window ends this long after the video frame's time
    block_ms: int = 20  # live stream block

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop", "n_mels", "window_frames", "block_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"AudioConfig.{name}: expected an int, got {type(value).__name__} {value!r}")
            if value <= 0:
                raise ValueError(f"AudioConfig.{name}: expected a positive value, got {value}")
        if self.n_fft < self.hop:
            raise ValueError(f"AudioConfig: expected n_fft >= hop, got n_fft={self.n_fft} < hop={self.hop}")
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"AudioConfig.fps: expected a positive number, got {self.fps}")
        if not 0.0 <= self.fmin < self.fmax:
            raise ValueError(
                f"AudioConfig: expected 0 <= fmin < fmax, got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.fmax > self.sample_rate / 2:
            raise ValueError(
                f"AudioConfig.fmax: expected at most sample_rate / 2 = {self.sample_rate / 2} Hz, got {self.fmax}"
            )
        if not 0.0 <= self.lookahead_ms <= self.window_ms:
            raise ValueError(
                f"AudioConfig.lookahead_ms: expected within [0, {self.window_ms}] (the window length), "
                f"got {self.lookahead_ms}"
            )
        if (self.sample_rate * self.block_ms) % 1000:
            raise ValueError(
                f"AudioConfig.block_ms: expected a whole number of samples at {self.sample_rate} Hz, "
                f"got {self.block_ms} ms"
            )

    @property
    def window_ms(self) -> float:
        """Length of one video frame's mel window in ms (window_frames * hop)."""
        return 1000.0 * self.window_frames * self.hop / self.sample_rate

    @property
    def block_samples(self) -> int:
        """Samples in one live stream block."""
        return self.sample_rate * self.block_ms // 1000

    @property
    def mel_fps(self) -> float:
        """Mel frames per second."""
        return self.sample_rate / self.hop


_DEFAULT_CONFIG = AudioConfig()


# --------------------------------------------------------------------------------------------------
# Decoding and sample formats


def load_audio(path: str | Path, config: AudioConfig | None = None) -> np.ndarray:
    """Decode any audio (or video with sound) file with ffmpeg.

    Returns:
        (N,) float32 mono in [-1, 1) at ``config.sample_rate``, downmixed by ffmpeg (stereo: the mean).

    Raises:
        AudioReadError: the file is missing, empty, cannot be decoded as audio, or has no samples.
    """
    config = _DEFAULT_CONFIG if config is None else config
    path = Path(path)
    if not path.exists():
        raise AudioReadError(f"audio file not found: {path}")
    if not path.is_file():
        raise AudioReadError(f"expected an audio file, got a directory or special file: {path}")
    if path.stat().st_size == 0:
        raise AudioReadError(f"audio file is empty (0 bytes): {path}")
    import imageio_ffmpeg  # lazy: only decoding needs the binary

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        str(path),
        "-map",
        "0:a:0",  # the first audio stream; a file without one fails with "matches no streams"
        "-ac",
        "1",
        "-ar",
        str(config.sample_rate),
        "-f",
        "s16le",
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", errors="replace").strip()
        if "matches no streams" in stderr or "does not contain any stream" in stderr:
            reason = "it has no audio stream"
        elif "Invalid data found" in stderr:
            reason = "not a recognised audio or video format"
        else:
            lines = stderr.splitlines()
            reason = f"ffmpeg: {lines[-1]}" if lines else f"ffmpeg exit status {proc.returncode}"
        raise AudioReadError(f"cannot decode {path} as audio (expected a sound or video file): {reason}")
    if len(proc.stdout) < 2:
        raise AudioReadError(f"audio file holds no samples (expected at least one): {path}")
    pcm = np.frombuffer(proc.stdout[: len(proc.stdout) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / np.float32(32768.0)


def _as_float(x: np.ndarray, what: str) -> np.ndarray:
    """int16 -> float in [-1, 1); float32/float64 pass through (as float64 for the feature math)."""
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x.astype(np.float64) / 32768.0
    if x.dtype in (np.float32, np.float64):
        return x.astype(np.float64, copy=False)
    raise TypeError(f"{what}: expected float32, float64 or int16 samples, got dtype {x.dtype}")


def to_mono(x: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) samples -> (N,) float32 mono, the mean of the channels (int16 scaled to [-1, 1))."""
    x = _as_float(x, "to_mono")
    if x.ndim == 1:
        return x.astype(np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"to_mono: expected shape (N,) or (N, C) with C >= 1, got {x.shape}")
    return x.mean(axis=1).astype(np.float32)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling of (N,) or (N, C) samples along axis 0 -> float32.

    The output has ceil(N * to_rate / from_rate) samples. Meant for whole arrays: a stream resampled
    block by block has small seams at the block edges.
    """
    for name, rate in (("from_rate", from_rate), ("to_rate", to_rate)):
        if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or rate <= 0:
            raise ValueError(f"resample: expected {name} to be a positive int, got {rate!r}")
    x = _as_float(x, "resample")
    if x.ndim not in (1, 2):
        raise ValueError(f"resample: expected shape (N,) or (N, C), got {x.shape}")
    if from_rate == to_rate or x.shape[0] == 0:
        return x.astype(np.float32)
    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(x, int(to_rate) // g, int(from_rate) // g, axis=0).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Log-mel


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above (27 mel per 6.4x)."""
    hz = np.asarray(hz, dtype=np.float64)
    lin = hz / (200.0 / 3.0)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, lin)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    lin = mel * (200.0 / 3.0)
    log = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log, lin)


def _mel_filterbank(config: AudioConfig) -> tuple[np.ndarray, np.ndarray]:
    """Slaney triangular filters, area-normalised (2 / bandwidth), equally spaced on the Slaney mel scale.

    Returns:
        weights (n_fft // 2 + 1, n_mels) float64 and the centre frequencies (n_mels,) in Hz.
    """
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(config.fmin), _hz_to_mel(config.fmax), config.n_mels + 2))
    bins_hz = np.linspace(0.0, config.sample_rate / 2, config.n_fft // 2 + 1)
    lo, centre, hi = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]  # (n_mels, 1)
    rising = (bins_hz[None, :] - lo) / (centre - lo)
    falling = (hi - bins_hz[None, :]) / (hi - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))  # (n_mels, n_bins)
    empty = np.flatnonzero(weights.max(axis=1) <= 0.0)
    if empty.size:
        raise ValueError(
            f"AudioConfig: expected every mel band to cover at least one FFT bin, got {empty.size} empty "
            f"band(s) (first at {edges_hz[empty[0] + 1]:.1f} Hz): lower n_mels or raise n_fft"
        )
    return np.ascontiguousarray(weights.T), edges_hz[1:-1].copy()


class _Features:
    """The one frame -> log-mel computation shared by LogMel and MelStream."""

    def __init__(self, config: AudioConfig) -> None:
        self.config = config
        n = np.arange(config.n_fft)
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.n_fft)  # periodic Hann
        self.filterbank, self.center_hz = _mel_filterbank(config)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(k, n_fft) float64 samples -> (k, n_mels) float32 natural-log mel power."""
        spectrum = np.fft.rfft(frames * self.window, axis=1)  # (k, n_fft // 2 + 1)
        power = spectrum.real**2 + spectrum.imag**2
        mel = power @ self.filterbank  # (k, n_mels)
        return np.log(np.maximum(mel, _AMIN)).astype(np.float32)


class LogMel:
    """Log-mel of a whole clip, with causal framing.

    Mel frame i covers samples [(i + 1) * hop - n_fft, (i + 1) * hop) (zeros before sample 0) and is
    stamped with its end time (i + 1) * hop / sample_rate seconds. Periodic Hann window, |rfft|^2
    power, Slaney mel filters, ``log(max(mel, 1e-5))``. A clip of N samples gives N // hop frames.
    """

    def __init__(self, config: AudioConfig | None = None) -> None:
        config = _DEFAULT_CONFIG if config is None else config
        self.config = config
        self._features = _Features(config)

    @property
    def filterbank(self) -> np.ndarray:
        """(n_fft // 2 + 1, n_mels) filter weights."""
        return self._features.filterbank

    @property
    def center_hz(self) -> np.ndarray:
        """(n_mels,) centre frequency of each mel band in Hz."""
        return self._features.center_hz

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """(N,) float32/float64 in [-1, 1] or int16 samples -> (N // hop, n_mels) float32."""
        x = _as_float(audio, "LogMel")
        if x.ndim != 1:
            raise ValueError(f"LogMel: expected mono samples of shape (N,), got {x.shape}")
        cfg = self.config
        num_frames = x.shape[0] // cfg.hop
        if num_frames == 0:
            return np.zeros((0, cfg.n_mels), dtype=np.float32)
        padded = np.concatenate([np.zeros(cfg.n_fft - cfg.hop), x[: num_frames * cfg.hop]])
        frames = sliding_window_view(padded, cfg.n_fft)[:: cfg.hop]  # (num_frames, n_fft), a view
        return self._features(frames)


class MelStream:
    """Streaming log-mel: push blocks of any length, get each mel frame as soon as its samples arrived.

    Gives the numbers ``LogMel`` gives on the concatenated audio. State is one preallocated buffer of
    the last n_fft - hop samples plus the unfinished hop; a block is consumed in pieces of at most
    ``_CHUNK_HOPS`` hops, so memory stays fixed whatever the block length.
    """

    _CHUNK_HOPS = 8

    def __init__(self, config: AudioConfig | None = None) -> None:
        config = _DEFAULT_CONFIG if config is None else config
        self.config = config
        self._features = _Features(config)
        self._history = config.n_fft - config.hop
        self._buf = np.zeros(self._history + self._CHUNK_HOPS * config.hop)
        self._fill = self._history  # valid samples in _buf; starts with n_fft - hop zeros (before t=0)
        self._frames_done = 0

    @property
    def frames_done(self) -> int:
        """Mel frames produced since the start (or the last reset)."""
        return self._frames_done

    def reset(self) -> None:
        """Forget all audio: the next sample pushed is sample 0 again."""
        self._buf[:] = 0.0
        self._fill = self._history
        self._frames_done = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        """(n,) float32/float64 in [-1, 1] or int16 mono samples -> (k, n_mels) float32 new frames (k >= 0)."""
        x = _as_float(block, "MelStream.push")
        if x.ndim != 1:
            raise ValueError(f"MelStream.push: expected a mono block of shape (n,), got {x.shape}")
        cfg = self.config
        out: list[np.ndarray] = []
        pos = 0
        while pos < x.shape[0]:
            take = min(x.shape[0] - pos, self._buf.shape[0] - self._fill)
            self._buf[self._fill : self._fill + take] = x[pos : pos + take]
            self._fill += take
            pos += take
            k = (self._fill - self._history) // cfg.hop
            if k == 0:
                continue
            frames = sliding_window_view(self._buf[: self._history + k * cfg.hop], cfg.n_fft)[:: cfg.hop]
            out.append(self._features(frames))
            used = k * cfg.hop
            keep = self._fill - used  # the history plus the unfinished hop
            self._buf[:keep] = self._buf[used : self._fill]  # numpy copies overlapping slices safely
            self._fill = keep
            self._frames_done += k
        if not out:
            return np.zeros((0, cfg.n_mels), dtype=np.float32)
        return out[0] if len(out) == 1 else np.concatenate(out)


# --------------------------------------------------------------------------------------------------
# Video-frame timing


def _last_mel_index(video_frames: np.ndarray, config: AudioConfig) -> np.ndarray:
    """floor((t / fps + lookahead_s) * sample_rate / hop) - 1 for each video frame t (ties included)."""
    end_s = video_frames / config.fps + config.lookahead_ms / 1000.0
    return np.floor(end_s * config.sample_rate / config.hop + _TIME_EPS).astype(np.int64) - 1


def _check_mel(mel: np.ndarray, config: AudioConfig) -> np.ndarray:
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != config.n_mels:
        raise ValueError(f"expected a log-mel of shape (num_frames, {config.n_mels}), got {mel.shape}")
    return mel


def frames_needed(video_frame: int, config: AudioConfig | None = None) -> int:
    """Mel frames that must exist before video frame ``video_frame``'s window is complete.

    Equals the window's last mel index + 1 (at least 0). With the defaults, frame t needs the audio up
    to t / fps + 40 ms, rounded down to a whole hop: 3 mel frames (37.5 ms) for frame 0.
    """
    config = _DEFAULT_CONFIG if config is None else config
    if video_frame < 0:
        raise ValueError(f"frames_needed: expected video_frame >= 0, got {video_frame}")
    return max(int(_last_mel_index(np.array([video_frame]), config)[0]) + 1, 0)


def mel_windows(mel: np.ndarray, num_video_frames: int, config: AudioConfig | None = None) -> np.ndarray:
    """The mel window of every video frame 0 .. num_video_frames - 1.

    Video frame t shows time t / fps. Its window holds the ``window_frames`` most recent mel frames
    that have ended by t / fps + lookahead: last index L = floor((t / fps + lookahead_s) * sample_rate
    / hop) - 1 (ties count as ended), first = L - window_frames + 1. Indices before 0 or past the end
    of ``mel`` are padded with ``LOG_FLOOR`` (silence), so any clip length works.

    Args:
        mel: (num_mel_frames, n_mels) log-mel from ``LogMel`` or ``MelStream``.

    Returns:
        (num_video_frames, window_frames, n_mels) float32.
    """
    config = _DEFAULT_CONFIG if config is None else config
    mel = _check_mel(mel, config)
    if num_video_frames < 0:
        raise ValueError(f"mel_windows: expected num_video_frames >= 0, got {num_video_frames}")
    last = _last_mel_index(np.arange(num_video_frames), config)
    idx = last[:, None] + np.arange(1 - config.window_frames, 1)[None, :]  # (T, window_frames)
    valid = (idx >= 0) & (idx < mel.shape[0])
    if mel.shape[0] == 0:
        return np.full((num_video_frames, config.window_frames, config.n_mels), LOG_FLOOR, dtype=np.float32)
    out = mel.astype(np.float32, copy=False)[np.clip(idx, 0, mel.shape[0] - 1)]  # (T, window_frames, n_mels)
    out[~valid] = LOG_FLOOR
    return out


def mel_window(mel: np.ndarray, video_frame: int, config: AudioConfig | None = None) -> np.ndarray:
    """(window_frames, n_mels) float32 window of one video frame; timing as in ``mel_windows``."""
    config = _DEFAULT_CONFIG if config is None else config
    mel = _check_mel(mel, config)
    if video_frame < 0:
        raise ValueError(f"mel_window: expected video_frame >= 0, got {video_frame}")
    last = int(_last_mel_index(np.array([video_frame]), config)[0])
    out = np.full((config.window_frames, config.n_mels), LOG_FLOOR, dtype=np.float32)
    first = last - config.window_frames + 1
    lo, hi = max(first, 0), min(last + 1, mel.shape[0])
    if lo < hi:
        out[lo - first : hi - first] = mel[lo:hi]
    return out


def num_video_frames(num_samples: int, config: AudioConfig | None = None) -> int:
    """Video frames that cover a clip: ceil(num_samples / sample_rate * fps)."""
    config = _DEFAULT_CONFIG if config is None else config
    if num_samples < 0:
        raise ValueError(f"num_video_frames: expected num_samples >= 0, got {num_samples}")
    return math.ceil(num_samples * config.fps / config.sample_rate - _TIME_EPS)
