"""models.landmarks: real MediaPipe face mesh on the bundled photo (assets/portrait.png)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.landmarks import (
    MIN_IOD_PX,
    NUM_LANDMARKS,
    AlignedPortrait,
    FaceLandmarker,
    FaceNotFoundError,
    ImageReadError,
    align_portrait,
    eye_centers,
    interocular_distance,
    load_image,
    transform_landmarks,
)

PORTRAIT = Path(__file__).resolve().parent.parent / "assets" / "portrait.png"
# Values scripts/make_portrait.py aligned the bundled portrait with.
PORTRAIT_IOD_FRACTION = 0.18
PORTRAIT_EYE_Y_FRACTION = 0.42


@pytest.fixture(scope="module")
def landmarker() -> Iterator[FaceLandmarker]:
    with FaceLandmarker() as lm:
        yield lm


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return load_image(PORTRAIT)


@pytest.fixture(scope="module")
def portrait_landmarks(landmarker: FaceLandmarker, portrait: np.ndarray) -> np.ndarray:
    return landmarker.detect(portrait)


def _eye_angle_deg(landmarks: np.ndarray) -> float:
    left, right = eye_centers(landmarks)
    dx, dy = right - left
    return math.degrees(math.atan2(dy, dx))


def _rotated(image: np.ndarray, angle_deg: float, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def test_load_image_portrait(portrait: np.ndarray) -> None:
    assert portrait.shape == (512, 512, 3)
    assert portrait.dtype == np.uint8
    assert portrait.flags.c_contiguous


def test_detect_shape_and_range(portrait_landmarks: np.ndarray) -> None:
    lm = portrait_landmarks
    assert lm.shape == (NUM_LANDMARKS, 3)
    assert lm.dtype == np.float32
    assert np.isfinite(lm).all()
    assert (lm[:, :2] >= 0).all() and (lm[:, :2] <= 512).all()
    # z is scaled like x: depth of the face is tens of pixels, not a fraction.
    assert 10 < np.ptp(lm[:, 2]) < 300


def test_eye_centers_order_and_iod(portrait_landmarks: np.ndarray) -> None:
    left, right = eye_centers(portrait_landmarks)
    assert left.shape == right.shape == (2,)
    assert left[0] < right[0]  # image-left eye first
    expected_iod = PORTRAIT_IOD_FRACTION * 512
    assert interocular_distance(portrait_landmarks) == pytest.approx(expected_iod, rel=0.03)
    mid = (left + right) / 2
    assert mid[0] == pytest.approx(256, abs=3)
    assert mid[1] == pytest.approx(PORTRAIT_EYE_Y_FRACTION * 512, abs=3)
    assert abs(_eye_angle_deg(portrait_landmarks)) < 1.0


@pytest.mark.parametrize(
    ("angle_deg", "scale", "size"),
    [(12.0, 0.8, 512), (-8.0, 1.0, 384)],
)
def test_align_portrait_levels_eyes_and_matches_redetection(
    landmarker: FaceLandmarker, portrait: np.ndarray, angle_deg: float, scale: float, size: int
) -> None:
    tilted = _rotated(portrait, angle_deg, scale)
    source_lm = landmarker.detect(tilted)
    assert abs(_eye_angle_deg(source_lm)) > 5  # the input really is tilted

    aligned = align_portrait(tilted, source_lm, size=size, iod_fraction=0.2, eye_y_fraction=0.45)
    assert isinstance(aligned, AlignedPortrait)
    assert aligned.image.shape == (size, size, 3) and aligned.image.dtype == np.uint8
    assert aligned.landmarks.shape == (NUM_LANDMARKS, 3) and aligned.landmarks.dtype == np.float32
    assert aligned.matrix.shape == (2, 3) and aligned.matrix.dtype == np.float64

    left, right = eye_centers(aligned.landmarks)
    assert abs(_eye_angle_deg(aligned.landmarks)) < 1.0
    assert interocular_distance(aligned.landmarks) == pytest.approx(0.2 * size, rel=1e-4)
    np.testing.assert_allclose((left + right) / 2, [size / 2, 0.45 * size], atol=1e-3)
    assert aligned.scale == pytest.approx(0.2 * size / interocular_distance(source_lm), rel=1e-6)
    np.testing.assert_allclose(aligned.landmarks[:, 2], source_lm[:, 2] * aligned.scale, rtol=1e-4, atol=1e-3)

    redetected = landmarker.detect(aligned.image)
    err = np.linalg.norm(redetected[:, :2] - aligned.landmarks[:, :2], axis=1)
    assert np.median(err) < 3.0
    assert abs(_eye_angle_deg(redetected)) < 1.0


def test_align_portrait_detects_when_no_landmarks(landmarker: FaceLandmarker, portrait: np.ndarray) -> None:
    aligned = align_portrait(portrait, landmarker=landmarker, size=256)
    assert aligned.image.shape == (256, 256, 3)
    assert interocular_distance(aligned.landmarks) == pytest.approx(0.17 * 256, rel=1e-4)


def test_align_portrait_downscale(landmarker: FaceLandmarker, portrait: np.ndarray) -> None:
    # A large photo shrunk to a small crop (scale < 0.5) goes through the area-averaging path.
    big = cv2.resize(portrait, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    big_lm = landmarker.detect(big)
    aligned = align_portrait(big, big_lm, size=256, iod_fraction=0.2, eye_y_fraction=0.45)
    assert aligned.scale < 0.5
    redetected = landmarker.detect(aligned.image)
    err = np.linalg.norm(redetected[:, :2] - aligned.landmarks[:, :2], axis=1)
    assert np.median(err) < 2.0


def test_transform_landmarks_identity_and_scale(portrait_landmarks: np.ndarray) -> None:
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(
        transform_landmarks(portrait_landmarks, identity), portrait_landmarks, atol=1e-5
    )
    double = np.array([[2.0, 0.0, 5.0], [0.0, 2.0, -3.0]])
    out = transform_landmarks(portrait_landmarks, double)
    np.testing.assert_allclose(out[:, :2], portrait_landmarks[:, :2] * 2 + [5.0, -3.0], rtol=1e-5)
    np.testing.assert_allclose(out[:, 2], portrait_landmarks[:, 2] * 2, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        transform_landmarks(portrait_landmarks, np.eye(3))


@pytest.mark.parametrize(
    "image",
    [
        np.full((480, 640, 3), 128, dtype=np.uint8),
        np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8),
    ],
    ids=["gray", "noise"],
)
def test_no_face(landmarker: FaceLandmarker, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    with pytest.raises(FaceNotFoundError, match=rf"no face found in image \({w}x{h}\)"):
        landmarker.detect(image)
    assert landmarker.detect_or_none(image) is None


def test_two_faces_takes_largest(landmarker: FaceLandmarker, portrait: np.ndarray) -> None:
    canvas = np.full((512, 768, 3), 128, dtype=np.uint8)
    canvas[:, :512] = portrait
    canvas[128:384, 512:] = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    with pytest.warns(UserWarning, match=r"found 2 faces.*largest") as record:
        lm = landmarker.detect(canvas)
    assert len(record) == 1
    assert lm[:, 0].max() < 512  # the big face, on the left
    assert interocular_distance(lm) == pytest.approx(PORTRAIT_IOD_FRACTION * 512, rel=0.05)


def test_tiny_face_on_canvas(landmarker: FaceLandmarker, portrait: np.ndarray) -> None:
    canvas = np.full((512, 512, 3), 128, dtype=np.uint8)
    canvas[220:280, 220:280] = cv2.resize(portrait, (60, 60), interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceNotFoundError, match=r"512x512.*\d+ px"):
        landmarker.detect(canvas)


def test_face_too_small(landmarker: FaceLandmarker, portrait: np.ndarray) -> None:
    # The whole photo shrunk: MediaPipe still finds the face, but it is below the usable size.
    tiny = cv2.resize(portrait, (80, 80), interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceNotFoundError, match=rf"too small.*\d+\.\d px.*minimum {MIN_IOD_PX:.0f} px"):
        landmarker.detect(tiny)
    assert landmarker.detect_or_none(tiny) is None


def test_small_face_warns(landmarker: FaceLandmarker, portrait: np.ndarray) -> None:
    small = cv2.resize(portrait, (160, 160), interpolation=cv2.INTER_AREA)
    with pytest.warns(UserWarning, match="quality will be low"):
        lm = landmarker.detect(small)
    assert MIN_IOD_PX < interocular_distance(lm) < 40


def test_detect_validates_input(landmarker: FaceLandmarker, portrait: np.ndarray) -> None:
    with pytest.raises(TypeError, match="uint8, got float32"):
        landmarker.detect(portrait.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*\(512, 512, 4\)"):
        landmarker.detect(np.dstack([portrait, portrait[..., :1]]))
    with pytest.raises(TypeError, match="numpy array"):
        landmarker.detect(portrait.tolist())  # type: ignore[arg-type]


def test_video_tracking_follows_shift(portrait: np.ndarray, portrait_landmarks: np.ndarray) -> None:
    shifts = [0, 6, 12, 18, 24, 30]
    with FaceLandmarker(video=True) as tracker:
        for dx in shifts:
            frame = np.roll(portrait, dx, axis=1)
            lm = tracker.detect(frame)
            moved = np.median(lm[:, 0] - portrait_landmarks[:, 0])
            assert moved == pytest.approx(dx, abs=2.0)
            assert abs(np.median(lm[:, 1] - portrait_landmarks[:, 1])) < 2.0
        assert tracker.detect_or_none(np.full_like(portrait, 128)) is None


def test_video_warns_once(portrait: np.ndarray) -> None:
    canvas = np.full((512, 768, 3), 128, dtype=np.uint8)
    canvas[:, :512] = portrait
    canvas[128:384, 512:] = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    with FaceLandmarker(video=True) as tracker, warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(4):
            tracker.detect(canvas)
    assert [str(w.message).split(";")[0] for w in record] == ["found 2 faces in image (768x512)"]


def test_closed_landmarker_raises(portrait: np.ndarray) -> None:
    tracker = FaceLandmarker()
    tracker.close()
    tracker.close()
    with pytest.raises(RuntimeError, match="closed"):
        tracker.detect(portrait)


def test_load_image_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageReadError, match=r"nope\.png.*no such file"):
        load_image(missing)
    with pytest.raises(ImageReadError, match="directory"):
        load_image(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg.*empty \(0 bytes\)"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    with pytest.raises(ImageReadError, match=r"notes\.jpg.*not an image"):
        load_image(text)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(PORTRAIT.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        load_image(truncated)


def test_load_image_gray_and_rgba(tmp_path: Path, portrait: np.ndarray) -> None:
    gray = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    out = load_image(tmp_path / "gray.png")
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], gray)

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red where opaque
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    out = load_image(str(tmp_path / "rgba.png"))
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [255, 255, 255])  # transparent -> white

    jpg = tmp_path / "photo.jpg"
    cv2.imwrite(str(jpg), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    out = load_image(jpg)
    assert out.shape == (512, 512, 3)
    assert np.abs(out.astype(int) - portrait.astype(int)).mean() < 4  # RGB order kept
