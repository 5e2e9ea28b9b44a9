"""Video files: an atomic H.264 .mp4 writer (with optional audio) and frame readers.

Writing runs the static ffmpeg shipped in the ``imageio-ffmpeg`` wheel (libx264 + aac), so no system
ffmpeg is needed; reading uses OpenCV's FFmpeg backend. Frames are RGB uint8, (H, W, 3), everywhere.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO

import cv2
import imageio_ffmpeg
import numpy as np

__all__ = [
    "Mp4Writer",
    "VideoInfo",
    "VideoReadError",
    "VideoWriteError",
    "extract_audio",
    "iter_frames",
    "read_video",
]

_DEFAULT_FPS = 25.0
_ERROR_TAIL_LINES = 15
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_AUDIO_STREAM_RE = re.compile(r"Stream #\S+.*: Audio: ")


class VideoWriteError(RuntimeError):
    """ffmpeg failed while encoding or muxing an output file."""


class VideoReadError(ValueError):
    """A video (or audio) input is missing, or cannot be opened or decoded."""


@cache
def _ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_ERROR_TAIL_LINES:]) or "(ffmpeg printed nothing)"


def _run_ffmpeg(args: list[str]) -> tuple[int, str]:
    """Runs ffmpeg to completion; returns (exit code, stderr)."""
    proc = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-nostdin", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    return proc.returncode, proc.stderr.decode("utf-8", errors="replace")


def _temp_path(target: Path, suffix: str) -> Path:
    """A fresh hidden file next to ``target``, so the final ``os.replace`` stays on one filesystem."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    # mkstemp makes the file private (0600); the finished output should have ordinary permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def _unlink(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _probe_audio(path: Path) -> float | None:
    """Decodes the start of the first audio stream of ``path``; returns its duration in s if known.

    Raises:
        VideoReadError: the file is missing or has no decodable audio stream.
    """
    if not path.is_file():
        raise VideoReadError(f"audio file not found: {path}")
    rc, err = _run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-t", "0.5", "-f", "null", "-"])
    if rc != 0:
        raise VideoReadError(f"cannot read audio from {path}:\n{_tail(err)}")
    match = _DURATION_RE.search(err)
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _audio_filter(offset_s: float) -> str:
    """Aligns audio time ``offset_s`` with the first frame, then pads with silence (trimmed by ``-t``)."""
    steps = []
    if offset_s > 0:
        steps += [f"atrim=start={offset_s:.6f}", "asetpts=PTS-STARTPTS"]
    elif offset_s < 0:
        # Milliseconds: the documented "s" (seconds) suffix is misread as samples by some ffmpeg builds.
        steps.append(f"adelay=delays={-offset_s * 1000:.3f}:all=1")
    # Any channel count in: mono stays mono, everything else is downmixed to stereo. The aac encoder
    # negotiates the sample rate itself (it resamples only rates it does not support, e.g. 192 kHz).
    steps += ["aformat=channel_layouts=mono|stereo", "apad"]
    return ",".join(steps)


class Mp4Writer:
    """Writes RGB uint8 frames to an H.264 .mp4 (yuv420p, +faststart) that common players open.

    Use as a context manager. Output is atomic: frames go to a hidden ``.<name>.*.partial.mp4`` next
    to ``path``, which replaces ``path`` only on a clean ``close()``; an exception inside the ``with``
    block (or an ffmpeg failure) removes it, so ``path`` is either the complete new video or untouched.
    The container is always mp4, whatever the suffix of ``path``.

    Args:
        path: output file; missing parent directories are created.
        fps: frames per second (> 0; fractional rates such as 30000/1001 are kept exactly enough).
        size: (width, height) in pixels; both must be even (yuv420p subsamples chroma 2x2). Odd sizes
            raise ValueError rather than being padded, so the frames you write are the frames you get.
        audio: optional wav/mp3/flac/... file muxed in as aac (any sample rate and channel count;
            more than two channels are downmixed to stereo). It is probed here, before any frame is
            written, and raises VideoReadError if missing or undecodable.
        audio_offset_s: the time in the audio file that plays with the first frame. Positive skips the
            start of the audio; negative delays it, with silence first. Either way the audio track is
            cut, or padded with silence, to exactly the video's length (frames_written / fps).
        metadata: container tags written with ``-metadata key=value`` (e.g. the generator's
            provenance: ``comment``, ``description``, ``date``, ``creation_time``).

    Example::

        with Mp4Writer("talk.mp4", fps=25, size=(512, 512), audio="speech.wav") as writer:
            for frame in frames:
                writer.write(frame)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float,
        size: tuple[int, int],
        audio: str | os.PathLike[str] | None = None,
        audio_offset_s: float = 0.0,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._closed = True  # until ffmpeg runs, so __del__ and abort() are safe on a failed __init__
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
        if (
            not isinstance(size, tuple | list)
            or len(size) != 2
            or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
        ):
            raise TypeError(f"size must be a (width, height) pair of ints, got {size!r}")
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be positive, got {width}x{height}")
        if width % 2 or height % 2:
            raise ValueError(
                f"H.264 yuv420p needs an even width and height, got {width}x{height}; "
                f"crop or pad the frames to {width + width % 2}x{height + height % 2} "
                f"or {width - width % 2}x{height - height % 2}"
            )
        if not math.isfinite(audio_offset_s):
            raise ValueError(f"audio_offset_s must be finite, got {audio_offset_s!r}")

        self._path = Path(path)
        self._fps = float(fps)
        self._width = width
        self._height = height
        self._audio: Path | None = None
        self._audio_offset_s = float(audio_offset_s)
        self._metadata_args = [arg for k, v in (metadata or {}).items() for arg in ("-metadata", f"{k}={v}")]
        if audio is not None:
            self._audio = Path(audio).resolve()
            audio_duration_s = _probe_audio(self._audio)
            if audio_duration_s is not None and self._audio_offset_s >= audio_duration_s:
                raise ValueError(
                    f"audio_offset_s={self._audio_offset_s} s is past the end of {self._audio} "
                    f"({audio_duration_s:.3f} s); the offset is in seconds"
                )

        self._frames_written = 0
        self._frame_bytes = width * height * 3
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._video_tmp: Path | None = _temp_path(self._path, ".partial.mp4")
        self._mux_tmp: Path | None = None
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        rate = Fraction(self._fps).limit_denominator(100_000)
        # With audio, this first pass writes video only; close() muxes the audio in a second pass,
        # when the exact video length is known (one-pass -shortest leaves the audio ~1 frame short).
        faststart = [] if self._audio is not None else ["-movflags", "+faststart"]
        args = [
            _ffmpeg(), "-hide_banner", "-nostats", "-loglevel", "warning", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "-",
            "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
            # ffmpeg converts RGB with the BT.601 matrix; say so, or players guess BT.709 for HD sizes.
            "-colorspace", "smpte170m", "-color_range", "tv",
            *self._metadata_args, *faststart, "-f", "mp4", str(self._video_tmp),
        ]  # fmt: skip
        try:
            # Own session: a terminal Ctrl-C reaches only Python, whose __exit__ then aborts us;
            # ffmpeg must not die first and turn a clean close() into an error.
            self._proc: subprocess.Popen[bytes] = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                start_new_session=True,
            )
        except BaseException:
            self._stderr.close()
            _unlink(self._video_tmp)
            raise
        self._closed = False

    @property
    def path(self) -> Path:
        """The final output path (it exists only after a clean close())."""
        return self._path

    @property
    def frames_written(self) -> int:
        return self._frames_written

    def write(self, frame: np.ndarray) -> None:
        """Appends one RGB uint8 frame of shape (height, width, 3)."""
        if self._closed:
            raise ValueError(f"write() on a closed Mp4Writer ({self._path})")
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"expected a numpy.ndarray frame, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise TypeError(f"expected a uint8 frame, got dtype {frame.dtype}")
        expected = (self._height, self._width, 3)
        if frame.shape != expected:
            raise ValueError(f"expected a frame of shape (H, W, 3) = {expected}, got {frame.shape}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except OSError as exc:  # BrokenPipeError: ffmpeg has exited
            self._proc.wait()
            message = self._failure("ffmpeg stopped accepting frames")
            self.abort()
            raise VideoWriteError(message) from exc
        self._frames_written += 1

    def close(self) -> None:
        """Finishes the file and moves it onto ``path``. Idempotent.

        Raises:
            VideoWriteError: ffmpeg failed, or no frame was written (nothing playable to save);
                no output is left behind in either case.
        """
        if self._closed:
            return
        try:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg exited early; its exit code below says why
            if self._proc.wait() != 0:
                raise VideoWriteError(self._failure("ffmpeg failed to encode the video"))
            if self._frames_written == 0:
                raise VideoWriteError(f"no frames were written to {self._path}; nothing to save")
            result = self._video_tmp
            if self._audio is not None:
                result = self._mux_audio()
            assert result is not None
            os.replace(result, self._path)
            if result == self._video_tmp:
                self._video_tmp = None
            else:
                self._mux_tmp = None
        except BaseException:
            self.abort()
            raise
        self._cleanup()

    def abort(self) -> None:
        """Stops ffmpeg and removes every temporary file; ``path`` is left untouched. Idempotent."""
        if self._closed:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass  # buffered bytes for a process we just killed
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        self._stderr.close()
        _unlink(self._video_tmp)
        _unlink(self._mux_tmp)
        self._video_tmp = self._mux_tmp = None

    def _failure(self, what: str) -> str:
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", errors="replace")
        return f"{what} for {self._path} (exit code {self._proc.returncode}):\n{_tail(err)}"

    def _mux_audio(self) -> Path:
        """Second pass: copies the video and adds the audio as aac, cut or padded to the video's length."""
        assert self._audio is not None and self._video_tmp is not None
        self._mux_tmp = _temp_path(self._path, ".partial.mp4")
        duration_s = self._frames_written / self._fps
        rc, err = _run_ffmpeg([
            "-nostats", "-loglevel", "warning", "-y",
            "-i", str(self._video_tmp), "-i", str(self._audio),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-af", _audio_filter(self._audio_offset_s), "-c:a", "aac", "-b:a", "128k",
            "-t", f"{duration_s:.6f}", *self._metadata_args, "-movflags", "+faststart", "-f", "mp4",
            str(self._mux_tmp),
        ])  # fmt: skip
        if rc != 0:
            raise VideoWriteError(
                f"ffmpeg failed to mux {self._audio} into {self._path} (exit code {rc}):\n{_tail(err)}"
            )
        return self._mux_tmp

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # A writer dropped without close() is discarded, never finalized behind the caller's back.
        if not getattr(self, "_closed", True):
            warnings.warn(
                f"Mp4Writer for {self._path} was never closed; output discarded",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
            self.abort()


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. ``num_frames`` comes from the container and may be an estimate."""

    path: Path
    fps: float
    width: int
    height: int
    num_frames: int

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def _open_capture(path: str | os.PathLike[str]) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video file not found: {path}")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoReadError(f"not a readable video: {path} (OpenCV's FFmpeg backend cannot open it)")
    return capture


def read_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Opens a video and reports its fps, frame size and frame count (decodes the first frame only).

    Warns (RuntimeWarning) and assumes 25 fps when the container reports no frame rate.

    Raises:
        VideoReadError: the file is missing, not a video, or has no decodable frame.
    """
    capture = _open_capture(path)
    try:
        ok, frame = capture.read()
        if not ok or frame is None:
            raise VideoReadError(f"no decodable video frame in {path}")
        height, width = frame.shape[:2]
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        if not math.isfinite(fps) or fps <= 0:
            warnings.warn(
                f"{path} reports no frame rate; assuming {_DEFAULT_FPS:g} fps", RuntimeWarning, stacklevel=2
            )
            fps = _DEFAULT_FPS
        num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if num_frames <= 0:  # no count in the header: count by demuxing, without decoding
            num_frames = 1
            while capture.grab():
                num_frames += 1
    finally:
        capture.release()
    return VideoInfo(path=Path(path), fps=fps, width=int(width), height=int(height), num_frames=num_frames)


def iter_frames(path: str | os.PathLike[str], *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yields the frames of a video as RGB uint8 arrays of shape (H, W, 3), at most ``max_frames``.

    The file is opened before this returns, so a bad path raises here, not at the first ``next()``.

    Raises:
        VideoReadError: the file is missing or not a video.
    """
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 0):
        raise ValueError(f"max_frames must be None or >= 0, got {max_frames!r}")
    return _frames(_open_capture(path), max_frames)


def _frames(capture: cv2.VideoCapture, max_frames: int | None) -> Iterator[np.ndarray]:
    try:
        count = 0
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            count += 1
    finally:
        capture.release()


def extract_audio(
    video_path: str | os.PathLike[str], out_wav: str | os.PathLike[str], *, sample_rate: int = 16000
) -> Path | None:
    """Writes the first audio stream of a video (or audio file) as mono 16-bit PCM wav at ``sample_rate`` Hz.

    Returns ``out_wav`` as a Path, or None (writing nothing) when the input has no audio stream.
    The wav appears atomically; missing parent directories are created.

    Raises:
        VideoReadError: the input is missing, cannot be opened, or its audio cannot be decoded.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    source = Path(video_path).resolve()
    if not source.is_file():
        raise VideoReadError(f"video file not found: {video_path}")
    # With no output file ffmpeg exits 1 by design; it still prints the input's streams.
    _, info = _run_ffmpeg(["-i", str(source)])
    if "Input #0" not in info:
        raise VideoReadError(f"cannot open {video_path}:\n{_tail(info)}")
    if _AUDIO_STREAM_RE.search(info) is None:
        return None

    target = Path(out_wav)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(target, ".partial.wav")
    try:
        rc, err = _run_ffmpeg([
            "-nostats", "-loglevel", "warning", "-y", "-i", str(source),
            "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le",
            "-map_metadata", "-1", "-f", "wav", str(tmp),
        ])  # fmt: skip
        if rc != 0:
            raise VideoReadError(f"cannot decode the audio of {video_path} (exit code {rc}):\n{_tail(err)}")
        os.replace(tmp, target)
    finally:
        _unlink(tmp)
    return target
