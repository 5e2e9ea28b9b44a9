"""Evaluation metrics of talking-face videos, as the FlowVQTalker paper (Tables 1-4) reports them.

Against ground truth: SSIM (Wang et al. 2004), M-LMD and F-LMD (landmark distance, Chen et al.
2018), CCA between generated and ground-truth head poses. Without it: CPBD sharpness (Narvekar and
Karam 2011), pose diversity, blinks per minute, audio-visual sync offset and confidence (in the
spirit of SyncNet, Chung and Zisserman 2016), diversity across seeds. Landmarks are MediaPipe's 478
(models.landmarks or models.rig); frames are uint8 RGB. Identity similarity needs a face-embedding
model: :func:`find_face_embedder` says whether one can be loaded offline.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from models.rig import LOWER_INNER_LIP, LOWER_OUTER_LIP, UPPER_INNER_LIP, UPPER_OUTER_LIP

__all__ = [
    "ALIGN_LANDMARKS",
    "FACE_LANDMARKS",
    "MOUTH_LANDMARKS",
    "SyncResult",
    "align_similarity",
    "blink_onsets",
    "blinks_per_minute",
    "canonical_correlations",
    "count_blinks",
    "cpbd",
    "eye_aperture",
    "find_face_embedder",
    "landmark_distance",
    "mouth_aperture",
    "pose_std",
    "seed_diversity",
    "speech_envelope",
    "ssim",
    "av_sync",
]

# Lips (outer and inner contours, each point once): the mouth points of M-LMD.
MOUTH_LANDMARKS: tuple[int, ...] = tuple(
    sorted(set(UPPER_OUTER_LIP + LOWER_OUTER_LIP + UPPER_INNER_LIP + LOWER_INNER_LIP))
)
# The 468 mesh vertices (irises excluded): the face points of F-LMD.
FACE_LANDMARKS: tuple[int, ...] = tuple(range(468))
# Points no expression moves much (eye corners, nose bridge and tip, upper forehead): frames are
# aligned on these, so a mouth that opens does not shift the alignment.
ALIGN_LANDMARKS: tuple[int, ...] = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9)

# Eye aperture: three vertical lid pairs per eye and the eye's corners (MediaPipe indices).
_EYE_PAIRS = (((160, 144), (159, 145), (158, 153)), ((387, 373), (386, 374), (385, 380)))
_EYE_CORNERS = ((33, 133), (263, 362))
_MOUTH_PAIRS = ((82, 87), (13, 14), (312, 317))  # inner-lip gap, middle of the mouth
_OUTER_EYE_CORNERS = (33, 263)  # their distance normalizes the mouth aperture


# --- SSIM -------------------------------------------------------------------------------------


def _gray(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) or gray (H, W) -> float64 luma (ITU-R BT.601) in [0, 255]."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
    """Mean structural similarity of two images (Wang et al. 2004), on luma.

    Gaussian window sigma 1.5 (11 taps), K1 = 0.01, K2 = 0.03, population covariances, borders of 5
    px left out of the mean: skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``. RGB inputs are converted to luma first. 1.0 for identical images.
    """
    x, y = _gray(a), _gray(b)
    if x.shape != y.shape:
        raise ValueError(f"expected images of the same size, got {x.shape} and {y.shape}")
    sigma, truncate = 1.5, 3.5
    pad = int(truncate * sigma + 0.5)

    def blur(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, sigma, truncate=truncate, mode="reflect")

    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s[pad:-pad, pad:-pad].mean())


# --- landmark distances -----------------------------------------------------------------------


def align_similarity(
    src: np.ndarray, dst: np.ndarray, points: tuple[int, ...] = ALIGN_LANDMARKS
) -> np.ndarray:
    """``src`` (N, 2+) mapped by the 2-D similarity (scale, rotation, translation) that best fits its
    ``points`` onto those of ``dst`` in least squares (Umeyama 1991). Returns (N, 2) pixels."""
    s_all = np.asarray(src, dtype=np.float64)[:, :2]
    p = s_all[list(points)]
    q = np.asarray(dst, dtype=np.float64)[list(points), :2]
    mp, mq = p.mean(0), q.mean(0)
    xp, xq = p - mp, q - mq
    u, sig, vt = np.linalg.svd(xq.T @ xp)
    d = np.array([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / max((xp**2).sum(), 1e-12))
    return (s_all - mp) @ (scale * r).T + mq


def landmark_distance(
    generated: np.ndarray,
    truth: np.ndarray,
    points: tuple[int, ...],
    *,
    align: bool = True,
) -> float:
    """LMD: mean Euclidean distance (pixels, x-y) between corresponding landmarks, over frames and ``points``.

    M-LMD uses MOUTH_LANDMARKS, F-LMD FACE_LANDMARKS (Chen et al., ECCV 2018, as the paper's
    references compute them). ``generated``, ``truth``: (T, 478, 2 or 3) in the frames' pixels. With
    ``align`` each generated frame is first mapped onto its ground-truth frame by a similarity fitted
    on ALIGN_LANDMARKS (eye corners, nose, forehead), so a head that sits a little elsewhere does not
    count as a mouth error; what is left is expression (and out-of-plane rotation).
    """
    g = np.asarray(generated, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if g.shape != t.shape or g.ndim != 3 or g.shape[2] < 2:
        raise ValueError(f"expected two (T, N, 2+) landmark arrays of one shape, got {g.shape} and {t.shape}")
    idx = list(points)
    dists = []
    for gf, tf in zip(g, t, strict=True):
        gf2 = align_similarity(gf, tf) if align else gf[:, :2]
        dists.append(np.linalg.norm(gf2[idx] - tf[idx, :2], axis=1).mean())
    return float(np.mean(dists)) if dists else float("nan")


# --- sharpness --------------------------------------------------------------------------------


def _edge_widths(gray: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Marziliano et al. (2002) edge widths along rows at ``edges`` (bool (H, W)); 0 where undefined.

    For an edge pixel whose intensity rises to the right, the width is the distance between the
    local minimum to its left and the local maximum to its right (the reverse for falling edges).
    Vectorized: for every pixel, the next/previous index where the row stops rising (falling).
    """
    h, w = gray.shape
    d = np.diff(gray, axis=1)  # (H, W-1), d[:, j] = I[j+1] - I[j]
    cols = np.broadcast_to(np.arange(w), (h, w))

    def next_true(mask: np.ndarray) -> np.ndarray:
        idx = np.where(mask, cols, w - 1)
        return np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]

    def prev_true(mask: np.ndarray) -> np.ndarray:
        idx = np.where(mask, cols, 0)
        return np.maximum.accumulate(idx, axis=1)

    pad = np.zeros((h, 1))
    after = np.concatenate([d, pad], axis=1)  # I[j+1] - I[j], 0 at the right border
    before = np.concatenate([pad, d], axis=1)  # I[j] - I[j-1], 0 at the left border
    rise_end = next_true(after <= 0)  # local max to the right of a rising edge
    rise_start = prev_true(before <= 0)  # local min to the left
    fall_end = next_true(after >= 0)
    fall_start = prev_true(before >= 0)
    grad = after + before
    width = np.where(grad > 0, rise_end - rise_start, np.where(grad < 0, fall_end - fall_start, 0))
    return np.where(edges, width, 0)


def cpbd(image: np.ndarray, *, block: int = 64) -> float:
    """CPBD sharpness in [0, 1] (Narvekar and Karam 2011): higher is sharper.

    Canny edges (OpenCV, thresholds 25/50 of 255) of the luma whose gradient is mostly horizontal get
    a Marziliano width w; in each 64x64 block with more than 0.2 % edge pixels the just-noticeable
    blur width is 5 px (block contrast <= 50) or 3 px, the probability of seeing blur is
    1 - exp(-(w / w_JNB) ** 3.6), and CPBD is the fraction of edge pixels where it is at most
    P_JNB = 63 % (= 1 - 1/e, reached at w = w_JNB). A step edge (w = 1) is sharp; a 4 px ramp in a
    contrasty block is not. NaN for an image without edges.
    """
    g = _gray(image)
    g8 = np.clip(g, 0, 255).astype(np.uint8)
    edges = cv2.Canny(g8, 25, 50) > 0
    gx = cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)
    edges &= np.abs(gx) >= np.abs(gy)  # widths are measured along rows: vertical-ish edges only
    widths = _edge_widths(g, edges)
    h, w = g.shape
    probs = []
    for y0 in range(0, h - block + 1, block):
        for x0 in range(0, w - block + 1, block):
            e = edges[y0 : y0 + block, x0 : x0 + block]
            if e.sum() <= 0.002 * block * block:
                continue
            tile = g[y0 : y0 + block, x0 : x0 + block]
            w_jnb = 5.0 if tile.max() - tile.min() <= 50 else 3.0
            wb = widths[y0 : y0 + block, x0 : x0 + block][e]
            wb = wb[wb > 0]
            probs.append(1.0 - np.exp(-((wb / w_jnb) ** 3.6)))
    if not probs:
        return float("nan")
    p = np.concatenate(probs)
    # P_JNB = 63 % is 1 - 1/e, the probability at w = w_JNB: an edge is sharp up to the JNB width.
    return float((p <= 1.0 - np.exp(-1.0) + 1e-9).mean()) if len(p) else float("nan")


# --- pose ---------------------------------------------------------------------------------------


def pose_std(pose: np.ndarray) -> np.ndarray:
    """Pose diversity: the standard deviation over time of each of the 6 pose dimensions, (6,).

    ``pose`` (T, 6): yaw, pitch, roll (radians), tx, ty, tz (inter-ocular distances). A still head gives 0.
    """
    pose = np.asarray(pose, dtype=np.float64)
    if pose.ndim != 2 or pose.shape[1] != 6:
        raise ValueError(f"expected a (T, 6) pose sequence, got shape {pose.shape}")
    return pose.std(axis=0)


def canonical_correlations(x: np.ndarray, y: np.ndarray, *, rel_tol: float = 1e-6) -> np.ndarray:
    """Canonical correlations (descending, min(Dx, Dy) values in [0, 1]) of two sequences (T, Dx), (T, Dy).

    CCA between generated and ground-truth poses: 1 where some linear combination of one sequence
    follows a combination of the other exactly, 0 where none does. Directions with no variance
    (below ``rel_tol`` of the largest) are dropped and count as 0: a still head correlates with nothing.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"expected (T, Dx) and (T, Dy) with the same T, got {x.shape} and {y.shape}")
    k = min(x.shape[1], y.shape[1])

    def basis(v: np.ndarray) -> np.ndarray:
        v = v - v.mean(0)
        u, s, _ = np.linalg.svd(v, full_matrices=False)
        if not len(s) or s[0] <= 0:
            return u[:, :0]
        return u[:, s > rel_tol * s[0]]  # orthonormal basis of the centred columns' span

    qx, qy = basis(x), basis(y)
    out = np.zeros(k)
    if qx.shape[1] and qy.shape[1]:
        c = np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)
        out[: min(len(c), k)] = c[:k]
    return out


# --- eyes and mouth ---------------------------------------------------------------------------


def eye_aperture(landmarks: np.ndarray) -> np.ndarray:
    """Eye opening per frame, (T,): mean over both eyes of lid gap / eye width (an eye aspect ratio).

    ``landmarks`` (T, 478 or 468, 2+). About 0.25-0.35 for open eyes, near 0 when closed.
    """
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    out = np.zeros(lm.shape[0])
    for pairs, (a, b) in zip(_EYE_PAIRS, _EYE_CORNERS, strict=True):
        gap = np.mean([np.linalg.norm(lm[:, i] - lm[:, j], axis=-1) for i, j in pairs], axis=0)
        out += gap / np.maximum(np.linalg.norm(lm[:, a] - lm[:, b], axis=-1), 1e-9)
    return out / 2


def mouth_aperture(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap per frame (T,), in units of the outer-eye-corner distance (about 1.3 IODs)."""
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    gap = np.mean([np.linalg.norm(lm[:, i] - lm[:, j], axis=-1) for i, j in _MOUTH_PAIRS], axis=0)
    a, b = _OUTER_EYE_CORNERS
    return gap / np.maximum(np.linalg.norm(lm[:, a] - lm[:, b], axis=-1), 1e-9)


def blink_onsets(aperture: np.ndarray, *, closed: float = 0.7, reopened: float = 0.85) -> np.ndarray:
    """Frames where blinks start in an eye-aperture sequence (T,): closings below ``closed`` x the open level.

    The open level is the 90th percentile (eyes are open most of the time); a blink starts when the
    aperture drops below ``closed`` times it and ends when it rises above ``reopened`` times it
    (hysteresis, so detector jitter at the threshold is not counted twice). A still face: none.
    The defaults suit MediaPipe on video: it reads a fully closed rendered eye as 0.45-0.65 of the
    open level (behind glasses up to 0.7), and open eyes jitter down to about 0.85.
    """
    a = np.asarray(aperture, dtype=np.float64)
    if a.ndim != 1 or not len(a):
        return np.zeros(0, dtype=np.int64)
    level = float(np.percentile(a, 90))
    if level <= 0:
        return np.zeros(0, dtype=np.int64)
    onsets, is_closed = [], False
    for t, v in enumerate(a / level):
        if not is_closed and v < closed:
            onsets.append(t)
            is_closed = True
        elif is_closed and v > reopened:
            is_closed = False
    return np.array(onsets, dtype=np.int64)


def count_blinks(aperture: np.ndarray, *, closed: float = 0.7, reopened: float = 0.85) -> int:
    """The number of :func:`blink_onsets`."""
    return len(blink_onsets(aperture, closed=closed, reopened=reopened))


def blinks_per_minute(aperture: np.ndarray, fps: float, **kwargs: float) -> float:
    """:func:`count_blinks` per minute of a sequence at ``fps`` frames per second."""
    minutes = len(aperture) / fps / 60.0
    return count_blinks(aperture, **kwargs) / minutes if minutes > 0 else float("nan")


# --- audio-visual sync ------------------------------------------------------------------------


def speech_envelope(
    audio: np.ndarray, num_frames: int, *, fps: float = 25.0, sample_rate: int = 16000
) -> np.ndarray:
    """RMS of the audio in each video frame's 1/fps slice (frame k shows time k / fps), (num_frames,)."""
    audio = np.asarray(audio, dtype=np.float64)
    hop = sample_rate / fps
    out = np.zeros(num_frames)
    for k in range(num_frames):
        seg = audio[int(round(k * hop)) : int(round((k + 1) * hop))]
        out[k] = float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0
    return out


class SyncResult(NamedTuple):
    offset: int  # frames; > 0: the mouth follows the sound by that many frames
    confidence: float  # correlation at the offset minus the median over all offsets searched
    correlation: float  # Pearson r of mouth aperture and speech envelope at the offset
    correlation_at_zero: float


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    # ptp, not std: the std of a constant float array can come out as 1e-17 instead of 0.
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def av_sync(mouth: np.ndarray, envelope: np.ndarray, *, max_offset: int = 15) -> SyncResult:
    """Audio-visual offset and confidence, in the spirit of SyncNet's (Chung and Zisserman 2016).

    SyncNet slides the audio against the video over +-15 frames and takes the offset of the smallest
    embedding distance, with confidence = median distance - smallest distance. Here the signals are
    the mouth aperture (T,) and the speech envelope (T,), the score is their Pearson correlation
    over the overlapping frames, the offset maximizes it and the confidence is the best correlation
    minus the median over offsets. A mouth that is the envelope delayed by k frames gives offset k.
    """
    m = np.asarray(mouth, dtype=np.float64)
    e = np.asarray(envelope, dtype=np.float64)
    if m.shape != e.shape or m.ndim != 1:
        raise ValueError(f"expected two (T,) sequences of one length, got {m.shape} and {e.shape}")
    max_offset = min(max_offset, max(len(m) - 3, 0))
    scores = {}
    for k in range(-max_offset, max_offset + 1):
        # corr(mouth[t], env[t - k]) over the frames where both exist
        scores[k] = _corr(m[max(k, 0) : len(m) + min(k, 0)], e[max(-k, 0) : len(e) + min(-k, 0)])
    best = max(scores, key=lambda k: (scores[k], -abs(k)))
    conf = scores[best] - float(np.median(list(scores.values())))
    return SyncResult(best, conf, scores[best], scores[0])


# --- diversity and identity -------------------------------------------------------------------


def seed_diversity(samples: np.ndarray) -> float:
    """Diversity across seeds for one input: samples (S, T, D) -> the standard deviation over the S
    seeds, averaged over frames and dimensions. 0 when every seed gives the same sequence."""
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 3 or s.shape[0] < 2:
        raise ValueError(f"expected (S >= 2, T, D) samples, got shape {s.shape}")
    return float(s.std(axis=0).mean())


_EMBEDDERS = ("insightface", "facenet_pytorch", "face_recognition", "deepface", "arcface")


def find_face_embedder() -> str | None:
    """The importable face-embedding package (with bundled weights) for identity similarity, or None.

    Checks ``insightface``, ``facenet_pytorch``, ``face_recognition``, ``deepface`` and ``arcface``;
    all of them download or need separately installed weights except ``face_recognition`` (dlib's
    model in a wheel). MediaPipe 0.10.21 ships no face-embedding model.
    """
    for name in _EMBEDDERS:
        if importlib.util.find_spec(name) is not None:
            return name
    return None
