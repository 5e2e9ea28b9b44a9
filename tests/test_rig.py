"""Rig: geometry, pose signs, fitting; closed loop through the renderer and MediaPipe."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.landmarks import FaceLandmarker, align_portrait, load_image
from models.meshwarp import MeshWarp
from models.rig import (
    BLENDSHAPE_NAMES,
    EMOTIONS,
    EYE_LEFT_UPPER,
    EYE_RIGHT_UPPER,
    FACE_OVAL,
    LOWER_INNER_LIP,
    NUM_BLENDSHAPES,
    REGIONS,
    UPPER_INNER_LIP,
    Rig,
    emotion_coefficients,
    euler_to_matrix,
    matrix_to_euler,
    mesh_triangles,
)
from tests.conftest import ASSETS

IDX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    with FaceLandmarker() as fl:
        yield fl


@pytest.fixture(scope="module")
def portrait(landmarker: FaceLandmarker) -> tuple[np.ndarray, np.ndarray]:
    image = load_image(ASSETS / "portrait.png")
    return image, landmarker.detect(image)


@pytest.fixture(scope="module")
def warp(portrait: tuple[np.ndarray, np.ndarray]) -> MeshWarp:
    return MeshWarp(*portrait)


def exp_of(**weights: float) -> np.ndarray:
    e = np.zeros(NUM_BLENDSHAPES)
    for k, v in weights.items():
        e[IDX[k]] = v
    return e


def test_names_and_triangles() -> None:
    assert len(BLENDSHAPE_NAMES) == 52 == len(set(BLENDSHAPE_NAMES))
    tris = mesh_triangles()
    assert tris.shape == (852, 3)
    assert sorted({n for names in REGIONS.values() for n in names}) == sorted(BLENDSHAPE_NAMES)


@pytest.mark.parametrize("angles", [(0.3, 0.0, 0.0), (0.0, -0.2, 0.1), (0.1, 0.2, -0.3)])
def test_euler_round_trip(angles: tuple[float, float, float]) -> None:
    r = euler_to_matrix(*angles)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(r), angles, atol=1e-9)


def test_pose_signs(warp: MeshWarp) -> None:
    """DESIGN.md: yaw > 0 nose to the image right, pitch > 0 chin down, roll > 0 clockwise, tz > 0 away."""
    rig = warp.rig
    zero = np.zeros(NUM_BLENDSHAPES)
    base = rig.landmarks(zero, np.zeros(6))

    def moved(**p: float) -> np.ndarray:
        pose = np.zeros(6)
        for k, v in p.items():
            pose[["yaw", "pitch", "roll", "tx", "ty", "tz"].index(k)] = v
        return rig.landmarks(zero, pose)

    nose, forehead = 1, 10
    assert moved(yaw=0.2)[nose, 0] > base[nose, 0] + 3
    assert moved(pitch=0.2)[nose, 1] > base[nose, 1] + 3
    top = moved(roll=0.2)[forehead]
    assert top[0] > base[forehead, 0] + 3  # the top of the head swings right: clockwise
    assert moved(tx=0.5)[nose, 0] > base[nose, 0] + 10
    assert moved(ty=0.5)[nose, 1] > base[nose, 1] + 10
    width = lambda lm: np.ptp(lm[:, 0])  # noqa: E731
    assert width(moved(tz=1.0)) < width(base)


def test_exact_fit_recovers_coefficients(warp: MeshWarp) -> None:
    rig = warp.rig
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(20):
        e = np.zeros(NUM_BLENDSHAPES)
        e[rng.choice(NUM_BLENDSHAPES - 1, 4, replace=False)] = rng.uniform(0.2, 1.0, 4)
        pose = rng.normal(0, 1, 6) * [0.15, 0.1, 0.1, 0.1, 0.1, 0.2]
        fit = rig.fit(rig.landmarks(e, pose))
        errors.append(np.abs(fit.exp - e).mean())
        np.testing.assert_allclose(fit.pose[:5], pose[:5], atol=5e-3)
        assert abs(fit.pose[5] - pose[5]) < 0.03  # scale trades a little against expression
    assert np.mean(errors) < 0.03


def test_bad_inputs(warp: MeshWarp) -> None:
    with pytest.raises(ValueError, match="478"):
        Rig(np.zeros((468, 3)))
    with pytest.raises(ValueError, match="52"):
        warp.rig.shape(np.zeros(51))
    with pytest.raises(ValueError, match="unknown emotion"):
        emotion_coefficients("bored")
    with pytest.raises(ValueError, match="intensity"):
        emotion_coefficients("happy", 1.5)


def test_smiling_photo_is_made_neutral(warp: MeshWarp) -> None:
    """The bundled photo smiles with teeth: all-zero coefficients must close its mouth."""
    rig = warp.rig
    src_gap = rig.source_canonical[list(LOWER_INNER_LIP), 1] - rig.source_canonical[list(UPPER_INNER_LIP), 1]
    assert src_gap.max() > 0.1  # the photo's mouth is open
    assert rig.photo_exp[IDX["jawOpen"]] > 0.2
    assert rig.photo_exp[IDX["mouthSmileLeft"]] + rig.photo_exp[IDX["mouthSmileRight"]] > 0.3
    zero = rig.shape(np.zeros(NUM_BLENDSHAPES))
    gap = zero[list(LOWER_INNER_LIP), 1] - zero[list(UPPER_INNER_LIP), 1]
    np.testing.assert_allclose(gap, 0.0, atol=1e-6)


def test_a_photo_with_narrowed_eyes_still_blinks_shut(warp: MeshWarp) -> None:
    """A photo whose eyes are narrowed (a smile, a squint) is opened for neutral; a full blink must
    still shut them (it once stopped short by the amount opened: a third of the eye on a real
    smiling photo)."""
    narrowed = Rig(warp.rig.landmarks(exp_of(eyeBlinkLeft=0.6, eyeBlinkRight=0.6), np.zeros(6)))
    assert narrowed.photo_exp[IDX["eyeBlinkLeft"]] > 0.2
    for r in (warp.rig, narrowed):
        open_ = r.landmarks(np.zeros(NUM_BLENDSHAPES), np.zeros(6))
        shut = r.landmarks(exp_of(eyeBlinkLeft=1.0, eyeBlinkRight=1.0), np.zeros(6))
        for up, lo in ((159, 145), (386, 374)):
            assert open_[lo, 1] - open_[up, 1] > 5.0
            assert abs(shut[lo, 1] - shut[up, 1]) < 1.0  # shut (within a pixel), not a third open


@pytest.mark.parametrize(
    ("smile", "jaw", "stretch"), [(0.7, 0.4, 0.0), (0.6, 0.4, 0.5), (0.5, 0.0, 0.0), (0.0, 0.5, 0.0)]
)
def test_a_photos_own_smile_is_fitted_as_a_smile_not_a_smile_cancelled_by_a_frown(
    warp: MeshWarp, smile: float, jaw: float, stretch: float
) -> None:
    """A face made to smile by the rig itself is read back as that smile, both sides alike.

    Real open smiles are wider and lift their corners less than the rig's smile (here: plus a
    stretch). The fit once explained them as smile + frown (a wide mouth with level corners), and
    the neutral made from that kept half the smile.
    """
    relaxed = warp.rig
    exp = np.zeros(NUM_BLENDSHAPES)
    exp[[IDX["mouthSmileLeft"], IDX["mouthSmileRight"]]] = smile
    exp[[IDX["mouthStretchLeft"], IDX["mouthStretchRight"]]] = stretch
    exp[IDX["jawOpen"]] = jaw
    got = Rig(relaxed.landmarks(exp, np.zeros(6))).photo_exp
    assert got[IDX["mouthFrownLeft"]] == 0.0 and got[IDX["mouthFrownRight"]] == 0.0
    assert abs(got[IDX["mouthSmileLeft"]] - got[IDX["mouthSmileRight"]]) < 0.1
    assert abs(0.5 * (got[IDX["mouthSmileLeft"]] + got[IDX["mouthSmileRight"]]) - smile) < 0.25
    assert abs(got[IDX["jawOpen"]] - jaw) < 0.25
    # The cheeks a smile lifts (which no landmark measurement sees) are undone with it, and only then.
    cheeks = got[[IDX["cheekSquintLeft"], IDX["cheekSquintRight"]]]
    assert (cheeks >= 0.5).all() if smile >= 0.5 else (cheeks == 0.0).all(), cheeks


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_emotion_prototypes(emotion: str) -> None:
    full = emotion_coefficients(emotion, 1.0)
    half = emotion_coefficients(emotion, 0.5)
    np.testing.assert_allclose(half, full * 0.5, atol=1e-6)
    assert (full >= 0).all() and (full <= 1).all()
    assert (full.sum() == 0) == (emotion == "neutral")


_CONJUGATE = [
    ("eyeLookUpLeft", "eyeLookUpRight"),
    ("eyeLookDownLeft", "eyeLookDownRight"),
    ("eyeLookInLeft", "eyeLookOutRight"),
    ("eyeLookOutLeft", "eyeLookInRight"),
]


def _sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    names = [n for n in BLENDSHAPE_NAMES if n != "tongueOut"]
    e = np.zeros(NUM_BLENDSHAPES)
    for n in rng.choice(names, 3, replace=False):
        e[IDX[n]] = rng.uniform(0.3, 1.0)
    e[IDX["mouthClose"]] = min(e[IDX["mouthClose"]], e[IDX["jawOpen"]])  # lips can't pass each other
    # Eyes move together: a gaze shape comes with its partner on the other eye.
    for a, b in _CONJUGATE:
        e[IDX[a]] = e[IDX[b]] = max(e[IDX[a]], e[IDX[b]])
    pose = rng.normal(0, 1, 6) * [0.1, 0.08, 0.08, 0.05, 0.05, 0.1]
    return e, pose


def _second_photo(landmarker: FaceLandmarker) -> MeshWarp:
    """Grace Hopper's portrait from matplotlib's sample data: older, glasses, a hat, unsmiling."""
    matplotlib = pytest.importorskip("matplotlib.cbook")
    path = matplotlib.get_sample_data("grace_hopper.jpg", asfileobj=False)
    aligned = align_portrait(load_image(path), landmarker=landmarker)
    return MeshWarp(aligned.image, aligned.landmarks)


@pytest.mark.parametrize("photo", ["bundled", "grace_hopper"])
def test_closed_loop_through_mediapipe(photo: str, warp: MeshWarp, landmarker: FaceLandmarker) -> None:
    """Render random coefficients, detect landmarks on the frames, fit, recover the coefficients."""
    if photo != "bundled":
        warp = _second_photo(landmarker)
    rig = warp.fitting_rig(landmarker.detect)
    rng = np.random.default_rng(1)
    truth, found, poses, fitted = [], [], [], []
    for _ in range(40):
        e, pose = _sample(rng)
        fit = rig.fit(landmarker.detect(warp.render(e, pose)))
        truth.append(e)
        found.append(fit.exp)
        poses.append(pose)
        fitted.append(fit.pose)
    t, f = np.array(truth), np.array(found)
    report = {}
    for region, names in REGIONS.items():
        cols = [IDX[n] for n in names]
        report[region] = float(np.abs(t[:, cols] - f[:, cols]).mean())
    pose_err = np.degrees(np.abs(np.array(poses)[:, :3] - np.array(fitted)[:, :3])).mean(0)
    print(f"{photo}: closed-loop MAE per region:", {k: round(v, 3) for k, v in report.items()})
    print("pose error (deg) yaw/pitch/roll:", pose_err.round(2))
    assert report["mouth"] < 0.1
    assert report["eyes"] < 0.1
    assert report["brows"] < 0.12
    assert (pose_err < 3.0).all()


def test_mouth_curve_seen_by_detector(warp: MeshWarp, landmarker: FaceLandmarker) -> None:
    """A jawOpen curve, rendered, is the same curve to a landmark detector that sees only pixels."""
    t = np.linspace(0, 2 * np.pi, 30)
    curve = 0.4 * (1 - np.cos(t * 2)) * (0.5 + 0.5 * np.sin(t * 0.7))  # uneven syllables
    aperture = []
    for w in curve:
        lm = landmarker.detect(warp.render(exp_of(jawOpen=float(w))))
        aperture.append(float((lm[list(LOWER_INNER_LIP), 1] - lm[list(UPPER_INNER_LIP), 1]).max()))
    r = np.corrcoef(curve, aperture)[0, 1]
    print(f"jawOpen vs detected aperture correlation: {r:.4f}")
    assert r > 0.9


def test_triangles_an_expression_turns_over_show_only_where_nothing_else_does(warp: MeshWarp) -> None:
    """Wide expressions push a lip past the skin below it or a lid past its crease: the triangles
    there turn over, and drawn at their depth they showed a mirrored sliver of the photo (a white
    drip under an open mouth, dark specks at its corners). They are drawn first, so the triangles
    folded over them the right way round cover most of what they would show, and no hole opens."""
    s = warp.src_xy[warp.triangles]
    f1, f2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    src_det = f1[:, 0] * f2[:, 1] - f1[:, 1] * f2[:, 0]
    shown = area = 0.0
    for emotion in ("fear", "surprised", "happy", "sad", "disgusted"):
        e = emotion_coefficients(emotion, 1.0)
        tgt, _ = warp.target_vertices(e, np.zeros(6))
        t = tgt[warp.triangles]
        e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        turned = np.nonzero(det * src_det < 0)[0]
        warp.render(e)
        ids = warp._ids  # triangle id + 1 per warp-map pixel, before pinholes are filled
        shown += float(np.isin(ids, turned + 1).sum())
        area += float(np.abs(det[turned]).sum()) / 2 * warp.config.map_scale**2
        # No hole: inside the face oval every map pixel belongs to some triangle.
        bx0, by0 = warp._box[:2]
        oval = np.round((tgt[list(FACE_OVAL)] - [bx0, by0]) * warp.config.map_scale).astype(np.int32)
        inside = np.zeros_like(ids, dtype=np.uint8)
        cv2.fillPoly(inside, [oval], 1)
        assert (ids[cv2.erode(inside, np.ones((3, 3), np.uint8)) > 0] == 0).sum() <= 2, emotion
    assert area > 300.0, "these expressions must turn some triangles over for this test"
    assert shown < 0.3 * area  # (at their depth they showed 0.6 of it)


def _shape_turned(warp: MeshWarp, lm: np.ndarray, keep: np.ndarray) -> int:
    """How many triangles with all their vertices in ``keep`` (bool per vertex) lm turns over
    visibly (more than a sliver of 5 pixels' area)."""
    tri = warp.triangles[
        np.all(keep[np.minimum(warp.triangles, len(keep) - 1)], axis=1)
        & np.all(warp.triangles < len(keep), axis=1)
    ]
    s, t = warp.src_xy[tri], lm[tri, :2]
    ds = (s[:, 1, 0] - s[:, 0, 0]) * (s[:, 2, 1] - s[:, 0, 1]) - (s[:, 1, 1] - s[:, 0, 1]) * (
        s[:, 2, 0] - s[:, 0, 0]
    )
    dt = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 1, 1] - t[:, 0, 1]) * (
        t[:, 2, 0] - t[:, 0, 0]
    )
    return int(((ds * dt < 0) & (np.abs(dt) > 10.0)).sum())  # (dt: twice the area)


def test_lowered_brows_bunch_the_skin_above_the_lids_without_folding_it(warp: MeshWarp) -> None:
    """Anger draws the brows down over lids raised to glare: the skin between them once turned
    over, and drawn by depth it cut a stair-stepped edge along the lid. It bunches up instead."""
    e = emotion_coefficients("angry", 1.0)
    gap = warp._lid_gap
    band = np.zeros(len(warp.rig.neutral), dtype=bool)
    band[gap.vert] = True
    band[list(EYE_RIGHT_UPPER + EYE_LEFT_UPPER)] = True
    plain = warp.rig.landmarks(e, np.zeros(6))
    assert _shape_turned(warp, plain, band) > 0, "anger must fold the band unconstrained for this test"
    _, lm = warp.target_vertices(e, np.zeros(6))
    assert _shape_turned(warp, lm, band) == 0
    # Every vertex of the band keeps a part of its height above the lid (canonical frame).
    shape = warp.rig.to_canonical(lm)
    lid = shape[gap.lid_a, 1] * (1 - gap.frac) + shape[gap.lid_b, 1] * gap.frac
    assert np.all(lid - shape[gap.vert, 1] >= gap.keep * gap.height - 1e-6)
    # ...and an expression that leaves the band room moves no vertex of it.
    calm = emotion_coefficients("happy", 1.0)
    np.testing.assert_allclose(
        warp.target_vertices(calm, np.zeros(6))[1], warp.rig.landmarks(calm, np.zeros(6))
    )


@pytest.mark.parametrize("emotion", ["angry", "fear", "surprised", "disgusted"])
def test_every_pixel_comes_from_near_where_its_neighbours_do(warp: MeshWarp, emotion: str) -> None:
    """Warp a photo whose colours are its own pixel coordinates: the warped colours say where in
    the photo each pixel came from. Nearly flat triangles once flung a pixel or two hundreds of
    pixels across the photo (specks of background colour along a squeezed lid)."""
    h, w = warp.height, warp.width
    yy, xx = np.mgrid[0:h, 0:w]
    coords = np.stack([xx // 2, yy // 2, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    tgt, lm = warp.target_vertices(emotion_coefficients(emotion, 1.0), np.zeros(6))
    came = warp._warp(tgt, lm[:, 2], coords)[..., :2].astype(np.float32) * 2.0
    near = np.stack(
        [cv2.medianBlur(np.ascontiguousarray(came[..., c] / 2).astype(np.uint8), 5) for c in (0, 1)], -1
    )
    jump = np.abs(came - near.astype(np.float32) * 2.0).max(-1)
    # (Across a cut, lips closed over the photo's open mouth, it may jump by that opening.)
    assert jump.max() <= 0.3 * warp.rig.iod


def test_closed_lips_of_a_photo_with_an_open_mouth_never_sample_its_opening(
    warp: MeshWarp, portrait: tuple[np.ndarray, np.ndarray]
) -> None:
    """The portrait smiles with its mouth open; closed, its lips meet where the photo shows teeth.
    Interpolating the half-resolution map across that cut sampled the opening in between: a dark
    stair-stepped line along the lips (60-140 pixels on the bundled and two other photos)."""
    _, landmarks = portrait
    h, w = warp.height, warp.width
    yy, xx = np.mgrid[0:h, 0:w]
    coords = np.stack([xx // 2, yy // 2, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    inner = np.concatenate([landmarks[list(UPPER_INNER_LIP), :2], landmarks[list(LOWER_INNER_LIP[::-1]), :2]])
    opening = np.zeros((h, w), np.uint8)
    cv2.fillPoly(opening, [np.round(inner).astype(np.int32)], 1)
    opening = cv2.erode(opening, np.ones((5, 5), np.uint8))
    assert opening.sum() > 300, "the photo's mouth must be open for this test"
    for emotion in ("neutral", "angry", "sad"):
        tgt, lm = warp.target_vertices(emotion_coefficients(emotion, 1.0), np.zeros(6))
        came = warp._warp(tgt, lm[:, 2], coords)[..., :2].astype(int) * 2
        assert opening[came[..., 1], came[..., 0]].sum() <= 10, emotion


def test_a_turned_head_s_silhouettes_are_blended_not_mended(warp: MeshWarp) -> None:
    """Only cuts between lip triangles take exact maps: the nose folded over a cheek by a turned
    head blends across its silhouette as bilinear upsampling does (mended, it showed 2-pixel steps)."""
    e = emotion_coefficients("happy", 0.8)  # (the photo's own open smile: no lips meet over it)
    size = (warp._full_w, warp._full_h)

    def bilinear(mx: np.ndarray, my: np.ndarray, ids: np.ndarray, table: np.ndarray) -> tuple:
        return cv2.resize(mx, size), cv2.resize(my, size)

    for yaw, pitch in ((0.35, 0.0), (-0.35, 0.0), (0.0, 0.25)):
        pose = np.array([yaw, pitch, 0.0, 0.0, 0.0, 0.0])
        tgt, lm = warp.target_vertices(e, pose)
        mended = warp._warp(tgt, lm[:, 2])
        warp._upsample = bilinear  # (an instance attribute, removed below)
        try:
            plain = warp._warp(tgt, lm[:, 2])
        finally:
            del warp._upsample
        # (Above the mouth: the lips' corners may fold over each other under a pose, and are mended.)
        above = int(lm[list(UPPER_INNER_LIP), 1].min() - 0.15 * warp.rig.iod)
        assert np.array_equal(mended[:above], plain[:above]), (yaw, pitch)
