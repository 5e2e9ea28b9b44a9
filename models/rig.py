"""Sparse 3D morphable face rig on the MediaPipe face mesh (478 vertices).

shape(beta) = neutral + sum_i beta_i * B_i, with the 52 ARKit blendshapes authored as
smooth displacement fields over the mesh, and a 6-d pose (yaw, pitch, roll, tx, ty, tz)
relative to the source photo's own pose. See DESIGN.md, "Face representation".

Coordinates: the *canonical* frame is the source face's own frame, in units of its
inter-ocular distance (IOD), x towards the image right, y down, z away from the camera.
Image landmarks are pixels (x, y) plus depth z in pixels, as MediaPipe gives them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import lsq_linear

__all__ = [
    "BLENDSHAPE_NAMES",
    "EMOTIONS",
    "NUM_BLENDSHAPES",
    "POSE_NAMES",
    "FitResult",
    "Rig",
    "RigConfig",
    "emotion_coefficients",
    "euler_to_matrix",
    "matrix_to_euler",
    "mesh_triangles",
]

# ARKit blendshape names, in the order MediaPipe's blendshape model also uses (minus its _neutral).
# "Left"/"Right" are the subject's: subject-left appears on the image right.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
    "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight", "tongueOut",
)  # fmt: skip
NUM_BLENDSHAPES = len(BLENDSHAPE_NAMES)
assert NUM_BLENDSHAPES == 52
_IDX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}

POSE_NAMES: tuple[str, ...] = ("yaw", "pitch", "roll", "tx", "ty", "tz")
EMOTIONS: tuple[str, ...] = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")

NUM_LANDMARKS = 478

# --- MediaPipe index sets (public facts of the face mesh topology) -------------------------
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
# Image-left eye is the subject's right eye (ARKit "Right").
EYE_RIGHT_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_RIGHT_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_LEFT_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
EYE_LEFT_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
IRIS_RIGHT = (468, 469, 470, 471, 472)  # centre first
IRIS_LEFT = (473, 474, 475, 476, 477)
BROW_RIGHT = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)  # outer -> inner, upper then lower row
BROW_LEFT = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
NOSE_TIP = 1
CHIN = 152
NOSE_WING_RIGHT = (64, 98, 129, 49, 48, 102)
NOSE_WING_LEFT = (294, 327, 358, 279, 278, 331)
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

REGIONS: dict[str, tuple[str, ...]] = {
    "mouth": tuple(n for n in BLENDSHAPE_NAMES if n.startswith(("mouth", "jaw", "cheekPuff", "tongue"))),
    "eyes": tuple(n for n in BLENDSHAPE_NAMES if n.startswith("eye")),
    "brows": tuple(n for n in BLENDSHAPE_NAMES if n.startswith("brow")),
    "cheeks_nose": tuple(n for n in BLENDSHAPE_NAMES if n.startswith(("cheekSquint", "noseSneer"))),
}


@dataclass(frozen=True)
class RigConfig:
    """Rig constants. Distances are in units of the face's inter-ocular distance (IOD)."""

    jaw_open_rad: float = 0.32  # jaw rotation at jawOpen = 1
    camera_distance: float = 9.0  # IOD units; sets how tz scales the face
    fit_z_weight: float = 0.3  # MediaPipe depth is noisier than x, y
    fit_iters: int = 150  # projected-gradient iterations per fit
    fit_l2: float = 2e-3  # ridge on the coefficients (keeps near-duplicate shapes apart)
    fit_rounds: int = 2  # alternate pose and expression this many times
    fit_l1: float = 0.01  # sparsity: a weight must explain this much before it turns on
    pivot: tuple[float, float, float] = (0.0, 0.5, 1.1)  # head rotation centre, canonical frame (IOD)

    def __post_init__(self) -> None:
        if not 0.0 < self.jaw_open_rad < 1.0:
            raise ValueError(f"jaw_open_rad must be in (0, 1) rad, got {self.jaw_open_rad}")
        if self.camera_distance <= 1.0:
            raise ValueError(f"camera_distance must be > 1 IOD, got {self.camera_distance}")


class FitResult(NamedTuple):
    exp: np.ndarray  # (52,) float32 in [0, 1]
    pose: np.ndarray  # (6,) float32: yaw, pitch, roll (rad), tx, ty, tz (IOD)
    residual: float  # RMS landmark error after the fit, in IOD units


# --- geometry helpers --------------------------------------------------------------------


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation in image axes (x right, y down, z away) with DESIGN.md's signs.

    yaw > 0 turns the nose to the image right, pitch > 0 lowers the chin, roll > 0 is clockwise.
    R = Rz(roll) @ Ry(yaw) @ Rx(pitch).
    """
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp_ = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp_], [0.0, sp_, cp]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def matrix_to_euler(r: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_to_matrix` (yaw in (-pi/2, pi/2))."""
    # r[2] = [sy, cy*sp, cy*cp]; r[0,0] = cr*cy, r[1,0] = sr*cy
    yaw = float(np.arcsin(np.clip(r[2, 0], -1.0, 1.0)))
    pitch = float(np.arctan2(r[2, 1], r[2, 2]))
    roll = float(np.arctan2(r[1, 0], r[0, 0]))
    return yaw, pitch, roll


def _umeyama(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted similarity dst ~ s * R @ src + t. src, dst: (N, 3); w: (N,). Returns s, R, t."""
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    r = u @ np.diag(d) @ vt
    var_s = float(w @ (xs**2).sum(1))
    s = float((sig * d).sum() / var_s)
    t = mu_d - s * r @ mu_s
    return s, r, t


def _tesselation_edges() -> np.ndarray:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    return np.array(sorted(tuple(sorted(e)) for e in FACEMESH_TESSELATION), dtype=np.int64)


_TRIANGLES: np.ndarray | None = None


def mesh_triangles() -> np.ndarray:
    """The face mesh's 852 triangles, (852, 3) int, recovered from MediaPipe's edge list."""
    global _TRIANGLES
    if _TRIANGLES is None:
        edges = _tesselation_edges()
        adj: dict[int, set[int]] = {}
        for a, b in edges:
            adj.setdefault(int(a), set()).add(int(b))
            adj.setdefault(int(b), set()).add(int(a))
        tris = set()
        for a, b in edges:
            for c in adj[int(a)] & adj[int(b)]:
                tris.add(tuple(sorted((int(a), int(b), c))))
        count: dict[tuple[int, int], int] = {}
        for t in tris:
            for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])):
                count[e] = count.get(e, 0) + 1
        # A 3-cycle whose edges all border three triangles is a separating triangle, not a face.
        faces = [
            t
            for t in sorted(tris)
            if not all(count[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))
        ]
        _TRIANGLES = np.array(faces, dtype=np.int64)
    return _TRIANGLES


# --- the rig -------------------------------------------------------------------------------


class Rig:
    """A face rig built from one source face's landmarks.

    Args:
        landmarks: (478, 3) source landmarks in pixels (x, y) and depth (z, pixels).
        config: rig constants.
    """

    def __init__(self, landmarks: np.ndarray, config: RigConfig | None = None) -> None:
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (NUM_LANDMARKS, 3):
            raise ValueError(f"expected landmarks of shape ({NUM_LANDMARKS}, 3), got {landmarks.shape}")
        if not np.isfinite(landmarks).all():
            raise ValueError("landmarks contain NaN or inf")
        self.config = config or RigConfig()
        self.source_landmarks = landmarks
        eye_r = landmarks[IRIS_RIGHT[0]]
        eye_l = landmarks[IRIS_LEFT[0]]
        self.iod = float(np.linalg.norm((eye_l - eye_r)[:2]))
        if self.iod < 4.0:
            raise ValueError(f"face too small: inter-ocular distance {self.iod:.1f} px")
        # Face frame: x from the image-left eye to the image-right eye, y from brows to chin.
        x = eye_l - eye_r
        x /= np.linalg.norm(x)
        y = landmarks[CHIN] - landmarks[168]
        y -= x * (x @ y)
        y /= np.linalg.norm(y)
        z = np.cross(x, y)
        self.rotation = np.stack([x, y, z], axis=1)  # canonical -> image axes
        self.center = (eye_l + eye_r) / 2.0
        self._pivot = self.rotation @ np.asarray(self.config.pivot, dtype=np.float64)  # image axes, IOD
        self.source_canonical = self.to_canonical(landmarks)  # (478, 3)
        self.basis = _build_basis(self.source_canonical, self.config)  # (52, 478, 3)
        # Measured as the photo shows it (image axes): the face frame's y axis leans in depth with
        # the head's pitch, and a smile's corners sit far behind the lips' middle.
        self.photo_exp = _fit_own_expression(
            self.source_canonical @ self.rotation.T, self.basis @ self.rotation.T
        )
        self.neutral = self.source_canonical - np.tensordot(self.photo_exp, self.basis, axes=1)
        # A blink is built to shut the eye as the photo shows it; a photo with narrowed eyes (a
        # smile, a squint) is opened for neutral, so its blink must travel that much further to
        # shut (or it stops short), and a wide-eyed photo's blink that much less.
        for side, upper, lower in (("Left", EYE_LEFT_UPPER, EYE_LEFT_LOWER), ("Right", EYE_RIGHT_UPPER, EYE_RIGHT_LOWER)):
            up, lo = list(upper[1:-1]), list(lower[1:-1])
            photo_gap = float((self.source_canonical[lo, 1] - self.source_canonical[up, 1]).sum())
            neutral_gap = float((self.neutral[lo, 1] - self.neutral[up, 1]).sum())
            if photo_gap > 1e-6:
                self.basis[_IDX[f"eyeBlink{side}"]] *= float(np.clip(neutral_gap / photo_gap, 0.5, 3.0))
        # Whatever gap the shapes could not explain is closed directly: all zeros = lips together.
        self.neutral += _close_lips(self.neutral)
        self._fit_setup()

    # -- forward ---------------------------------------------------------------------------
    def shape(self, exp: np.ndarray) -> np.ndarray:
        """Canonical 3D shape (478, 3), IOD units, for blendshape weights exp (52,)."""
        exp = _check_exp(exp)
        return self.neutral + np.tensordot(exp, self.basis, axes=1)

    def to_image(self, canonical: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Place canonical points (N, 3) in the source image with pose (6,). Returns pixels (N, 3)."""
        pose = _check_pose(pose)
        rp = euler_to_matrix(pose[0], pose[1], pose[2])
        d = self.config.camera_distance
        scale = self.iod * d / (d + pose[5])
        # The head turns about a pivot inside it (the neck), not about the eyes: the face slides
        # across while the silhouette near the ears barely moves.
        pivot = self._pivot
        y = canonical @ self.rotation.T
        return self.center + scale * ((y - pivot) @ rp.T + pivot + pose[3:6] * np.array([1.0, 1.0, 0.0]))

    def to_canonical(self, landmarks: np.ndarray) -> np.ndarray:
        """Image landmarks (N, 3) in the canonical frame of this face at the source's pose."""
        return (np.asarray(landmarks, dtype=np.float64) - self.center) @ self.rotation / self.iod

    def landmarks(self, exp: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Image landmarks (478, 3) in the source image's pixels for (exp, pose)."""
        return self.to_image(self.shape(exp), pose)

    def calibrated(self, neutral: np.ndarray, shapes: np.ndarray, weight: float) -> Rig:
        """A copy that fits in a landmark detector's own terms.

        Args:
            neutral: (478, 3) landmarks a detector found on this face rendered relaxed, zero pose.
            shapes: (52, 478, 3) landmarks it found with each blendshape alone at ``weight``.

        A detector does not see a rendered face exactly as the rig drew it: a closed mouth's
        inner lips and small motions (brows, lip rolls) come out offset or damped. Fitting
        against what it measured on our own renders removes that bias (MeshWarp.fitting_rig).
        Shapes it barely registers (tongueOut moves no landmark) keep a zero basis.
        """
        neutral = np.asarray(neutral, dtype=np.float64)
        shapes = np.asarray(shapes, dtype=np.float64)
        if neutral.shape != (NUM_LANDMARKS, 3) or shapes.shape != (NUM_BLENDSHAPES, NUM_LANDMARKS, 3):
            raise ValueError(f"expected (478, 3) and (52, 478, 3), got {neutral.shape} and {shapes.shape}")
        to_canon = self.to_canonical
        out = copy.copy(self)
        out.neutral = to_canon(neutral)
        basis = (to_canon(shapes) - out.neutral[None]) / weight
        drawn = np.linalg.norm(self.basis.reshape(NUM_BLENDSHAPES, -1), axis=1)
        seen = np.linalg.norm(basis.reshape(NUM_BLENDSHAPES, -1), axis=1)
        basis[(seen < 0.2 * drawn) | (drawn == 0.0)] = 0.0
        out.basis = basis
        out._fit_setup()
        return out

    # -- fitting ---------------------------------------------------------------------------
    def _fit_setup(self) -> None:
        cfg = self.config
        motion = np.sqrt((self.basis**2).sum(2).max(0))  # (478,) largest displacement of each vertex
        # Rigid alignment trusts vertices that no blendshape moves much (nose bridge, temples).
        self._pose_w = 1.0 / (1.0 + (motion / 0.02) ** 2)
        self._pose_w[list(IRIS_RIGHT) + list(IRIS_LEFT)] = 0.0
        zw = np.array([1.0, 1.0, cfg.fit_z_weight])
        a = (self.basis * zw).reshape(NUM_BLENDSHAPES, -1)  # (52, 478*3), weighted
        self._a = a
        gram = a @ a.T + cfg.fit_l2 * np.eye(NUM_BLENDSHAPES)
        self._gram = gram
        self._step = 1.0 / float(np.linalg.eigvalsh(gram)[-1])
        self._zw = zw

    def _solve_exp(self, residual: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """min ||A^T b - r||^2 + l2 ||b||^2 + l1 sum(b), 0 <= b <= 1 (accelerated projected gradient).

        The L1 term picks which shapes are on (detector noise stops switching on near-duplicate
        shapes); a second pass without it, over those shapes only, removes its shrinkage.
        """
        h = self._a @ (residual * self._zw).ravel()
        b = self._pgd(h - self.config.fit_l1, np.ones(NUM_BLENDSHAPES), init)
        if self.config.fit_l1 > 0.0:
            b = self._pgd(h, (b > 0.0).astype(np.float64), b)
        return b

    def _pgd(self, h: np.ndarray, upper: np.ndarray, init: np.ndarray | None) -> np.ndarray:
        b = np.zeros(NUM_BLENDSHAPES) if init is None else np.minimum(init, upper)
        yk = b.copy()
        tk = 1.0
        g, step = self._gram, self._step
        for _ in range(self.config.fit_iters):
            b_new = np.clip(yk - step * (g @ yk - h), 0.0, upper)
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
            yk = b_new + ((tk - 1.0) / t_new) * (b_new - b)
            b, tk = b_new, t_new
        return b

    def fit(self, landmarks: np.ndarray) -> FitResult:
        """Coefficients (exp, pose) that best explain image landmarks (478, 3) of this face.

        Pose by weighted rigid alignment to the neutral, then blendshapes by bounded least
        squares against the source's own neutral; alternated ``fit_rounds`` times.
        """
        obs = np.asarray(landmarks, dtype=np.float64)
        if obs.shape != (NUM_LANDMARKS, 3):
            raise ValueError(f"expected landmarks of shape ({NUM_LANDMARKS}, 3), got {obs.shape}")
        x = (obs - self.center) / self.iod  # image axes, IOD units
        exp = np.zeros(NUM_BLENDSHAPES)
        d = self.config.camera_distance
        pose = np.zeros(6)
        q = self.neutral
        for _ in range(self.config.fit_rounds):
            src = q @ self.rotation.T  # current model shape in image axes
            s, r, t = _umeyama(src, x, self._pose_w)
            yaw, pitch, roll = matrix_to_euler(r)
            tz = d / s - d
            shift = t / s - self._pivot + r @ self._pivot  # translation about the pivot
            pose = np.array([yaw, pitch, roll, shift[0], shift[1], tz])
            # Undo the pose: observed points back in the canonical frame.
            canon = ((x - t) / s) @ r @ self.rotation
            exp = self._solve_exp(canon - self.neutral, exp)
            q = self.neutral + np.tensordot(exp, self.basis, axes=1)
        err = (canon - q) * self._zw
        return FitResult(exp.astype(np.float32), pose.astype(np.float32), float(np.sqrt((err**2).mean())))


def _check_exp(exp: np.ndarray) -> np.ndarray:
    exp = np.asarray(exp, dtype=np.float64)
    if exp.shape != (NUM_BLENDSHAPES,):
        raise ValueError(f"expected exp of shape ({NUM_BLENDSHAPES},), got {exp.shape}")
    return exp


def _check_pose(pose: np.ndarray) -> np.ndarray:
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (6,):
        raise ValueError(f"expected pose of shape (6,), got {pose.shape}")
    return pose


# --- blendshape authoring ------------------------------------------------------------------


class _Mesh:
    """Graph helpers over the canonical source shape."""

    def __init__(self, v: np.ndarray) -> None:
        self.v = v
        edges = _tesselation_edges()
        n = NUM_LANDMARKS
        length = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)
        w = 1.0 / np.maximum(length, 1e-3)
        i = np.concatenate([edges[:, 0], edges[:, 1]])
        j = np.concatenate([edges[:, 1], edges[:, 0]])
        ww = np.concatenate([w, w])
        adj = sp.coo_matrix((ww, (i, j)), shape=(n, n)).tocsr()
        deg = np.asarray(adj.sum(1)).ravel()
        self.lap = (sp.diags(deg) - adj).tocsr()
        self.in_mesh = deg > 0

    def harmonic(self, pins: dict[int, float], clip: bool = True) -> np.ndarray:
        """Smooth field over the mesh equal to ``pins`` at pinned vertices (harmonic elsewhere)."""
        n = NUM_LANDMARKS
        fixed = np.zeros(n, dtype=bool)
        val = np.zeros(n)
        for k, x in pins.items():
            fixed[k] = True
            val[k] = x
        fixed |= ~self.in_mesh  # iris points are set by the caller
        free = ~fixed
        lff = self.lap[free][:, free]
        rhs = -self.lap[free][:, fixed] @ val[fixed]
        val[free] = spla.spsolve(lff.tocsc(), rhs)
        return np.clip(val, 0.0, 1.0) if clip else val

    def bump(self, centre: tuple[int, ...], radius: float, zero: tuple[int, ...] = ()) -> np.ndarray:
        """1 at ``centre`` vertices, 0 beyond ``radius`` (IOD) from them and at ``zero``."""
        c = self.v[list(centre)]
        dist = np.linalg.norm(self.v[:, None, :2] - c[None, :, :2], axis=2).min(1)
        pins = {int(k): 0.0 for k in np.nonzero(dist > radius)[0]}
        pins.update({k: 0.0 for k in zero})
        pins.update({k: 1.0 for k in centre})
        return self.harmonic(pins)


def _side(v: np.ndarray, sign: float) -> np.ndarray:
    """Soft mask of one side of the face: sign=+1 the image right (subject's left)."""
    return 1.0 / (1.0 + np.exp(-sign * v[:, 0] / 0.06))


def _build_basis(v: np.ndarray, cfg: RigConfig) -> np.ndarray:
    """The 52 displacement fields (52, 478, 3) for canonical source shape v (IOD units)."""
    m = _Mesh(v)
    n = NUM_LANDMARKS
    basis = np.zeros((NUM_BLENDSHAPES, n, 3))

    def put(name: str, disp: np.ndarray) -> None:
        basis[_IDX[name]] += disp

    upper_lip = set(UPPER_INNER_LIP[1:-1]) | set(UPPER_OUTER_LIP[1:-1])
    lower_lip = set(LOWER_INNER_LIP[1:-1]) | set(LOWER_OUTER_LIP[1:-1])
    corners_r = (61, 78)
    corners_l = (291, 308)
    mouth_c = v[[13, 14]].mean(0)
    y_mouth = mouth_c[1]
    y_nose = v[NOSE_TIP, 1]

    # Jaw: lower lip and chin 1, upper lip and everything above the nose 0; harmonic between.
    pins = {k: 0.0 for k in range(n) if m.in_mesh[k] and v[k, 1] < (y_nose + 0.05)}
    pins.update({k: 0.0 for k in upper_lip})
    # The lower lip opens as a lens: full drop in the middle, less towards the corners.
    for chain in (LOWER_INNER_LIP, LOWER_OUTER_LIP):
        for i, k in enumerate(chain[1:-1], start=1):
            pins[k] = float(np.sin(np.pi * i / (len(chain) - 1)) ** 0.7)
    chin = [k for k in range(n) if m.in_mesh[k] and v[k, 1] > y_mouth + 0.35 and abs(v[k, 0]) < 0.35]
    pins.update({k: 1.0 for k in chin})
    w_jaw = m.harmonic(pins)
    lower_lip_w = m.harmonic(
        {**{k: 0.0 for k in upper_lip}, **{k: 1.0 for k in lower_lip},
         **{k: 0.0 for k in range(n) if m.in_mesh[k] and (v[k, 1] > y_mouth + 0.32 or v[k, 1] < y_nose)}}
    )  # fmt: skip
    upper_lip_w = m.harmonic(
        {**{k: 0.0 for k in lower_lip}, **{k: 1.0 for k in upper_lip},
         **{k: 0.0 for k in range(n) if m.in_mesh[k] and (v[k, 1] < y_nose - 0.02 or v[k, 1] > y_mouth + 0.2)}}
    )  # fmt: skip
    mouth_w = np.maximum(lower_lip_w, upper_lip_w)
    for k in corners_r + corners_l:
        mouth_w[k] = 1.0

    # jawOpen: rotation about a hinge behind and below the ears.
    pivot = np.array([0.0, 0.45, 1.1])
    a = cfg.jaw_open_rad
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    # Positive angle about x moves points below the pivot's front (z < pivot) down and back.
    rel = v - pivot
    jaw_disp = (rel @ rot.T) - rel
    jaw_disp[:, 0] -= 0.04 * np.sign(v[:, 0]) * (np.abs(v[:, 0]) < 0.6)  # corners draw in a little
    put("jawOpen", w_jaw[:, None] * jaw_disp)
    put("jawForward", w_jaw[:, None] * np.array([0.0, 0.02, -0.12]))
    put("jawLeft", w_jaw[:, None] * np.array([0.12, 0.0, 0.0]))
    put("jawRight", w_jaw[:, None] * np.array([-0.12, 0.0, 0.0]))
    # mouthClose: the lips meet while the jaw hangs open (undo the lower lip's jaw motion).
    put("mouthClose", -(lower_lip_w * w_jaw)[:, None] * jaw_disp * 0.85)

    for sign, side in ((+1.0, "Left"), (-1.0, "Right")):
        corners = corners_l if sign > 0 else corners_r
        s = _side(v, sign)
        corner_w = m.bump(corners, 0.55, zero=(13, 14, 0, 17))
        cheek_w = m.bump(corners, 0.75)
        put(f"mouthSmile{side}", corner_w[:, None] * np.array([0.12 * sign, -0.13, 0.05]))
        put(
            f"mouthSmile{side}",
            (cheek_w * s * (v[:, 1] < y_mouth))[:, None] * np.array([0.02 * sign, -0.04, -0.02]),
        )
        put(f"mouthFrown{side}", corner_w[:, None] * np.array([0.0, 0.11, 0.0]))
        put(f"mouthDimple{side}", corner_w[:, None] * np.array([0.07 * sign, 0.0, 0.05]))
        put(f"mouthStretch{side}", corner_w[:, None] * np.array([0.1 * sign, 0.05, 0.0]))
        put(f"mouthStretch{side}", (lower_lip_w * s)[:, None] * np.array([0.0, 0.06, 0.0]))
        press = np.zeros((n, 3))
        press[:, 1] = (upper_lip_w - lower_lip_w) * s * 0.035  # lips thin towards each other
        put(f"mouthPress{side}", press)
        put(f"mouthLowerDown{side}", (lower_lip_w * s)[:, None] * np.array([0.0, 0.12, 0.0]))
        put(f"mouthUpperUp{side}", (upper_lip_w * s)[:, None] * np.array([0.0, -0.1, -0.02]))
        cheek_sq = m.bump(
            tuple(k for k in ((50, 101, 118, 117, 123) if sign < 0 else (280, 330, 347, 346, 352))), 0.45
        )
        put(f"cheekSquint{side}", cheek_sq[:, None] * np.array([0.0, -0.07, -0.02]))
        wing = NOSE_WING_LEFT if sign > 0 else NOSE_WING_RIGHT
        sneer = m.bump(wing, 0.45)
        put(f"noseSneer{side}", sneer[:, None] * np.array([0.01 * sign, -0.08, 0.0]))
        put(f"noseSneer{side}", (upper_lip_w * s)[:, None] * np.array([0.0, -0.03, 0.0]))

        # Eyes.
        upper = EYE_LEFT_UPPER if sign > 0 else EYE_RIGHT_UPPER
        lower = EYE_LEFT_LOWER if sign > 0 else EYE_RIGHT_LOWER
        iris = IRIS_LEFT if sign > 0 else IRIS_RIGHT
        up = v[list(upper)]
        lo = v[list(lower)]
        meet = up + 0.8 * (lo - up)
        blink = np.zeros((n, 3))
        blink[list(upper)] = meet - up
        blink[list(lower)] = meet - lo
        lid_ring = _ring_above(m, upper, lower, v)
        for k, frac in lid_ring.items():
            j = int(np.argmin(np.abs(up[:, 0] - v[k, 0])))
            blink[k] = (meet[j] - up[j]) * frac
        eye_x = up[:, 0]
        for k in iris:
            j = int(np.argmin(np.abs(eye_x - v[k, 0])))
            blink[k] = meet[j] - v[k]
        put(f"eyeBlink{side}", blink)
        eye_h = float(np.mean(lo[2:-2, 1] - up[2:-2, 1]))
        eye_w = float(np.abs(up[0, 0] - up[-1, 0]))
        squint = np.zeros((n, 3))
        squint[list(lower)] = np.array([0.0, -0.35 * eye_h, 0.0])
        squint[list(upper)] = np.array([0.0, 0.12 * eye_h, 0.0])
        below = m.bump(tuple(lower[1:-1]), 0.18, zero=tuple(upper))
        squint += (below * (v[:, 1] > lo[:, 1].mean()))[:, None] * np.array([0.0, -0.3 * eye_h, 0.0])
        squint[list(lower)] = np.array([0.0, -0.35 * eye_h, 0.0])
        put(f"eyeSquint{side}", squint)
        wide = np.zeros((n, 3))
        wide[list(upper[1:-1])] = np.array([0.0, -0.45 * eye_h, 0.0])
        for k, frac in lid_ring.items():
            wide[k] = np.array([0.0, -0.45 * eye_h * frac * 1.4, 0.0])
        wide[list(lower[1:-1])] = np.array([0.0, 0.08 * eye_h, 0.0])
        put(f"eyeWide{side}", wide)
        # Gaze: the iris moves inside the eye; the upper lid follows vertical gaze a little.
        # "In" is towards the nose: image-left for the image-right (Left) eye.
        look = {"Up": np.array([0.0, -0.35 * eye_h, 0.0]), "Down": np.array([0.0, 0.38 * eye_h, 0.0]),
                "In": np.array([-0.17 * eye_w * sign, 0.0, 0.0]), "Out": np.array([0.17 * eye_w * sign, 0.0, 0.0])}  # fmt: skip
        for direction, dv in look.items():
            d = np.zeros((n, 3))
            d[list(iris)] = dv
            if direction in ("Up", "Down"):
                # The lid follows the gaze, less than the iris (or a downward look reads as a blink).
                d[list(upper[1:-1])] = dv * 0.3
                for k, frac in lid_ring.items():
                    d[k] = dv * 0.3 * frac
            put(f"eyeLook{direction}{side}", d)

        # Brows.
        brow = BROW_LEFT if sign > 0 else BROW_RIGHT
        outer, inner = brow[0:2] + brow[5:7], brow[3:5] + brow[8:10]
        brow_w = m.bump(tuple(brow), 0.3, zero=tuple(upper))
        outer_w = m.bump(outer, 0.35, zero=tuple(upper) + tuple(inner))
        # AU4 lowers the whole brow and pulls its inner end down and in hardest (the scowl that
        # reads as anger at a glance; a brow lowered only a little reads as concentration).
        put(f"browDown{side}", brow_w[:, None] * np.array([-0.045 * sign, 0.11, 0.0]))
        inner_w = m.bump(inner, 0.3, zero=tuple(upper))
        put(f"browDown{side}", inner_w[:, None] * np.array([-0.06 * sign, 0.07, 0.0]))
        put(f"browOuterUp{side}", outer_w[:, None] * np.array([0.0, -0.11, 0.0]))

    both_inner = BROW_RIGHT[3:5] + BROW_RIGHT[8:10] + BROW_LEFT[3:5] + BROW_LEFT[8:10]
    inner_up = m.bump(both_inner, 0.35, zero=EYE_LEFT_UPPER + EYE_RIGHT_UPPER)
    put("browInnerUp", inner_up[:, None] * np.array([0.0, -0.12, 0.0]))
    # Pull the inner ends of the brows together a little (AU1 with some AU4-free corrugation).
    put("browInnerUp", (inner_up * np.sign(v[:, 0]))[:, None] * np.array([-0.01, 0.0, 0.0]))

    # Mouth shapes that act on both lips.
    to_c = mouth_c - v
    to_c[:, 1] *= 0.3
    put("mouthPucker", mouth_w[:, None] * (to_c * np.array([0.35, 1.0, 0.0]) + np.array([0.0, 0.0, -0.08])))
    funnel = np.zeros((n, 3))
    funnel[:, 1] = lower_lip_w * 0.09 - upper_lip_w * 0.06
    funnel += mouth_w[:, None] * to_c * np.array([0.25, 0.0, 0.0])
    funnel[:, 2] -= mouth_w * 0.06
    put("mouthFunnel", funnel)
    put("mouthLeft", mouth_w[:, None] * np.array([0.12, 0.0, 0.0]))
    put("mouthRight", mouth_w[:, None] * np.array([-0.12, 0.0, 0.0]))
    # Rolls: the outer lip line moves towards the inner one (the red of the lip disappears).
    roll_lo = np.zeros((n, 3))
    roll_up = np.zeros((n, 3))
    for i, k in enumerate(LOWER_OUTER_LIP[1:-1], start=1):
        roll_lo[k] = (v[LOWER_INNER_LIP[i]] - v[k]) * 0.6
    for i, k in enumerate(UPPER_OUTER_LIP[1:-1], start=1):
        roll_up[k] = (v[UPPER_INNER_LIP[i]] - v[k]) * 0.6
    put("mouthRollLower", roll_lo)
    put("mouthRollUpper", roll_up)
    put("mouthShrugLower", lower_lip_w[:, None] * np.array([0.0, -0.07, -0.03]))
    chin_w = m.bump(tuple(chin), 0.25)
    put("mouthShrugLower", chin_w[:, None] * np.array([0.0, -0.04, 0.0]))
    put("mouthShrugUpper", upper_lip_w[:, None] * np.array([0.0, -0.05, -0.02]))
    cheeks = m.bump((205, 425, 50, 280, 187, 411), 0.4, zero=tuple(upper_lip) + tuple(lower_lip))
    puff = np.zeros((n, 3))
    puff[:, 0] = cheeks * np.sign(v[:, 0]) * 0.08
    puff[:, 2] = -cheeks * 0.04
    put("cheekPuff", puff)
    # tongueOut moves no landmark: it is texture only (the renderer draws the tongue).
    return basis


def _ring_above(m: _Mesh, upper: tuple[int, ...], lower: tuple[int, ...], v: np.ndarray) -> dict[int, float]:
    """Vertices just above an upper eyelid, with the fraction of its motion they follow."""
    contour = set(upper) | set(lower)
    out: dict[int, float] = {}
    lap = m.lap.tocoo()
    nbrs: dict[int, set[int]] = {}
    for i, j in zip(lap.row, lap.col, strict=True):
        if i != j:
            nbrs.setdefault(int(i), set()).add(int(j))
    top = v[list(upper)]
    for k in upper[1:-1]:
        for j in nbrs.get(k, ()):
            if j in contour:
                continue
            # above the lid line, and close: a short falloff keeps brows and glasses still.
            xi = int(np.argmin(np.abs(top[:, 0] - v[j, 0])))
            gap = top[xi, 1] - v[j, 1]
            if 0.0 < gap < 0.12:
                out[j] = max(out.get(j, 0.0), 0.35 * (1.0 - gap / 0.12))
    return out


# --- the photo's own expression --------------------------------------------------------------


def _close_lips(v: np.ndarray) -> np.ndarray:
    """Displacement (478, 3) that brings the inner lip chains of v together, smoothly spread."""
    m = _Mesh(v)
    up = np.array(UPPER_INNER_LIP[1:-1])
    lo = np.array(LOWER_INNER_LIP[1:-1])
    gap = v[lo] - v[up]
    # Closed lips meet in depth too: the face frame's y axis leans in depth wherever the head is
    # pitched, so a gap closed in y alone still shows a sliver of teeth in the image.
    if float(np.abs(gap[:, 1:]).max()) < 1e-3:
        return np.zeros_like(v)
    mouth = v[list(UPPER_INNER_LIP)].mean(0)
    far = [k for k in range(NUM_LANDMARKS) if m.in_mesh[k] and np.linalg.norm((v[k] - mouth)[:2]) > 0.45]
    out = np.zeros_like(v)
    for axis in (1, 2):
        pins = {k: 0.0 for k in far}
        # The lower lip travels most of the way (the jaw hangs; the upper lip barely moves).
        pins.update({int(k): -0.7 * float(g) for k, g in zip(lo, gap[:, axis], strict=True)})
        pins.update({int(k): 0.3 * float(g) for k, g in zip(up, gap[:, axis], strict=True)})
        out[:, axis] = m.harmonic(pins, clip=False)
    out[~m.in_mesh] = 0.0
    return out


_OWN_SHAPES = (
    "jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "mouthFrownLeft", "mouthFrownRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight",
)  # fmt: skip


# Ridge cost per own shape (default 1e-3): lip-only shapes explain an open smile's lips only
# where the smile and the jaw cannot.
_OWN_COST = {
    "mouthUpperUpLeft": 2e-2, "mouthUpperUpRight": 2e-2, "mouthLowerDownLeft": 2e-2,
    "mouthLowerDownRight": 2e-2, "mouthFrownLeft": 1e-2, "mouthFrownRight": 1e-2,
}  # fmt: skip
_OWN_SYMMETRY = 0.3
_OWN_CHEEKS = 2.0  # cheek raise undone per unit of the photo's own smile


def _own_features(v: np.ndarray) -> np.ndarray:
    """Measurements that are near zero on a relaxed face whoever it is (image axes, IOD units)."""
    up = v[list(UPPER_INNER_LIP[1:-1])]
    lo = v[list(LOWER_INNER_LIP[1:-1])]
    gap = (lo - up)[:, 1]  # closed lips: zero at every column
    mid = 0.5 * (v[13] + v[14])
    # Relaxed lip corners sit about level with the lips' midline or a little below it (a downturned
    # mouth at rest is no frown); a smile lifts them above it.
    c = np.array([v[61, 1], v[291, 1]]) - mid[1]
    corner = (np.minimum(c + 0.02, 0.0) + np.maximum(c - 0.05, 0.0)) * 2.0
    eyes = []
    for upper, lower in ((EYE_LEFT_UPPER, EYE_LEFT_LOWER), (EYE_RIGHT_UPPER, EYE_RIGHT_LOWER)):
        h = float(np.mean(v[list(lower[2:-2]), 1] - v[list(upper[2:-2]), 1]))
        w = float(abs(v[upper[0], 0] - v[upper[-1], 0]))
        ratio = h / max(w, 1e-6)
        # Typical open-eye height/width is 0.25-0.38; only outside that range is it expression.
        eyes.append(min(ratio - 0.25, 0.0) + max(ratio - 0.4, 0.0))
    # Relaxed mouths are about 0.8-0.9 IOD wide; a broad smile pulls the corners apart.
    width = max(float(v[291, 0] - v[61, 0]) - 0.9, 0.0)
    return np.concatenate([gap * 2.0, corner * 2.0, [width * 2.0], np.array(eyes) * 0.5])


def _fit_own_expression(v: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """The source photo's expression: blendshapes that bring its features back to relaxed.

    v (478, 3) and basis (52, 478, 3) in image axes (IOD units), as the photo shows them.
    """
    f0 = _own_features(v)
    idx = [_IDX[n] for n in _OWN_SHAPES]
    eps = 0.1
    jac = np.stack([(_own_features(v - eps * basis[i]) - f0) / eps for i in idx], axis=1)
    best: tuple[float, np.ndarray] | None = None
    # Smile and frown are antagonists: together they buy a wide mouth whose corners neither rise
    # nor fall, which is how an open smile seen against its own parted lips would otherwise be
    # explained (and then only half undone). Fit with one family or the other, keep the closer.
    for banned in (("mouthFrownLeft", "mouthFrownRight"), ("mouthSmileLeft", "mouthSmileRight")):
        keep = np.array([n not in banned for n in _OWN_SHAPES])
        names = [n for n, k in zip(_OWN_SHAPES, keep, strict=True) if k]
        a = jac[:, keep]
        # Solve a @ b ~ -f0 with 0 <= b <= 1 (moving *back* by b removes the expression). The
        # lip-only shapes cost more than the smile and jaw they can mimic, and a face's two
        # sides are taken as alike unless the photo insists.
        ridge = np.diag([np.sqrt(_OWN_COST.get(n, 1e-3)) for n in names])
        pairs = [(i, names.index(n.replace("Left", "Right"))) for i, n in enumerate(names) if "Left" in n]
        sym = np.zeros((len(pairs), len(names)))
        for r, (i, j) in enumerate(pairs):
            sym[r, i], sym[r, j] = _OWN_SYMMETRY, -_OWN_SYMMETRY
        rows = np.vstack([a, ridge, sym])
        fit = lsq_linear(rows, np.concatenate([-f0, np.zeros(len(rows) - len(f0))]), bounds=(0.0, 1.0))
        b = np.zeros(len(idx))
        b[keep] = fit.x
        if best is None or fit.cost < best[0] - 1e-9:
            best = (float(fit.cost), b)
    assert best is not None
    out = np.zeros(NUM_BLENDSHAPES)
    # Below this a weight only soaks up landmark noise (a relaxed photo has no expression to undo).
    out[idx] = np.where(best[1] >= 0.07, best[1], 0.0)
    # A smile raises the cheeks (AU6), which no landmark measurement here sees: undo them with it.
    # The fitted smile under-reads an open smile (jaw and lip shapes explain most of its mouth),
    # and a broad one lifts the cheeks fully (the happy preset pairs smile 1.0 with 0.85).
    smile = max(
        float(out[[_IDX["mouthSmileLeft"], _IDX["mouthSmileRight"]]].mean()),
        0.5 * float(out[[_IDX["mouthUpperUpLeft"], _IDX["mouthUpperUpRight"]]].mean()),
    )
    if smile >= 0.15:  # (less is the fit's noise on a mouth that only opens)
        out[[_IDX["cheekSquintLeft"], _IDX["cheekSquintRight"]]] = min(_OWN_CHEEKS * smile, 1.0)
    return out


# --- emotions ---------------------------------------------------------------------------------

# Prototypes from FACS action units (EMFACS), translated to ARKit blendshapes and pushed towards the
# clear, canonical expression of each emotion: with the renderer's texture layer (teeth, sclera,
# creases) these are what people and expression classifiers read (issue 3).
_EMOTION_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    # AU6 + AU12 + AU25 (+ a little AU1 + AU2): a broad smile showing the upper teeth, cheeks raised,
    # eyes narrowed (Duchenne) under brows lifted a little (narrowed eyes under level brows glare)
    "happy": {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.85, "cheekSquintRight": 0.85,
              "eyeSquintLeft": 0.45, "eyeSquintRight": 0.45, "jawOpen": 0.22, "mouthUpperUpLeft": 0.4,
              "mouthUpperUpRight": 0.4, "mouthLowerDownLeft": 0.35, "mouthLowerDownRight": 0.35,
              "mouthDimpleLeft": 0.2, "mouthDimpleRight": 0.2, "browInnerUp": 0.2, "browOuterUpLeft": 0.2,
              "browOuterUpRight": 0.2},
    # AU1 + AU15 + AU17 + AU20 (+ AU43 lids half down): inner brows up (no AU4: with it the lowered
    # brows read as anger or concentration), corners pulled down and out, chin raised under a
    # pushed-up lower lip, heavy lids over a lowered gaze. Tuned with two outside classifiers on 11
    # real photos and checked on 10 others: both read it as sad more often than the AU4 version.
    "sad": {"browInnerUp": 1.0, "mouthFrownLeft": 1.0, "mouthFrownRight": 1.0, "mouthShrugLower": 0.9,
            "mouthStretchLeft": 1.0, "mouthStretchRight": 1.0, "mouthRollLower": 0.4, "eyeLookDownLeft": 0.4,
            "eyeLookDownRight": 0.4, "eyeBlinkLeft": 0.6, "eyeBlinkRight": 0.6},
    # AU1 + AU2 + AU5 + AU26 + AU27: brows high, eyes wide (white above the iris), jaw dropped, lips
    # pushed into a round O over the teeth (a wide mouth showing the upper teeth reads as shouting)
    "surprised": {"browInnerUp": 1.0, "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0, "eyeWideLeft": 1.0,
                  "eyeWideRight": 1.0, "jawOpen": 1.0, "mouthFunnel": 1.0, "mouthPucker": 0.4},
    # AU1 + AU2 + AU4 + AU5 + AU20 + AU26: brows up and drawn hard together (the knitted brows are
    # what tells fear from surprise), eyes wide, the jaw dropped and the lips stretched tight sideways
    # and down round a dark open mouth, both rows of teeth showing (teeth clenched behind stretched
    # lips read as disgust; a little rounding keeps the open stretched mouth from reading as a grin)
    "fear": {"browInnerUp": 1.0, "browOuterUpLeft": 0.6, "browOuterUpRight": 0.6, "browDownLeft": 0.6,
             "browDownRight": 0.6, "eyeWideLeft": 1.0, "eyeWideRight": 1.0, "mouthStretchLeft": 1.0,
             "mouthStretchRight": 1.0, "jawOpen": 0.7, "mouthLowerDownLeft": 0.5, "mouthLowerDownRight": 0.5,
             "mouthFrownLeft": 1.0, "mouthFrownRight": 1.0, "mouthFunnel": 0.3},
    # AU4 + AU5 + AU7 + AU9 + AU23 + AU24 + AU17: brows hard down and together over glaring eyes, the
    # nose a little wrinkled, lips pressed thin with the corners turned down and the chin pushed up.
    # (An open mouth showing teeth reads as a laugh on any face that smiles easily.)
    "angry": {"browDownLeft": 1.0, "browDownRight": 1.0, "eyeWideLeft": 0.5, "eyeWideRight": 0.5,
              "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3, "noseSneerLeft": 0.5, "noseSneerRight": 0.5,
              "mouthPressLeft": 0.6, "mouthPressRight": 0.6, "mouthFrownLeft": 0.6, "mouthFrownRight": 0.6,
              "mouthShrugLower": 0.4},
    # AU9 + AU10 + AU15 + AU17 + AU25 (+ a little AU4): nose wrinkled, upper lip raised high off the
    # upper teeth, corners pulled down, lips just parted, brows lowered a little (lowered hard, with
    # the bared teeth they read as anger)
    "disgusted": {"noseSneerLeft": 1.0, "noseSneerRight": 1.0, "mouthUpperUpLeft": 0.6, "mouthUpperUpRight": 0.6,
                  "mouthFrownLeft": 0.8, "mouthFrownRight": 0.8, "browDownLeft": 0.3, "browDownRight": 0.3,
                  "cheekSquintLeft": 0.6, "cheekSquintRight": 0.6, "eyeSquintLeft": 0.6, "eyeSquintRight": 0.6,
                  "mouthShrugLower": 0.3, "jawOpen": 0.1, "mouthLowerDownLeft": 0.2, "mouthLowerDownRight": 0.2},
    # unilateral AU12 + AU14
    "contempt": {"mouthSmileLeft": 0.6, "mouthDimpleLeft": 0.8, "mouthPressLeft": 0.3, "mouthLeft": 0.2,
                 "eyeSquintLeft": 0.2, "browDownRight": 0.15},
}  # fmt: skip


def emotion_coefficients(emotion: str, intensity: float = 1.0) -> np.ndarray:
    """Blendshape weights (52,) float32 of an emotion prototype at intensity in [0, 1]."""
    if emotion not in _EMOTION_PROTOTYPES:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    out = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
    for name, w in _EMOTION_PROTOTYPES[emotion].items():
        out[_IDX[name]] = w * intensity
    return out
