"""Painted layers of the MeshWarp renderer: the mouth interior and the eyeballs.

A piecewise-affine warp cannot invent what the photo does not show: the inside of an
opening mouth, or the sclera an iris uncovers when it moves. These layers are painted inside
the target inner-lip and eyelid contours (feathered about 1 px) from textures built once per
photo: the photo's own teeth and eyes where it shows them, synthesized ones elsewhere.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.rig import (
    BLENDSHAPE_NAMES,
    EYE_LEFT_LOWER,
    EYE_LEFT_UPPER,
    EYE_RIGHT_LOWER,
    EYE_RIGHT_UPPER,
    FACE_OVAL,
    IRIS_LEFT,
    IRIS_RIGHT,
    LOWER_INNER_LIP,
    LOWER_OUTER_LIP,
    UPPER_INNER_LIP,
    UPPER_OUTER_LIP,
)

__all__ = ["EyeLayer", "MouthLayer"]

_SHIFT = 4  # sub-pixel bits for OpenCV polygon drawing
_TONGUE_OUT = BLENDSHAPE_NAMES.index("tongueOut")
_UPPER_UP = [BLENDSHAPE_NAMES.index(n) for n in ("mouthUpperUpLeft", "mouthUpperUpRight")]
_SNEER = [BLENDSHAPE_NAMES.index(n) for n in ("noseSneerLeft", "noseSneerRight")]
_FUNNEL = BLENDSHAPE_NAMES.index("mouthFunnel")
_PUCKER = BLENDSHAPE_NAMES.index("mouthPucker")
_SMILE = [BLENDSHAPE_NAMES.index(n) for n in ("mouthSmileLeft", "mouthSmileRight")]


def _poly_mask(shape: tuple[int, int], poly: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Anti-aliased float mask (h, w) in [0, 1] of a polygon given in frame pixels."""
    mask = np.zeros(shape, dtype=np.uint8)
    pts = np.round((poly - origin) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return mask.astype(np.float32) * (1.0 / 255.0)


def _box(points: np.ndarray, pad: int, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(points.min(0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(0)).astype(int) + pad + 1
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def _rotated_grid(
    x0: int, y0: int, x1: int, y1: int, c0: np.ndarray, ax: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of the box [x0, x1) x [y0, y1) in a rotated frame, float32 (h, w) each: a
    along the unit vector ax from the point c0, b along its normal (-ax[1], ax[0])."""
    rx = np.arange(x0, x1, dtype=np.float32) - np.float32(c0[0])
    ry = (np.arange(y0, y1, dtype=np.float32) - np.float32(c0[1]))[:, None]
    cos, sin = float(ax[0]), float(ax[1])
    return rx * cos + ry * sin, ry * cos - rx * sin


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """a * (1 - t) + b * t per pixel, in one pass: a and b (h, w, c) of one dtype (uint8, rounded,
    or float32), t (h, w) in [0, 1]."""
    t = np.asarray(t, dtype=np.float32)
    return cv2.blendLinear(a, b, 1.0 - t, t)


def _masked_blur(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float32 (h, w, 3) image averaging only where weight (h, w) is on: holes
    fill from around them. Wide blurs run at half resolution (the result is smooth anyway)."""
    h, w = weight.shape
    half = sigma >= 4.0 and min(h, w) >= 16
    if half:
        size = ((w + 1) // 2, (h + 1) // 2)
        image = cv2.resize(image * weight[..., None], size, interpolation=cv2.INTER_AREA)
        weight = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
        sigma *= 0.5
    else:
        image = image * weight[..., None]
    out = (
        cv2.GaussianBlur(image, (0, 0), sigma)
        / np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-3)[..., None]
    )
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR) if half else out


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[IRIS_LEFT[0], :2] - lm[IRIS_RIGHT[0], :2]))


class MouthLayer:
    """The mouth interior: a dark cavity, upper and lower teeth, tongue, shadow under the lip.

    Texture space: u in [0, 1] from one inner lip corner to the other; v, the distance from
    the anchoring lip in IOD units (down from the upper lip for the upper teeth, up from the
    lower lip for the lower teeth and tongue).
    """

    V_MAX = 0.5  # IOD units covered by each texture
    TEX_W, TEX_H = 192, 96

    def __init__(self, image: np.ndarray, landmarks: np.ndarray, photo_exp: np.ndarray) -> None:
        lm = np.asarray(landmarks, dtype=np.float64)
        self._h, self._w = image.shape[:2]
        iod = _iod(lm)
        lip_ring = np.concatenate([lm[list(UPPER_OUTER_LIP), :2], lm[list(LOWER_OUTER_LIP[::-1]), :2]])
        inner = np.concatenate([lm[list(UPPER_INNER_LIP), :2], lm[list(LOWER_INNER_LIP[::-1]), :2]])
        x0, y0, x1, y1 = _box(lip_ring, 2, self._w, self._h)
        patch = image[y0:y1, x0:x1].astype(np.float32)
        origin = np.array([x0, y0], dtype=np.float64)
        lips = _poly_mask(patch.shape[:2], lip_ring, origin) * (
            1.0 - _poly_mask(patch.shape[:2], inner, origin)
        )
        lip_rgb = (patch * lips[..., None]).sum((0, 1)) / max(float(lips.sum()), 1.0)
        self.lip_rgb = lip_rgb
        # The lips' own lit red (the mean is greyed by the shadowed edges and any teeth at them).
        px = patch[lips > 0.9]
        if len(px) >= 10:
            luma = px @ np.array([0.299, 0.587, 0.114])
            self.lip_lit_rgb = np.median(px[luma >= np.median(luma)], axis=0)
        else:
            self.lip_lit_rgb = lip_rgb
        # Teeth: white-ish, no brighter than the photo's highlights, tinted by its light.
        self.teeth_rgb = _teeth_colour(image, lm)
        self.cavity_rgb = lip_rgb * np.array([0.3, 0.14, 0.13])
        self.tongue_rgb = np.clip(lip_rgb * np.array([0.85, 0.5, 0.52]), 0, 255)
        self.gum_rgb = np.clip(lip_rgb * np.array([1.0, 0.72, 0.72]) + np.array([12.0, 0.0, 0.0]), 0, 255)
        # A black-and-white (or faded) photo gets a mouth of its own colourlessness: the painted
        # colours keep their brightness and lose their tint as far as the photo's lips have none.
        lit = self.lip_lit_rgb
        self._colour = float(np.clip((lit.max() - lit.min()) / max(float(lit.max()), 1.0) / 0.2, 0.0, 1.0))
        for name in ("teeth_rgb", "cavity_rgb", "tongue_rgb", "gum_rgb"):
            setattr(self, name, self._tint(getattr(self, name)))
        gap = (lm[list(LOWER_INNER_LIP[1:-1]), 1] - lm[list(UPPER_INNER_LIP[1:-1]), 1]).max() / iod
        self.uses_photo_teeth = bool(gap > 0.06)
        self._photo_smile = float(np.asarray(photo_exp, dtype=np.float64)[_SMILE].mean())
        self._photo_mouth_w = (
            float(np.linalg.norm(lm[UPPER_OUTER_LIP[-1], :2] - lm[UPPER_OUTER_LIP[0], :2])) / iod
        )
        # The lips' own red (the redder half of the lip pixels, a little more saturated: painted flat,
        # the mean looks grey next to the skin).
        if len(px) >= 10:
            red = px[:, 0] - px[:, 1]
            rgb = np.median(px[red >= np.median(red)], axis=0)
            self.lip_paint_rgb = np.clip(rgb.mean() + 1.1 * (rgb - rgb.mean()), 0, 255)
        else:
            self.lip_paint_rgb = lip_rgb
        # The lips' grain (high-pass of the lit lip pixels, in luma) for re-synthesized lips.
        grey = cv2.cvtColor(np.clip(patch, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
        hp = grey - cv2.GaussianBlur(grey, (0, 0), 1.5)
        self._lip_grain = float(np.clip(hp[lips > 0.9].std() if (lips > 0.9).sum() >= 10 else 3.0, 1.0, 6.0))
        self._noise: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None  # see _lip_noise
        self.upper_tex, self.lower_tex = self._synth_textures()
        if self.uses_photo_teeth:
            self._take_photo_teeth(image, lm, iod, float(gap))
        # Premultiplied alpha: bilinear sampling at a texture's edge then adds no dark fringe.
        for tex in (self.upper_tex, self.lower_tex):
            tex[..., :3] *= tex[..., 3:]
        # Colours painted every frame, in float32 like the per-pixel fields they tint.
        self.cavity_lit_rgb = self._tint(self.lip_rgb * np.array([0.6, 0.42, 0.42]))  # a narrow gap's shadow
        self.lips_shut_rgb = self._tint(self.lip_rgb * np.array([0.78, 0.66, 0.66]))  # a barely parted mouth
        painted = ("lip_rgb", "lip_lit_rgb", "cavity_rgb", "tongue_rgb", "gum_rgb", "lip_paint_rgb")
        for name in (*painted, "cavity_lit_rgb", "lips_shut_rgb"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))

    def _tint(self, rgb: np.ndarray) -> np.ndarray:
        """A painted colour with as much tint as the photo has (none for a black-and-white one)."""
        rgb = np.asarray(rgb, dtype=np.float64)
        if self._colour >= 1.0:
            return rgb
        grey = float(rgb @ np.array([0.299, 0.587, 0.114]))
        return grey + self._colour * (rgb - grey)

    # -- textures -------------------------------------------------------------------------
    def _synth_textures(self) -> tuple[np.ndarray, np.ndarray]:
        w, h = self.TEX_W, self.TEX_H
        u = (np.arange(w) + 0.5) / w
        v = (np.arange(h) + 0.5) / h * self.V_MAX
        uu, vv = np.meshgrid(u, v)
        rng = np.random.default_rng(7)
        grain = cv2.GaussianBlur(rng.normal(0.0, 4.0, (h, w)).astype(np.float32), (0, 0), 0.7)[..., None]
        x = (uu - 0.5) * 2.0  # -1 .. 1 across the mouth
        ax = np.abs(x)
        upper = np.zeros((h, w, 4), dtype=np.float32)
        tooth, alpha = _tooth_row(ax, vv, _UPPER_EDGES, _UPPER_LEN)
        # Each tooth is lit in the middle and rounds off to its sides; the row darkens into the
        # corners of the mouth (the cheeks shade it); a thin translucent biting edge.
        shade = np.interp(ax, [0.0, 0.4, 0.75], [1.0, 0.88, 0.45])
        tip = np.clip((_interp_len(ax, _UPPER_LEN) - vv) / 0.03, 0.0, 1.0)
        body = shade * tooth * (0.9 + 0.1 * tip)
        upper[..., :3] = self.teeth_rgb * body[..., None] + grain
        # The upper lip's shadow falls on the top of the teeth.
        upper[..., :3] *= np.clip(0.7 + vv / 0.04, 0.7, 1.0)[..., None]
        upper[..., 3] = alpha
        # Lower layer: the tongue low at the back, the lower incisors in front of it.
        lower = np.zeros((h, w, 4), dtype=np.float32)
        tongue_h = 0.1 * np.sqrt(np.clip(1.0 - (x / 0.75) ** 2, 0.0, 1.0))
        tongue = np.clip((tongue_h - vv) / 0.02, 0.0, 1.0)
        lower[..., :3] = self.tongue_rgb * (0.45 + 0.4 * np.clip(vv / 0.1, 0, 1))[..., None] + grain
        lower[..., 3] = tongue * 0.85
        lt, lt_alpha = _tooth_row(ax, vv, _LOWER_EDGES, _LOWER_LEN)
        lt_rgb = self.teeth_rgb[None, None] * (0.82 * lt * np.interp(ax, [0.0, 0.5], [1.0, 0.75]))[..., None]
        lt_rgb = lt_rgb * np.clip(0.7 + vv / 0.04, 0.7, 1.0)[..., None] + grain
        a = lt_alpha[..., None]
        lower[..., :3] = lower[..., :3] * (1 - a) + lt_rgb * a
        lower[..., 3] = np.maximum(lower[..., 3], lt_alpha)
        return upper, lower

    def _take_photo_teeth(self, image: np.ndarray, lm: np.ndarray, iod: float, gap: float) -> None:
        """Sample the photo's own mouth interior into the two textures (its real teeth)."""
        # How far the photo's mouth is open at each column: towards its corners the lips close
        # over the teeth, and what lies beyond the opening there (lips, the dark corners of a
        # smile) is no teeth (squeezed into a narrower mouth, it showed as a dark ragged fringe).
        up_pts, lo_pts = lm[list(UPPER_INNER_LIP), :2], lm[list(LOWER_INNER_LIP), :2]
        c0, c1 = up_pts[0], up_pts[-1]
        ax = (c1 - c0) / max(float(np.linalg.norm(c1 - c0)), 1e-6)
        bx = np.array([-ax[1], ax[0]])
        cols = (np.arange(self.TEX_W) + 0.5) / self.TEX_W * float(np.dot(c1 - c0, ax))

        def across(pts: np.ndarray) -> np.ndarray:
            pa, pb = (pts - c0) @ ax, (pts - c0) @ bx
            k = np.argsort(pa)
            return np.interp(cols, pa[k], pb[k])

        gap_u = np.clip((across(lo_pts) - across(up_pts)) / iod, 0.0, gap)
        up_v = np.minimum(0.6 * gap_u + 0.01, self.V_MAX)[None, :]
        lo_v = np.minimum(0.4 * gap_u + 0.01, self.V_MAX)[None, :]
        for tex, chain, sign, vmax in (
            (self.upper_tex, UPPER_INNER_LIP, 1.0, up_v),
            (self.lower_tex, LOWER_INNER_LIP, -1.0, lo_v),
        ):
            mx, my = _chain_map(lm, chain, iod, sign, self.TEX_W, self.TEX_H, self.V_MAX)
            rgb = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(
                np.float32
            )
            v = (np.arange(self.TEX_H) + 0.5)[:, None] / self.TEX_H * self.V_MAX
            a = np.clip((vmax - v) / 0.01, 0.0, 1.0)
            tex[..., :3] = rgb * a[..., None] + tex[..., :3] * (1 - a[..., None])
            # The photo's teeth replace the drawn ones; beyond them only the tongue may show.
            keep = 0.0 if tex is self.upper_tex else 1.0
            tex[..., 3] = np.maximum(tex[..., 3] * (1 - a) * keep, a)
        # Behind the photo's lower strip the tongue rises (else a wide-open mouth is a flat black hole).
        v = (np.arange(self.TEX_H) + 0.5)[:, None] / self.TEX_H * self.V_MAX
        x = ((np.arange(self.TEX_W) + 0.5)[None, :] / self.TEX_W - 0.5) * 2.0
        top = lo_v + 0.06 * np.sqrt(np.clip(1.0 - (x / 0.7) ** 2, 0.0, 1.0))
        t = np.clip((top - v) / 0.015, 0.0, 1.0) * (v > lo_v - 0.01) * (1.0 - self.lower_tex[..., 3])
        shade = 0.8 - 0.35 * np.clip((v - lo_v) / 0.06, 0.0, 1.0)
        tongue = self.tongue_rgb * shade[..., None]
        self.lower_tex[..., :3] = self.lower_tex[..., :3] * (1 - t[..., None]) + tongue * t[..., None]
        self.lower_tex[..., 3] = np.maximum(self.lower_tex[..., 3], 0.9 * t)

    # -- per frame --------------------------------------------------------------------------
    def paint(self, frame: np.ndarray, lm: np.ndarray, exp: np.ndarray) -> None:
        """Paint the interior inside the target inner-lip contour of frame (in place)."""
        up = lm[list(UPPER_INNER_LIP), :2]
        lo = lm[list(LOWER_INNER_LIP), :2]
        self._paint_interior(frame, lm, exp, up, lo)
        if self.uses_photo_teeth:
            self._paint_seam(frame, up, lo, _iod(lm))
            self._paint_lips(frame, lm, exp, up, lo, _iod(lm))

    def _paint_interior(
        self, frame: np.ndarray, lm: np.ndarray, exp: np.ndarray, up: np.ndarray, lo: np.ndarray
    ) -> None:
        if float((lo[1:-1, 1] - up[1:-1, 1]).max()) < 0.6:
            return
        poly = np.concatenate([up, lo[::-1][1:-1]])
        x0, y0, x1, y1 = _box(poly, 2, frame.shape[1], frame.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        origin = np.array([x0, y0], dtype=np.float64)
        mask = _poly_mask((y1 - y0, x1 - x0), poly, origin)
        if mask.max() <= 0.0:
            return
        iod = _iod(lm)
        # Mouth-local frame: a along the corner-to-corner line, b perpendicular (down).
        c0, c1 = up[0], up[-1]
        ax = (c1 - c0) / max(np.linalg.norm(c1 - c0), 1e-6)
        bx = np.array([-ax[1], ax[0]])
        a, b = _rotated_grid(x0, y0, x1, y1, c0, ax)  # float32, like every per-pixel field here
        width = float(np.dot(c1 - c0, ax))
        iod = float(iod)
        ua = (up - c0) @ ax
        ub = (up - c0) @ bx
        la = (lo - c0) @ ax
        lb = (lo - c0) @ bx
        u = np.clip(a / max(width, 1e-6), 0.0, 1.0)
        b_up = np.interp(a, ua, ub).astype(np.float32)
        b_lo = np.interp(a, np.sort(la), lb[np.argsort(la)]).astype(np.float32)
        # Edge pixels of the anti-aliased mask lie just outside the lips: clamp, don't leave them empty.
        v_up = np.maximum(b - b_up, 0.0) / iod
        v_lo = np.maximum(b_lo - b, 0.0) / iod
        opening = np.maximum(b_lo - b_up, 1e-3) / iod
        sx = (u * (self.TEX_W - 1)).astype(np.float32)
        # A raised upper lip (snarl, disgust) bares the gums above the teeth: the teeth stay on the skull.
        gum = 0.04 * float(exp[_UPPER_UP].mean()) + 0.01 * float(exp[_SNEER].mean()) - 0.015
        # Lips pushed forward into an O (surprise) hang over the upper teeth: only their tips show.
        cover = 0.08 * float(exp[_FUNNEL]) + 0.05 * float(exp[_PUCKER])
        up_rgba = _sample(self.upper_tex, sx, v_up - max(gum, 0.0) + cover, self.V_MAX, self.TEX_H)
        if gum > 0.0:
            band = np.clip((gum - v_up) / 0.008, 0.0, 1.0) * np.clip((0.78 - np.abs(2 * u - 1)) / 0.05, 0, 1)
            shade = np.clip(0.7 + v_up / max(gum, 1e-3) * 0.3, 0.7, 1.0)
            gum_rgb = self.gum_rgb * shade[..., None]
            up_rgba = (
                up_rgba * (1 - band[..., None])
                + np.concatenate([gum_rgb, np.ones_like(band)[..., None]], -1) * band[..., None]
            )
        lo_rgba = _sample(self.lower_tex, sx, v_lo, self.V_MAX, self.TEX_H)
        # The cavity darkens towards its middle and with a wider opening (deeper throat).
        depth = np.clip(np.minimum(v_up, v_lo) / np.maximum(opening * 0.5, 1e-3), 0.0, 1.0)
        # A narrow gap between teeth and lip is in the lips' shadow, not yet the dark of the throat.
        narrow = np.clip(1.0 - (opening - 0.08) / 0.12, 0.0, 1.0)[..., None]
        cavity = self.cavity_rgb * (1 - narrow) + self.cavity_lit_rgb * narrow
        cav = cavity * (1.0 - 0.6 * depth)[..., None] * (1.0 - 0.25 * np.clip(opening / 0.4, 0, 1))[..., None]
        tongue_out = float(exp[_TONGUE_OUT])
        if tongue_out > 0.0:
            # The tongue comes forward over the lower teeth and fills more of the opening.
            t = tongue_out * np.clip((0.15 + 0.25 * tongue_out - v_lo) / 0.02, 0.0, 1.0)[..., None]
            lo_rgba = lo_rgba * (1 - t) + np.append(self.tongue_rgb, 1.0) * t
        out = cav * (1 - lo_rgba[..., 3:]) + lo_rgba[..., :3]
        out = out * (1 - up_rgba[..., 3:]) + up_rgba[..., :3]
        # A barely parted mouth shows the lips' shadow, not a sliver of teeth (which reads as a grin).
        vis = np.clip((opening - 0.025) / 0.035, 0.0, 1.0)[..., None]
        out = out * vis + self.lips_shut_rgb * (1 - vis)
        # Painted texture is crisper than a photo: soften it to the photo's own blur.
        out = cv2.GaussianBlur(out.astype(np.float32), (0, 0), max(0.006 * iod, 0.5))
        frame[y0:y1, x0:x1] = lerp(frame[y0:y1, x0:x1], np.clip(out, 0, 255).astype(np.uint8), mask)

    def _paint_seam(self, frame: np.ndarray, up: np.ndarray, lo: np.ndarray, iod: float) -> None:
        """Where the lips (nearly) meet, a soft anti-aliased seam in the lips' shadow colour hides
        the stair-stepped line and the sliver of the photo's teeth the warp leaves there."""
        mid = 0.5 * (up + lo)
        # Closed as far as the interior shows no teeth (see _paint_interior); lips pressed past
        # each other (negative gap) are closed too.
        gap = lo[:, 1] - up[:, 1]
        closed = np.clip(1.0 - (gap / iod - 0.025) / 0.035, 0.0, 1.0)
        if closed.max() <= 0.0:
            return
        band = 4 + int(round(float(np.clip(gap[closed > 0.5], 0.0, None).max(initial=0.0))))
        x0, y0, x1, y1 = _box(mid, 3, frame.shape[1], frame.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        pts = np.round((mid - [x0, y0]) * (1 << _SHIFT)).astype(np.int32)
        # Fade the seam out where the lips are apart (per column along the mouth).
        xs = np.arange(x0, x1, dtype=np.float64)
        weight = np.interp(xs, mid[:, 0], closed).astype(np.float32)[None, :]
        region = frame[y0:y1, x0:x1].astype(np.float32)
        # A band of lip colour over the remnants, then a thin shadow line where the lips meet.
        # (Lips meeting are lit like the lips; only the line where they meet is in shadow.)
        for width, rgb, alpha in ((band, self.lip_lit_rgb * 0.92, 0.85), (1, self.lip_rgb * 0.55, 0.7)):
            mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
            cv2.polylines(mask, [pts], False, 255, width, cv2.LINE_AA, _SHIFT)
            a = (cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.6) * weight * alpha)[..., None]
            region = region * (1 - a) + rgb * a
        frame[y0:y1, x0:x1] = np.clip(region, 0, 255).astype(np.uint8)

    def _lip_noise(self, shape: tuple[int, int], iod: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grain fields (h, w) float32 for re-synthesized lips, made once and cut to size: fine grain
        for the skin, the lips' fine vertical lines (unit std), and fine grain for the lips."""
        h, w = shape
        sig = max(0.02 * iod, 1.0)
        cache = self._noise
        if cache is None or cache[0].shape[0] < h or cache[0].shape[1] < w or abs(cache[3] - sig) > 0.1 * sig:
            size = (max(h, 0 if cache is None else cache[0].shape[0]) + 16,
                    max(w, 0 if cache is None else cache[0].shape[1]) + 16)  # fmt: skip
            rng = np.random.default_rng(11)
            noise = [rng.normal(0.0, 1.0, size).astype(np.float32) for _ in range(3)]
            lines = cv2.GaussianBlur(noise[1], (0, 0), sigmaX=0.7, sigmaY=sig)
            lines /= max(float(lines.std()), 1e-3)
            cache = self._noise = (
                cv2.GaussianBlur(noise[0], (0, 0), 0.6),
                lines,
                cv2.GaussianBlur(noise[2], (0, 0), 0.6),
                sig,
            )
        return cache[0][:h, :w], cache[1][:h, :w], cache[2][:h, :w]

    # Relaxed closed lips (IOD units): thickness of the upper and lower lip at the middle, and how
    # far the corners sit below the middle of the line where they meet.
    LIP_UP, LIP_LO, LIP_DROOP = 0.09, 0.125, 0.01
    LIP_SHADOW = 0.12  # how much the shadow under the lower lip darkens the chin

    def _paint_lips(
        self, frame: np.ndarray, lm: np.ndarray, exp: np.ndarray, up: np.ndarray, lo: np.ndarray, iod: float
    ) -> None:
        """Relaxed lips re-synthesized over a photo that smiles with its mouth open.

        Warped shut, such a photo's lips are thin stretched bands, pale between dark edges, curving
        up into the cheeks: at a glance (and to a classifier) still a grin. As far as the frame
        relaxes the photo's smile, the warped lips are painted over with the skin around them and
        full relaxed lips drawn on the target inner lip contours instead (so they part with the
        jaw, the interior painted between them): as wide as the target corners, the line where
        closed lips meet straightened, the colour and grain of the photo's own lips, lit from
        above (the upper lip in shade, a soft highlight on the lower one and a shadow under it), a
        soft darker line where they meet, feathered into the skin.
        """
        smile = float(exp[_SMILE].mean())
        relax = float(np.clip((self._photo_smile - smile) / max(self._photo_smile, 1e-3), 0.0, 1.0))
        if relax <= 0.0:
            return
        gap = lo[:, 1] - up[:, 1]
        closed = float(np.clip(1.0 - (gap[1:-1].max() / iod - 0.025) / 0.035, 0.0, 1.0))
        out_up = lm[list(UPPER_OUTER_LIP), :2]
        out_lo = lm[list(LOWER_OUTER_LIP), :2]
        c0, c1 = 0.5 * (up[0] + out_up[0]), 0.5 * (up[-1] + out_up[-1])
        ax = (c1 - c0) / max(np.linalg.norm(c1 - c0), 1e-6)
        bx = np.array([-ax[1], ax[0]])
        ring = np.concatenate([out_up, out_lo[::-1][1:-1]])
        width = max(float(np.dot(c1 - c0, ax)), 1e-6)
        # A mouth narrower than the photo's (an O, a pout) leaves the photo's dark smile corners
        # out in the cheeks, where its wide corners were: they go too, out to there.
        reach = max(1.0, self._photo_mouth_w * iod / width)
        x0, y0, x1, y1 = _box(ring, int(0.2 * iod) + 3, frame.shape[1], frame.shape[0])
        wider = int(0.5 * (reach - 1.0) * width * abs(ax[0]))  # along the mouth only
        x0, x1 = max(x0 - wider, 0), min(x1 + wider, frame.shape[1])
        if x1 <= x0 or y1 <= y0:
            return
        origin = np.array([x0, y0], dtype=np.float64)
        shape = (y1 - y0, x1 - x0)
        # Per-pixel fields in float32 (this runs every frame); scalars as Python floats keep them so.
        a, b = _rotated_grid(x0, y0, x1, y1, c0, ax)
        x = a * (2.0 / width) - 1.0  # -1 .. 1 across the mouth
        xc = np.clip(x, -1.0, 1.0)
        iod = float(iod)

        def along(chain: np.ndarray) -> np.ndarray:
            ca, cb = (chain - c0) @ ax, (chain - c0) @ bx
            k = np.argsort(ca)
            return np.interp(a, ca[k], cb[k]).astype(np.float32)

        mid = 0.5 * (up[len(up) // 2] + lo[len(lo) // 2])
        b_mid = float((mid - c0) @ bx)
        # Closed, the line where the lips meet is straightened (the corners a little lower than
        # the middle); parted, the lips' inner edges are the target inner contours.
        b_in_up, b_in_lo = along(up), along(lo)
        straight = b_mid * (1.0 - xc**2) + self.LIP_DROOP * iod * xc**2
        corr = (straight - 0.5 * (b_in_up + b_in_lo)) * closed
        b_up, b_lo = b_in_up + corr, np.maximum(b_in_lo + corr, b_in_up + corr)
        taper = np.sqrt(np.clip(1.0 - xc**2, 0.0, 1.0))
        bow = 1.0 - 0.15 * np.exp(-((x / 0.08) ** 2))  # the dip of the cupid's bow
        b_top = b_up - self.LIP_UP * iod * taper**0.8 * bow
        b_bot = b_lo + self.LIP_LO * iod * taper**1.2
        lip_up = np.clip(np.minimum(b - b_top, b_up - b) + 0.5, 0.0, 1.0)
        lip_lo = np.clip(np.minimum(b - b_lo, b_bot - b) + 0.5, 0.0, 1.0)
        inside = np.maximum(lip_up, lip_lo) * (np.abs(x) < 1.0)
        # The opening between the parted lips keeps the interior painted there.
        inner = np.concatenate([up, lo[::-1][1:-1]])
        hole = np.maximum(
            np.clip(np.minimum(b - b_up, b_lo - b) + 0.5, 0.0, 1.0) * (np.abs(x) < 1.0),
            _poly_mask(shape, inner, origin),
        ) * (1.0 - closed)
        # Round an opening taller than the lips' bands reach (an O), the lips go on all round it:
        # beside it the bands taper to nothing, and the photo's squashed dark corners showed there.
        if closed < 1.0:
            r = max(int(round(0.05 * iod)), 1)
            grown = cv2.dilate(
                hole.astype(np.float32), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
            )
            inside = np.maximum(inside, np.clip(grown - hole, 0.0, 1.0) * (np.abs(x) < 1.15))
        # 1. The warped lips (and their dark edges) covered by the skin around them.
        # (The smile's dimples beside the corners go too.)
        ox = np.abs(x)
        dx = np.where(ox > reach, ox - reach, np.where(ox < 1.0, 1.0 - ox, 0.0))
        # (Out there the corners' line is the level; inside the mouth, the lips' middle.)
        out_of = ox > 1.0
        level = np.where(out_of, np.float32(0.0), np.float32(b_mid))
        tall = np.where(out_of, np.float32(0.08 * iod), np.float32(0.06 * iod))
        corners = np.exp(-0.5 * (dx * width / 2.0 / (0.07 * iod)) ** 2 - 0.5 * ((b - level) / tall) ** 2)
        zone = cv2.dilate(
            np.maximum(
                np.maximum(_poly_mask(shape, ring, origin), inside.astype(np.float32)),
                corners.astype(np.float32),
            ),
            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)),
            iterations=max(int(0.02 * iod), 1),
        )
        region = frame[y0:y1, x0:x1].astype(np.float32)
        keep = 1.0 - zone
        sig = max(0.06 * iod, 2.0)
        skin = _masked_blur(region, keep, sig)
        skin_grain, lip_lines, lip_grain = self._lip_noise(shape, iod)
        skin += skin_grain[..., None] * (0.6 * self._lip_grain)
        z = cv2.GaussianBlur(zone, (0, 0), max(0.02 * iod, 1.0)) * (1.0 - hole) * relax
        region = lerp(region, skin, z)
        # The relaxed lower lip stands out over the chin: its shadow under it (lit from above).
        d = (b - b_bot) / iod
        under = np.exp(-0.5 * ((d - 0.035) / 0.025) ** 2) * np.clip((0.85 - np.abs(x)) / 0.3, 0.0, 1.0)
        region *= (1.0 - self.LIP_SHADOW * relax * under)[..., None]
        # 2. The relaxed lips.
        upper = b < 0.5 * (b_up + b_lo)
        s_up = np.clip((b_up - b) / np.maximum(b_up - b_top, 1e-3), 0.0, 1.0)  # 0 at the inner edge
        s_lo = np.clip((b - b_lo) / np.maximum(b_bot - b_lo, 1e-3), 0.0, 1.0)
        shade = np.where(upper, 0.84 + 0.06 * s_up, 0.98 - 0.1 * s_lo**2)
        shade = shade + 0.07 * np.exp(-(((s_lo - 0.45) / 0.22) ** 2) - (x / 0.45) ** 2) * ~upper
        edge = np.where(upper, b_up - b, b - b_lo)
        line = np.exp(-0.5 * (edge / max(0.014 * iod, 0.8)) ** 2)
        shade = shade * (1.0 - 0.35 * line * (0.7 + 0.3 * np.abs(xc)) * (0.4 + 0.6 * closed))
        rgb = self.lip_paint_rgb * shade[..., None]
        # The photo's lip grain, and the fine vertical lines of the lips' skin.
        rgb = rgb * (1.0 + 0.012 * lip_lines)[..., None]
        rgb = rgb + lip_grain[..., None] * self._lip_grain
        # Lip colour fades into the skin towards the outer border and the corners (a uniform
        # colour up to a crisp outline looks painted on).
        s_out = np.where(upper, s_up, s_lo)
        tint = np.clip((1.0 - s_out) / 0.3, 0.0, 1.0) ** 0.7 * np.clip((1.0 - np.abs(x)) / 0.3, 0.0, 1.0)
        tint = 0.55 + 0.45 * tint
        rgb = lerp(skin, rgb.astype(np.float32), tint)
        alpha = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), max(0.018 * iod, 1.0)) * relax
        alpha *= 1.0 - hole
        frame[y0:y1, x0:x1] = np.clip(lerp(region, rgb, alpha), 0, 255).astype(np.uint8)


# Tooth boundaries across the mouth (|x|, corner-to-corner in -1..1) and crown lengths (IOD) for
# the upper row (incisors, laterals, canines, premolars) and the lower row.
_UPPER_EDGES = (0.0, 0.17, 0.32, 0.45, 0.56, 0.66, 0.75)
_UPPER_LEN = ((0.0, 0.3, 0.42, 0.5, 0.75), (0.15, 0.135, 0.14, 0.12, 0.09))
_LOWER_EDGES = (0.0, 0.1, 0.2, 0.31, 0.41, 0.5)
_LOWER_LEN = ((0.0, 0.3, 0.5), (0.075, 0.07, 0.05))


def _interp_len(ax: np.ndarray, table: tuple[tuple[float, ...], tuple[float, ...]]) -> np.ndarray:
    return np.interp(ax, table[0], table[1])


def _tooth_row(
    ax: np.ndarray, vv: np.ndarray, edges: tuple[float, ...], lengths: tuple[tuple[float, ...], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Brightness (rounded across each tooth, dark narrow gaps) and alpha (rounded biting edges)
    of a row of teeth hanging from v = 0, at |x| = ax across the mouth and depth vv (IOD)."""
    e = np.asarray(edges)
    k = np.clip(np.searchsorted(e, ax) - 1, 0, len(e) - 2)
    pos = (ax - e[k]) / (e[k + 1] - e[k])  # 0..1 across the tooth
    c = 2.0 * pos - 1.0
    gap = np.clip((1.0 - np.abs(c)) / 0.1, 0.0, 1.0) ** 0.6
    bright = (1.0 - 0.12 * c**4) * (0.84 + 0.16 * gap)
    length = _interp_len(ax, lengths) * (1.0 - 0.3 * c**8)  # corners of each crown rounded
    alpha = np.clip((length - vv) / 0.012, 0.0, 1.0) * np.clip((e[-1] - ax) / 0.02, 0.0, 1.0)
    return bright, alpha


def _teeth_colour(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Teeth white in the photo's light: the brightest white of its eyes, else of its face."""
    h, w = image.shape[:2]
    samples = []
    for upper, lower in ((EYE_RIGHT_UPPER, EYE_RIGHT_LOWER), (EYE_LEFT_UPPER, EYE_LEFT_LOWER)):
        poly = np.concatenate([lm[list(upper), :2], lm[list(lower[::-1][1:-1]), :2]])
        x0, y0, x1, y1 = _box(poly, 1, w, h)
        mask = _poly_mask((y1 - y0, x1 - x0), poly, np.array([x0, y0], dtype=np.float64)) > 0.5
        samples.append(image[y0:y1, x0:x1][mask].astype(np.float32))
    eye = np.concatenate(samples)
    if len(eye) >= 20:
        luma = eye @ np.array([0.299, 0.587, 0.114])
        white = eye[luma >= np.percentile(luma, 85)].mean(0)
    else:
        poly = lm[list(FACE_OVAL), :2]
        x0, y0, x1, y1 = _box(poly, 0, w, h)
        mask = _poly_mask((y1 - y0, x1 - x0), poly, np.array([x0, y0], dtype=np.float64)) > 0.5
        white = np.percentile(image[y0:y1, x0:x1][mask].astype(np.float32), 97, axis=0)
    # Teeth are ivory: take the light's brightness and only a fifth of its tint (eye whites are
    # often pink or shadowed); always clearly brighter than the face's skin, never grey.
    poly = lm[list(FACE_OVAL), :2]
    x0, y0, x1, y1 = _box(poly, 0, w, h)
    mask = _poly_mask((y1 - y0, x1 - x0), poly, np.array([x0, y0], dtype=np.float64)) > 0.5
    skin_luma = float(
        np.median(image[y0:y1, x0:x1][mask].astype(np.float32) @ np.array([0.299, 0.587, 0.114]))
    )
    luma = max(float(white @ np.array([0.299, 0.587, 0.114])), 1.0)
    tint = white / luma
    # Warm ivory, with a little of the skin's own hue (the photo's light and white balance): a
    # neutral white beside warm skin reads blue-grey.
    skin_rgb = np.median(image[y0:y1, x0:x1][mask].astype(np.float32), axis=0)
    skin_tint = skin_rgb / max(float(skin_rgb @ np.array([0.299, 0.587, 0.114])), 1.0)
    ivory = np.array([1.0, 0.95, 0.84])
    colour = 0.78 * ivory + 0.17 * skin_tint + 0.05 * tint
    colour /= float(colour @ np.array([0.299, 0.587, 0.114]))
    bright = float(np.clip(max(luma, 1.3 * skin_luma, 215.0), 0.0, 235.0))
    return np.clip(bright * colour, 0, 250)


def _sample(tex: np.ndarray, sx: np.ndarray, v: np.ndarray, v_max: float, tex_h: int) -> np.ndarray:
    sy = (v / v_max * tex_h - 0.5).astype(np.float32)
    return cv2.remap(tex, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _chain_map(
    lm: np.ndarray, chain: tuple[int, ...], iod: float, sign: float, w: int, h: int, v_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Source-image sampling maps for a texture anchored on a lip chain (sign +1: downwards)."""
    pts = lm[list(chain), :2]
    c0, c1 = pts[0], pts[-1]
    ax = (c1 - c0) / max(np.linalg.norm(c1 - c0), 1e-6)
    bx = np.array([-ax[1], ax[0]])
    pa = (pts - c0) @ ax
    pb = (pts - c0) @ bx
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(h) + 0.5) / h * v_max
    a = u * float(np.dot(c1 - c0, ax))
    order = np.argsort(pa)
    b = np.interp(a, pa[order], pb[order])
    aa, vv = np.meshgrid(a, v)
    bb = b[None, :] + sign * vv * iod
    px = c0[0] + aa * ax[0] + bb * bx[0]
    py = c0[1] + aa * ax[1] + bb * bx[1]
    return px.astype(np.float32), py.astype(np.float32)


class EyeLayer:
    """One eyeball: the photo's sclera (iris removed) with its iris disc moved to the target centre."""

    def __init__(
        self,
        image: np.ndarray,
        landmarks: np.ndarray,
        upper: tuple[int, ...],
        lower: tuple[int, ...],
        iris: tuple[int, ...],
    ) -> None:
        lm = np.asarray(landmarks, dtype=np.float64)
        h, w = image.shape[:2]
        self.upper, self.lower, self.iris = upper, lower, iris
        contour = np.concatenate([lm[list(upper), :2], lm[list(lower[::-1][1:-1]), :2]])
        centre = lm[iris[0], :2]
        radius = float(np.mean(np.linalg.norm(lm[list(iris[1:]), :2] - centre, axis=1)))
        self.radius = radius
        pad = int(np.ceil(radius)) + 4
        x0, y0, x1, y1 = _box(np.concatenate([contour, centre[None]]), pad, w, h)
        self.origin = np.array([x0, y0], dtype=np.float64)
        patch = image[y0:y1, x0:x1].copy()
        ph, pw = patch.shape[:2]
        opening = _poly_mask((ph, pw), contour, self.origin)
        yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
        cx, cy = centre - self.origin
        dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        disc = (dist < radius + 1.5).astype(np.uint8)
        # Sclera: the photo's eye with the iris painted out (keeps lid shadows and colour), filled
        # from the white the photo shows (the lids' skin and margins would brown it).
        inner = cv2.erode((opening > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8))
        hole = (disc.astype(bool) | ~inner.astype(bool)).astype(np.uint8)
        self.sclera = cv2.inpaint(patch, hole * 255, 3, cv2.INPAINT_TELEA)
        # Iris: visible pixels of the disc (off the lid margins); the part hidden under the lids
        # takes their median.
        visible = inner.astype(bool) & (dist < radius)
        iris_rgb = patch.astype(np.float32)
        if visible.sum() >= 5:
            med = np.median(iris_rgb[visible], axis=0)
        else:
            med = np.array([60.0, 45.0, 35.0])
        hidden = (dist < radius + 1.5) & ~visible
        ring = np.clip(1.0 - 0.35 * (dist / max(radius, 1.0)) ** 4, 0.6, 1.0)[..., None]
        iris_rgb[hidden] = (med * ring)[hidden]
        self.iris_rgb = iris_rgb
        self.iris_alpha = np.clip(radius - 0.5 - dist, 0.0, 1.0).astype(np.float32)
        self.src_centre = centre
        self.src_corners = lm[[upper[0], upper[-1]], :2]
        self._eye_h = max(float(np.linalg.norm(self.src_corners[1] - self.src_corners[0])) * 0.3, 1.0)
        self.src_upper = lm[list(upper), :2]
        self.src_lower = lm[list(lower), :2]
        # Lid skin: the band just above the upper lid; lashes: the darkest pixels along the lid.
        iod = _iod(lm)
        # (Above the crease and its lash shadow; the brighter half, so shadows and frames don't grey it.)
        lid = self.src_upper[1:-1]
        band = np.concatenate([lid - [0.0, 0.07 * iod], (lid - [0.0, 0.15 * iod])[::-1]])
        yy0 = max(int(np.floor(band[:, 1].min())), 0)
        yy1 = max(int(np.ceil(band[:, 1].max())) + 1, yy0 + 1)
        region = image[yy0:yy1, x0:x1]
        skin = _poly_mask(region.shape[:2], band, np.array([x0, yy0], dtype=np.float64)) > 0.5
        pixels = (
            region[skin].astype(np.float32) if skin.sum() >= 5 else patch.reshape(-1, 3).astype(np.float32)
        )
        luma = pixels @ np.array([0.299, 0.587, 0.114])
        self.lid_rgb = np.median(pixels[luma >= np.median(luma)], axis=0)
        # The skin's own grain there (what a fill must carry not to look painted).
        grey = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY).astype(np.float32)
        fine = (grey - cv2.GaussianBlur(grey, (0, 0), 1.0))[skin] if skin.sum() >= 5 else np.zeros(1)
        # (robust: a brow hair or a frame's edge in the band is no grain)
        self._grain_std = float(np.clip(1.4826 * np.median(np.abs(fine)), 0.5, 6.0))
        self._noise: np.ndarray | None = None
        along = patch[np.clip(np.round(self.src_upper[:, 1] - y0).astype(int), 0, ph - 1),
                      np.clip(np.round(self.src_upper[:, 0] - x0).astype(int), 0, pw - 1)].astype(np.float32)  # fmt: skip
        self.lash_rgb = np.minimum(along.min(0), self.lid_rgb * 0.45).astype(np.float32)
        # Beyond the photo's own lids lies more eyeball, shown when the eyes widen: continue the
        # white there (a little shadowed), not the lid skin the photo has in that place.
        white = inner.astype(bool) & (dist > radius + 1.5)
        # (Only outside the photo's own opening: its lid margins, dark with lashes, stay.)
        beyond = np.clip(1.0 - opening, 0.0, 1.0)[..., None]
        if white.sum() >= 5:
            px = self.sclera[white].astype(np.float32)
            luma = px @ np.array([0.299, 0.587, 0.114])
            # The lit white: a narrowed eye shows little of it between lashes and lid shadow.
            sclera_rgb = np.median(px[luma >= np.percentile(luma, 75)], axis=0)
            # ...and never greyer than lit skin allows (a white about as light as the lid skin).
            lit = 0.9 * float(self.lid_rgb @ np.array([0.299, 0.587, 0.114]))
            grey = float(sclera_rgb @ np.array([0.299, 0.587, 0.114]))
            if grey < lit:
                white_rgb = lit * np.array([1.0, 0.97, 0.94]) / 0.976
                t = min(1.0, (lit - grey) / max(lit, 1.0) * 2.0)
                sclera_rgb = sclera_rgb * (1 - t) + white_rgb * t
            self.sclera = (self.sclera * (1 - beyond) + sclera_rgb * beyond).astype(np.uint8)

    def paint(self, frame: np.ndarray, lm: np.ndarray, iod: float) -> None:
        """Paint sclera and iris inside the target eyelid contour (in place)."""
        contour = np.concatenate([lm[list(self.upper), :2], lm[list(self.lower[::-1][1:-1]), :2]])
        x0, y0, x1, y1 = _box(contour, 2, frame.shape[1], frame.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        origin = np.array([x0, y0], dtype=np.float64)
        # Similarity from the source eye corners to the target ones: the eyeball turns with the head.
        sc = self.src_corners
        tc = lm[[self.upper[0], self.upper[-1]], :2]
        m = _similarity(sc - self.origin, tc - origin)
        # An eye that opens no wider and looks where the photo's does is the warped photo's own
        # (re-synthesized, a small narrowed eye would only lose its lashes and margins).
        lift, need = self._opening(lm, m, origin)
        if need > 0.0:
            mask = _poly_mask((y1 - y0, x1 - x0), contour, origin)
            # Landmark contours run along the lid margins: the outermost pixel stays the warped
            # photo's (its lashes and margin), or the painted ball shows a drawn outline.
            mask = cv2.GaussianBlur(cv2.erode(mask, np.ones((3, 3), np.uint8)), (0, 0), 0.6)
            if mask.sum() >= 1.0:
                if need < 1.0:
                    mask *= np.float32(need)
                self._paint_ball(frame, lm, mask, m, origin, (x0, y0, x1, y1), lift)
        self._paint_lid(frame, lm, m, origin)

    def _opening(self, lm: np.ndarray, m: np.ndarray, origin: np.ndarray) -> tuple[float, float]:
        """How far the upper lid lifts off the photo's (in eye heights, 0..1), and how much painted
        ball the frame needs (0: none, the warped photo's eye; 1 or more: all of it)."""
        up_t = lm[list(self.upper), :2]
        up_open = (self.src_upper - self.origin) @ m[:, :2].T + m[:, 2] + origin
        lift = float(np.clip((up_open[1:-1, 1] - up_t[1:-1, 1]).max() / self._eye_h, 0.0, 1.0))
        lo_open = (self.src_lower - self.origin) @ m[:, :2].T + m[:, 2] + origin
        drop = float(
            np.clip((lm[list(self.lower[1:-1]), 1] - lo_open[1:-1, 1]).max() / self._eye_h, 0.0, 1.0)
        )
        tgt_c = lm[self.iris[0], :2] - origin
        gaze = float(np.linalg.norm(tgt_c - (m[:, :2] @ (self.src_centre - self.origin) + m[:, 2])))
        return lift, max(lift / 0.15, drop / 0.15, gaze / max(0.3 * self.radius, 0.5))

    def _paint_ball(
        self,
        frame: np.ndarray,
        lm: np.ndarray,
        mask: np.ndarray,
        m: np.ndarray,
        origin: np.ndarray,
        box: tuple[int, int, int, int],
        lift: float,
    ) -> None:
        x0, y0, x1, y1 = box
        size = (x1 - x0, y1 - y0)
        sclera = cv2.warpAffine(self.sclera, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # The iris goes where the rig puts its centre (gaze), same rotation and scale.
        tgt_c = lm[self.iris[0], :2] - origin
        mi = m.copy()
        mi[:, 2] += tgt_c - (m[:, :2] @ (self.src_centre - self.origin) + m[:, 2])
        iris = cv2.warpAffine(
            self.iris_rgb, mi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        ia = cv2.warpAffine(self.iris_alpha, mi, size, flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
        sclera = sclera.astype(np.float32)
        # A widened eye: the newly bared white is shaded towards the lids (the ball is round, the
        # lids cast shadow) and the upper lid keeps a lash line.
        up_t = lm[list(self.upper), :2]
        eye_h = self._eye_h
        if lift > 0.05:
            k = min(1.0, (lift - 0.05) / 0.3)
            # The upper lid and its lashes shade the ball's top; the lower lid barely does (a
            # ring of shade all round reads as a drawn outline).
            order = np.argsort(up_t[:, 0])
            lid_y = np.interp(np.arange(x0, x1, dtype=np.float64), up_t[order, 0], up_t[order, 1])
            below = np.arange(y0, y1, dtype=np.float32)[:, None] - lid_y.astype(np.float32)[None, :]
            shade = np.exp(-np.clip(below, 0.0, None) / max(0.15 * eye_h, 0.8))
            rim = cv2.GaussianBlur(mask, (0, 0), max(0.15 * eye_h, 0.8))
            sclera *= (1.0 - k * (0.15 * shade + 0.06 * (1.0 - rim)))[..., None].astype(np.float32)
        eye = lerp(sclera, iris, ia[..., 0])
        out = lerp(frame[y0:y1, x0:x1].astype(np.float32), eye, mask)
        if lift > 0.05:
            lash = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
            pts = np.round((up_t[1:-1] - origin) * (1 << _SHIFT)).astype(np.int32)
            cv2.polylines(lash, [pts], False, 255, max(int(round(0.07 * eye_h)), 1), cv2.LINE_AA, _SHIFT)
            a = (cv2.GaussianBlur(lash.astype(np.float32) / 255.0, (0, 0), 0.6) * 0.6 * k)[..., None]
            out = out * (1 - a) + self.lash_rgb * a
        frame[y0:y1, x0:x1] = np.clip(out, 0, 255).astype(np.uint8)

    def _paint_lid(self, frame: np.ndarray, lm: np.ndarray, m: np.ndarray, origin: np.ndarray) -> None:
        """Where the upper lid came down, paint lid skin over the stretched warp and a lash line.

        The lid grows out of the skin just above it (its colour, column by column, so no outline
        shows where it starts), darkens towards the margin where it turns under, and carries the
        photo's skin grain (a flat fill reads as painted on)."""
        up_t = lm[list(self.upper), :2]
        up_open = (self.src_upper - self.origin) @ m[:, :2].T + m[:, 2] + origin  # lid where the photo has it
        drop = up_t[:, 1] - up_open[:, 1]
        eye_h = self._eye_h
        closure = float(np.clip(drop[1:-1].max() / eye_h, 0.0, 1.0))
        if closure < 0.15:
            return
        top = up_open - [0.0, 0.4 * eye_h]
        # A (nearly) closed eye: the lid reaches down to the lower lid, covering the sliver of white
        # the warp leaves between them, and the lashes lie along the line where the lids meet.
        lo_t = lm[list(self.lower), :2]
        shut = float(np.clip((closure - 0.6) / 0.3, 0.0, 1.0))
        edge = up_t.copy()
        edge[:, 1] += np.clip(lo_t[:, 1] - up_t[:, 1], 0.0, None) * shut
        poly = np.concatenate([top, (edge + [0.0, (0.6 + 0.12 * eye_h) * shut])[::-1]])
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = _box(poly, 3, w, h)
        if x1 <= x0 or y1 <= y0:
            return
        o = np.array([x0, y0], dtype=np.float64)
        mask = cv2.GaussianBlur(_poly_mask((y1 - y0, x1 - x0), poly, o), (0, 0), max(0.15 * eye_h, 0.6))
        region = frame[y0:y1, x0:x1].astype(np.float32)
        xs = np.arange(x0, x1, dtype=np.float64)
        order = np.argsort(edge[:, 0])  # (one eye's chain runs right to left)
        lid_edge = np.interp(xs, edge[order, 0], edge[order, 1]).astype(np.float32)
        top_y = np.interp(xs, top[order, 0], top[order, 1]).astype(np.float32)
        # The skin just above the lid, a few rows per column (the lid takes the shade of its socket).
        rows = top_y[None, :] - np.float32(eye_h) * np.array([[0.05], [0.15], [0.25]], dtype=np.float32)
        sy = np.clip(np.round(rows).astype(int), 0, h - 1)
        above = frame[sy, np.broadcast_to(np.arange(x0, x1), sy.shape)].astype(np.float32)
        above = np.median(above, axis=0)
        above = cv2.GaussianBlur(above[None], (0, 0), sigmaX=max(0.5 * eye_h, 1.0), sigmaY=0.1)[0]
        # (never far off the photo's own lid skin: hair or a frame above must not tint it)
        base = 0.8 * above + 0.2 * self.lid_rgb
        # Shading: as lit as the skin above at the top, darker where the lid turns under.
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        t = np.clip((yy - top_y[None, :]) / np.maximum(lid_edge - top_y, 1.0)[None, :], 0.0, 1.0)
        lid = base[None, :, :] * (1.0 - 0.2 * t * t)[..., None]
        lid += (self._grain((y1 - y0, x1 - x0)) * self._grain_std)[..., None]
        a = mask * np.float32(min(1.0, (closure - 0.15) / 0.35) * 0.9)
        frame[y0:y1, x0:x1] = np.clip(lerp(region, lid.astype(np.float32), a), 0, 255).astype(np.uint8)
        # Lashes along the lid's edge.
        pts = np.round(edge * (1 << _SHIFT)).astype(np.int32)
        thick = max(int(round(0.12 * eye_h)), 1)
        pts -= np.array([x0, y0], dtype=np.int32) << _SHIFT  # drawn into the lid's box only
        lash = frame[y0:y1, x0:x1].copy()
        cv2.polylines(lash, [pts], False, [float(c) for c in self.lash_rgb], thick, cv2.LINE_AA, _SHIFT)
        k = min(1.0, closure)
        frame[y0:y1, x0:x1] = (frame[y0:y1, x0:x1] * (1 - 0.8 * k) + lash * 0.8 * k).astype(np.uint8)

    def _grain(self, shape: tuple[int, int]) -> np.ndarray:
        """Fine grain (h, w) float32 for painted lid skin, of unit std above a 1-pixel blur (as the
        photo's grain is measured), made once and cut to size."""
        have = (0, 0) if self._noise is None else self._noise.shape
        if have[0] < shape[0] or have[1] < shape[1]:
            size = (max(shape[0], have[0]) + 16, max(shape[1], have[1]) + 16)
            noise = np.random.default_rng(7).normal(0.0, 1.0, size).astype(np.float32)
            noise = cv2.GaussianBlur(noise, (0, 0), 0.7)
            fine = noise - cv2.GaussianBlur(noise, (0, 0), 1.0)
            self._noise = noise / max(float(fine.std()), 1e-3)
        return self._noise[: shape[0], : shape[1]]


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity mapping two source points onto two target points."""
    sv = src[1] - src[0]
    dv = dst[1] - dst[0]
    sn = float(sv @ sv) or 1e-6
    a = float(sv @ dv) / sn
    b = float(sv[0] * dv[1] - sv[1] * dv[0]) / sn
    r = np.array([[a, -b], [b, a]])
    t = dst[0] - r @ src[0]
    return np.hstack([r, t[:, None]]).astype(np.float64)


class GlassesLayer:
    """Glasses frames kept rigid: expression fields (brows, lids, cheeks) never bend them.

    Found once per photo as the non-skin structure in the band around the eyes that crosses the
    nose bridge (a frame's bridge; brows and eyes never cross it). The warp then runs on the photo
    with the frames painted out, and the frames are composited back on top of every frame, moved
    only by the head's rigid motion (a similarity fitted to the nose bridge and eye corners).
    ``detect`` returns None for a face without glasses.
    """

    _RIGID = (6, 168, 197, 195, 33, 133, 263, 362, 127, 356)  # nose bridge, eye corners, temples

    def __init__(self, image: np.ndarray, mask: np.ndarray) -> None:
        ys, xs = np.nonzero(mask > 0.0)
        h, w = image.shape[:2]
        pad = 4
        self.box = (
            max(int(xs.min()) - pad, 0),
            max(int(ys.min()) - pad, 0),
            min(int(xs.max()) + pad + 1, w),
            min(int(ys.max()) + pad + 1, h),
        )
        x0, y0, x1, y1 = self.box
        self.alpha = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.float32)
        self.rgb = image[y0:y1, x0:x1].astype(np.float32)
        # The photo with the frames painted out: what the warp moves underneath them.
        hole = cv2.dilate((mask > 0.02).astype(np.uint8), np.ones((3, 3), np.uint8))
        self.base = image.copy()
        self.base[y0:y1, x0:x1] = _fill_from_above(image[y0:y1, x0:x1], hole[y0:y1, x0:x1].astype(bool))

    @classmethod
    def detect(cls, image: np.ndarray, landmarks: np.ndarray) -> GlassesLayer | None:
        """The frames of a photo's glasses, or None when it shows none."""
        from models.wrinkles import skin_colour  # wrinkles builds on this module's neighbours

        lm = np.asarray(landmarks, dtype=np.float64)
        h, w = image.shape[:2]
        iod = _iod(lm)
        brow_top = float(min(lm[k, 1] for k in (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)))
        eye_low = float(max(lm[k, 1] for k in EYE_RIGHT_LOWER + EYE_LEFT_LOWER))
        oval = lm[list(FACE_OVAL), :2]
        x0 = max(int(oval[:, 0].min()), 0)
        x1 = min(int(oval[:, 0].max()) + 1, w)
        y0 = max(int(brow_top - 0.15 * iod), 0)
        y1 = min(int(eye_low + 0.5 * iod) + 1, h)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        box = (x0, y0, x1, y1)
        colour = skin_colour(image, lm, box)
        not_skin = (colour < 0.5).astype(np.uint8)
        origin = np.array([x0, y0], dtype=np.float64)
        eyes = np.zeros_like(not_skin)
        for upper, lower in ((EYE_RIGHT_UPPER, EYE_RIGHT_LOWER), (EYE_LEFT_UPPER, EYE_LEFT_LOWER)):
            poly = np.concatenate([lm[list(upper), :2], lm[list(lower[::-1][1:-1]), :2]])
            eyes = np.maximum(eyes, (_poly_mask(eyes.shape, poly, origin) > 0.0).astype(np.uint8))
        k = max(int(0.04 * iod), 1)
        eyes = cv2.dilate(eyes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
        not_skin &= 1 - eyes
        # The bridge strip: between the inner eye corners, from below the inner ends of the brows
        # (brows that nearly meet, or their shadow, are no bridge) down to the nose.
        bx0 = int(round(0.65 * lm[133, 0] + 0.35 * lm[362, 0])) - x0
        bx1 = int(round(0.35 * lm[133, 0] + 0.65 * lm[362, 0])) - x0
        by0 = int(round(max(lm[55, 1], lm[285, 1]) + 0.03 * iod)) - y0
        by1 = int(round(lm[6, 1])) - y0
        # Frame is what is far darker than the skin (brows and skin shadows are not) or far from it
        # in colour; translucent rims over skin may bend a little.
        luma = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32)
        skin_luma = float(np.median(luma[colour > 0.8])) if (colour > 0.8).sum() > 20 else float(luma.mean())
        solid = (luma < 0.45 * skin_luma) | (colour < 0.02)
        strip = not_skin[max(by0, 0) : by1, bx0:bx1]
        if strip.size == 0:
            return None
        # A bridge is a solid bar across the strip with skin above it: a shadowed nose bridge is
        # not solid, and brows that meet (or nearly) fill the strip's top rows instead.
        bar = (solid[max(by0, 0) : by1, bx0:bx1].mean(1) >= 0.5) & (strip.mean(1) >= 0.6)
        first = int(np.argmax(bar))
        if not bar.any() or first == 0 or float(strip[:first].mean(1).min()) > 0.3:
            return None
        # Frames are one object, but thin or translucent parts break it into pieces: join pieces
        # a few pixels apart, keep what is joined to the bridge.
        j = max(int(0.06 * iod), 1)
        joined = cv2.dilate(not_skin, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * j + 1, 2 * j + 1)))
        _, labels = cv2.connectedComponents(joined, connectivity=8)
        crossing = np.unique(labels[max(by0, 0) : by1, bx0:bx1][strip.astype(bool)])
        crossing = crossing[crossing > 0]
        # Only what is clearly not skin is frame.
        frames = (np.isin(labels, crossing) & (not_skin > 0) & solid).astype(np.uint8)
        # Highlights on the frames belong to them too: close small gaps inside the dark bar.
        c = max(int(0.025 * iod), 1)
        frames = cv2.morphologyEx(
            frames, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * c + 1, 2 * c + 1))
        ).astype(np.float32)
        # Brow fields bend the top of the frames; below the upper lids the rims sit on the lenses'
        # skin, which moves little and must stay free to squint: keep the top bar and the bridge.
        lid = int(round(0.5 * (lm[159, 1] + lm[386, 1]))) - y0
        below = np.zeros_like(frames, dtype=bool)
        below[max(lid, 0) :] = True
        below[: max(by1, 0), max(bx0, 0) : max(bx1, 0)] = False
        frames[below] = 0.0
        # Frames reach out past the eyes on both sides; a bar over the nose alone is not glasses.
        cols = np.nonzero(frames.any(0))[0]
        if len(cols) == 0 or cols.min() + x0 > lm[33, 0] or cols.max() + x0 < lm[263, 0]:
            return None
        frames = cv2.GaussianBlur(cv2.dilate(frames, np.ones((3, 3), np.uint8)), (0, 0), 0.7)
        mask = np.zeros((h, w), dtype=np.float32)
        mask[y0:y1, x0:x1] = frames
        return cls(image, mask)

    def paint(self, frame: np.ndarray, rest: np.ndarray, posed: np.ndarray) -> None:
        """Composite the frames over a rendered frame (in place), moved by the head's rigid motion.

        Args:
            rest, posed: (478, 2+) landmarks of the expressionless face at zero pose and at this
                frame's pose: their difference is the head's motion, with no expression in it.
        """
        m = _fit_similarity(rest[list(self._RIGID), :2], posed[list(self._RIGID), :2])
        x0, y0, x1, y1 = self.box
        # Still head (within half a pixel over the frames): paint them exactly as in the photo.
        centre = np.array([0.5 * (x0 + x1), 0.5 * (y0 + y1)])
        shift = m[:, :2] @ centre + m[:, 2] - centre
        if np.abs(m[:, :2] - np.eye(2)).max() < 0.002 and np.abs(shift).max() < 0.5:
            rgb, alpha = self.rgb, self.alpha
            fx0, fy0, fx1, fy1 = x0, y0, x1, y1
        else:
            # Warp into the frame's region the moved box covers (plus a margin).
            corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
            moved = corners @ m[:, :2].T + m[:, 2]
            fx0, fy0 = np.maximum(np.floor(moved.min(0)).astype(int) - 1, 0)
            fx1, fy1 = np.minimum(np.ceil(moved.max(0)).astype(int) + 2, [frame.shape[1], frame.shape[0]])
            if fx1 <= fx0 or fy1 <= fy0:
                return
            local = m.copy()
            local[:, 2] += m[:, :2] @ np.array([x0, y0]) - np.array([fx0, fy0])
            size = (int(fx1 - fx0), int(fy1 - fy0))
            rgb = cv2.warpAffine(
                self.rgb, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            alpha = cv2.warpAffine(self.alpha, local, size, flags=cv2.INTER_LINEAR, borderValue=0)
        a = alpha[..., None]
        region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
        frame[fy0:fy1, fx0:fx1] = np.clip(region * (1 - a) + rgb * a, 0, 255).astype(np.uint8)


def _fill_from_above(patch: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill hole pixels with the skin mirrored from just above each hole run (keeps skin texture
    where a smooth inpaint would leave a blur that shows once the brows move over it)."""
    h, w = hole.shape
    run = np.zeros((h, w), dtype=np.int32)
    for y in range(h):
        run[y] = np.where(hole[y], (run[y - 1] if y > 0 else 0) + 1, 0)
    yy = np.arange(h, dtype=np.int32)[:, None]
    src_y = np.where(hole, yy - 2 * run + 1, yy)
    src_y = np.clip(src_y, 0, h - 1)
    out = patch[src_y, np.arange(w)[None, :]]
    # Smooth colour from a plain inpaint, fine skin texture from the mirror (no blocks, no blur).
    smooth = cv2.inpaint(np.ascontiguousarray(patch), hole.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    mirror = out.astype(np.float32)
    detail = mirror - cv2.GaussianBlur(mirror, (0, 0), 2.0)
    filled = np.clip(smooth.astype(np.float32) + 0.7 * detail, 0, 255).astype(np.uint8)
    out = patch.copy()
    out[hole] = filled[hole]
    return out


def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity mapping points src (N, 2) onto dst (N, 2)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    den = float((a**2).sum()) or 1e-6
    c = float((a * b).sum()) / den
    s = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()) / den
    r = np.array([[c, -s], [s, c]])
    return np.hstack([r, (md - r @ ms)[:, None]])
