"""Render every emotion of ``run_agent.py pose`` on many photos, for an outside classifier to judge.

    python scripts/emotion_stills.py PHOTO [PHOTO ...] --out DIR [--intensity 1.0]

For each photo it writes ``DIR/<photo>_<emotion>.png`` for neutral, happy, sad, surprised, fear,
angry and disgusted (the emotions a FER2013 classifier knows), through the same function as
``run_agent.py pose --emotion E --intensity I`` (watermark and badge included), and
``DIR/<photo>__src.png``, the aligned photo itself. A photo without a usable face is reported and
skipped. Then judge them in the classifier's own environment (see scripts/fer_check.py):

    /tmp/ferenv/bin/python scripts/fer_check.py DIR/*.png
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a plain script run puts scripts/, not the repo root, on sys.path

import cv2  # noqa: E402

from agent.commands import load_portrait, pose  # noqa: E402
from agent.errors import InputError  # noqa: E402

JUDGED = ("neutral", "happy", "sad", "surprised", "fear", "angry", "disgusted")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the stills")
    parser.add_argument("--intensity", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    warnings.simplefilter("ignore")  # "found 2 faces, using the largest" on group photos
    args.out.mkdir(parents=True, exist_ok=True)
    done = 0
    for photo in args.photos:
        name = photo.stem.replace("_", "-")  # the emotion is what follows the last "_"
        try:
            aligned = load_portrait(photo).image
            cv2.imwrite(str(args.out / f"{name}__src.png"), cv2.cvtColor(aligned, cv2.COLOR_RGB2BGR))
            for emotion in JUDGED:
                pose(photo, emotion, args.intensity, args.out / f"{name}_{emotion}.png")
        except InputError as exc:
            print(f"skipped {photo}: {exc}", file=sys.stderr)
            continue
        done += 1
        print(f"{photo}: {len(JUDGED)} stills", flush=True)
    print(f"{done} of {len(args.photos)} photos rendered into {args.out}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
