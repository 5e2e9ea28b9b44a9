"""Tests for streaming/file.py: the atomic .mp4 writer, the frame readers and extract_audio."""

from __future__ import annotations

import os
import re
import subprocess
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from streaming.file import (
    Mp4Writer,
    VideoInfo,
    VideoReadError,
    VideoWriteError,
    extract_audio,
    iter_frames,
    read_video,
)

FPS = 25.0
WIDTH, HEIGHT = 64, 48
NUM_FRAMES = 30
VIDEO_S = NUM_FRAMES / FPS


def _pattern(i: int) -> np.ndarray:
    """A smooth RGB pattern that drifts with the frame index, (HEIGHT, WIDTH, 3) uint8."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    red = 127 + 100 * np.sin((x + 2 * i) / 8)
    green = 127 + 100 * np.cos((y + i) / 6)
    blue = np.full_like(red, 90.0)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def _write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """samples: (N, C) int16."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    return path


def _sine_wav(path: Path, *, duration_s: float, sample_rate: int = 22050, channels: int = 2) -> Path:
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    mono = (0.3 * 32767 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
    return _write_wav(path, np.repeat(mono[:, None], channels, axis=1), sample_rate)


def _read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    """Returns (samples (N,) int16 of channel 0, sample rate, channel count)."""
    with wave.open(str(path), "rb") as src:
        channels = src.getnchannels()
        data = np.frombuffer(src.readframes(src.getnframes()), dtype=np.int16)
        return data.reshape(-1, channels)[:, 0], src.getframerate(), channels


def _extract(video: Path, out_wav: Path) -> Path:
    out = extract_audio(video, out_wav)
    assert out is not None, f"{video} has no audio stream"
    return out


def _ffmpeg_info(path: Path) -> str:
    """What `ffmpeg -i` prints about a file (the ffprobe summary, from the bundled binary)."""
    proc = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        check=False,
    )
    return proc.stderr.decode("utf-8", errors="replace")


def _duration_s(info: str) -> float:
    match = re.search(r"Duration: (\d+):(\d\d):(\d\d\.\d+)", info)
    assert match is not None, info
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _write_video(path: Path, *, audio: Path | None = None, audio_offset_s: float = 0.0) -> Path:
    with Mp4Writer(path, fps=FPS, size=(WIDTH, HEIGHT), audio=audio, audio_offset_s=audio_offset_s) as writer:
        for i in range(NUM_FRAMES):
            writer.write(_pattern(i))
    assert writer.frames_written == NUM_FRAMES
    return path


def test_round_trip_frames(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "nested" / "dir" / "clip.mp4")

    info = read_video(path)
    assert info == VideoInfo(path=path, fps=FPS, width=WIDTH, height=HEIGHT, num_frames=NUM_FRAMES)
    frames = list(iter_frames(path))
    assert len(frames) == NUM_FRAMES
    for i, frame in enumerate(frames):
        assert frame.dtype == np.uint8 and frame.shape == (HEIGHT, WIDTH, 3)
        assert np.abs(frame.astype(np.int16) - _pattern(i)).mean() < 8, i
    assert len(list(iter_frames(path, max_frames=4))) == 4
    # Only the finished file is left: no temporary files beside it.
    assert list(path.parent.iterdir()) == [path]


def test_output_is_h264_yuv420p(tmp_path: Path) -> None:
    info = _ffmpeg_info(_write_video(tmp_path / "clip.mp4"))
    video_line = next(line for line in info.splitlines() if "Video:" in line)
    assert "Video: h264" in video_line and "yuv420p" in video_line
    assert "Audio:" not in info
    assert _duration_s(info) == pytest.approx(VIDEO_S, abs=0.05)


@pytest.mark.parametrize("audio_s", [0.5, 3.0], ids=["shorter-than-video", "longer-than-video"])
def test_audio_is_muxed_as_aac_with_video_length(tmp_path: Path, audio_s: float) -> None:
    wav = _sine_wav(tmp_path / "tone.wav", duration_s=audio_s, sample_rate=22050, channels=2)
    path = _write_video(tmp_path / "talk.mp4", audio=wav)

    info = _ffmpeg_info(path)
    assert "Video: h264" in info
    audio_line = next(line for line in info.splitlines() if "Audio:" in line)
    assert "Audio: aac" in audio_line and "22050 Hz" in audio_line
    assert _duration_s(info) == pytest.approx(VIDEO_S, abs=0.05)
    # The audio track itself is cut or padded with silence to the video's length.
    samples, rate, _ = _read_wav(_extract(path, tmp_path / "track.wav"))
    assert len(samples) / rate == pytest.approx(VIDEO_S, abs=0.03)


@pytest.mark.parametrize("offset_s", [0.0, 0.2, -0.3])
def test_audio_offset_aligns_audio_time_with_first_frame(tmp_path: Path, offset_s: float) -> None:
    # A click at 0.5 s into the audio plays at 0.5 - offset_s into the video.
    rate = 16000
    samples = np.zeros((2 * rate, 1), np.int16)
    samples[rate // 2 : rate // 2 + 160] = 20000
    wav = _write_wav(tmp_path / "click.wav", samples, rate)
    path = _write_video(tmp_path / "click.mp4", audio=wav, audio_offset_s=offset_s)

    track, track_rate, _ = _read_wav(_extract(path, tmp_path / "track.wav"))
    click_s = np.argmax(np.abs(track.astype(np.int32))) / track_rate
    assert click_s == pytest.approx(0.5 - offset_s, abs=0.02)


def test_extract_audio_round_trip(tmp_path: Path) -> None:
    wav = _sine_wav(tmp_path / "tone.wav", duration_s=2.0, sample_rate=22050, channels=2)
    path = _write_video(tmp_path / "talk.mp4", audio=wav)

    out = _extract(path, tmp_path / "out" / "speech.wav")
    assert out == tmp_path / "out" / "speech.wav"
    samples, rate, channels = _read_wav(out)
    assert (rate, channels) == (16000, 1)
    assert len(samples) / rate == pytest.approx(VIDEO_S, abs=0.03)
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    assert np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)] == pytest.approx(440, abs=5)
    assert 0.2 * 32767 < np.abs(samples[rate // 4 : -rate // 4]).max() < 0.4 * 32767
    assert sorted(p.name for p in out.parent.iterdir()) == ["speech.wav"]


def test_extract_audio_without_audio_stream_returns_none(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "silent.mp4")
    assert extract_audio(path, tmp_path / "speech.wav") is None
    assert not (tmp_path / "speech.wav").exists()


def test_exception_in_with_block_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with pytest.raises(KeyError), Mp4Writer(path, fps=FPS, size=(WIDTH, HEIGHT)) as writer:
        writer.write(_pattern(0))
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous render")
    with pytest.raises(RuntimeError), Mp4Writer(path, fps=FPS, size=(WIDTH, HEIGHT)) as writer:
        writer.write(_pattern(0))
        raise RuntimeError("render failed")
    assert path.read_bytes() == b"previous render"
    assert list(tmp_path.iterdir()) == [path]


def test_ffmpeg_dying_mid_write_raises_and_leaves_nothing(tmp_path: Path) -> None:
    writer = Mp4Writer(tmp_path / "clip.mp4", fps=FPS, size=(WIDTH, HEIGHT))
    writer.write(_pattern(0))
    writer._proc.kill()  # no public way to make the encoder crash
    writer._proc.wait()
    with pytest.raises(VideoWriteError, match="ffmpeg"):
        for i in range(NUM_FRAMES):
            writer.write(_pattern(i))
    writer.close()  # already aborted: a no-op
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    with (
        pytest.raises(VideoWriteError, match="no frames"),
        Mp4Writer(tmp_path / "a.mp4", fps=FPS, size=(8, 8)),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


def test_bad_audio_file_raises_before_writing(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    out = tmp_path / "out" / "clip.mp4"
    with pytest.raises(VideoReadError, match="cannot read audio"):
        Mp4Writer(out, fps=FPS, size=(WIDTH, HEIGHT), audio=text)
    with pytest.raises(VideoReadError, match="not found"):
        Mp4Writer(out, fps=FPS, size=(WIDTH, HEIGHT), audio=tmp_path / "missing.wav")
    assert list(tmp_path.iterdir()) == [text]


def test_audio_offset_past_the_end_is_rejected(tmp_path: Path) -> None:
    wav = _sine_wav(tmp_path / "tone.wav", duration_s=0.5)
    with pytest.raises(ValueError, match="past the end"):
        Mp4Writer(tmp_path / "clip.mp4", fps=FPS, size=(WIDTH, HEIGHT), audio=wav, audio_offset_s=200)
    assert list(tmp_path.iterdir()) == [wav]


@pytest.mark.parametrize("size", [(63, 48), (64, 47)])
def test_odd_size_is_rejected(tmp_path: Path, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(tmp_path / "clip.mp4", fps=FPS, size=size)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (np.zeros((HEIGHT, WIDTH, 3), np.float32), TypeError),
        ([[0]], TypeError),
        (np.zeros((HEIGHT, WIDTH), np.uint8), ValueError),
        (np.zeros((WIDTH, HEIGHT, 3), np.uint8), ValueError),
        (np.zeros((HEIGHT, WIDTH, 4), np.uint8), ValueError),
    ],
    ids=["float32", "list", "gray", "transposed", "rgba"],
)
def test_bad_frame_is_rejected(tmp_path: Path, frame: object, error: type[Exception]) -> None:
    with Mp4Writer(tmp_path / "clip.mp4", fps=FPS, size=(WIDTH, HEIGHT)) as writer:
        with pytest.raises(error, match="expected"):
            writer.write(frame)  # type: ignore[arg-type]
        writer.write(_pattern(0))  # the writer is still usable
    assert writer.frames_written == 1
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.write(_pattern(1))


def test_bad_fps_is_rejected(tmp_path: Path) -> None:
    for fps in (0.0, -25.0, float("nan")):
        with pytest.raises(ValueError, match="fps"):
            Mp4Writer(tmp_path / "clip.mp4", fps=fps, size=(WIDTH, HEIGHT))


def test_missing_or_invalid_video_raises(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoReadError, match="not found"):
        read_video(missing)
    with pytest.raises(VideoReadError, match="not found"):
        iter_frames(missing)  # raises on the call, not at the first next()
    with pytest.raises(VideoReadError, match="not found"):
        extract_audio(missing, tmp_path / "a.wav")

    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with pytest.raises(VideoReadError):
        read_video(text)
    with pytest.raises(VideoReadError):
        extract_audio(text, tmp_path / "a.wav")
    assert sorted(os.listdir(tmp_path)) == ["notes.mp4"]
