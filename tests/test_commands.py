"""Tests for agent/commands.py and run_agent.py, on the bundled portrait with real MediaPipe."""

from __future__ import annotations

import logging
import subprocess
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent import commands
from agent.errors import AgentError, InputError
from models.coeffs import CoeffSequence, load_coeffs, save_coeffs
from models.landmarks import FaceLandmarker, load_image
from models.meshwarp import MeshWarp
from models.rig import BLENDSHAPE_NAMES, LOWER_OUTER_LIP, UPPER_OUTER_LIP, emotion_coefficients
from streaming.file import Mp4Writer, extract_audio, iter_frames, read_video

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "assets" / "portrait.png"
JAW = BLENDSHAPE_NAMES.index("jawOpen")


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, np.ndarray]:
    """The bundled portrait (512, 512, 3) and its landmarks (478, 3)."""
    image = load_image(PORTRAIT)
    with FaceLandmarker() as landmarker:
        return image, landmarker.detect(image)


@pytest.fixture(scope="module")
def mouth_box(portrait: tuple[np.ndarray, np.ndarray]) -> tuple[slice, slice]:
    """Rows and columns around the lips, with room below for an opening jaw."""
    lips = portrait[1][list(UPPER_OUTER_LIP + LOWER_OUTER_LIP), :2]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    return slice(int(y0) - 5, int(y1) + 30), slice(int(x0) - 5, int(x1) + 5)


def _sine_wav(path: Path, duration_s: float, sample_rate: int = 16000) -> Path:
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes((0.3 * 32767 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16).tobytes())
    return path


def _no_face_png(path: Path) -> Path:
    gradient = np.tile(np.linspace(60, 200, 512, dtype=np.uint8)[None, :, None], (512, 1, 3))
    cv2.imwrite(str(path), gradient)
    return path


# --- animate -----------------------------------------------------------------------------------


def test_animate_renders_every_frame_and_opens_the_mouth(
    tmp_path: Path, mouth_box: tuple[slice, slice]
) -> None:
    exp = np.zeros((10, len(BLENDSHAPE_NAMES)))
    exp[:, JAW] = [0, 0, 0, 0.2, 0.5, 0.8, 0.5, 0.2, 0, 0]
    save_coeffs(tmp_path / "c.npz", CoeffSequence(exp=exp, pose=np.zeros((10, 6)), fps=25.0))
    wav = _sine_wav(tmp_path / "a.wav", 0.4)

    out = commands.animate(PORTRAIT, tmp_path / "c.npz", tmp_path / "out" / "talk.mp4", audio=wav)

    assert out == tmp_path / "out" / "talk.mp4"
    info = read_video(out)
    assert (info.width, info.height, info.fps) == (512, 512, 25.0)
    frames = np.stack(list(iter_frames(out))).astype(np.float32)
    assert frames.shape == (10, 512, 512, 3)
    rows, cols = mouth_box
    mouth = np.abs(frames[:, rows, cols] - frames[0, rows, cols]).mean(axis=(1, 2, 3))
    assert mouth[1] < 2.0 and mouth[5] > 8.0 * max(mouth[1], 0.5)  # closed vs wide open
    assert np.argmax(mouth) == 5
    far = np.abs(frames[5, :64, :64] - frames[0, :64, :64]).mean()  # background corner stays put
    assert far < 2.0
    assert extract_audio(out, tmp_path / "back.wav") is not None


def test_animate_aligns_a_photo_that_is_not_a_portrait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    photo = cv2.copyMakeBorder(cv2.imread(str(PORTRAIT)), 40, 40, 160, 120, cv2.BORDER_REPLICATE)
    cv2.imwrite(str(tmp_path / "wide.png"), cv2.resize(photo, None, fx=0.8, fy=0.8))
    save_coeffs(tmp_path / "c.npz", CoeffSequence(exp=np.zeros((2, 52)), pose=np.zeros((2, 6)), fps=10.0))
    with caplog.at_level(logging.INFO, logger="agent.commands"):
        out = commands.animate(tmp_path / "wide.png", tmp_path / "c.npz", tmp_path / "o.mp4")
    assert [r.message for r in caplog.records if "aligned" in r.message] == [
        f"aligned {tmp_path / 'wide.png'} (634x474) to a 512x512 portrait (eyes level, 87 px apart)"
    ]
    assert read_video(out).width == 512


def test_an_aligned_portrait_is_used_as_is(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.commands"):
        source = commands.load_portrait(PORTRAIT)
    assert not caplog.records
    np.testing.assert_array_equal(source.image, load_image(PORTRAIT))


@pytest.mark.parametrize("bad", ["missing-image", "no-face", "bad-npz", "missing-audio"])
def test_animate_bad_inputs_raise_input_error_and_write_nothing(tmp_path: Path, bad: str) -> None:
    image, coeffs, audio = PORTRAIT, ROOT / "assets" / "demo_coeffs.npz", None
    if bad == "missing-image":
        image, match = tmp_path / "nope.png", r"cannot read image .*nope\.png.*no such file"
    elif bad == "no-face":
        image, match = _no_face_png(tmp_path / "wall.png"), r"wall\.png: no face found in image \(512x512\)"
    elif bad == "bad-npz":
        coeffs = tmp_path / "c.npz"
        coeffs.write_text("not numbers")
        match = r"coefficient file .*c\.npz.*not an \.npz"
    else:
        audio, match = tmp_path / "a.wav", r"audio file not found: .*a\.wav"
    out = tmp_path / "o.mp4"
    with pytest.raises(InputError, match=match):
        commands.animate(image, coeffs, out, audio=audio)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.mp4")]


# --- pose --------------------------------------------------------------------------------------


def test_pose_writes_a_png(tmp_path: Path, mouth_box: tuple[slice, slice]) -> None:
    out = commands.pose(PORTRAIT, "surprised", 1.0, tmp_path / "still.png", yaw=0.1)
    still = load_image(out).astype(np.float32)
    neutral = load_image(commands.pose(PORTRAIT, "neutral", 1.0, tmp_path / "n.png")).astype(np.float32)
    assert still.shape == (512, 512, 3)
    rows, cols = mouth_box
    assert np.abs(still[rows, cols] - neutral[rows, cols]).mean() > 5.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.png", "still.png"]
    assert emotion_coefficients("surprised", 1.0)[JAW] > 0  # the change above is the open mouth


@pytest.mark.parametrize(
    ("emotion", "intensity", "out", "match"),
    [
        ("joyful", 0.5, "p.png", r"unknown emotion 'joyful'; expected one of angry, .*surprised"),
        ("happy", 1.5, "p.png", r"intensity must be in \[0, 1\], got 1\.5"),
        ("happy", 0.5, "p.gif", r"expected an output image ending in \.png, \.jpg, \.jpeg, got .*p\.gif"),
    ],
)
def test_pose_rejects_bad_arguments(
    tmp_path: Path, emotion: str, intensity: float, out: str, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        commands.pose(PORTRAIT, emotion, intensity, tmp_path / out)
    assert not list(tmp_path.iterdir())


# --- reenact -----------------------------------------------------------------------------------


def test_reenact_recovers_the_driving_motion(tmp_path: Path, portrait: tuple[np.ndarray, np.ndarray]) -> None:
    frames = np.arange(20)
    jaw = np.interp(frames, [0, 9.5, 19], [0.0, 0.8, 0.0])
    yaw = 0.15 * np.sin(np.pi * np.clip((frames - 4) / 11, 0, 1)) ** 2  # a turn to the right mid-clip
    warp = MeshWarp(*portrait)
    driving = tmp_path / "driving.mp4"
    with Mp4Writer(driving, fps=25, size=(512, 512), audio=_sine_wav(tmp_path / "a.wav", 0.8)) as writer:
        for t in frames:
            exp = np.zeros(len(BLENDSHAPE_NAMES))
            exp[JAW] = jaw[t]
            writer.write(warp.render(exp, np.array([yaw[t], 0, 0, 0, 0, 0])))

    out = commands.reenact(PORTRAIT, driving, tmp_path / "out.mp4", coeffs_out=tmp_path / "c.npz")

    seq = load_coeffs(tmp_path / "c.npz")
    assert len(seq) == 20 and seq.fps == 25.0
    assert np.corrcoef(seq.exp[:, JAW], jaw)[0, 1] > 0.9
    np.testing.assert_allclose(seq.pose[0], 0.0, atol=1e-6)  # pose is relative to the first frame
    assert seq.pose[8:12, 0].min() > 0.05  # the right turn reads as a right turn
    assert np.abs(seq.pose[:3, 0]).max() < 0.03 and np.abs(seq.pose[-3:, 0]).max() < 0.03
    info = read_video(out)
    assert (info.num_frames, info.width, info.fps) == (20, 512, 25.0)
    assert extract_audio(out, tmp_path / "back.wav") is not None  # the driving audio came along


def test_reenact_without_a_face_in_the_driving_video(tmp_path: Path) -> None:
    driving = tmp_path / "wall.mp4"
    with Mp4Writer(driving, fps=25, size=(128, 96)) as writer:
        for _ in range(3):
            writer.write(np.full((96, 128, 3), 120, dtype=np.uint8))
    with pytest.raises(InputError, match=r"no face found in any of the 3 frames of .*wall\.mp4"):
        commands.reenact(PORTRAIT, driving, tmp_path / "o.mp4", coeffs_out=tmp_path / "c.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wall.mp4"]


@pytest.mark.parametrize("kind", ["missing", "not-a-video"])
def test_reenact_unreadable_driving_video(tmp_path: Path, kind: str) -> None:
    driving = tmp_path / "d.mp4"
    if kind == "not-a-video":
        driving.write_text("hello")
    with pytest.raises(InputError, match=r"video file not found|not a readable video"):
        commands.reenact(PORTRAIT, driving, tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_input_error_is_an_agent_error() -> None:
    assert issubclass(InputError, AgentError)


# --- run_agent.py ------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_agent.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_cli_reports_a_missing_image_in_one_line(tmp_path: Path) -> None:
    result = _cli("pose", "--image", "missing.png", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: cannot read image 'missing.png': no such file"]
    assert "Traceback" not in result.stderr and not result.stdout
    assert not (tmp_path / "out").exists()


def test_cli_pose_defaults_and_no_command(tmp_path: Path) -> None:
    result = _cli("pose", "--intensity", "0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(Path("out") / "pose.png")
    assert (tmp_path / "out" / "pose.png").is_file()
    # No command is the live agent; its options are checked before anything starts.
    result = _cli("--audio-source", "speaker", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --audio-source must be mic, file:PATH or webrtc; got 'speaker'"
    )
