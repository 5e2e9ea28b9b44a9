"""MeshWarp: the analytic renderer. Source photo + rig coefficients -> frame, no trained weights.

A piecewise-affine warp over the face mesh, a soft ring of vertices around the face so hair,
neck and background bend smoothly and stay put far from it, triangles drawn far to near so
folds become occlusion, plus painted layers where a warp cannot invent pixels: the mouth
interior (cavity, teeth, tongue) and the eyeballs (sclera and an iris that moves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from models.rig import (
    EYE_LEFT_LOWER,
    EYE_LEFT_UPPER,
    EYE_RIGHT_LOWER,
    EYE_RIGHT_UPPER,
    FACE_OVAL,
    IRIS_LEFT,
    IRIS_RIGHT,
    LOWER_INNER_LIP,
    LOWER_OUTER_LIP,
    NUM_BLENDSHAPES,
    UPPER_INNER_LIP,
    UPPER_OUTER_LIP,
    Rig,
    RigConfig,
    mesh_triangles,
)
from models.texture import EyeLayer, GlassesLayer, MouthLayer
from models.wrinkles import WrinkleLayer

__all__ = ["MeshWarp", "MeshWarpConfig"]


@dataclass(frozen=True)
class MeshWarpConfig:
    """Renderer settings."""

    map_scale: float = 0.5  # the warp map is computed at this fraction of the output size
    ring_scales: tuple[float, ...] = (1.18, 1.45, 1.85, 2.4)  # rings around the face oval (x its radius)
    ring_follow: tuple[float, ...] = (0.8, 0.5, 0.2, 0.0)  # how much of the oval's motion each ring follows
    paint_mouth: bool = True
    paint_eyes: bool = True
    paint_wrinkles: bool = True  # expression creases shaded into the photo (models/wrinkles.py)
    rigid_glasses: bool = True  # glasses frames follow the head only, never the brows or cheeks

    def __post_init__(self) -> None:
        if not 0.2 <= self.map_scale <= 1.0:
            raise ValueError(f"map_scale must be in [0.2, 1], got {self.map_scale}")
        if len(self.ring_scales) != len(self.ring_follow) or not self.ring_scales:
            raise ValueError("ring_scales and ring_follow must be non-empty and of equal length")
        if self.ring_follow[-1] != 0.0:
            raise ValueError("the outermost ring must stay put (ring_follow[-1] == 0)")


class _LidGap:
    """Keeps the skin between each upper lid and its brow from folding over the lid.

    Brows drawn hard down (anger) over lids raised to glare meet the lid: the skin between them
    turned over, and its triangles, drawn by depth, cut a stair-stepped edge along the lid. Each
    vertex above a lid (up to the brow's top, canonical frame) keeps at least ``keep`` of its
    relaxed height above the lid below it: the band bunches up but stays in order. Lids, eyes and
    everything else are untouched, so the landmarks the layers paint from stay the rig's.
    """

    def __init__(self, neutral: np.ndarray, keep: float = 0.3) -> None:
        self.keep = keep
        contour = set(
            EYE_RIGHT_UPPER + EYE_RIGHT_LOWER + EYE_LEFT_UPPER + EYE_LEFT_LOWER + IRIS_RIGHT + IRIS_LEFT
        )
        others = np.array([k for k in range(len(neutral)) if k not in contour])
        vert, lid_a, lid_b, frac, height = [], [], [], [], []
        for upper in (EYE_RIGHT_UPPER, EYE_LEFT_UPPER):
            chain = np.array(upper)[np.argsort(neutral[list(upper), 0])]
            cx, cy = neutral[chain, 0], neutral[chain, 1]
            x, y = neutral[others, 0], neutral[others, 1]
            d = np.interp(x, cx, cy) - y  # height above the lid (IOD); beyond the corners, theirs
            take = (x > cx[0] - 0.08) & (x < cx[-1] + 0.08) & (d > 0.005) & (d < 0.45)
            j = np.clip(np.searchsorted(cx, x[take]) - 1, 0, len(cx) - 2)
            t = np.clip((x[take] - cx[j]) / np.maximum(cx[j + 1] - cx[j], 1e-9), 0.0, 1.0)
            vert.append(others[take])
            lid_a.append(chain[j])
            lid_b.append(chain[j + 1])
            frac.append(t)
            height.append(d[take])
        self.vert, self.lid_a, self.lid_b = np.concatenate(vert), np.concatenate(lid_a), np.concatenate(lid_b)
        self.frac, self.height = np.concatenate(frac), np.concatenate(height)

    def __call__(self, shape: np.ndarray) -> np.ndarray:
        """A copy of canonical shape (478, 3) with the lid bands unfolded."""
        lid = shape[self.lid_a, 1] * (1.0 - self.frac) + shape[self.lid_b, 1] * self.frac
        y = shape[self.vert, 1]
        top = lid - self.keep * self.height
        if not (y > top).any():
            return shape
        out = shape.copy()
        out[self.vert, 1] = np.minimum(y, top)
        return out


def _hole_quads(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles filling the opening between two index chains that share their end points."""
    tris = []
    for i in range(len(upper) - 1):
        a, b, c, d = upper[i], upper[i + 1], lower[i], lower[i + 1]
        if a == c:
            tris.append((a, b, d))
        elif b == d:
            tris.append((a, b, c))
        else:
            tris.append((a, b, d))
            tris.append((a, d, c))
    return tris


class MeshWarp:
    """Animate one portrait.

    Args:
        image: (H, W, 3) uint8 RGB source photo.
        landmarks: (478, 3) its landmarks in pixels (models.landmarks).
        rig: a rig built on these landmarks (built here when omitted).
        config: renderer settings.
    """

    def __init__(
        self,
        image: np.ndarray,
        landmarks: np.ndarray,
        rig: Rig | None = None,
        config: MeshWarpConfig | None = None,
        rig_config: RigConfig | None = None,
    ) -> None:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError(f"expected a uint8 numpy image, got {getattr(image, 'dtype', type(image))}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        self.config = config or MeshWarpConfig()
        self.image = np.ascontiguousarray(image)
        self.height, self.width = image.shape[:2]
        self.rig = rig if rig is not None else Rig(landmarks, rig_config)
        src = np.asarray(landmarks, dtype=np.float64)

        # Vertices: the 478 landmarks, then the rings around the face oval.
        oval = src[list(FACE_OVAL), :2]
        self._oval_centre = oval.mean(0)
        rings = [self._oval_centre + s * (oval - self._oval_centre) for s in self.config.ring_scales]
        self._ring_src = np.concatenate(rings)  # (R*36, 2)
        self._ring_follow = np.repeat(np.array(self.config.ring_follow), len(FACE_OVAL))
        self._num_face = src.shape[0]
        self.src_xy = np.concatenate([src[:, :2], self._ring_src]).astype(np.float64)
        # Where the photo's lips are parted, its inner lip landmarks sit on the teeth edge: sample
        # the lips from a little further out, so a closed mouth shows no line of teeth.
        gap = float((src[list(LOWER_INNER_LIP), 1] - src[list(UPPER_INNER_LIP), 1]).max())
        parted = float(np.clip((gap - 1.0) / 3.0, 0.0, 1.0))  # 0 for a closed mouth
        for inner, outer in ((UPPER_INNER_LIP, UPPER_OUTER_LIP), (LOWER_INNER_LIP, LOWER_OUTER_LIP)):
            for i, o in zip(inner[1:-1], outer[1:-1], strict=True):
                d = self.src_xy[o] - self.src_xy[i]
                self.src_xy[i] += d * min(0.4, 3.5 / max(float(np.linalg.norm(d)), 1e-6)) * parted
        # Likewise the lower eyelids sample skin, not the white of the eye, when a blink stretches them.
        for chain in (EYE_RIGHT_LOWER, EYE_LEFT_LOWER):
            self.src_xy[list(chain[1:-1]), 1] += 1.0

        # Triangles: the face mesh, the mouth and eye openings, and the ring (Delaunay outside the oval).
        tris = [tuple(t) for t in mesh_triangles()]
        tris += _hole_quads(UPPER_INNER_LIP, LOWER_INNER_LIP)
        tris += _hole_quads(EYE_RIGHT_UPPER, EYE_RIGHT_LOWER)
        tris += _hole_quads(EYE_LEFT_UPPER, EYE_LEFT_LOWER)
        ring_ids = np.concatenate([np.array(FACE_OVAL), self._num_face + np.arange(len(self._ring_src))])
        pts = self.src_xy[ring_ids]
        dl = Delaunay(pts)
        oval_path = oval.astype(np.float32).reshape(-1, 1, 2)
        for t in dl.simplices:
            cen = pts[t].mean(0)
            if cv2.pointPolygonTest(oval_path, (float(cen[0]), float(cen[1])), False) < 0:
                tris.append(tuple(int(ring_ids[k]) for k in t))
        self.triangles = np.array(tris, dtype=np.int64)
        self._lid_gap = _LidGap(self.rig.neutral)
        f = self.src_xy[self.triangles]
        e1, e2 = f[:, 1] - f[:, 0], f[:, 2] - f[:, 0]
        self._src_det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # orientation in the photo
        # (Cuts are mended between lip triangles only: a silhouette folded by the head's turn, the
        # nose over a cheek, blends better than it steps.)
        ring = src[list(UPPER_OUTER_LIP + LOWER_OUTER_LIP[::-1]), :2].astype(np.float32).reshape(-1, 1, 2)
        lips = [
            k
            for k in range(len(src))
            if cv2.pointPolygonTest(ring, tuple(map(float, src[k, :2])), True) > -1.5
        ]
        self._lip_ids = np.concatenate([[False], np.isin(self.triangles, lips).any(1)])
        # Each triangle's box in the photo (a pixel of slack), by map id: 0 is outside every one.
        lo = np.concatenate([[[-1e6, -1e6]], f.min(1) - 1.0]).astype(np.float32)
        hi = np.concatenate([[[1e6, 1e6]], f.max(1) + 1.0]).astype(np.float32)
        self._src_x = (np.ascontiguousarray(lo[:, 0]), np.ascontiguousarray(hi[:, 0]))
        self._src_y = (np.ascontiguousarray(lo[:, 1]), np.ascontiguousarray(hi[:, 1]))
        # Region the warp can touch: the outermost ring's bounding box.
        outer = rings[-1]
        x0, y0 = np.floor(outer.min(0)).astype(int)
        x1, y1 = np.ceil(outer.max(0)).astype(int)
        self._box = (max(x0, 0), max(y0, 0), min(x1, self.width), min(y1, self.height))
        self._setup_maps()
        self.glasses = GlassesLayer.detect(self.image, src) if self.config.rigid_glasses else None
        # What the warp moves: the photo, with glasses frames painted out when they are drawn on top.
        self._base = self.glasses.base if self.glasses is not None else self.image
        self._rest_landmarks = self.rig.landmarks(np.zeros(NUM_BLENDSHAPES), np.zeros(6))
        self.wrinkles = (
            WrinkleLayer(self._base, src, self.rig.photo_exp) if self.config.paint_wrinkles else None
        )
        self.mouth = MouthLayer(self.image, src, self.rig.photo_exp) if self.config.paint_mouth else None
        self.eyes = (
            [EyeLayer(self.image, src, EYE_RIGHT_UPPER, EYE_RIGHT_LOWER, IRIS_RIGHT),
             EyeLayer(self.image, src, EYE_LEFT_UPPER, EYE_LEFT_LOWER, IRIS_LEFT)]
            if self.config.paint_eyes else []
        )  # fmt: skip

    def _setup_maps(self) -> None:
        bx0, by0, bx1, by1 = self._box
        s = self.config.map_scale
        # Half-resolution map pixel j stands for full-resolution coordinate (j + 0.5) / s - 0.5.
        self._mw = max(int(np.ceil((bx1 - bx0) * s)), 1)
        self._mh = max(int(np.ceil((by1 - by0) * s)), 1)
        jx = (np.arange(self._mw) + 0.5) / s - 0.5 + bx0
        jy = (np.arange(self._mh) + 0.5) / s - 0.5 + by0
        self._gx, self._gy = np.meshgrid(jx.astype(np.float32), jy.astype(np.float32))
        self._ids = np.zeros((self._mh, self._mw), dtype=np.uint16)
        self._kernel = np.ones((3, 3), dtype=np.uint8)
        self._full_w = bx1 - bx0
        self._full_h = by1 - by0
        # The map sample nearest each full-resolution row and column (non-decreasing).
        self._nearest = (
            np.clip(np.floor((np.arange(self._full_h) + 0.5) * s), 0, self._mh - 1).astype(np.intp),
            np.clip(np.floor((np.arange(self._full_w) + 0.5) * s), 0, self._mw - 1).astype(np.intp),
        )

    def fitting_rig(
        self,
        detect: Callable[[np.ndarray], np.ndarray],
        weight: float = 0.8,
        neutral: np.ndarray | None = None,
    ) -> Rig:
        """A rig that fits this face's rendered frames in the terms of ``detect`` (image -> (478, 3)).

        Renders the relaxed face and each blendshape alone at ``weight``, runs the detector on
        every render, and calibrates the rig's basis to what it measured (53 renders). Its neutral
        is the detected relaxed render, or ``neutral`` (478, 3) when given: fits are then relative
        to those landmarks (a driving video's first frame, say).
        """
        zero = np.zeros(NUM_BLENDSHAPES)
        relaxed = detect(self.render(zero))
        ref = relaxed if neutral is None else np.asarray(neutral, dtype=np.float64)
        shapes = np.empty((NUM_BLENDSHAPES, *relaxed.shape))
        for i in range(NUM_BLENDSHAPES):
            e = zero.copy()
            e[i] = weight
            shapes[i] = detect(self.render(e)) - relaxed + ref  # each shape's motion, from ref
        return self.rig.calibrated(ref, shapes, weight)

    # ------------------------------------------------------------------------------------
    def target_vertices(self, exp: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target (N, 2) pixel positions of all warp vertices and the landmarks (478, 3)."""
        lm = self.rig.to_image(self._lid_gap(self.rig.shape(exp)), pose)
        disp = lm[list(FACE_OVAL), :2] - self.src_xy[list(FACE_OVAL)]
        ring_disp = np.tile(disp, (len(self.config.ring_scales), 1)) * self._ring_follow[:, None]
        tgt = np.concatenate([lm[:, :2], self._ring_src + ring_disp])
        return tgt, lm

    def render(self, exp: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
        """Render blendshape weights exp (52,) in [0, 1] and pose (6,) to an (H, W, 3) uint8 frame.

        Weights are absolute: all zeros is the relaxed face with the mouth closed, whatever the
        photo's own expression (the rig renders the difference from it).
        """
        exp = np.asarray(exp, dtype=np.float64)
        if exp.shape != (NUM_BLENDSHAPES,):
            raise ValueError(f"expected exp of shape ({NUM_BLENDSHAPES},), got {exp.shape}")
        pose = np.zeros(6) if pose is None else np.asarray(pose, dtype=np.float64)
        tgt, lm = self.target_vertices(exp, pose)
        # Creases are shaded into the photo before the warp, so they ride the mesh.
        source = self.wrinkles.apply(exp) if self.wrinkles is not None else self._base
        frame = self._warp(tgt, lm[:, 2], source)
        # Landmark motion of the shapes is relative to the photo; layers need absolute weights.
        if self.mouth is not None:
            self.mouth.paint(frame, lm, exp)
        for eye in self.eyes:
            eye.paint(frame, lm, self.rig.iod)
        if self.glasses is not None:
            still = np.zeros(NUM_BLENDSHAPES)
            self.glasses.paint(frame, self._rest_landmarks, self.rig.landmarks(still, pose))
        return frame

    def _upsample(
        self, mx: np.ndarray, my: np.ndarray, ids: np.ndarray, table: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The half-resolution map brought to full resolution: bilinear, except across a cut.

        Where neighbouring map samples come from lip triangles that share no vertex (lips that
        meet over a mouth the photo shows open), interpolating between them samples the photo in
        between: a dark stair-stepped line of the photo's open mouth along closed lips. Those
        pixels take the exact map of the triangle under them instead.
        """
        size = (self._full_w, self._full_h)
        # (Only neighbours whose samples lie far apart in the photo can be across a cut.)
        far = 3.5 / self.config.map_scale  # photo pixels between neighbouring samples; 1 / scale when still
        step_x = cv2.add(cv2.absdiff(mx[:, 1:], mx[:, :-1]), cv2.absdiff(my[:, 1:], my[:, :-1])) > far
        step_y = cv2.add(cv2.absdiff(mx[1:], mx[:-1]), cv2.absdiff(my[1:], my[:-1])) > far
        mx = cv2.resize(mx, size, interpolation=cv2.INTER_LINEAR)
        my = cv2.resize(my, size, interpolation=cv2.INTER_LINEAR)
        cut = np.zeros(ids.shape, dtype=bool)
        for a, b, step, at_a, at_b in (
            (ids[:, :-1], ids[:, 1:], step_x, cut[:, :-1], cut[:, 1:]),
            (ids[:-1], ids[1:], step_y, cut[:-1], cut[1:]),
        ):
            pair = np.nonzero(step)
            ta, tb = a[pair], b[pair]
            lips = self._lip_ids[ta] & self._lip_ids[tb]  # (id 0, outside every triangle, is none)
            if not lips.any():
                continue
            # (ids are triangle + 1; triangles that share a vertex meet, their maps agree there)
            va, vb = self.triangles[ta - 1], self.triangles[tb - 1]
            apart = lips & ~(va[:, :, None] == vb[:, None, :]).any((1, 2))
            at_a[pair[0][apart], pair[1][apart]] = True
            at_b[pair[0][apart], pair[1][apart]] = True
        rows, cols = np.nonzero(cut)
        if len(rows) == 0:
            return mx, my
        # Full-resolution pixels of the cut samples' cells (each takes its nearest sample).
        near_r, near_c = self._nearest
        r0, r1 = np.searchsorted(near_r, [rows.min(), rows.max() + 1])
        c0, c1 = np.searchsorted(near_c, [cols.min(), cols.max() + 1])
        yy, xx = np.nonzero(cut[near_r[r0:r1, None], near_c[None, c0:c1]])
        yy += r0
        xx += c0
        tri = ids[near_r[yy], near_c[xx]]
        m = table[tri]
        x = (xx + self._box[0]).astype(np.float32)
        y = (yy + self._box[1]).astype(np.float32)
        for mc, row, (lo, hi) in ((mx, 0, self._src_x), (my, 1, self._src_y)):
            exact = m[:, row, 0] * x + m[:, row, 1] * y + m[:, row, 2]
            mc[yy, xx] = np.clip(exact, lo[tri], hi[tri])
        return mx, my

    def _warp(self, tgt: np.ndarray, depth: np.ndarray, source: np.ndarray | None = None) -> np.ndarray:
        s = self.config.map_scale
        bx0, by0, bx1, by1 = self._box
        tri = self.triangles
        t = tgt[tri]  # (F, 3, 2) target
        src = self.src_xy[tri]  # (F, 3, 2)
        # Affine target -> source per triangle: S = M @ [T; 1].
        e1 = t[:, 1] - t[:, 0]
        e2 = t[:, 2] - t[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        ok = np.abs(det) > 1e-6
        inv = np.zeros((len(tri), 2, 2))
        dd = np.where(ok, det, 1.0)
        inv[:, 0, 0] = e2[:, 1] / dd
        inv[:, 0, 1] = -e2[:, 0] / dd
        inv[:, 1, 0] = -e1[:, 1] / dd
        inv[:, 1, 1] = e1[:, 0] / dd
        f1 = src[:, 1] - src[:, 0]
        f2 = src[:, 2] - src[:, 0]
        lin = np.stack([f1, f2], axis=2) @ inv  # (F, 2, 2)
        off = src[:, 0] - np.einsum("fij,fj->fi", lin, t[:, 0])
        table = np.zeros((len(tri) + 1, 2, 3), dtype=np.float32)
        table[0] = [[1, 0, 0], [0, 1, 0]]  # id 0: outside every triangle, identity
        table[1:, :, :2] = lin
        table[1:, :, 2] = off
        # Rasterise triangle ids far to near (depth grows away from the camera).
        zt = np.concatenate([depth, np.full(len(self._ring_src), depth.max())])
        order = np.argsort(-zt[tri].mean(1), kind="stable")
        order = order[ok[order]]
        # A triangle the expression turned over (a lip pushed past the skin below it) shows the
        # photo mirrored, a sliver that reads as a drip or a speck; where it folds over its
        # neighbours they cover it the right way round. Drawn first, it fills only what nothing
        # else covers (an embedded mesh leaves no such pixel; the photo's own folds may).
        turned = (det * self._src_det < 0.0)[order]
        order = np.concatenate([order[turned], order[~turned]])
        ids = self._ids
        ids.fill(0)
        shift = 4
        pts = np.round(((t - [bx0, by0]) * s + (0.5 * s - 0.5)) * (1 << shift)).astype(np.int32)
        for k in order:
            cv2.fillConvexPoly(ids, pts[k], int(k) + 1, lineType=cv2.LINE_8, shift=shift)
        # Folded triangles can leave pinholes no triangle covers: give them a neighbour's map.
        # (At the outermost ring the neighbour's map is the identity, so growing there is harmless.)
        grown = cv2.dilate(ids, self._kernel)
        ids = np.where(ids == 0, grown, ids)
        m = table[ids]  # (h, w, 2, 3)
        gx, gy = self._gx, self._gy
        mx = m[..., 0, 0] * gx + m[..., 0, 1] * gy + m[..., 0, 2]
        my = m[..., 1, 0] * gx + m[..., 1, 1] * gy + m[..., 1, 2]
        # A pixel maps into its own triangle in the photo: a nearly flat triangle rasterises a
        # pixel or two beyond its true edge, and its steep map flung those far across the photo
        # (specks of background colour along a lid squeezed by lowered brows).
        for mc, lo, hi in ((mx, *self._src_x), (my, *self._src_y)):
            np.maximum(mc, np.take(lo, ids), out=mc)
            np.minimum(mc, np.take(hi, ids), out=mc)
        if s != 1.0:
            mx, my = self._upsample(mx, my, ids, table)
        m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
        source = self.image if source is None else source
        frame = source.copy()
        frame[by0:by1, bx0:bx1] = cv2.remap(
            source, m1, m2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return frame
