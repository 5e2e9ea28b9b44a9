"""Each metric of models.metrics against a case whose answer is known by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from models.metrics import (
    ALIGN_LANDMARKS,
    FACE_LANDMARKS,
    MOUTH_LANDMARKS,
    av_sync,
    blinks_per_minute,
    canonical_correlations,
    count_blinks,
    cpbd,
    eye_aperture,
    landmark_distance,
    mouth_aperture,
    pose_std,
    seed_diversity,
    speech_envelope,
    ssim,
)
from models.rig import BLENDSHAPE_NAMES, Rig
from tests.conftest import ASSETS

_I = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The bundled portrait's landmarks (478, 3), through the rig (no detector needed)."""
    from models.landmarks import FaceLandmarker, load_image

    with FaceLandmarker() as fl:
        return fl.detect(load_image(ASSETS / "portrait.png")).astype(np.float64)


def _texture(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.uniform(0, 255, (size, size, 3)), (2, 2, 0))).clip(0, 255).astype(np.uint8)


# --- SSIM -------------------------------------------------------------------------------------


def test_ssim_identical_is_one_and_matches_skimage() -> None:
    from skimage.metrics import structural_similarity

    a = _texture(0)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    b = np.clip(a.astype(int) + np.random.default_rng(1).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    gray = lambda im: im.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    ref = structural_similarity(
        gray(a), gray(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0
    )
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert ssim(a, b) < 0.9
    # More noise, lower SSIM; a constant brightness offset costs little (luminance term only).
    c = np.clip(a.astype(int) + np.random.default_rng(1).normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, c) < ssim(a, b)
    with pytest.raises(ValueError, match="same size"):
        ssim(a, a[:50])


# --- landmark distances -----------------------------------------------------------------------


def test_lmd_identical_is_zero_and_similarity_is_aligned_away(face: np.ndarray) -> None:
    t = np.stack([face, face + 1.5])  # (2, 478, 3)
    assert landmark_distance(t, t, MOUTH_LANDMARKS) == pytest.approx(0.0, abs=1e-9)
    assert landmark_distance(t, t, FACE_LANDMARKS) == pytest.approx(0.0, abs=1e-9)
    # The same faces rotated by 5 degrees, scaled by 1.1 and shifted: alignment removes it all.
    c, s = np.cos(0.087), np.sin(0.087)
    moved = t.copy()
    moved[..., :2] = 1.1 * t[..., :2] @ np.array([[c, -s], [s, c]]).T + np.array([13.0, -7.0])
    assert landmark_distance(moved, t, FACE_LANDMARKS) == pytest.approx(0.0, abs=1e-9)
    assert landmark_distance(moved, t, FACE_LANDMARKS, align=False) > 10.0


def test_mouth_lmd_of_a_shifted_mouth_is_the_shift(face: np.ndarray) -> None:
    # Only the lips move, 3 px down and 4 px right: the alignment points stay, so M-LMD = 5 px,
    # and F-LMD = 5 px x (lip points / face points).
    assert not set(MOUTH_LANDMARKS) & set(ALIGN_LANDMARKS)
    gen = face[None].copy()
    gen[0, list(MOUTH_LANDMARKS), :2] += [4.0, 3.0]
    assert landmark_distance(gen, face[None], MOUTH_LANDMARKS) == pytest.approx(5.0, abs=1e-9)
    assert landmark_distance(gen, face[None], FACE_LANDMARKS) == pytest.approx(
        5.0 * len(MOUTH_LANDMARKS) / len(FACE_LANDMARKS), abs=1e-9
    )


# --- CPBD ---------------------------------------------------------------------------------------


def test_cpbd_step_edges_are_sharp_and_blur_lowers_it() -> None:
    # Vertical bars 8 px wide: every edge is a one-pixel step (width 1 < 3 px just noticeable).
    img = np.zeros((128, 128), dtype=np.uint8)
    for x0 in range(0, 128, 16):
        img[:, x0 : x0 + 8] = 200
    assert cpbd(img) == 1.0
    # The width of a linear ramp of 7 px is 7 > 3: P(blur) = 1 - exp(-(7/3)^3.6) > 0.63, not sharp.
    ramp = np.zeros((128, 128))
    for x0 in range(0, 128, 32):
        ramp[:, x0 : x0 + 7] = np.linspace(0, 200, 7)
        ramp[:, x0 + 7 : x0 + 16] = 200
        ramp[:, x0 + 16 : x0 + 23] = np.linspace(200, 0, 7)
    assert cpbd(ramp.astype(np.uint8)) == 0.0
    # Rising ramps and falling steps in contrasty blocks (w_JNB = 3 px): a ramp up to 3 px wide is
    # sharp (P <= 1 - 1/e), a 4 px one is not (P = 1 - exp(-(4/3)^3.6) = 0.95): then half the edges.
    for width, expected in ((2, 1.0), (3, 1.0), (4, 0.5)):
        row = np.zeros(128)
        for x0 in range(0, 128, 16):
            row[x0 : x0 + width + 1] = np.linspace(0, 200, width + 1)
            row[x0 + width : x0 + 8] = 200
        assert cpbd(row[None].repeat(128, 0).astype(np.uint8)) == expected, width
    # A checkerboard of random grey squares: sharp; blurred (sigma 1.5 px): mostly not.
    tex = np.kron(np.random.default_rng(3).integers(0, 256, (32, 32)), np.ones((8, 8))).astype(np.uint8)
    assert cpbd(tex) > 0.9
    assert cpbd(gaussian_filter(tex, 1.5)) < 0.5
    assert np.isnan(cpbd(np.full((64, 64), 90, dtype=np.uint8)))  # no edges at all


# --- pose -------------------------------------------------------------------------------------


def test_pose_diversity_still_is_zero_and_sine_is_amplitude_over_root_two() -> None:
    assert np.all(pose_std(np.zeros((50, 6))) == 0.0)
    t = np.arange(1000) / 25
    pose = np.zeros((1000, 6))
    pose[:, 0] = 0.1 * np.sin(2 * np.pi * t)  # 25 whole periods
    assert pose_std(pose)[0] == pytest.approx(0.1 / np.sqrt(2), rel=1e-6)
    assert np.all(pose_std(pose)[1:] == 0.0)


def test_pose_cca() -> None:
    rng = np.random.default_rng(0)
    x = gaussian_filter1d(rng.normal(size=(3000, 6)), 3, axis=0)
    a = rng.normal(size=(6, 6))  # invertible almost surely
    # An invertible linear map of the same poses: every canonical correlation is 1.
    assert np.allclose(canonical_correlations(x, x @ a + 0.3), 1.0)
    # Independent poses: all near 0 (finite-sample level ~ sqrt(6 / effective T)).
    y = gaussian_filter1d(rng.normal(size=(3000, 6)), 3, axis=0)
    assert canonical_correlations(x, y).max() < 0.2
    # One shared dimension: the first is 1, the others near 0.
    y[:, 2] = x[:, 4]
    cc = canonical_correlations(x, y)
    assert cc[0] == pytest.approx(1.0) and cc[1] < 0.2
    # A still head correlates with nothing.
    assert np.all(canonical_correlations(x, np.zeros((3000, 6))) == 0.0)


# --- blinks -------------------------------------------------------------------------------------


def test_blinks_still_face_has_none_and_three_closings_in_six_seconds_are_thirty_a_minute(
    face: np.ndarray,
) -> None:
    still = np.repeat(face[None], 150, axis=0)
    ap = eye_aperture(still)
    assert np.allclose(ap, ap[0]) and 0.15 < ap[0] < 0.5
    assert count_blinks(ap) == 0 and blinks_per_minute(ap, 25.0) == 0.0
    # Through the rig: three full blinks of 4 frames in 150 frames (6 s at 25 fps).
    rig = Rig(face)
    exp = np.zeros((150, 52))
    for start in (20, 70, 120):
        exp[start : start + 4, [_I["eyeBlinkLeft"], _I["eyeBlinkRight"]]] = [
            [0.5, 0.5],
            [1, 1],
            [1, 1],
            [0.5, 0.5],
        ]
    lm = np.stack([rig.landmarks(e, np.zeros(6)) for e in exp])
    ap = eye_aperture(lm)
    assert count_blinks(ap) == 3
    assert blinks_per_minute(ap, 25.0) == pytest.approx(30.0)
    # Jitter around the threshold is one blink, not many (hysteresis).
    jitter = np.ones(100)
    jitter[40:50] = [0.65, 0.75, 0.65, 0.75, 0.6, 0.8, 0.6, 0.8, 0.82, 0.8]
    assert count_blinks(jitter) == 1


# --- audio-visual sync --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [-4, 0, 1, 3, 7])
def test_sync_offset_of_a_mouth_shifted_by_k_frames_is_k(k: int) -> None:
    rng = np.random.default_rng(5)
    env = np.abs(gaussian_filter1d(rng.normal(size=260), 2.0))
    mouth = np.roll(env, k)[20:-20]  # mouth[t] = env[t - k]: the mouth follows the sound by k frames
    r = av_sync(mouth, env[20:-20])
    assert r.offset == k
    assert r.correlation > 0.95 and r.confidence > 0.5
    # A mouth that ignores the sound gives a low confidence.
    other = np.abs(gaussian_filter1d(np.random.default_rng(6).normal(size=220), 2.0))
    assert av_sync(other, env[20:-20]).confidence < 0.3
    # A still mouth has no offset to find: every score is 0, the offset 0, the confidence 0.
    still = av_sync(np.full(220, 0.0371), env[20:-20])
    assert still.offset == 0 and still.confidence == 0.0


def test_speech_envelope_and_mouth_aperture(face: np.ndarray) -> None:
    audio = np.zeros(16000)
    audio[6400:9600] = 0.5 * np.where(np.arange(3200) % 2, 1.0, -1.0)  # frames 10-14 (640 samples each)
    env = speech_envelope(audio, 25)
    assert np.allclose(env[10:15], 0.5)
    assert np.all(env[:10] == 0) and np.all(env[15:] == 0)
    rig = Rig(face)
    exp = np.zeros((3, 52))
    exp[1, _I["jawOpen"]] = 0.5
    exp[2, _I["jawOpen"]] = 1.0
    ap = mouth_aperture(np.stack([rig.landmarks(e, np.zeros(6)) for e in exp]))
    assert ap[0] < 0.02 and ap[0] < ap[1] < ap[2]


# --- diversity --------------------------------------------------------------------------------


def test_seed_diversity() -> None:
    x = np.random.default_rng(0).normal(size=(40, 5))
    assert seed_diversity(np.stack([x, x, x])) == pytest.approx(0.0, abs=1e-12)
    assert seed_diversity(np.stack([x + 0.2, x - 0.2])) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        seed_diversity(x[None])


# --- the evaluation command -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("shutil").which("flite") is None
    or __import__("importlib").util.find_spec("pocketsphinx") is None,
    reason="the held-out test voices need flite and pocketsphinx (setup.sh installs them)",
)
def test_evaluate_command_quick(tmp_path: Path) -> None:
    """bench.evaluate --quick: two clips through render, landmarks and every metric; table, JSON, plots."""
    import json

    from bench.evaluate import main

    main(["--quick", "--out", str(tmp_path), "--seeds", "2"])
    r = json.loads((tmp_path / "results.json").read_text())
    p = r["pooled"]
    assert 0.5 < p["ssim"]["gen"] < 1.0 and p["m_lmd"]["gen"] > 0
    assert p["blinks_per_min"]["still"] == 0 and r["pose"]["rot_std_deg_still"] == 0
    assert "not measured" in r["identity"] or "importable" in r["identity"]
    for png in ("sync.png", "pose.png", "blinks.png", "frames.png"):
        assert (tmp_path / png).stat().st_size > 5000
    assert "| SSIM" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("shutil").which("espeak-ng") is None
    or __import__("importlib").util.find_spec("pocketsphinx") is None,
    reason="espeak-ng and pocketsphinx make the training data (setup.sh installs them)",
)
def test_ablations_command_quick(tmp_path: Path) -> None:
    """--ablations --quick: two variants trained 2 steps on 0.3 min of speech, measured, tabulated."""
    import json

    from bench.evaluate import main

    main(["--ablations", "--quick", "--steps", "2", "--data-minutes", "0.3", "--data", str(tmp_path / "d"),
          "--out", str(tmp_path / "out")])  # fmt: skip
    rows = json.loads((tmp_path / "out" / "ablations.json").read_text())["rows"]
    assert "without data dropout" in rows and "baseline, temperature 0.0" in rows
    assert rows["baseline, temperature 0.0"]["diversity_exp"] == 0.0  # no noise, every seed the same
    assert rows["without data dropout"]["diversity_exp"] > 0.0
