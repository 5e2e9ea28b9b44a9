"""Face landmarks: image loading, MediaPipe face mesh (478 points) and portrait alignment.

Landmarks are (478, 3) float32 in pixels of the image they were found in: x = nx * W, y = ny * H,
z = nz * W (MediaPipe scales z like x; larger z is farther from the camera). (0, 0) is the top-left
corner of the top-left pixel. See DESIGN.md, "Face representation".
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "NUM_LANDMARKS",
    "MIN_IOD_PX",
    "SMALL_IOD_PX",
    "ImageReadError",
    "FaceNotFoundError",
    "load_image",
    "FaceLandmarker",
    "eye_centers",
    "interocular_distance",
    "AlignedPortrait",
    "align_portrait",
    "transform_landmarks",
]

NUM_LANDMARKS = 478  # 468 mesh vertices + 2 x 5 iris points (refine_landmarks=True)
MIN_IOD_PX = 20.0  # below this inter-ocular distance the mesh is too coarse to use
SMALL_IOD_PX = 40.0  # below this, landmarks are usable but quality will be low

# MediaPipe's iris points: 468-472 belong to the subject's right eye, which is the image-left eye of an
# upright face (checked on skimage.data.astronaut); 468 and 473 are the iris centres.
_IRIS_IMAGE_LEFT = slice(468, 473)
_IRIS_IMAGE_RIGHT = slice(473, 478)
_JPEG_MAGIC = b"\xff\xd8"


class ImageReadError(ValueError):
    """An image file is missing, unreadable or not an image."""


class FaceNotFoundError(ValueError):
    """No usable face in an image (none detected, or too small)."""


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Grayscale is expanded to RGB, alpha is composited over white, 16-bit is reduced to 8-bit and
    JPEG EXIF orientation is applied. Raises ImageReadError naming the path and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"cannot read image {str(path)!r}: no such file")
    if path.is_dir():
        raise ImageReadError(f"cannot read image {str(path)!r}: it is a directory, not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot read image {str(path)!r}: {exc.strerror or exc}") from exc
    if not data:
        raise ImageReadError(f"cannot read image {str(path)!r}: the file is empty (0 bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        if data.startswith(_JPEG_MAGIC):
            # JPEG has no alpha; IMREAD_COLOR applies the EXIF orientation.
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        else:
            raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            if raw is not None and raw.ndim == 3 and raw.shape[2] == 4:
                bgr = _composite_over_white(raw)
            elif raw is not None:
                bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            else:
                bgr = None
    except cv2.error as exc:
        raise ImageReadError(f"cannot read image {str(path)!r}: corrupt image data ({exc.err})") from exc
    if bgr is None:
        raise ImageReadError(
            f"cannot read image {str(path)!r}: not an image OpenCV can decode "
            f"(unknown format or corrupt data, {len(data)} bytes)"
        )
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _composite_over_white(bgra: np.ndarray) -> np.ndarray:
    """(H, W, 4) BGRA of any depth -> (H, W, 3) uint8 BGR over a white background."""
    if bgra.dtype == np.uint8:
        x = bgra.astype(np.float32) / 255.0
    elif bgra.dtype == np.uint16:
        x = bgra.astype(np.float32) / 65535.0
    else:
        x = np.clip(bgra.astype(np.float32), 0.0, 1.0)
    alpha = x[..., 3:4]
    bgr = x[..., :3] * alpha + (1.0 - alpha)
    return np.clip(bgr * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected image as a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected image dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected image shape (H, W, 3) RGB, got {image.shape}")
    return np.ascontiguousarray(image)


def _check_landmarks(landmarks: Any) -> np.ndarray:
    lm = np.asarray(landmarks)
    if lm.ndim != 2 or lm.shape[0] != NUM_LANDMARKS or lm.shape[1] not in (2, 3):
        raise ValueError(
            f"expected landmarks of shape ({NUM_LANDMARKS}, 3) or ({NUM_LANDMARKS}, 2), got {lm.shape}"
        )
    if not (np.issubdtype(lm.dtype, np.floating) or np.issubdtype(lm.dtype, np.integer)):
        raise TypeError(f"expected real-valued landmarks, got {lm.dtype}")
    return lm


def eye_centers(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Iris centres (image-left eye, image-right eye) of an upright face, each (2,) float64 pixels.

    Each centre is the mean of its five iris points (468-472 and 473-477). The order is MediaPipe's
    (subject's right eye first, also on a face turned 90 degrees), not sorted by x.
    """
    lm = _check_landmarks(landmarks)
    left = lm[_IRIS_IMAGE_LEFT, :2].astype(np.float64).mean(axis=0)
    right = lm[_IRIS_IMAGE_RIGHT, :2].astype(np.float64).mean(axis=0)
    return left, right


def interocular_distance(landmarks: np.ndarray) -> float:
    """Distance between the two iris centres, in pixels."""
    left, right = eye_centers(landmarks)
    return float(np.linalg.norm(right - left))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send fd 2 to /dev/null for a moment (process-wide: keep the block short)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class FaceLandmarker:
    """MediaPipe face mesh with iris refinement: image -> (478, 3) float32 landmarks in pixels.

    With ``video=True`` MediaPipe tracks the face from frame to frame (faster, steadier) instead of
    detecting it in every image; feed frames of one video in order. Use as a context manager or call
    ``close()``. Not thread-safe.
    """

    def __init__(self, *, video: bool = False, max_faces: int = 4) -> None:
        if max_faces < 1:
            raise ValueError(f"expected max_faces >= 1, got {max_faces}")
        # Imported here so that `import models.landmarks` stays cheap (mediapipe takes ~0.4 s).
        from mediapipe.python.solutions import face_mesh

        self.video = video
        self.max_faces = max_faces
        # MediaPipe's C++ graph threads log start-up lines to stderr during construction and the first
        # run, whatever GLOG_minloglevel says; a blank warm-up frame makes them all happen here.
        with _quiet_stderr():
            self._mesh: Any = face_mesh.FaceMesh(
                static_image_mode=not video,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=0.5,
                min_tracking_confidence=0.5,
            )
            self._mesh.process(np.zeros((64, 64, 3), dtype=np.uint8))
        self._has_found_face = False  # the first face found logs one more line
        self._warned: set[str] = set()

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the MediaPipe graph. Safe to call twice."""
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def detect(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (478, 3) float32 landmarks in pixels of ``image``.

        Several faces: the largest (landmark bounding box area) is taken, with a warning. Raises
        FaceNotFoundError when there is no face, or its inter-ocular distance is below MIN_IOD_PX.
        """
        image = _check_image(image)
        if self._mesh is None:
            raise RuntimeError("FaceLandmarker is closed")
        height, width = image.shape[:2]
        if self._has_found_face:
            result = self._mesh.process(image)
        else:
            with _quiet_stderr():
                result = self._mesh.process(image)
        faces = result.multi_face_landmarks
        if not faces:
            raise FaceNotFoundError(
                f"no face found in image ({width}x{height}); it needs a roughly frontal, unoccluded face "
                f"with at least {SMALL_IOD_PX:.0f} px between the eyes"
            )
        self._has_found_face = True
        scale = np.array([width, height, width], dtype=np.float32)
        candidates = [
            np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) * scale for face in faces
        ]
        areas = [float(np.prod(c[:, :2].max(axis=0) - c[:, :2].min(axis=0))) for c in candidates]
        best = int(np.argmax(areas))
        landmarks = candidates[best]
        if len(candidates) > 1:
            w, h = landmarks[:, :2].max(axis=0) - landmarks[:, :2].min(axis=0)
            cx, cy = landmarks[:, :2].mean(axis=0)
            self._warn(
                "faces",
                f"found {len(candidates)} faces in image ({width}x{height}); using the largest "
                f"({w:.0f}x{h:.0f} px, centred at x={cx:.0f}, y={cy:.0f})",
            )
        iod = interocular_distance(landmarks)
        if iod < MIN_IOD_PX:
            raise FaceNotFoundError(
                f"face too small in image ({width}x{height}): inter-ocular distance {iod:.1f} px, "
                f"minimum {MIN_IOD_PX:.0f} px"
            )
        if iod < SMALL_IOD_PX:
            self._warn(
                "small",
                f"small face: inter-ocular distance {iod:.1f} px (< {SMALL_IOD_PX:.0f} px); landmark and "
                "render quality will be low, use a larger or closer photo",
            )
        return landmarks

    def detect_or_none(self, image: np.ndarray) -> np.ndarray | None:
        """Like ``detect`` but returns None where it would raise FaceNotFoundError (a missed frame)."""
        try:
            return self.detect(image)
        except FaceNotFoundError:
            return None

    def _warn(self, kind: str, message: str) -> None:
        # A video repeats the same condition every frame: say it once per landmarker.
        if self.video:
            if kind in self._warned:
                return
            self._warned.add(kind)
        warnings.warn(message, UserWarning, stacklevel=3)


def transform_landmarks(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) similarity transform to (478, 2|3) landmarks; z is scaled by its scale factor."""
    lm = _check_landmarks(landmarks)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"expected a (2, 3) affine matrix, got shape {m.shape}")
    out = lm.astype(np.float64).copy()
    out[:, :2] = lm[:, :2] @ m[:, :2].T + m[:, 2]
    if lm.shape[1] == 3:
        out[:, 2] = lm[:, 2] * np.sqrt(abs(np.linalg.det(m[:, :2])))
    return out.astype(np.float32)


@dataclass(frozen=True, eq=False)
class AlignedPortrait:
    """A portrait cropped and rotated so the eyes are level, with its landmarks.

    image: (size, size, 3) uint8 RGB. landmarks: (478, 3) float32 in the aligned image's pixels (z scaled
    by the same factor). matrix: (2, 3) float64 similarity transform, source pixels -> aligned pixels.
    """

    image: np.ndarray
    landmarks: np.ndarray
    matrix: np.ndarray

    @property
    def scale(self) -> float:
        """Aligned pixels per source pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def align_portrait(
    image: np.ndarray,
    landmarks: np.ndarray | None = None,
    *,
    size: int = 512,
    iod_fraction: float = 0.17,
    eye_y_fraction: float = 0.43,
    landmarker: FaceLandmarker | None = None,
) -> AlignedPortrait:
    """Crop a square portrait: eyes level, inter-ocular distance ``iod_fraction * size`` pixels, eye
    midpoint at (size / 2, eye_y_fraction * size).

    The defaults frame a head-and-shoulders photo with the whole head and hair, the neck and some
    shoulders and background. Landmarks are detected (with ``landmarker``, else a temporary one) when
    not given and are mapped with the same transform, not re-detected. Outside the photo the border
    pixels are repeated.
    """
    image = _check_image(image)
    if size < 8:
        raise ValueError(f"expected size >= 8, got {size}")
    if not 0.0 < iod_fraction < 1.0:
        raise ValueError(f"expected 0 < iod_fraction < 1, got {iod_fraction}")
    if not 0.0 < eye_y_fraction < 1.0:
        raise ValueError(f"expected 0 < eye_y_fraction < 1, got {eye_y_fraction}")
    if landmarks is None:
        if landmarker is not None:
            landmarks = landmarker.detect(image)
        else:
            with FaceLandmarker() as temporary:
                landmarks = temporary.detect(image)
    lm = _check_landmarks(landmarks)

    left, right = eye_centers(lm)
    delta = right - left
    iod = float(np.hypot(delta[0], delta[1]))
    if iod < 1e-6:
        raise ValueError("the two eye centres coincide; cannot align")
    scale = iod_fraction * size / iod
    cos, sin = delta / iod  # rotate by -angle so right - left points along +x
    linear = scale * np.array([[cos, sin], [-sin, cos]])
    mid = (left + right) / 2.0
    target = np.array([size / 2.0, eye_y_fraction * size])
    matrix = np.hstack([linear, (target - linear @ mid)[:, None]])

    aligned = _warp(image, matrix, size, scale)
    return AlignedPortrait(image=aligned, landmarks=transform_landmarks(lm, matrix), matrix=matrix)


def _warp(image: np.ndarray, matrix: np.ndarray, size: int, scale: float) -> np.ndarray:
    """warpAffine with corner-origin landmark coordinates; area-averages first when shrinking a lot."""
    src = image
    # Per-axis factor of a pre-shrink: corner coords of `src` = corner coords of `image` * factor.
    factor = np.ones(2)
    if scale < 0.5:
        # Cubic sampling at < 0.5x aliases; INTER_AREA to about the target scale first.
        height, width = image.shape[:2]
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        src = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        factor = np.array([new_w / width, new_h / height])
    m = matrix.copy()
    m[:, :2] = matrix[:, :2] / factor  # source corner coords are src coords / factor
    # OpenCV puts pixel centres at integer coordinates; landmarks put them at +0.5.
    m[:, 2] = m[:, 2] + m[:, :2] @ np.full(2, 0.5) - 0.5
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
