"""models.audio: decoding, log-mel (whole clip == stream), and the video-frame window timing."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest

from models.audio import (
    LOG_FLOOR,
    AudioConfig,
    AudioReadError,
    LogMel,
    MelStream,
    frames_needed,
    load_audio,
    mel_window,
    mel_windows,
    num_video_frames,
    resample,
    to_mono,
)
from tests.conftest import ASSETS

CFG = AudioConfig()
SR = CFG.sample_rate


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts and chirps with pauses: broadband, with silence between, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.3 * rng.standard_normal(n) * (np.sin(2 * np.pi * 3.0 * t) > 0.2)
    x += 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t)
    x[n // 3 : n // 2] = 0.0
    return np.clip(x, -1, 1).astype(np.float32)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """(N,) or (N, C) float in [-1, 1] -> 16-bit PCM wav."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _stream(x: np.ndarray, sizes: list[int], config: AudioConfig = CFG) -> tuple[np.ndarray, MelStream]:
    stream = MelStream(config)
    out, pos, i = [], 0, 0
    while pos < len(x):
        n = sizes[i % len(sizes)]
        out.append(stream.push(x[pos : pos + n]))
        pos, i = pos + n, i + 1
    return np.concatenate(out), stream


# --------------------------------------------------------------------------------------------------
# Log-mel: stream == whole clip


@pytest.mark.parametrize("blocks", ["random", "320", "1", "5000", "2000-uneven"])
def test_stream_matches_whole_clip(blocks: str) -> None:
    x = _speechlike(3.0)
    rng = np.random.default_rng(1)
    sizes = {
        "random": [int(n) for n in rng.integers(0, 1500, size=200)],
        "320": [320],  # 20 ms at 16 kHz, the live block
        "1": [1],
        "5000": [5000],  # longer than the stream's internal chunk
        "2000-uneven": [2000, 7, 0, 199, 201],
    }[blocks]
    x = x[:4000] if blocks == "1" else x
    streamed, stream = _stream(x, sizes)
    whole = LogMel(CFG)(x)
    assert streamed.dtype == np.float32
    assert streamed.shape == whole.shape
    assert stream.frames_done == whole.shape[0]
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)


def test_stream_int16_matches_float() -> None:
    pcm = np.round(_speechlike(2.0, seed=3) * 32767).astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768.0
    whole = LogMel(CFG)(as_float)
    np.testing.assert_array_equal(LogMel(CFG)(pcm), whole)
    streamed, _ = _stream(pcm, [320])
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)


def test_stream_reset_starts_over() -> None:
    x = _speechlike(1.0)
    stream = MelStream(CFG)
    stream.push(_speechlike(0.7, seed=5))
    stream.reset()
    assert stream.frames_done == 0
    np.testing.assert_allclose(stream.push(x), LogMel(CFG)(x), rtol=0, atol=1e-5)


def test_stream_emits_each_frame_when_its_last_sample_arrives() -> None:
    stream = MelStream(CFG)
    assert stream.push(np.zeros(CFG.hop - 1, np.float32)).shape == (0, CFG.n_mels)
    assert stream.push(np.zeros(1, np.float32)).shape == (1, CFG.n_mels)
    assert stream.push(np.zeros(0, np.float32)).shape == (0, CFG.n_mels)
    assert stream.push(np.zeros(320, np.int16)).shape == (1, CFG.n_mels)  # 520 samples: 2 frames in all
    assert stream.frames_done == 2


@pytest.mark.parametrize("n", [0, 1, 199, 200, 201, 16000, 16123])
def test_shape_and_frame_count(n: int) -> None:
    mel = LogMel(CFG)(np.zeros(n, np.float32))
    assert mel.shape == (n // CFG.hop, CFG.n_mels)
    assert mel.dtype == np.float32


def test_causal_framing() -> None:
    """Frame i sees samples [(i + 1) * hop - n_fft, (i + 1) * hop): nothing later, nothing earlier."""
    x = np.zeros(4000, np.float32)
    x[1000] = 1.0
    loud = np.flatnonzero(LogMel(CFG)(x).max(axis=1) > LOG_FLOOR + 1)
    first, last = 1000 // CFG.hop, (1000 + CFG.n_fft) // CFG.hop - 1
    # The Hann window is 0 at its first sample, so the frame starting exactly at the click is silent.
    np.testing.assert_array_equal(loud, np.arange(first, last))


def test_sine_lands_in_its_mel_band() -> None:
    logmel = LogMel(CFG)
    t = np.arange(SR) / SR
    mel = logmel(0.5 * np.sin(2 * np.pi * 1000.0 * t).astype(np.float32))
    profile = mel[10:].mean(axis=0)
    band = int(np.argmax(profile))
    assert band == int(np.argmin(np.abs(logmel.center_hz - 1000.0)))
    assert abs(logmel.center_hz[band] - 1000.0) < 30.0
    far = np.abs(np.arange(CFG.n_mels) - band) > 8
    assert profile[band] - profile[far].max() > 8.0  # e^8: the energy stays in its band


def test_slaney_mel_scale() -> None:
    """Centre frequencies are equally spaced on Slaney's scale: linear to 1 kHz, then logarithmic."""
    hz = LogMel(CFG).center_hz
    mel = np.where(hz < 1000, hz / (200 / 3), 15 + np.log(hz / 1000) / (np.log(6.4) / 27))
    step = np.diff(mel)
    np.testing.assert_allclose(step, step[0], rtol=1e-9)
    assert CFG.fmin < hz[0] < hz[-1] < CFG.fmax


def test_silence_gives_the_floor() -> None:
    mel = LogMel(CFG)(np.zeros(SR, np.float32))
    assert np.all(mel == np.float32(LOG_FLOOR))
    assert LOG_FLOOR == pytest.approx(math.log(1e-5))


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_clipping_is_finite(dtype: str) -> None:
    square = np.sign(np.sin(2 * np.pi * 300 * np.arange(SR) / SR))
    x = (square * 32767).astype(np.int16) if dtype == "int16" else (1.7 * square).astype(np.float32)
    if dtype == "int16":
        x[::7] = -32768
    mel = LogMel(CFG)(x)
    assert np.isfinite(mel).all()
    streamed, _ = _stream(x, [320])
    np.testing.assert_allclose(streamed, mel, rtol=0, atol=1e-5)


def test_bad_input_types() -> None:
    with pytest.raises(TypeError, match="expected float32, float64 or int16 samples, got dtype int32"):
        MelStream(CFG).push(np.zeros(320, np.int32))
    with pytest.raises(ValueError, match=r"expected a mono block of shape \(n,\), got \(320, 2\)"):
        MelStream(CFG).push(np.zeros((320, 2), np.float32))
    with pytest.raises(ValueError, match=r"expected mono samples of shape \(N,\)"):
        LogMel(CFG)(np.zeros((2, 320), np.float32))


# --------------------------------------------------------------------------------------------------
# Decoding, resampling, channels


def test_load_44k_stereo_wav(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    _write_wav(path, np.stack([left, left], axis=1), 44100)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == SR  # 1 s
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) == 440  # 1 Hz bins over 1 s
    assert np.abs(x[1000:-1000]).max() == pytest.approx(0.5, abs=0.02)


def test_load_bundled_demo_speech() -> None:
    path = ASSETS / "demo_speech.wav"
    assert path.stat().st_size < 300_000
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 16000, 2)
        duration = w.getnframes() / w.getframerate()
    assert 6.0 <= duration <= 8.0
    x = load_audio(path)
    assert len(x) == round(duration * SR)
    rms = np.sqrt((x[: len(x) // 320 * 320].reshape(-1, 320) ** 2).mean(axis=1))
    assert (rms > 0.01).mean() > 0.5  # mostly speech
    assert (rms < 0.001).sum() >= 20  # with pauses (20 blocks = 0.4 s)


def test_load_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello world\n" * 20)
    with pytest.raises(AudioReadError, match=r"cannot decode .*notes\.txt as audio.*not a recognised"):
        load_audio(text)
    with pytest.raises(AudioReadError, match=r"cannot decode .*portrait\.png as audio.*no audio stream"):
        load_audio(ASSETS / "portrait.png")
    with pytest.raises(AudioReadError, match=r"audio file not found: .*missing\.wav"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioReadError, match=r"audio file is empty \(0 bytes\)"):
        load_audio(empty)
    silent = tmp_path / "no_samples.wav"
    _write_wav(silent, np.zeros(0), 16000)
    with pytest.raises(AudioReadError, match="holds no samples"):
        load_audio(silent)
    with pytest.raises(AudioReadError, match="expected an audio file, got a directory"):
        load_audio(tmp_path)
    assert issubclass(AudioReadError, ValueError)


def test_resample_and_mono() -> None:
    t = np.arange(48000) / 48000
    x48 = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = resample(x48, 48000, 16000)
    assert y.dtype == np.float32 and y.shape == (16000,)
    np.testing.assert_allclose(
        y[100:-100], np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)[100:-100], atol=1e-3
    )
    assert resample(np.zeros((441, 2), np.float32), 44100, 16000).shape == (160, 2)
    np.testing.assert_array_equal(resample(x48, 16000, 16000), x48)
    with pytest.raises(ValueError, match="expected to_rate to be a positive int, got 0"):
        resample(x48, 48000, 0)

    stereo = np.array([[0.5, -0.5], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(to_mono(stereo), [0.0, 0.5])
    np.testing.assert_array_equal(to_mono(np.array([[16384, 0]], np.int16)), [0.25])
    with pytest.raises(ValueError, match=r"expected shape \(N,\) or \(N, C\)"):
        to_mono(np.zeros((2, 2, 2), np.float32))


# --------------------------------------------------------------------------------------------------
# Video-frame windows


def _click_mel(seconds: float, click_s: float) -> np.ndarray:
    x = np.zeros(int(seconds * SR), np.float32)
    x[round(click_s * SR)] = 1.0
    return LogMel(CFG)(x)


def _has_click(window: np.ndarray) -> bool:
    return bool(window.max() > LOG_FLOOR + 1)


@pytest.mark.parametrize("click_s", [0.0005, 0.52, 1.0075, 1.0274, 1.03, 1.0376, 1.0399, 1.5])
def test_click_timing(click_s: float) -> None:
    """A click at T first shows in the window of video frame floor(T * fps) (or the next one when T falls in
    the last hop of that frame's look-ahead), never in a window that ends before T, and leaves again.

    The clicks sit at least 2 ms before a hop boundary: the Hann taper hides a click in the last ~25
    samples of a frame, so such a click first shows one mel frame later.
    """
    mel = _click_mel(2.0, click_s)
    windows = mel_windows(mel, 50, CFG)
    seen = [v for v in range(50) if _has_click(windows[v])]
    v0 = math.floor(click_s * CFG.fps)
    window_end_s = v0 / CFG.fps + CFG.lookahead_ms / 1000
    hop_s = CFG.hop / SR
    # Mel frames end on multiples of 12.5 ms: the click's first frame ends at most one hop after it.
    first_frame_end_s = (round(click_s * SR) // CFG.hop + 1) * hop_s
    assert first_frame_end_s - click_s <= hop_s + 1e-9
    expected_first = v0 if first_frame_end_s <= window_end_s + 1e-9 else v0 + 1
    assert seen[0] == expected_first
    for v in range(seen[0]):
        assert v / CFG.fps + CFG.lookahead_ms / 1000 < first_frame_end_s  # its window ended too early
    span_s = (CFG.window_frames * CFG.hop + CFG.n_fft) / SR  # window + one FFT frame
    assert seen == list(range(seen[0], seen[-1] + 1))
    assert (seen[-1] - seen[0] + 1) <= math.ceil(span_s * CFG.fps) + 1


def test_click_in_first_part_of_frame_is_in_that_frame() -> None:
    for v in (0, 7, 30):
        for offset_ms in (0.1, 10.0, 27.0):
            mel = _click_mel(1.5, v / CFG.fps + offset_ms / 1000)
            assert _has_click(mel_window(mel, v, CFG))
            if v > 0:
                assert not _has_click(mel_window(mel, v - 1, CFG))


def test_window_matches_vectorized_and_is_complete_when_needed() -> None:
    mel = LogMel(CFG)(_speechlike(2.0))
    total = num_video_frames(2 * SR, CFG)
    windows = mel_windows(mel, total + 3, CFG)
    assert windows.shape == (total + 3, CFG.window_frames, CFG.n_mels) and windows.dtype == np.float32
    for t in range(total + 3):
        np.testing.assert_array_equal(windows[t], mel_window(mel, t, CFG))
    for t in range(total - 1):  # live: once frames_needed(t) mel frames exist, the window is final
        need = frames_needed(t, CFG)
        np.testing.assert_array_equal(mel_window(mel[:need], t, CFG), windows[t])
        assert need / CFG.mel_fps <= t / CFG.fps + CFG.lookahead_ms / 1000 + 1e-9


def test_window_indices() -> None:
    mel = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, CFG.n_mels), np.float32)
    # frame t: last = floor((t / 25 + 0.04) * 80) - 1 = floor(3.2 * (t + 1)) - 1
    for t in range(20):
        last = math.floor(3.2 * (t + 1) + 1e-9) - 1
        w = mel_window(mel, t, CFG)
        assert w[-1, 0] == last
        assert frames_needed(t, CFG) == last + 1
        if last - CFG.window_frames + 1 >= 0:
            np.testing.assert_array_equal(w[:, 0], np.arange(last - CFG.window_frames + 1, last + 1))
    assert [frames_needed(t, CFG) for t in range(5)] == [3, 6, 9, 12, 16]
    no_lookahead = AudioConfig(lookahead_ms=0.0)
    assert frames_needed(0, no_lookahead) == 0
    assert frames_needed(5, no_lookahead) == 16  # 200 ms of audio


def test_window_padding_at_start_and_end() -> None:
    noise = 0.1 * np.random.default_rng(2).standard_normal(16160).astype(np.float32)
    mel = LogMel(CFG)(noise)  # 80 mel frames, 26 video frames; no silent bins
    start = mel_window(mel, 0, CFG)
    need = frames_needed(0, CFG)
    assert np.all(start[: CFG.window_frames - need] == np.float32(LOG_FLOOR))
    np.testing.assert_array_equal(start[-need:], mel[:need])
    last_frame = num_video_frames(16160, CFG) - 1
    end = mel_window(mel, last_frame, CFG)
    overhang = frames_needed(last_frame, CFG) - mel.shape[0]
    assert overhang > 0
    assert np.all(end[-overhang:] == np.float32(LOG_FLOOR))
    assert np.all(end[:-overhang] > LOG_FLOOR)
    empty = mel_windows(np.zeros((0, CFG.n_mels), np.float32), 3, CFG)
    assert empty.shape == (3, CFG.window_frames, CFG.n_mels) and np.all(empty == np.float32(LOG_FLOOR))
    with pytest.raises(ValueError, match=r"expected a log-mel of shape \(num_frames, 80\), got \(10, 40\)"):
        mel_window(np.zeros((10, 40), np.float32), 0, CFG)


@pytest.mark.parametrize(
    ("samples", "frames"), [(0, 0), (1, 1), (639, 1), (640, 1), (641, 2), (16000, 25), (16001, 26)]
)
def test_num_video_frames(samples: int, frames: int) -> None:
    assert num_video_frames(samples, CFG) == frames


# --------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sample_rate": 0}, ValueError, r"sample_rate: expected a positive value, got 0"),
        ({"hop": -1}, ValueError, r"hop: expected a positive value, got -1"),
        ({"n_mels": 8.0}, TypeError, r"n_mels: expected an int, got float"),
        ({"n_fft": 100}, ValueError, r"expected n_fft >= hop, got n_fft=100 < hop=200"),
        ({"fmax": 9000.0}, ValueError, r"fmax: expected at most sample_rate / 2 = 8000.0 Hz, got 9000.0"),
        ({"fmin": 8000.0, "fmax": 7600.0}, ValueError, r"expected 0 <= fmin < fmax"),
        ({"fps": 0.0}, ValueError, r"fps: expected a positive number, got 0.0"),
        ({"lookahead_ms": -5.0}, ValueError, r"lookahead_ms: expected within \[0, 200.0\]"),
        ({"lookahead_ms": 250.0}, ValueError, r"lookahead_ms: expected within \[0, 200.0\] .* got 250.0"),
        ({"block_ms": 0}, ValueError, r"block_ms: expected a positive value, got 0"),
    ],
)
def test_config_validation(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        AudioConfig(**kwargs)  # type: ignore[arg-type]


def test_config_derived_values_and_empty_bands() -> None:
    assert CFG.mel_fps == 80.0 and CFG.window_ms == 200.0 and CFG.block_samples == 320
    with pytest.raises(ValueError, match="expected every mel band to cover at least one FFT bin"):
        LogMel(AudioConfig(n_mels=400))
