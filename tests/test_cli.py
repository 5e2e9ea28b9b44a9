"""The offline commands (animate, reenact, pose) end to end, and the command line's error handling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent import commands
from agent.errors import InputError
from models.coeffs import CoeffSequence, load_coeffs, save_coeffs
from models.landmarks import FaceLandmarker, load_image
from models.meshwarp import MeshWarp
from models.rig import BLENDSHAPE_NAMES, LOWER_INNER_LIP, NUM_BLENDSHAPES, UPPER_INNER_LIP
from streaming.file import Mp4Writer, iter_frames, read_video
from tests.conftest import ASSETS, ROOT

JAW = BLENDSHAPE_NAMES.index("jawOpen")
PORTRAIT = ASSETS / "portrait.png"


def _jaw_sequence(n: int, peak: float = 0.8) -> CoeffSequence:
    exp = np.zeros((n, NUM_BLENDSHAPES), dtype=np.float32)
    exp[:, JAW] = peak * np.sin(np.linspace(0, np.pi, n)) ** 2
    pose = np.zeros((n, 6), dtype=np.float32)
    pose[:, 0] = 0.15 * np.sin(np.linspace(0, np.pi, n))  # turn to the image right and back
    return CoeffSequence(exp=exp, pose=pose, fps=25.0)


def _aperture(frame: np.ndarray, landmarker: FaceLandmarker) -> float:
    lm = landmarker.detect(frame)
    return float((lm[list(LOWER_INNER_LIP), 1] - lm[list(UPPER_INNER_LIP), 1]).max())


def test_animate_writes_the_sequence(tmp_path: Path) -> None:
    seq = _jaw_sequence(12)
    npz = tmp_path / "c.npz"
    save_coeffs(npz, seq)
    out = commands.animate(PORTRAIT, npz, tmp_path / "a.mp4")
    info = read_video(out)
    assert (info.width, info.height, info.num_frames) == (512, 512, 12)
    frames = list(iter_frames(out))
    with FaceLandmarker() as fl:
        first, middle = _aperture(frames[0], fl), _aperture(frames[6], fl)
    assert middle > first + 10  # the mouth opened where the jaw curve peaks


def test_pose_writes_a_still(tmp_path: Path) -> None:
    out = commands.pose(PORTRAIT, "surprised", 1.0, tmp_path / "s.png")
    still = cv2.imread(str(out))
    assert still.shape == (512, 512, 3)
    original = cv2.imread(str(PORTRAIT))
    assert np.abs(still.astype(int) - original.astype(int)).mean() > 1.0  # something moved


def test_reenact_recovers_the_driving_motion(tmp_path: Path) -> None:
    """Drive the portrait with a rendered video of known coefficients; read them back."""
    image = load_image(PORTRAIT)
    with FaceLandmarker() as fl:
        warp = MeshWarp(image, fl.detect(image))
    truth = _jaw_sequence(20)
    driving = tmp_path / "driving.mp4"
    with Mp4Writer(driving, fps=25.0, size=(512, 512)) as writer:
        for t in range(len(truth)):
            writer.write(warp.render(truth.exp[t], truth.pose[t]))
    coeffs = tmp_path / "fit.npz"
    out = commands.reenact(PORTRAIT, driving, tmp_path / "r.mp4", coeffs_out=coeffs)
    assert read_video(out).num_frames == 20
    fitted = load_coeffs(coeffs)
    r = np.corrcoef(truth.exp[:, JAW], fitted.exp[:, JAW])[0, 1]
    assert r > 0.9, f"jawOpen correlation {r:.3f}"
    assert fitted.pose[10, 0] > 0.05  # the turn to the right is a turn to the right
    np.testing.assert_allclose(fitted.pose[0], 0.0, atol=1e-6)  # relative to the first frame


def test_no_face_is_one_clear_error(tmp_path: Path) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 128, np.uint8))
    out = tmp_path / "x.png"
    with pytest.raises(InputError, match="no face"):
        commands.pose(blank, "happy", 0.5, out)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pose", "--image", "missing.jpg"], "missing.jpg"),
        (["pose", "--intensity", "1.5"], "intensity"),
        (["animate", "--coeffs", "nowhere.npz"], "nowhere.npz"),
    ],
)
def test_command_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "run_agent.py"), *args, "--out", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], run.stderr
