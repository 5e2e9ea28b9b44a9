"""Contact sheet of the MeshWarp renderer: emotions, the main blendshapes and head poses on one PNG.

Every tile is the same square crop around the head, labelled on a dark strip, so tiles compare
directly. Run from anywhere: `python scripts/contact_sheet.py [--image PATH] [--out docs/contact_sheet.png]`.

`--expressions` writes the expression sheet instead (docs/expressions.png): every emotion at intensity
1.0 on the bundled portrait and on a second real photo with glasses (matplotlib's grace_hopper.jpg),
one row with the expression texture layer off (wrinkle maps, rigid glasses) and one with it on; with
`--before-rev REV` the first row is rendered by the renderer and presets of git revision REV instead
(the README's sheet: `--expressions --before-rev b5f193a`, the commit before issue 3).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a plain script run puts scripts/, not the repo root, on sys.path

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from models.landmarks import FaceLandmarker, load_image  # noqa: E402
from models.meshwarp import MeshWarp, MeshWarpConfig  # noqa: E402
from models.rig import BLENDSHAPE_NAMES, EMOTIONS, FACE_OVAL, emotion_coefficients  # noqa: E402

COLUMNS = 6
LABEL_H = 26  # px, the dark strip over each tile
CROP_SCALE = 1.6  # crop side = this x the face oval's larger extent (shows hair and background)
MAX_BYTES = 1_500_000
_IDX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}

# (label, {blendshape: weight}); "L"/"R" pairs are the subject's sides, applied together.
BLENDSHAPE_TILES: tuple[tuple[str, dict[str, float]], ...] = (
    ("jawOpen", {"jawOpen": 1.0}),
    ("mouthSmile", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}),
    ("mouthFrown", {"mouthFrownLeft": 1.0, "mouthFrownRight": 1.0}),
    ("mouthPucker", {"mouthPucker": 1.0}),
    ("mouthFunnel", {"mouthFunnel": 1.0}),
    ("mouthUpperUp", {"mouthUpperUpLeft": 1.0, "mouthUpperUpRight": 1.0}),
    ("mouthStretch", {"mouthStretchLeft": 1.0, "mouthStretchRight": 1.0}),
    ("eyeBlink", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}),
    ("eyeWide", {"eyeWideLeft": 1.0, "eyeWideRight": 1.0}),
    ("eyeSquint", {"eyeSquintLeft": 1.0, "eyeSquintRight": 1.0}),
    # Subject's left eye is on the image right: its "out" and the right eye's "in" both point image-right.
    ("look right", {"eyeLookOutLeft": 1.0, "eyeLookInRight": 1.0}),
    ("eyeLookUp", {"eyeLookUpLeft": 1.0, "eyeLookUpRight": 1.0}),
    ("browInnerUp", {"browInnerUp": 1.0}),
    ("browDown", {"browDownLeft": 1.0, "browDownRight": 1.0}),
    ("browOuterUp", {"browOuterUpLeft": 1.0, "browOuterUpRight": 1.0}),
    ("noseSneer", {"noseSneerLeft": 1.0, "noseSneerRight": 1.0}),
    ("cheekPuff", {"cheekPuff": 1.0}),
    ("tongueOut + jawOpen .5", {"tongueOut": 1.0, "jawOpen": 0.5}),
)

# (pose index, radians, meaning of the positive sign) with DESIGN.md's conventions.
POSE_TILES: tuple[tuple[str, int, float, str], ...] = (
    ("yaw", 0, 0.35, "nose right"),
    ("yaw", 0, -0.35, "nose left"),
    ("pitch", 1, 0.25, "chin down"),
    ("pitch", 1, -0.25, "chin up"),
    ("roll", 2, 0.25, "clockwise"),
    ("roll", 2, -0.25, "counter-cw"),
)


class Tile(NamedTuple):
    label: str
    exp: np.ndarray | None  # None: the original photo, not rendered
    pose: np.ndarray


def tiles() -> list[Tile]:
    """Every tile of the sheet, in reading order."""
    zero_pose = np.zeros(6)
    out = [
        Tile("original photo", None, zero_pose),
        Tile("all zero (neutral)", np.zeros(len(BLENDSHAPE_NAMES)), zero_pose),
    ]
    out += [Tile(f"{e} 1.0", emotion_coefficients(e, 1.0).astype(np.float64), zero_pose) for e in EMOTIONS]
    for label, weights in BLENDSHAPE_TILES:
        exp = np.zeros(len(BLENDSHAPE_NAMES))
        for name, w in weights.items():
            exp[_IDX[name]] = w
        out.append(Tile(label, exp, zero_pose))
    for name, k, rad, meaning in POSE_TILES:
        pose = np.zeros(6)
        pose[k] = rad
        label = f"{name} {math.degrees(rad):+.0f}deg {meaning}"
        out.append(Tile(label, np.zeros(len(BLENDSHAPE_NAMES)), pose))
    return out


def head_crop(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int]:
    """Square (x0, y0, side) around the face oval, clamped to the image."""
    oval = landmarks[list(FACE_OVAL), :2]
    lo, hi = oval.min(0), oval.max(0)
    centre = (lo + hi) / 2.0
    side = int(round(min(CROP_SCALE * float((hi - lo).max()), width, height)))
    x0 = int(round(np.clip(centre[0] - side / 2, 0, width - side)))
    y0 = int(round(np.clip(centre[1] - side / 2, 0, height - side)))
    return x0, y0, side


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """Tile with a dark strip on top carrying the label (shrunk to fit the width)."""
    size = tile.shape[1]
    strip = np.full((LABEL_H, size, 3), 24, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = 0.55
    while scale > 0.3 and cv2.getTextSize(text, font, scale, 1)[0][0] > size - 8:
        scale -= 0.05
    (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
    org = (max((size - tw) // 2, 4), (LABEL_H + th) // 2)
    cv2.putText(strip, text, org, font, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile])


def render_tiles(image: np.ndarray, landmarks: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, full-size RGB frame) for every tile."""
    mw = MeshWarp(image, landmarks)
    return [(t.label, image.copy() if t.exp is None else mw.render(t.exp, t.pose)) for t in tiles()]


def build_sheet(frames: list[tuple[str, np.ndarray]], crop: tuple[int, int, int], tile_px: int) -> np.ndarray:
    """Grid (rows * (LABEL_H + tile_px), COLUMNS * tile_px, 3) uint8 RGB of labelled, cropped tiles."""
    x0, y0, side = crop
    cells = []
    for label, frame in frames:
        sub = frame[y0 : y0 + side, x0 : x0 + side]
        sub = cv2.resize(sub, (tile_px, tile_px), interpolation=cv2.INTER_AREA)
        cells.append(_label(sub, label))
    rows = math.ceil(len(cells) / COLUMNS)
    blank = np.zeros_like(cells[0])
    cells += [blank] * (rows * COLUMNS - len(cells))
    return np.concatenate(
        [np.concatenate(cells[r * COLUMNS : (r + 1) * COLUMNS], axis=1) for r in range(rows)], axis=0
    )


EXPRESSION_EMOTIONS = ("neutral", "happy", "sad", "surprised", "fear", "angry", "disgusted", "contempt")
# The texture layer off: the same warp, mouth and eyes, without wrinkle maps and rigid glasses frames.
LAYER_OFF = MeshWarpConfig(paint_wrinkles=False, rigid_glasses=False)


def second_photo() -> Path:
    """A second real portrait (older, glasses): matplotlib's sample photo of Grace Hopper."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


_BEFORE_SCRIPT = """
import sys
import numpy as np
from models.meshwarp import MeshWarp
from models.rig import emotion_coefficients
data = np.load(sys.argv[1])
warp = MeshWarp(data["image"], data["landmarks"])
frames = [warp.render(emotion_coefficients(e, 1.0).astype(np.float64), np.zeros(6)) for e in sys.argv[3:]]
np.save(sys.argv[2], np.stack(frames))
"""


def render_at_revision(rev: str, image: np.ndarray, landmarks: np.ndarray) -> list[np.ndarray]:
    """Every EXPRESSION_EMOTIONS still rendered by the renderer and presets of git revision ``rev``."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "models"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        np.savez(Path(tmp) / "in.npz", image=image, landmarks=landmarks)
        out = Path(tmp) / "out.npy"
        subprocess.run(
            [sys.executable, "-c", _BEFORE_SCRIPT, str(Path(tmp) / "in.npz"), str(out), *EXPRESSION_EMOTIONS],
            cwd=tmp,
            check=True,
            env={**__import__("os").environ, "PYTHONPATH": tmp},
        )
        return list(np.load(out))


def expression_rows(path: Path, before_rev: str | None = None) -> list[list[tuple[str, np.ndarray | None]]]:
    """Rows of (label, cropped frame) for one photo, the photo itself first: the texture layer off,
    then on; with ``before_rev``, the renderer and presets of that git revision, then today's."""
    from agent.commands import load_portrait  # aligns any photo the way `run_agent.py pose` does

    src = load_portrait(path)
    x0, y0, side = head_crop(src.landmarks, src.image.shape[1], src.image.shape[0])
    side = int(side / CROP_SCALE * 1.25)  # tighter than the main sheet: expressions, not hair
    oval = src.landmarks[list(FACE_OVAL), :2]
    cx, cy = (oval.min(0) + oval.max(0)) / 2.0
    x0 = int(np.clip(cx - side / 2, 0, src.image.shape[1] - side))
    y0 = int(np.clip(cy - side / 2, 0, src.image.shape[0] - side))
    on = MeshWarp(src.image, src.landmarks)
    off = MeshWarp(src.image, src.landmarks, on.rig, LAYER_OFF)
    rows: list[list[tuple[str, np.ndarray | None]]] = []
    if before_rev is not None:
        frames = render_at_revision(before_rev, src.image, src.landmarks)
        rows.append(
            [("", None)] + [(f"{e} (before)", f) for e, f in zip(EXPRESSION_EMOTIONS, frames, strict=True)]
        )
        warps = (("now", on),)
    else:
        warps = (("layer off", off), ("layer on", on))
    for tag, warp in warps:
        row: list[tuple[str, np.ndarray | None]] = [("", None)]
        for emotion in EXPRESSION_EMOTIONS:
            exp = emotion_coefficients(emotion, 1.0).astype(np.float64)
            row.append((f"{emotion} ({tag})", warp.render(exp, np.zeros(6))))
        rows.append(row)
    rows[0][0] = (f"{path.stem} photo", src.image)
    return [
        [(label, None if f is None else f[y0 : y0 + side, x0 : x0 + side]) for label, f in row]
        for row in rows
    ]


def build_expression_sheet(rows: list[list[tuple[str, np.ndarray | None]]], tile_px: int) -> np.ndarray:
    """Grid of labelled tiles, one row per list; a None frame is a blank tile."""
    out = []
    for row in rows:
        cells = []
        for label, crop in row:
            if crop is None:
                sub = np.full((tile_px, tile_px, 3), 24, dtype=np.uint8)
            else:
                sub = cv2.resize(crop, (tile_px, tile_px), interpolation=cv2.INTER_AREA)
            cells.append(_label(sub, label))
        out.append(np.concatenate(cells, axis=1))
    return np.concatenate(out, axis=0)


def _encode(sheet_rgb: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(sheet_rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "portrait.png")
    parser.add_argument(
        "--out", type=Path, default=None, help="output PNG (docs/contact_sheet.png, or docs/expressions.png)"
    )
    parser.add_argument("--tile", type=int, default=256, help="tile side, px (shrunk to fit --max-bytes)")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    parser.add_argument(
        "--expressions", action="store_true", help="write the expression sheet (layer off/on, two photos)"
    )
    parser.add_argument(
        "--before-rev", default=None, help="with --expressions: also a row rendered by this git revision"
    )
    args = parser.parse_args(argv)
    if args.tile < 32:
        parser.error(f"--tile must be >= 32 px, got {args.tile}")
    if args.expressions:
        out = args.out or ROOT / "docs" / "expressions.png"
        return _write_expressions(args.image, out, args.tile, args.max_bytes, args.before_rev)
    args.out = args.out or ROOT / "docs" / "contact_sheet.png"

    image = load_image(args.image)
    with FaceLandmarker() as lmk:
        landmarks = lmk.detect(image)
    frames = render_tiles(image, landmarks)
    crop = head_crop(landmarks, image.shape[1], image.shape[0])
    # Photos compress poorly as PNG: shrink the tiles until the file fits the size budget.
    tile_px = args.tile
    while True:
        sheet = build_sheet(frames, crop, tile_px)
        data = _encode(sheet)
        if len(data) <= args.max_bytes or tile_px <= 96:
            break
        tile_px = int(tile_px * 0.9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    rows = sheet.shape[0] // (LABEL_H + tile_px)
    print(
        f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}, {len(frames)} tiles, {rows}x{COLUMNS} grid, "
        f"tile {tile_px} px, crop {crop[2]} px at ({crop[0]}, {crop[1]}), {len(data) / 1e6:.2f} MB)"
    )
    return args.out


def _write_expressions(image: Path, out: Path, tile_px: int, max_bytes: int, before_rev: str | None) -> Path:
    rows = expression_rows(image, before_rev) + expression_rows(second_photo(), before_rev)
    while True:
        sheet = build_expression_sheet(rows, tile_px)
        data = _encode(sheet)
        if len(data) <= max_bytes or tile_px <= 96:
            break
        tile_px = int(tile_px * 0.9)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, tile {tile_px} px, {len(data) / 1e6:.2f} MB)")
    return out


if __name__ == "__main__":
    main()
