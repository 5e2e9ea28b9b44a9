"""Expression texture layer (issue 3): wrinkle maps, teeth, eyes and rigid glasses, on two real photos.

Each layer must change the pixels where it should and nowhere else: creases only inside their
landmark-defined regions, zero weights leave the frame as with the layer off, teeth are brighter
than the lips and the skin, glasses frames stay put under brow motion.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import cv2
import matplotlib.cbook
import numpy as np
import pytest

from agent.commands import load_portrait
from models.meshwarp import MeshWarp, MeshWarpConfig
from models.rig import (
    BLENDSHAPE_NAMES,
    EMOTIONS,
    IRIS_LEFT,
    LOWER_INNER_LIP,
    LOWER_OUTER_LIP,
    UPPER_INNER_LIP,
    UPPER_OUTER_LIP,
    Rig,
    emotion_coefficients,
)
from models.texture import GlassesLayer, lerp
from models.wrinkles import WrinkleLayer
from tests.conftest import ASSETS, ROOT

_IDX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}


class Photo(NamedTuple):
    image: np.ndarray
    landmarks: np.ndarray
    full: MeshWarp  # every layer on
    plain: MeshWarp  # wrinkles off, same rig


def _photo(path: str) -> Photo:
    src = load_portrait(path)
    rig = Rig(src.landmarks)
    return Photo(
        src.image,
        src.landmarks,
        MeshWarp(src.image, src.landmarks, rig),
        MeshWarp(src.image, src.landmarks, rig, MeshWarpConfig(paint_wrinkles=False)),
    )


@pytest.fixture(scope="module")
def portrait() -> Photo:
    """The bundled portrait: a young woman smiling with her teeth, no glasses."""
    return _photo(str(ASSETS / "portrait.png"))


@pytest.fixture(scope="module")
def grace() -> Photo:
    """Grace Hopper: older, glasses with dark frames, mouth closed."""
    return _photo(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _exp(**weights: float) -> np.ndarray:
    e = np.zeros(len(BLENDSHAPE_NAMES))
    for name, w in weights.items():
        e[_IDX[name]] = w
    return e


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _detail(rgb: np.ndarray) -> np.ndarray:
    """Luminance high-pass (the scale of skin creases)."""
    luma = _luma(rgb)
    return luma - cv2.GaussianBlur(luma, (0, 0), 4.0)


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[IRIS_LEFT[0], :2] - lm[468, :2]))


def _skin(wl: WrinkleLayer) -> np.ndarray:
    """The layer's skin mask over the whole photo."""
    x0, y0, x1, y1 = wl.box
    full = np.zeros(wl.image.shape[:2], dtype=np.float32)
    full[y0:y1, x0:x1] = wl.skin
    return full


def _region(lm: np.ndarray, name: str) -> tuple[slice, slice]:
    """(rows, cols) of a crease group's region in the source photo, from its landmarks."""
    iod = _iod(lm)
    brow_top = float(lm[[70, 63, 105, 66, 107, 336, 296, 334, 293, 300], 1].min())
    if name == "forehead":
        y0, y1 = lm[10, 1], brow_top - 0.05 * iod
        x0, x1 = lm[70, 0], lm[300, 0]
    elif name == "glabella":
        y0, y1 = brow_top - 0.2 * iod, lm[6, 1]
        x0, x1 = lm[55, 0] - 0.05 * iod, lm[285, 0] + 0.05 * iod
    elif name == "crows":  # the image-right eye's outer corner (subject's left)
        y0, y1 = lm[263, 1] - 0.2 * iod, lm[263, 1] + 0.25 * iod
        x0, x1 = lm[263, 0] + 0.03 * iod, lm[263, 0] + 0.35 * iod
    elif name == "nose":
        y0, y1 = lm[6, 1] - 0.12 * iod, lm[6, 1] + 0.25 * iod
        x0, x1 = lm[6, 0] - 0.25 * iod, lm[6, 0] + 0.25 * iod
    else:
        raise ValueError(name)
    return slice(int(y0), int(y1)), slice(int(x0), int(x1))


@pytest.mark.parametrize(
    ("region", "weights"),
    [
        ("forehead", {"browInnerUp": 1.0, "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0}),
        ("glabella", {"browDownLeft": 1.0, "browDownRight": 1.0}),
        ("crows", {"cheekSquintLeft": 1.0, "eyeSquintLeft": 1.0}),
        ("nose", {"noseSneerLeft": 1.0, "noseSneerRight": 1.0}),
    ],
)
def test_creases_deepen_their_region_and_nothing_far_from_it(
    request: pytest.FixtureRequest, region: str, weights: dict[str, float]
) -> None:
    portrait: Photo = request.getfixturevalue("portrait")
    own = portrait.full.rig.photo_exp.copy()
    if region == "crows":
        # The portrait's broad smile is taken to lift its cheeks fully, so its crow's feet can
        # deepen no further than the photo shows them: here, as if its cheeks were not lifted.
        own[[_IDX["cheekSquintLeft"], _IDX["cheekSquintRight"]]] = 0.0
    wl = WrinkleLayer(portrait.image, portrait.landmarks, own)
    # On top of the photo's own expression (a smile): relaxing that would smooth its own folds.
    shaded = wl.apply(own + _exp(**weights))
    rows, cols = _region(portrait.landmarks, region)
    skin = _skin(wl)[rows, cols] > 0.5  # the bare skin of the region (not hair, brows)
    assert skin.sum() > 50
    before = _detail(portrait.image)[rows, cols][skin].var()
    after = _detail(shaded)[rows, cols][skin].var()
    assert after > 1.3 * before, (region, before, after)
    # The creases shade, they don't paint: mean brightness of the region barely moves.
    assert abs(_luma(shaded[rows, cols]).mean() - _luma(portrait.image[rows, cols]).mean()) < 8.0
    # Far from the crease group (the lower face below the nose tip; everything outside the face box)
    # nothing changes.
    changed = np.abs(shaded.astype(int) - portrait.image.astype(int)).max(-1) > 0
    lm = portrait.landmarks
    # (A sneer also deepens the nasolabial folds, down to beside the mouth.)
    far = lm[17, 1] + 0.15 * _iod(lm) if region == "nose" else lm[1, 1] + 0.1 * _iod(lm)
    assert not changed[int(far) :].any()
    x0, y0, x1, y1 = wl.box
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()


def test_forehead_lines_rise_with_brow_raise_and_only_in_the_rendered_forehead(portrait: Photo) -> None:
    lm = portrait.landmarks
    rows, cols = _region(lm, "forehead")
    assert portrait.full.wrinkles is not None
    skin = _skin(portrait.full.wrinkles)[rows, cols] > 0.5
    var = []
    for w in (0.0, 0.5, 1.0):
        e = portrait.full.rig.photo_exp + _exp(browInnerUp=w, browOuterUpLeft=w, browOuterUpRight=w)
        on, off = portrait.full.render(e), portrait.plain.render(e)
        var.append(_detail(on)[rows, cols][skin].var() / _detail(off)[rows, cols][skin].var())
        diff = np.abs(on.astype(int) - off.astype(int)).max(-1)
        # Brows only raise the forehead's creases: the eyes, nose and mouth are as without the layer.
        assert diff[int(lm[6, 1]) :].max() == 0
    assert var[0] == pytest.approx(1.0) and var[1] > 1.1 and var[2] > 1.25


def test_zero_weights_leave_the_frame_as_with_the_layer_off(grace: Photo) -> None:
    zero = np.zeros(len(BLENDSHAPE_NAMES))
    assert grace.full.wrinkles is not None and grace.full.wrinkles.gain(zero) is None
    assert np.array_equal(grace.full.render(zero), grace.plain.render(zero))


def test_a_smiling_photo_relaxed_to_neutral_loses_its_folds(portrait: Photo) -> None:
    wl = portrait.full.wrinkles
    assert wl is not None
    synth, own = wl.weights(np.zeros(len(BLENDSHAPE_NAMES)))["nasolabial_L"]
    assert synth == 0.0 and own < -0.5  # the photo smiles: its own fold is smoothed, none added
    lm = portrait.landmarks
    iod = _iod(lm)
    rows = slice(int(lm[358, 1]), int(lm[291, 1] + 0.1 * iod))
    cols = slice(int(lm[291, 0] - 0.05 * iod), int(lm[291, 0] + 0.25 * iod))
    relaxed = wl.apply(np.zeros(len(BLENDSHAPE_NAMES)))
    assert _detail(relaxed)[rows, cols].var() < 0.9 * _detail(portrait.image)[rows, cols].var()


def test_deep_smile_folds_darker_than_the_skin_are_relaxed_too(portrait: Photo) -> None:
    """A broad smile's folds are the darkest skin of the face, darker than the skin mask's colour
    test allows: they must still fade when the frame drops the smile (they once stayed, and a
    "neutral" of a laughing photo kept its smile brackets)."""
    lm = portrait.landmarks
    iod = _iod(lm)
    image = portrait.image.copy()
    line = np.zeros(image.shape[:2], dtype=np.float32)
    for ala, corner, sign in ((358, 291, 1.0), (129, 61, -1.0)):
        a = lm[ala, :2] + [sign * 0.04 * iod, 0.0]
        c = lm[corner, :2] + [sign * 0.1 * iod, 0.05 * iod]
        cv2.line(line, tuple(int(v) for v in a), tuple(int(v) for v in c), 1.0, max(int(0.06 * iod), 2))
    line = cv2.GaussianBlur(line, (0, 0), 0.01 * iod)
    image = (image * (1.0 - 0.6 * line[..., None])).astype(np.uint8)  # a deep shadow, skin's hue
    wl = WrinkleLayer(image, lm, portrait.full.rig.photo_exp)
    relaxed = wl.apply(np.zeros(len(BLENDSHAPE_NAMES)))
    on = line > 0.5
    luma0, luma1, clean = _luma(image)[on], _luma(relaxed)[on], _luma(portrait.image)[on]
    # The painted shadow is almost gone: the fold comes back up nearly to the skin.
    assert np.median(luma1 - luma0) > 0.85 * np.median(clean - luma0), (
        np.median(luma1 - luma0),
        np.median(clean - luma0),
    )


def test_thin_crease_lines_of_a_smile_are_relaxed_too(portrait: Photo) -> None:
    """A smile's crease can be a thin dark line down its fold and a dark wedge at the mouth
    corner; the flattened skin kept such lines as "grain" and the corner wedge fell outside every
    skin test, and the warp then drew them into the neutral's cheeks as pencil lines."""
    lm = portrait.landmarks
    iod = _iod(lm)
    image = portrait.image.copy()
    line = np.zeros(image.shape[:2], dtype=np.float32)
    for ala, corner, sign in ((358, 291, 1.0), (129, 61, -1.0)):
        a = lm[ala, :2] + [0.0, 0.02 * iod]  # hugging the nose wing, down to the corner
        c = lm[corner, :2] + [sign * 0.03 * iod, -0.02 * iod]
        cv2.line(line, tuple(int(v) for v in a), tuple(int(v) for v in c), 1.0, 2)
    image = (image * (1.0 - 0.55 * line[..., None])).astype(np.uint8)
    wl = WrinkleLayer(image, lm, portrait.full.rig.photo_exp)
    relaxed = wl.apply(np.zeros(len(BLENDSHAPE_NAMES)))
    on = line > 0.5
    luma0, luma1, clean = _luma(image)[on], _luma(relaxed)[on], _luma(portrait.image)[on]
    assert np.median(luma1 - luma0) > 0.85 * np.median(clean - luma0), (
        np.median(luma1 - luma0),
        np.median(clean - luma0),
    )


def test_relaxed_folds_end_softly_not_at_a_box_edge(portrait: Photo) -> None:
    """Each fade is stored over a crop of the face box; a fade still strong at the crop's edge
    shows as a straight step in the skin (seen on a real photo: a box edge across the cheek)."""
    wl = portrait.full.wrinkles
    assert wl is not None
    fx0, fy0, fx1, fy1 = wl.box
    for c in wl.creases:
        x0, y0, x1, y1 = c.box
        edges = [c.fold[:, 0] if x0 > fx0 else None, c.fold[:, -1] if x1 < fx1 else None,
                 c.fold[0] if y0 > fy0 else None, c.fold[-1] if y1 < fy1 else None]  # fmt: skip
        for e in edges:
            if e is not None:
                assert float(e.max()) < 0.05, c.name


def _inside(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    return mask.astype(bool)


def test_teeth_are_brighter_than_lips_and_skin(grace: Photo) -> None:
    e = emotion_coefficients("happy", 1.0).astype(np.float64)
    frame = grace.full.render(e)
    lm = grace.full.rig.landmarks(e, np.zeros(6))
    iod = _iod(lm)
    inner = np.concatenate([lm[list(UPPER_INNER_LIP), :2], lm[list(LOWER_INNER_LIP[::-1]), :2]])
    outer = np.concatenate([lm[list(UPPER_OUTER_LIP), :2], lm[list(LOWER_OUTER_LIP[::-1]), :2]])
    opening = _inside(frame.shape[:2], inner)
    lips = _inside(frame.shape[:2], outer) & ~cv2.dilate(opening.astype(np.uint8), np.ones((5, 5))).astype(
        bool
    )
    # The upper teeth: the middle of the opening, just under the upper lip.
    band = np.zeros_like(opening)
    cx = int(lm[13, 0])
    band[
        int(lm[13, 1] + 0.02 * iod) : int(lm[13, 1] + 0.07 * iod), cx - int(0.2 * iod) : cx + int(0.2 * iod)
    ] = True
    teeth = frame[opening & band].astype(np.float32)
    assert len(teeth) > 30
    skin = grace.image[int(lm[50, 1]) - 5 : int(lm[50, 1]) + 5, int(lm[50, 0]) - 5 : int(lm[50, 0]) + 5]
    teeth_luma = float(np.median(_luma(teeth)))
    assert teeth_luma > float(np.median(_luma(frame[lips]))) + 25.0
    assert teeth_luma > 1.1 * float(np.median(_luma(skin)))
    # White in the photo's light, not grey: bright in every channel, far less saturated than the skin.
    mean = teeth.mean(0)
    skin_rgb = skin.reshape(-1, 3).astype(np.float32).mean(0)
    assert mean.min() > 150.0 and mean.max() - mean.min() < 0.6 * (skin_rgb.max() - skin_rgb.min())


def test_surprise_opens_a_dark_round_mouth(grace: Photo) -> None:
    e = emotion_coefficients("surprised", 1.0).astype(np.float64)
    frame = grace.full.render(e)
    lm = grace.full.rig.landmarks(e, np.zeros(6))
    iod = _iod(lm)
    inner = np.concatenate([lm[list(UPPER_INNER_LIP), :2], lm[list(LOWER_INNER_LIP[::-1]), :2]])
    opening = _inside(frame.shape[:2], inner)
    height = float(lm[14, 1] - lm[13, 1]) / iod
    width = float(lm[308, 0] - lm[78, 0]) / iod
    assert height > 0.25 and height / width > 0.45  # open and round, not a slit
    mid = opening.copy()
    mid[: int(lm[13, 1] + 0.45 * (lm[14, 1] - lm[13, 1]))] = False  # below the upper teeth
    mid[int(lm[14, 1] - 0.2 * (lm[14, 1] - lm[13, 1])) :] = False  # above the lower teeth
    assert float(np.median(_luma(frame[mid]))) < 60.0


def test_widened_eyes_bare_white_above_the_iris(portrait: Photo) -> None:
    e = _exp(eyeWideLeft=1.0, eyeWideRight=1.0)
    frame = portrait.full.render(e)
    lm = portrait.full.rig.landmarks(e, np.zeros(6))
    for iris, lid in ((473, 386), (468, 159)):
        cx, cy = lm[iris, :2]
        radius = float(np.linalg.norm(lm[iris + 1, :2] - lm[iris, :2]))
        top = cy - radius
        assert lm[lid, 1] < top - 2.0, "the lid must clear the iris for this test"
        strip = frame[int(np.ceil(lm[lid, 1])) + 1 : int(np.floor(top)), int(cx) - 2 : int(cx) + 3]
        assert strip.size > 0
        iris_luma = float(np.median(_luma(frame[int(cy) - 1 : int(cy) + 2, int(cx) - 1 : int(cx) + 2])))
        skin = portrait.image[int(lm[lid, 1] - 0.25 * _iod(lm)), int(cx)]
        # White of the eye: far lighter than the iris and about as light as the lit skin.
        assert _luma(strip).mean() > max(2.0 * iris_luma, 0.75 * float(_luma(skin[None])[0]))


def test_an_eye_as_the_photo_has_it_is_the_photo_s_own(portrait: Photo) -> None:
    """Rendered with the photo's own expression the eyes neither open nor look away: they are
    the warped photo's, not re-synthesized (which greyed the white and drew an outline)."""
    e = portrait.full.rig.photo_exp.astype(np.float64)
    frame = portrait.full.render(e)
    bare = MeshWarp(portrait.image, portrait.landmarks, portrait.full.rig, MeshWarpConfig(paint_eyes=False))
    assert np.array_equal(frame, bare.render(e))
    # ...while widened eyes are painted.
    wide = _exp(eyeWideLeft=1.0, eyeWideRight=1.0)
    assert np.abs(portrait.full.render(wide).astype(int) - bare.render(wide).astype(int)).max() > 40


def test_a_closed_lid_is_skin_with_its_grain_darker_where_it_turns_under(
    portrait: Photo, grace: Photo
) -> None:
    """A blink paints lid skin over the eye. It must carry the grain of the skin around the eye (a
    flat fill reads as painted on) and darken towards the lashes, on both eyes (one eye's lid chain
    runs right to left)."""
    e = _exp(eyeBlinkLeft=1.0, eyeBlinkRight=1.0)
    for photo in (portrait, grace):
        frame = photo.full.render(e)
        opened = photo.full.rig.landmarks(np.zeros(len(BLENDSHAPE_NAMES)), np.zeros(6))
        shut = photo.full.rig.landmarks(e, np.zeros(6))
        luma = _luma(frame)
        fine = luma - cv2.GaussianBlur(luma, (0, 0), 1.0)
        photo_fine = _luma(photo.image) - cv2.GaussianBlur(_luma(photo.image), (0, 0), 1.0)
        for lid, corners in ((159, (33, 133)), (386, (263, 362))):
            x0, x1 = sorted(opened[list(corners), 0])
            cols = slice(int(x0 + 0.25 * (x1 - x0)), int(x1 - 0.25 * (x1 - x0)))
            top, edge = float(opened[lid, 1]), float(shut[lid, 1])
            assert edge - top > 5.0, "the eye must close for this test"
            upper = luma[int(top) : int(top + 0.4 * (edge - top)), cols]
            lower = luma[int(edge - 0.35 * (edge - top)) : int(edge - 0.1 * (edge - top)), cols]
            assert lower.mean() < upper.mean() - 5.0
            if photo is grace:
                continue  # (her frames cross the band above the eyes)
            # The skin's grain: the band of the photo between the brow and the eye.
            band = photo_fine[int(top - 0.1 * _iod(opened)) : int(top - 0.03 * _iod(opened)), cols]
            skin_grain = 1.4826 * float(np.median(np.abs(band)))
            assert fine[int(top) : int(edge - 0.2 * (edge - top)), cols].std() > 0.5 * skin_grain


def test_a_black_and_white_photo_gets_a_colourless_mouth(grace: Photo, tmp_path: Path) -> None:
    """Teeth, tongue, gums and throat are painted in the photo's own colour: none for a black-and-
    white photo (cream teeth in a red throat once showed in a grey face)."""
    cv2.imwrite(str(tmp_path / "grey.png"), cv2.cvtColor(grace.image, cv2.COLOR_RGB2GRAY))
    src = load_portrait(tmp_path / "grey.png")
    warp = MeshWarp(src.image, src.landmarks)
    for emotion in ("happy", "surprised", "fear", "disgusted"):
        e = emotion_coefficients(emotion, 1.0)
        frame = warp.render(e).astype(int)
        lm = warp.rig.landmarks(e, np.zeros(6))
        inner = np.concatenate([lm[list(UPPER_INNER_LIP), :2], lm[list(LOWER_INNER_LIP[::-1]), :2]])
        mouth = np.zeros(frame.shape[:2], dtype=np.uint8)
        cv2.fillPoly(mouth, [np.round(inner).astype(np.int32)], 1)
        assert mouth.sum() > 100, emotion
        spread = frame.max(2) - frame.min(2)
        assert spread[mouth > 0].max() <= 3, emotion
    # ...while a colour photo keeps its warm throat and teeth.
    e = emotion_coefficients("surprised", 1.0)
    frame = grace.full.render(e).astype(int)
    lm = grace.full.rig.landmarks(e, np.zeros(6))
    centre = np.round(lm[[13, 14], :2].mean(0)).astype(int)
    r, g, b = frame[centre[1] - 2 : centre[1] + 3, centre[0] - 2 : centre[0] + 3].reshape(-1, 3).mean(0)
    assert r > g + 5 and r > b + 5


def test_glasses_frames_stay_put_under_every_emotion(grace: Photo, portrait: Photo) -> None:
    assert GlassesLayer.detect(portrait.image, portrait.landmarks) is None
    glasses = grace.full.glasses
    assert glasses is not None
    x0, y0, x1, y1 = glasses.box
    solid = np.zeros(grace.image.shape[:2], dtype=bool)
    solid[y0:y1, x0:x1] = glasses.alpha > 0.999
    assert solid.sum() > 300
    for emotion in EMOTIONS:
        frame = grace.full.render(emotion_coefficients(emotion, 1.0).astype(np.float64))
        diff = np.abs(frame[solid].astype(int) - grace.image[solid].astype(int))
        assert diff.max() <= 2, emotion
    # Without the rigid frames, raised brows bend them.
    bent = MeshWarp(grace.image, grace.landmarks, grace.full.rig, MeshWarpConfig(rigid_glasses=False))
    frame = bent.render(emotion_coefficients("surprised", 1.0).astype(np.float64))
    assert np.abs(frame[solid].astype(int) - grace.image[solid].astype(int)).max() > 30


def test_brows_that_meet_are_no_glasses(portrait: Photo) -> None:
    """Dark brows joined over the nose (or their shadow) cross the bridge strip too, but from its
    top; taken for frames, brows and lids were frozen rigid (seen on 3 of 19 real photos)."""
    lm = portrait.landmarks
    iod = _iod(lm)
    brow = np.concatenate([lm[[70, 63, 105, 66, 107], :2], lm[[336, 296, 334, 293, 300], :2]])
    img = portrait.image.copy()
    dark = (img.astype(np.float32) * 0.25).astype(np.uint8)
    band = np.zeros(img.shape[:2], np.uint8)
    for a, b in zip(brow[:-1], brow[1:], strict=True):
        cv2.line(band, tuple(map(int, a)), tuple(map(int, b)), 255, max(int(0.12 * iod), 3))
    # A unibrow, thick enough to reach well down the bridge strip.
    y = int(max(lm[55, 1], lm[285, 1]))
    cv2.rectangle(
        band, (int(lm[55, 0]), y - int(0.08 * iod)), (int(lm[285, 0]), y + int(0.09 * iod)), 255, -1
    )
    img[band > 0] = dark[band > 0]
    assert GlassesLayer.detect(img, lm) is None
    # The same dark paint as a bar lower down, with rims round the eyes, is frames.
    frames = portrait.image.copy()
    ring = np.zeros(img.shape[:2], np.uint8)
    for c in (lm[IRIS_LEFT[0], :2], lm[468, :2]):
        cv2.ellipse(
            ring, (tuple(map(int, c)), (int(0.8 * iod), int(0.5 * iod)), 0.0), 255, max(int(0.05 * iod), 2)
        )
    cv2.line(ring, tuple(map(int, lm[133, :2])), tuple(map(int, lm[362, :2])), 255, max(int(0.05 * iod), 2))
    frames[ring > 0] = (frames.astype(np.float32) * 0.2).astype(np.uint8)[ring > 0]
    assert GlassesLayer.detect(frames, lm) is not None


# What each preset must show in the mouth (on the closed-mouthed photo, where every tooth is drawn):
# upper teeth under the upper lip, lower teeth over the lower lip, or a closed mouth.
MOUTHS = {
    "happy": (True, False, False),
    "fear": (True, True, False),
    "angry": (True, False, False),
    "disgusted": (True, False, False),
    "sad": (False, False, True),
    "neutral": (False, False, True),
}


@pytest.mark.parametrize("emotion", sorted(MOUTHS))
def test_each_emotion_shows_its_mouth(grace: Photo, emotion: str) -> None:
    upper_teeth, lower_teeth, closed = MOUTHS[emotion]
    e = emotion_coefficients(emotion, 1.0).astype(np.float64)
    frame = grace.full.render(e)
    lm = grace.full.rig.landmarks(e, np.zeros(6))
    iod = _iod(lm)
    height = float(lm[14, 1] - lm[13, 1]) / iod
    if closed:
        assert height < 0.03, height
        return
    skin = float(
        np.median(
            _luma(
                grace.image[int(lm[50, 1]) - 5 : int(lm[50, 1]) + 5, int(lm[50, 0]) - 5 : int(lm[50, 0]) + 5]
            )
        )
    )
    cx = int(lm[13, 0])
    cols = slice(cx - int(0.12 * iod), cx + int(0.12 * iod))
    below_upper = _luma(frame[int(lm[13, 1]) + 2 : int(lm[13, 1] + 0.05 * iod) + 1, cols])
    above_lower = _luma(frame[int(lm[14, 1] - 0.035 * iod) : int(lm[14, 1]) - 1, cols])
    assert (float(np.median(below_upper)) > skin) == upper_teeth, emotion
    if lower_teeth:
        assert float(np.median(above_lower)) > skin, emotion


def test_texture_benchmark_prints_its_table() -> None:
    # A subprocess: the benchmark pins BLAS threads through the environment before numpy loads.
    proc = subprocess.run(
        [sys.executable, "-m", "bench.texture", "--frames", "12"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "| stage | median ms/frame |"
    rows = {c[0].strip(): c[1].strip() for c in (line.strip("|").split("|") for line in lines[2:])}
    for name in ("render, warp only (no texture layer)", "render, full texture layer", "  wrinkles.apply"):
        assert float(rows[name.strip()]) > 0.0, name
    assert "target <= 5" in rows["texture layer added (full - warp only)"]


def test_a_smiling_photo_relaxed_gets_full_closed_lips(portrait: Photo, grace: Photo) -> None:
    """Neutral on a photo smiling with teeth: full relaxed lips, not the smile's thin stretched ones."""
    zero = np.zeros(len(BLENDSHAPE_NAMES))
    lm = portrait.full.rig.landmarks(zero, np.zeros(6))
    iod = _iod(lm)
    cx = int(round(0.5 * (lm[61, 0] + lm[291, 0])))
    y0, y1 = int(lm[0, 1] - 0.2 * iod), int(lm[17, 1] + 0.2 * iod)

    def lip_rows(frame: np.ndarray) -> int:
        lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB)[y0:y1, cx - 3 : cx + 4].astype(np.float32).mean(1)
        skin_a = float(np.median(np.concatenate([lab[:5, 1], lab[-5:, 1]])))  # above and below the lips
        return int((lab[:, 1] > skin_a + 7.0).sum())  # lip red: well above the skin's a*

    relaxed = portrait.full.render(zero)
    off = MeshWarp(portrait.image, portrait.landmarks, portrait.full.rig, MeshWarpConfig(paint_mouth=False))
    # (The bundled photo's relaxed lips measure 13-14 rows here, 0.14-0.15 IOD, the count moving by a
    # row with the lips' random grain; its stretched smiling lips measure 6.)
    assert lip_rows(relaxed) >= 0.14 * iod and lip_rows(relaxed) > lip_rows(off.render(zero)) + 6
    # Smiling as the photo does keeps the photo's own lips; a photo that does not smile is untouched.
    happy = emotion_coefficients("happy", 1.0).astype(np.float64)
    assert portrait.full.mouth is not None and grace.full.mouth is not None
    frame = portrait.full.render(happy)
    before = frame.copy()
    hl = portrait.full.rig.landmarks(happy, np.zeros(6))
    portrait.full.mouth._paint_lips(
        frame, hl, happy, hl[list(UPPER_INNER_LIP), :2], hl[list(LOWER_INNER_LIP), :2], _iod(hl)
    )
    assert np.array_equal(frame, before)


def test_the_photo_s_teeth_end_where_its_mouth_closes(portrait: Photo) -> None:
    """The photo's teeth are taken only as far down each column as its mouth is open there:
    towards the corners its lips close over them, and what lies beyond (lips, the dark corners of
    a smile) was squeezed into a narrower mouth (an O) as a dark ragged fringe."""
    mouth = portrait.full.mouth
    assert mouth is not None and mouth.uses_photo_teeth
    alpha = mouth.upper_tex[..., 3]
    edge = max(mouth.TEX_W // 50, 1)
    middle = alpha[:, mouth.TEX_W // 2 - edge : mouth.TEX_W // 2 + edge]
    corners = np.concatenate([alpha[:, :edge], alpha[:, -edge:]], axis=1)
    # Deep teeth in the middle, next to none at the corners (where the lips meet).
    assert float((middle > 0.5).sum(0).mean()) > 4.0 * max(float((corners > 0.5).sum(0).mean()), 1.0)


def test_lerp_is_the_per_pixel_blend() -> None:
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(0, 255, (37, 53, 3)).astype(np.float32) for _ in range(2))
    t = rng.uniform(0, 1, (37, 53)).astype(np.float32)
    t[:5] = 0.0
    t[-5:] = 1.0
    ref = a * (1 - t[..., None]) + b * t[..., None]
    assert np.abs(lerp(a, b, t) - ref).max() < 0.01
    # uint8 rounds; views into a frame (not contiguous) blend the same
    frame = a.astype(np.uint8)
    out = lerp(frame[2:30, 3:40], b.astype(np.uint8)[2:30, 3:40], t[2:30, 3:40])
    assert out.dtype == np.uint8
    want = (
        frame[2:30, 3:40] * (1 - t[2:30, 3:40, None]) + b.astype(np.uint8)[2:30, 3:40] * t[2:30, 3:40, None]
    )
    assert np.abs(out - want).max() <= 0.51  # rounded (float32 weights)


def test_wrinkles_shade_only_the_creases_a_frame_moves(portrait: Photo) -> None:
    """apply() works over the box of the active creases only: the result is the whole-face-box
    formula (relaxed folds faded to the smoothed and flattened skin, then the gain) exactly."""
    wl = portrait.full.wrinkles
    assert wl is not None
    x0, y0, x1, y1 = wl.box
    for emotion in ("neutral", "happy", "surprised", "disgusted"):
        exp = emotion_coefficients(emotion, 1.0).astype(np.float64)
        patch = wl.image[y0:y1, x0:x1].astype(np.float32)
        fade, flat, gain = wl.relax(exp), wl.relax(exp, flatten=True), wl.gain(exp)
        if fade is not None:
            patch += fade[..., None] * (wl._smooth - patch)
        if flat is not None:
            patch += flat[..., None] * (wl._flat - patch)
        if gain is not None:
            patch *= np.clip(1.0 + gain, 0.4, 1.6)[..., None]
        want = wl.image.copy()
        want[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)
        got = wl.apply(exp)
        assert np.abs(got.astype(int) - want).max() <= 1, emotion
        assert (got != wl.image).any() == (fade is not None or flat is not None or gain is not None)
