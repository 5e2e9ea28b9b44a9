"""Regenerate assets/portrait.png, the bundled portrait, from scikit-image's astronaut photo.

The source is NASA's portrait of Eileen Collins (public domain), shipped as `skimage.data.astronaut()`.
Run from anywhere: `python scripts/make_portrait.py`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a plain script run puts scripts/, not the repo root, on sys.path

import cv2  # noqa: E402
import skimage.data  # noqa: E402

from models.landmarks import align_portrait, interocular_distance  # noqa: E402

# The source is 512x512 with a 43 px inter-ocular distance, so the crop is a ~2.1x upscale. These
# values keep the whole hair inside the photo (little replicated border) and show the suit's collar.
IOD_FRACTION = 0.18
EYE_Y_FRACTION = 0.42


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "portrait.png")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    source = skimage.data.astronaut()  # (512, 512, 3) uint8 RGB
    portrait = align_portrait(
        source, size=args.size, iod_fraction=IOD_FRACTION, eye_y_fraction=EYE_Y_FRACTION
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(portrait.image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(args.out), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"could not write {args.out}")
    print(
        f"wrote {args.out} ({args.size}x{args.size}, scale {portrait.scale:.2f}x, "
        f"inter-ocular distance {interocular_distance(portrait.landmarks):.1f} px)"
    )


if __name__ == "__main__":
    main()
