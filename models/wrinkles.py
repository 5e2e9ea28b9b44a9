"""Expression wrinkle maps: creases that deepen the photo's own skin shading, blended by blendshape weight.

As in game character rendering (wrinkle maps driven by blendshape weights), each crease group is a
luminance gain field laid out once on the source photo from its landmarks: forehead lines, vertical
lines between the brows, crow's feet, lower-lid bunching, nasolabial folds and nose wrinkles. Per
frame the fields are weighted by the frame's blendshapes and multiply the photo's luminance *before*
the warp, so they ride the face mesh and keep the skin's own colour and grain. Each field has two
parts: a synthesized groove (a soft dark line with a lit ridge beside it) and the photo's own
high-pass shading along the crease direction, amplified (or, where the photo's expression already
made the crease and the frame relaxes it, smoothed away). A landmark-and-colour skin mask keeps
glasses, hair and brows out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.rig import (
    BLENDSHAPE_NAMES,
    BROW_LEFT,
    BROW_RIGHT,
    EYE_LEFT_LOWER,
    EYE_LEFT_UPPER,
    EYE_RIGHT_LOWER,
    EYE_RIGHT_UPPER,
    FACE_OVAL,
    IRIS_LEFT,
    IRIS_RIGHT,
    LOWER_OUTER_LIP,
    UPPER_OUTER_LIP,
)
from models.texture import lerp

__all__ = ["WRINKLE_DRIVERS", "WrinkleLayer", "skin_colour", "skin_mask"]

_IDX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}

# Which blendshapes deepen each crease group (weights summed, then clipped to [0, 1]).
# "L" is the subject's left (image right), as in the blendshape names.
WRINKLE_DRIVERS: dict[str, dict[str, float]] = {
    "forehead_centre": {"browInnerUp": 1.0},
    "forehead_L": {"browOuterUpLeft": 1.0, "browInnerUp": 0.35},
    "forehead_R": {"browOuterUpRight": 1.0, "browInnerUp": 0.35},
    "glabella_L": {"browDownLeft": 1.0, "noseSneerLeft": 0.3},
    "glabella_R": {"browDownRight": 1.0, "noseSneerRight": 0.3},
    "crows_L": {"cheekSquintLeft": 0.8, "eyeSquintLeft": 0.5, "mouthSmileLeft": 0.3},
    "crows_R": {"cheekSquintRight": 0.8, "eyeSquintRight": 0.5, "mouthSmileRight": 0.3},
    "lowerlid_L": {"cheekSquintLeft": 0.7, "eyeSquintLeft": 0.6},
    "lowerlid_R": {"cheekSquintRight": 0.7, "eyeSquintRight": 0.6},
    "nasolabial_L": {"mouthSmileLeft": 1.0, "mouthUpperUpLeft": 0.4, "noseSneerLeft": 0.4},
    "nasolabial_R": {"mouthSmileRight": 1.0, "mouthUpperUpRight": 0.4, "noseSneerRight": 0.4},
    "nose_L": {"noseSneerLeft": 1.0},
    "nose_R": {"noseSneerRight": 1.0},
    # The cheek and mouth-corner shading of a smile (bulges over folds): only ever smoothed, when
    # a frame relaxes a smile the photo shows; a closed-mouth "neutral" keeps no smile brackets.
    "smile_L": {"mouthSmileLeft": 1.0},
    "smile_R": {"mouthSmileRight": 1.0},
    "smile_eye_L": {"mouthSmileLeft": 1.0},
    "smile_eye_R": {"mouthSmileRight": 1.0},
}
# Groups whose photo shading a frame may only relax (they add no crease of their own).
_RELAX_ONLY = frozenset({"smile_L", "smile_R", "smile_eye_L", "smile_eye_R"})
# Groups that a relaxing frame fades over their whole region, not only where the photo's crease is.
_FADE_WHOLE = _RELAX_ONLY | {"nasolabial_L", "nasolabial_R"}

_OWN_GAIN = 1.2  # how much of the photo's own crease shading is added at full weight
_MIN_WEIGHT = 1e-3


@dataclass(frozen=True)
class _Crease:
    """One crease group: gain fields over a box of the source image (y0:y1, x0:x1)."""

    name: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    synth: np.ndarray  # (h, w) float32 relative luminance change per unit weight (grooves, ridges)
    own: np.ndarray  # (h, w) float32 the photo's own relative crease shading in this group's region
    drivers: np.ndarray  # (52,) weights
    photo_weight: float  # the driver weight of the photo's own expression
    fold: np.ndarray  # (h, w) float32 in [0, 1]: where the photo's own crease darkens its skin
    relax_only: bool  # the frame may smooth this group's photo shading, never deepen it


class _Frame:
    """The face's 2D frame: u along the eyes (image right), v down, in IOD units from the eye midpoint."""

    def __init__(self, lm: np.ndarray) -> None:
        r, l_ = lm[IRIS_RIGHT[0], :2], lm[IRIS_LEFT[0], :2]
        self.centre = 0.5 * (r + l_)
        self.iod = float(np.linalg.norm(l_ - r))
        ex = (l_ - r) / self.iod
        self.axes = np.array([ex, [-ex[1], ex[0]]])  # rows: u, v directions in pixels
        self.uv = self.to_uv(lm[:, :2])

    def to_uv(self, px: np.ndarray) -> np.ndarray:
        return (px - self.centre) @ self.axes.T / self.iod

    def to_px(self, uv: np.ndarray) -> np.ndarray:
        return self.centre + (uv * self.iod) @ self.axes


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


class _Canvas:
    """Draws soft lines into a float field over the face box (pixels of the source image)."""

    def __init__(self, box: tuple[int, int, int, int], frame: _Frame) -> None:
        self.box = box
        self.frame = frame
        x0, y0, x1, y1 = box
        self.shape = (y1 - y0, x1 - x0)

    def line(
        self, uv: np.ndarray, sigma_iod: float, taper: float = 0.25, strength: float = 1.0
    ) -> np.ndarray:
        """A soft line of Gaussian profile (peak ~strength) along a polyline in face coordinates.

        The line fades in and out over ``taper`` of its length at both ends.
        """
        x0, y0, _, _ = self.box
        pts = self.frame.to_px(uv) - [x0, y0]
        n = len(pts)
        t = np.linspace(0.0, 1.0, n)
        fade = np.clip(np.minimum(t, 1.0 - t) / max(taper, 1e-6), 0.0, 1.0) ** 0.7
        canvas = np.zeros(self.shape, dtype=np.float32)
        shift = 4
        ip = np.round(pts * (1 << shift)).astype(np.int32)
        for k in range(n - 1):
            c = float(0.5 * (fade[k] + fade[k + 1]))
            if c > 0.0:
                cv2.line(canvas, tuple(ip[k]), tuple(ip[k + 1]), c, 1, cv2.LINE_AA, shift)
        sigma = max(sigma_iod * self.frame.iod, 0.5)
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
        return canvas * (np.sqrt(2.0 * np.pi) * sigma * strength)

    def groove(
        self,
        uv: np.ndarray,
        sigma_iod: float,
        depth: float,
        ridge: float,
        ridge_side: np.ndarray,
        taper: float,
    ) -> np.ndarray:
        """A crease: a dark groove plus a lit ridge offset to one side (unit vector in uv)."""
        out = -depth * self.line(uv, sigma_iod, taper)
        if ridge > 0.0:
            out += ridge * self.line(uv + ridge_side * 2.2 * sigma_iod, 1.8 * sigma_iod, taper)
        return out


class WrinkleLayer:
    """Blendshape-driven wrinkle shading for one photo.

    Args:
        image: (H, W, 3) uint8 RGB source photo.
        landmarks: (478, 3) its landmarks in pixels.
        photo_exp: (52,) the photo's own fitted expression (Rig.photo_exp); creases it already shows
            are deepened only by what a frame adds, and smoothed when a frame relaxes them.
    """

    def __init__(self, image: np.ndarray, landmarks: np.ndarray, photo_exp: np.ndarray) -> None:
        lm = np.asarray(landmarks, dtype=np.float64)
        self.image = image
        h, w = image.shape[:2]
        fr = _Frame(lm)
        self.iod = fr.iod
        oval = lm[list(FACE_OVAL), :2]
        pad = int(0.1 * fr.iod)
        x0, y0 = np.maximum(np.floor(oval.min(0)).astype(int) - pad, 0)
        x1, y1 = np.minimum(np.ceil(oval.max(0)).astype(int) + pad + 1, [w, h])
        box = (int(x0), int(y0), int(x1), int(y1))
        self.box = box
        patch = image[y0:y1, x0:x1]
        self.skin = skin_mask(image, lm, box)
        luma = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32) + 1.0
        canvas = _Canvas(box, fr)
        # What a relaxed crease fades to: the photo's skin with its creases blurred away.
        self._smooth = cv2.GaussianBlur(patch.astype(np.float32), (0, 0), max(0.03 * fr.iod, 1.0))
        # What a relaxed smile's cheeks fade to: the skin's colour low-passed (only skin pixels
        # averaged, so lips, nostrils and hair do not bleed in), its fine grain put back.
        sk = cv2.GaussianBlur(self.skin, (0, 0), max(0.15 * fr.iod, 1.0)) + 1e-4
        wide = cv2.GaussianBlur(
            patch.astype(np.float32) * self.skin[..., None], (0, 0), max(0.15 * fr.iod, 1.0)
        )
        # (Thin dark lines closed first and clipped tight: a fold's crease is no grain.)
        c = max(int(round(0.02 * fr.iod)), 1)
        luma_c = cv2.morphologyEx(
            luma, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * c + 1,) * 2)
        )
        grain = luma_c / cv2.GaussianBlur(luma_c, (0, 0), max(0.012 * fr.iod, 0.8))
        self._flat = (wide / sk[..., None]) * grain.clip(0.93, 1.07)[..., None]
        # Where it fades: the skin with its small dark holes (the smile's own deepest folds) filled.
        k = max(int(0.08 * fr.iod), 1)
        closed_skin = cv2.morphologyEx(
            self.skin, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        )
        # A smile's cheeks fade with their folds: skin in shade counts there (the folds are the
        # darkest skin of a smiling face, and the plain skin mask leaves them out).
        fold_skin = np.maximum(closed_skin, skin_mask(image, lm, box, shadows=True))
        # ...and so does the dark wedge a smile opens beyond each corner of its lips (outside the
        # lips, too dark for any skin test): left, the relaxed corner drags it up into the cheek
        # as a drawn line.
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
        lips = np.zeros(patch.shape[:2], dtype=np.uint8)
        ring = np.concatenate([lm[list(UPPER_OUTER_LIP), :2], lm[list(LOWER_OUTER_LIP[::-1][1:-1]), :2]])
        cv2.fillPoly(lips, [np.round((ring - [x0, y0]) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        wedge = np.zeros(patch.shape[:2], dtype=np.float32)
        for corner, ala in ((61, 129), (291, 358)):
            # Along the fold from the corner a third of the way up to the nose wing.
            p0 = lm[corner, :2]
            seg = (lm[ala, :2] - p0) / 3.0
            t = np.clip(
                ((gx - p0[0]) * seg[0] + (gy - p0[1]) * seg[1]) / max(float(seg @ seg), 1e-6), 0.0, 1.0
            )
            d2 = ((gx - p0[0] - t * seg[0]) ** 2 + (gy - p0[1] - t * seg[1]) ** 2) / (0.06 * fr.iod) ** 2
            wedge = np.maximum(wedge, np.exp(-0.5 * d2).astype(np.float32))
        # A fold too dark for any skin test beside the lips is a notch in the mask open to the
        # lips' hole, which no closing of the skin mask fills: close the fold mask itself, lips
        # kept out (left, such a fold stands out darker than the flattened cheek around it).
        k = max(int(0.1 * fr.iod), 1)
        fold_skin = cv2.morphologyEx(
            np.maximum(fold_skin, wedge).astype(np.float32),
            cv2.MORPH_CLOSE,
            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)),
        ) * (1.0 - lips.astype(np.float32) / 255.0)
        photo_exp = np.asarray(photo_exp, dtype=np.float64)
        self.creases: list[_Crease] = []
        for name, (synth, own_dir, region) in _layout(canvas, fr, lm).items():
            own = _own_shading(luma, own_dir, fr.iod) * region
            drivers = np.zeros(len(BLENDSHAPE_NAMES))
            for n, wgt in WRINKLE_DRIVERS[name].items():
                drivers[_IDX[n]] = wgt
            field_s = synth * self.skin
            field_o = own * self.skin
            fold = _fold(name, region, fold_skin, field_o)
            # Crop to where the fields are non-zero (most are small next to the face box); a fold
            # that fades its whole region reaches past its crease (cut there, it leaves a step).
            nz = (np.abs(field_s) + np.abs(field_o) > 1e-3) | (fold > 1e-3)
            if not nz.any():
                continue
            ys, xs = np.nonzero(nz)
            cy0, cy1, cx0, cx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            self.creases.append(
                _Crease(
                    name=name,
                    box=(x0 + cx0, y0 + cy0, x0 + cx1, y0 + cy1),
                    synth=np.ascontiguousarray(field_s[cy0:cy1, cx0:cx1]),
                    own=np.ascontiguousarray(field_o[cy0:cy1, cx0:cx1]),
                    drivers=drivers,
                    photo_weight=_photo_weight(float(drivers @ photo_exp)),
                    fold=np.ascontiguousarray(fold[cy0:cy1, cx0:cx1]),
                    relax_only=name in _RELAX_ONLY,
                )
            )
        # The creases' drivers stacked, for one matrix product a frame (_weights).
        self._drivers = (
            np.stack([c.drivers for c in self.creases])
            if self.creases
            else np.zeros((0, len(BLENDSHAPE_NAMES)))
        )
        self._photo_w = np.array([c.photo_weight for c in self.creases])
        self._relax_only = np.array([c.relax_only for c in self.creases], dtype=bool)

    def weights(self, exp: np.ndarray) -> dict[str, tuple[float, float]]:
        """Per crease group: (synthesized groove weight in [0, 1], own-shading weight in [-1, 1]).

        Both are relative to the photo's own expression: a crease the photo already shows is
        deepened only by what the frame adds, and relaxing it smooths the photo's own crease away
        twice as fast as it came (a half-relaxed smile already loses most of its fold).
        """
        synth, own = self._weights(exp)
        return {c.name: (float(s), float(o)) for c, s, o in zip(self.creases, synth, own, strict=True)}

    def _weights(self, exp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """weights() as two arrays in crease order (one matrix product: this runs every frame)."""
        d = np.clip(self._drivers @ np.asarray(exp, dtype=np.float64), 0.0, 1.0) - self._photo_w
        d = np.where(self._relax_only, np.minimum(d, 0.0), d)
        # Relaxing is relative to what the photo shows: a frame with none of the photo's smile
        # smooths its whole fold, however small the fitted weight that explains it.
        own = np.where(d > 0.0, d * _OWN_GAIN, 2.0 * d / np.maximum(self._photo_w, 0.5))
        return np.maximum(d, 0.0), np.clip(own, -1.0, 1.0)

    def gain(self, exp: np.ndarray) -> np.ndarray | None:
        """Luminance gain minus one over the face box, (h, w) float32; None when no crease deepens."""
        return self._full_box(self._gain(self._weights(exp)))

    def relax(self, exp: np.ndarray, flatten: bool = False) -> np.ndarray | None:
        """How far each pixel of the face box fades to the smoothed photo, (h, w) float32 in [0, 1]:
        the photo's own creases that this frame relaxes; None when it relaxes none. With
        ``flatten``, how far it fades to the flattened skin instead: the cheeks of a relaxed smile."""
        return self._full_box(self._relax(self._weights(exp), flatten))

    def apply(self, exp: np.ndarray) -> np.ndarray:
        """The source photo with this frame's creases shaded in (the photo itself when none are on)."""
        w = self._weights(exp)
        parts = [self._relax(w, False), self._relax(w, True), self._gain(w)]
        boxes = [part[1] for part in parts if part is not None]
        if not boxes:
            return self.image
        # Only the pixels some active crease covers are touched (a frame moves a few groups).
        box = _union(boxes)
        x0, y0, x1, y1 = box
        fx0, fy0 = self.box[:2]
        rows, cols = slice(y0 - fy0, y1 - fy0), slice(x0 - fx0, x1 - fx0)
        fade, flat, field = (None if part is None else _crop(part, box) for part in parts)
        out = self.image.copy()
        patch = self.image[y0:y1, x0:x1].astype(np.float32)
        if fade is not None:
            # A relaxed crease fades into the skin around it (its colour too: brightening a fold's
            # shadow by a gain leaves a saturated streak).
            patch = lerp(patch, self._smooth[rows, cols], fade)
        if flat is not None:
            patch = lerp(patch, self._flat[rows, cols], flat)
        if field is not None:
            patch *= np.clip(1.0 + field, 0.4, 1.6)[..., None]
        out[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)
        return out

    def _gain(self, weights: tuple[np.ndarray, np.ndarray]) -> _Field | None:
        synth, own = weights
        terms = []
        for c, w_synth, w_own in zip(self.creases, synth, own, strict=True):
            if w_synth >= _MIN_WEIGHT:
                terms.append((c.box, np.float32(w_synth), c.synth))
            if w_own >= _MIN_WEIGHT:
                terms.append((c.box, np.float32(w_own), c.own))
        return _sum_fields(terms)

    def _relax(self, weights: tuple[np.ndarray, np.ndarray], flatten: bool) -> _Field | None:
        terms = [
            (c.box, np.float32(-w_own), c.fold)
            for c, w_own in zip(self.creases, weights[1], strict=True)
            if w_own <= -_MIN_WEIGHT and c.relax_only == flatten
        ]
        field = _sum_fields(terms)
        return None if field is None else (np.minimum(field[0], 1.0), field[1])

    def _full_box(self, field: _Field | None) -> np.ndarray | None:
        return None if field is None else _crop(field, self.box)


# A field: its values (h, w) float32 over its box (x0, y0, x1, y1) in image pixels.
_Box = tuple[int, int, int, int]
_Field = tuple[np.ndarray, _Box]


def _union(boxes: list[_Box]) -> _Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _crop(field: _Field, box: _Box) -> np.ndarray:
    """A field's values over box (which holds the field's own box), zero outside it."""
    values, (fx0, fy0, fx1, fy1) = field
    if (fx0, fy0, fx1, fy1) == box:
        return values
    x0, y0, x1, y1 = box
    out = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    out[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = values
    return out


def _sum_fields(terms: list[tuple[_Box, np.float32, np.ndarray]]) -> _Field | None:
    """Sum of weighted crease fields (box, weight, values) over the union of their boxes."""
    if not terms:
        return None
    box = _union([t[0] for t in terms])
    x0, y0, x1, y1 = box
    field = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    for (cx0, cy0, cx1, cy1), w, values in terms:
        field[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] += w * values
    return field, box


def _fold(name: str, region: np.ndarray, fold_skin: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Where relaxing a crease group fades the photo, (h, w) float32 in [0, 1].

    A smile's groups (its cheeks, the skin under its eyes, its nasolabial folds) fade over their
    whole region, folds in shade included: relaxing only the darkest pixels of a fold leaves its
    faint edge behind as a thin drawn line. Other creases fade where the photo shows them.
    """
    if name in _FADE_WHOLE:
        return (region * fold_skin).astype(np.float32)
    return np.clip(-own / 0.06, 0.0, 1.0).astype(np.float32)


def _photo_weight(w: float) -> float:
    """A crease weight of the photo's own expression; fit noise below 0.05 counts as none."""
    return float(np.clip(w, 0.0, 1.0)) if w >= 0.05 else 0.0


def _own_shading(luma: np.ndarray, direction: str, iod: float) -> np.ndarray:
    """The photo's own crease shading: relative high-pass, smoothed along the crease direction.

    Dark creases count fully, bright detail (specular, freckle gaps) a little, and isolated dots
    (freckles, pores) are averaged away by the smoothing along the crease.
    """
    base = cv2.GaussianBlur(luma, (0, 0), max(0.05 * iod, 1.0))
    hp = luma / base - 1.0
    along = max(0.05 * iod, 1.0)
    across = 0.6
    if direction == "h":
        hp = cv2.GaussianBlur(hp, (0, 0), sigmaX=along, sigmaY=across)
    elif direction == "v":
        hp = cv2.GaussianBlur(hp, (0, 0), sigmaX=across, sigmaY=along)
    elif direction == "m":
        # The shape of the skin rather than its lines: folds and the bulges between them, both signs
        # (grain below the band, the face's overall light above it, are kept).
        mid = cv2.GaussianBlur(luma, (0, 0), max(0.02 * iod, 1.0))
        wide = cv2.GaussianBlur(luma, (0, 0), max(0.15 * iod, 1.0))
        return (mid / wide - 1.0).clip(-0.15, 0.15).astype(np.float32)
    else:
        hp = cv2.GaussianBlur(hp, (0, 0), 0.5 * along)
    return np.where(hp < 0.0, hp, 0.3 * hp).clip(-0.3, 0.1).astype(np.float32)


def _soft_region(canvas: _Canvas, fr: _Frame, poly_uv: np.ndarray, feather_iod: float) -> np.ndarray:
    x0, y0, _, _ = canvas.box
    pts = np.round((fr.to_px(poly_uv) - [x0, y0]) * 16).astype(np.int32)
    m = np.zeros(canvas.shape, dtype=np.float32)
    cv2.fillPoly(m, [pts], 1.0, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(m, (0, 0), max(feather_iod * fr.iod, 0.5))


def _layout(canvas: _Canvas, fr: _Frame, lm: np.ndarray) -> dict[str, tuple[np.ndarray, str, np.ndarray]]:
    """Every crease group: (synthesized field, own-shading direction, region where own shading counts)."""
    uv = fr.uv
    out: dict[str, tuple[np.ndarray, str, np.ndarray]] = {}
    up = np.array([0.0, -1.0])
    down = np.array([0.0, 1.0])
    rng = np.random.default_rng(3)

    # Forehead: lines following the brows' arch between the brows and the top of the face.
    brow_top = np.concatenate([uv[list(BROW_RIGHT[:5])], uv[list(BROW_LEFT[:5])]])
    brow_top = brow_top[np.argsort(brow_top[:, 0])]
    top_ids = (54, 103, 67, 109, 10, 338, 297, 332, 284)
    top = uv[list(top_ids)]
    top = top[np.argsort(top[:, 0])]
    half = 0.5 * float(brow_top[-1, 0] - brow_top[0, 0])
    us = np.linspace(-half * 1.05, half * 1.05, 40)
    yb = np.interp(us, brow_top[:, 0], brow_top[:, 1])
    yb = np.minimum(yb, np.interp(0.0, brow_top[:, 0], brow_top[:, 1]))  # level over the glabella
    yt = np.interp(us, top[:, 0], top[:, 1])
    lines = np.zeros(canvas.shape, dtype=np.float32)
    for t in (0.2, 0.36, 0.52, 0.68):
        wave = 0.012 * np.sin(us * rng.uniform(5, 9) + rng.uniform(0, 6))
        vline = yb + t * (yt - yb) + wave
        # Real forehead lines are broken and vary in depth along their length.
        amp = 0.75 + 0.25 * np.sin(us * rng.uniform(4, 7) + rng.uniform(0, 6))
        for a, b in ((0, 20), (18, 40)):
            seg = np.stack([us[a:b], vline[a:b]], axis=1)
            lines += float(amp[a:b].mean()) * canvas.groove(seg, 0.011, 0.2, 0.07, down, 0.3)
    forehead_poly = np.concatenate([np.stack([us, yb - 0.06], 1), np.stack([us, yt + 0.02], 1)[::-1]])
    forehead = _soft_region(canvas, fr, forehead_poly, 0.04)
    u_px = _u_field(canvas, fr)
    centre = np.exp(-((u_px / 0.32) ** 2))
    side_l = np.clip((u_px - 0.05) / 0.25, 0.0, 1.0)
    side_r = np.clip((-u_px - 0.05) / 0.25, 0.0, 1.0)
    out["forehead_centre"] = (lines * centre * forehead, "h", forehead * centre)
    out["forehead_L"] = (lines * side_l * forehead, "h", forehead * side_l)
    out["forehead_R"] = (lines * side_r * forehead, "h", forehead * side_r)

    # Between the brows: vertical lines from the brow heads up (corrugator), one horizontal
    # fold across the root of the nose (procerus).
    v_inner_lo = float(np.mean(uv[[55, 285], 1]))
    v_inner_up = float(np.mean(uv[[107, 336], 1]))
    u_inner = 0.5 * float(uv[285, 0] - uv[55, 0])
    for sign, name in ((1.0, "glabella_L"), (-1.0, "glabella_R")):
        g = np.zeros(canvas.shape, dtype=np.float32)
        # One deep fold per side and a faint shorter one outside it; the two sides differ a
        # little (a face is never symmetric), each fold bows outwards and deepens towards the brow.
        for du, depth, sigma, top in ((0.4 + 0.05 * sign, 0.24, 0.02, 0.14), (0.95, 0.08, 0.016, 0.06)):
            x = sign * u_inner * du
            seg = _bezier(
                np.array([x, v_inner_lo + 0.03]),
                np.array([x * 1.12, 0.5 * (v_inner_lo + v_inner_up) - 0.03]),
                np.array([x * 0.9, v_inner_up - top]),
                12,
            )
            g += canvas.groove(seg, sigma, depth, 0.09, np.array([sign, 0.0]), 0.45)
        root = np.stack([np.linspace(0.0, sign * u_inner * 0.6, 6), np.full(6, uv[168, 1] - 0.02)], 1)
        g += canvas.groove(root, 0.012, 0.12, 0.05, down, 0.5)
        poly = np.array([[0.0, v_inner_up - 0.3], [sign * u_inner * 1.1, v_inner_up - 0.3],
                         [sign * u_inner * 1.1, uv[168, 1] + 0.06], [0.0, uv[168, 1] + 0.06]])  # fmt: skip
        out[name] = (g, "v", _soft_region(canvas, fr, poly, 0.03))

    # Eyes: crow's feet fanning from the outer corners; a fold under the bunched lower lid.
    for sign, name, corner, lower in ((1.0, "L", 263, EYE_LEFT_LOWER), (-1.0, "R", 33, EYE_RIGHT_LOWER)):
        c = uv[corner]
        g = np.zeros(canvas.shape, dtype=np.float32)
        for ang, length, depth in (
            (-0.45, 0.16, 0.16),
            (-0.1, 0.2, 0.22),
            (0.25, 0.2, 0.22),
            (0.6, 0.15, 0.15),
        ):
            d = np.array([sign * np.cos(ang), np.sin(ang)])
            bend = np.array([0.0, 0.02])
            seg = _bezier(c + d * 0.07, c + d * (0.07 + length / 2) + bend, c + d * (0.07 + length), 8)
            g += canvas.groove(seg, 0.009, depth, 0.06, np.array([-d[1], d[0]]) * sign, 0.35)
        fan = np.array(
            [
                c + [sign * 0.03, -0.12],
                c + [sign * 0.32, -0.14],
                c + [sign * 0.32, 0.2],
                c + [sign * 0.03, 0.1],
            ]
        )
        out[f"crows_{name}"] = (g, "d", _soft_region(canvas, fr, fan, 0.03))
        lid = uv[list(lower)]
        lid = lid[np.argsort(sign * lid[:, 0])]  # inner -> outer
        fold = lid[2:-1] + [0.0, 0.1]
        g = canvas.groove(fold, 0.011, 0.2, 0.1, up, 0.35)
        region = np.concatenate([lid[1:] + [0.0, 0.03], (lid[1:] + [0.0, 0.18])[::-1]])
        out[f"lowerlid_{name}"] = (g, "h", _soft_region(canvas, fr, region, 0.03))

    # Nasolabial folds: from the nose wing to beside the mouth corner, bowed outwards; the cheek
    # on their outer side catches the light.
    for sign, name, ala, corner in ((1.0, "L", 358, 291), (-1.0, "R", 129, 61)):
        a = uv[ala] + [sign * 0.04, -0.02]
        m = uv[corner] + [sign * 0.1, 0.08]
        mid = 0.5 * (a + m) + [sign * 0.07, 0.0]
        seg = _bezier(a, mid, m, 14)
        g = canvas.groove(seg, 0.016, 0.26, 0.12, np.array([sign, -0.3]), 0.2)
        # (Reaching in towards the nose and lips: a broad smile's fold runs inside the bow.)
        region = np.concatenate([seg + [-sign * 0.1, 0.0], (seg + [sign * 0.1, 0.0])[::-1]])
        out[f"nasolabial_{name}"] = (g, "d", _soft_region(canvas, fr, region, 0.03))

    # Nose wrinkles: short oblique lines on each side of the nasal bridge.
    for sign, name in ((1.0, "L"), (-1.0, "R")):
        g = np.zeros(canvas.shape, dtype=np.float32)
        v6 = float(uv[6, 1])
        for k, dv in enumerate((-0.04, 0.02, 0.08)):
            p0 = np.array([sign * 0.02, v6 + dv])
            p1 = np.array([sign * 0.15, v6 + dv + 0.07])
            seg = np.stack([np.linspace(p0[0], p1[0], 6), np.linspace(p0[1], p1[1], 6)], 1)
            g += canvas.groove(seg, 0.009, 0.2 - 0.03 * k, 0.08, down, 0.35)
        poly = np.array([[0.0, v6 - 0.1], [sign * 0.2, v6 - 0.06], [sign * 0.22, v6 + 0.2], [0.0, v6 + 0.14]])
        out[f"nose_{name}"] = (g, "d", _soft_region(canvas, fr, poly, 0.03))

    # Smile shading: the cheek beside the nose down past the mouth corner (no drawn crease).
    for sign, name, ala, corner in ((1.0, "L", 358, 291), (-1.0, "R", 129, 61)):
        a, c = uv[ala], uv[corner]
        poly = np.array([a + [-sign * 0.02, -0.22], a + [sign * 0.45, -0.2], c + [sign * 0.38, 0.24],
                         c + [0.0, 0.3], c + [-sign * 0.14, 0.08], c + [-sign * 0.1, -0.12]])  # fmt: skip
        out[f"smile_{name}"] = (np.zeros(canvas.shape, np.float32), "m", _soft_region(canvas, fr, poly, 0.06))
    # A Duchenne smile's lower lids: the bunched skin under the eye and the crow's feet beside it.
    for sign, name, outer, inner in ((1.0, "L", 263, 362), (-1.0, "R", 33, 133)):
        o, i = uv[outer], uv[inner]
        poly = np.array([i + [0.0, 0.1], o + [sign * 0.02, 0.06], o + [sign * 0.2, -0.06], o + [sign * 0.22, 0.12],
                         o + [sign * 0.05, 0.3], i + [0.0, 0.28]])  # fmt: skip
        out[f"smile_eye_{name}"] = (
            np.zeros(canvas.shape, np.float32),
            "m",
            _soft_region(canvas, fr, poly, 0.04),
        )
    return out


def _u_field(canvas: _Canvas, fr: _Frame) -> np.ndarray:
    x0, y0, _, _ = canvas.box
    h, w = canvas.shape
    xs = np.arange(w, dtype=np.float32) + x0
    ys = np.arange(h, dtype=np.float32)[:, None] + y0
    return ((xs - fr.centre[0]) * fr.axes[0, 0] + (ys - fr.centre[1]) * fr.axes[0, 1]) / fr.iod


def skin_mask(
    image: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int], *, shadows: bool = False
) -> np.ndarray:
    """Soft mask (h, w) float32 in [0, 1] over ``box`` of bare facial skin.

    Inside the face oval, away from the eyes, brows and lips, and close in colour to the face's
    own skin: glasses frames, hair and hats fall outside it, so creases never bend or stain them.
    With ``shadows``, skin in deep shade counts too (a smile's folds), but not hair or frames.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    x0, y0, x1, y1 = box
    shape = (y1 - y0, x1 - x0)
    iod = float(np.linalg.norm(lm[IRIS_LEFT[0], :2] - lm[IRIS_RIGHT[0], :2]))
    origin = np.array([x0, y0], dtype=np.float64)

    def poly(ids: tuple[int, ...] | list[int]) -> np.ndarray:
        m = np.zeros(shape, dtype=np.uint8)
        pts = np.round((lm[list(ids), :2] - origin) * 16).astype(np.int32)
        cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, 4)
        return m

    face = poly(FACE_OVAL)
    face = cv2.erode(face, np.ones((3, 3), np.uint8), iterations=max(int(0.03 * iod), 1))
    holes = np.zeros(shape, dtype=np.uint8)
    for up, lo in ((EYE_RIGHT_UPPER, EYE_RIGHT_LOWER), (EYE_LEFT_UPPER, EYE_LEFT_LOWER)):
        holes |= poly(list(up) + list(lo[::-1][1:-1]))
    for brow in (BROW_RIGHT, BROW_LEFT):
        holes |= poly(list(brow[:5]) + list(brow[5:][::-1]))
    holes |= poly(list(UPPER_OUTER_LIP) + list(LOWER_OUTER_LIP[::-1][1:-1]))
    k = max(int(0.04 * iod), 1)
    holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    geo = (face.astype(np.float32) / 255.0) * (1.0 - holes.astype(np.float32) / 255.0)

    colour = skin_colour(image, lm, box, shadows=shadows)
    # Thin strong edges of frames next to skin: grow the exclusion a little.
    colour = cv2.erode(colour, np.ones((3, 3), np.uint8))
    mask = geo * colour
    return cv2.GaussianBlur(mask, (0, 0), max(0.012 * iod, 0.6)).astype(np.float32)


def skin_colour(
    image: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int], *, shadows: bool = False
) -> np.ndarray:
    """How much each pixel of ``box`` looks like the face's own skin, (h, w) float32 in [0, 1].

    Distance in Lab from the skin sampled on the cheeks, the nose and mid-forehead; much darker
    than the skin (frames, hair, hat brims) is not skin, lighter is (highlights). With
    ``shadows``, skin in deep shade (a fold: much darker, the skin's hue, most of its saturation)
    still counts.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    x0, y0, x1, y1 = box
    iod = float(np.linalg.norm(lm[IRIS_LEFT[0], :2] - lm[IRIS_RIGHT[0], :2]))
    lab = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2LAB).astype(np.float32)
    samples = []
    r = max(int(0.05 * iod), 1)
    for k in (50, 280, 101, 330, 151, 4, 18):
        cx, cy = int(round(lm[k, 0] - x0)), int(round(lm[k, 1] - y0))
        if 0 <= cy < lab.shape[0] and 0 <= cx < lab.shape[1]:
            samples.append(lab[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1].reshape(-1, 3))
    if not samples:
        return np.ones(lab.shape[:2], dtype=np.float32)
    pixels = np.concatenate(samples)
    ref = np.median(pixels, axis=0)
    d_light = (lab[..., 0] - ref[0]) / max(float(pixels[:, 0].std()) * 2.5, 25.0)
    if shadows:
        # Skin in deep shade (a smile's folds) keeps its hue and most of its saturation; hair,
        # stubble and frames are far greyer. So: hue distance, plus saturation lost below 60% of
        # the skin's.
        ab, ab_ref = lab[..., 1:] - 128.0, ref[1:] - 128.0
        c, c_ref = np.hypot(ab[..., 0], ab[..., 1]), float(np.hypot(*ab_ref))
        hue = np.angle(np.exp(1j * (np.arctan2(ab[..., 1], ab[..., 0]) - np.arctan2(ab_ref[1], ab_ref[0]))))
        d_chroma = np.hypot(np.abs(hue) * c_ref, 2.0 * np.maximum(0.6 * c_ref - c, 0.0))
    else:
        d_chroma = np.sqrt(((lab[..., 1:] - ref[1:]) ** 2).sum(-1))
    dark = np.clip(-d_light - (3.5 if shadows else 1.0), 0.0, None)
    colour = np.clip(1.0 - (d_chroma - 10.0) / 10.0, 0.0, 1.0) * np.clip(1.0 - dark * 2.0, 0.0, 1.0)
    return colour.astype(np.float32)
