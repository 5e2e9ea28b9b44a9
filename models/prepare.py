"""VQIG training data: talking-face videos -> aligned crops, fitted coefficients, warped frames, mel.

    python -m models.prepare VIDEOS_DIR OUT_DIR [--size 512] [--every 1] [--max-frames N]
    python -m models.prepare --synthetic OUT_DIR [--frames 400] [--size 256]

VIDEOS_DIR is searched recursively for videos (MEAD's ``M003/video/front/happy/level_1/001.mp4``,
HDTF's flat folder, or any .mp4/.mov/.mkv/.avi/.webm). Each video with a face becomes a clip folder:

    OUT_DIR/<clip>/frames/000000.jpg   aligned crops (eyes level, as models.landmarks.align_portrait)
    OUT_DIR/<clip>/warped/000000.jpg   I_w: the clip's first face crop warped by MeshWarp to each
                                       frame's coefficients (the self-reenactment input)
    OUT_DIR/<clip>/source.png          that first crop (the identity source)
    OUT_DIR/<clip>/meta.npz            exp (T, 52), pose (T, 6), landmarks (T, 478, 3), frame_index (T,),
                                       fps, mel (M, 80) log-mel of the soundtrack (80 mel frames/s)
    OUT_DIR/index.json                 the clips and the skipped videos with reasons

Coefficients are fitted as ``run_agent.py reenact`` tracks a driving video: a rig calibrated on
the clip's first face, fits relative to it. Finished clips are kept when run again (resumable).
``--synthetic`` renders the bundled portrait under random coefficients instead (no video needed):
targets are MeshWarp's full renders, inputs the same warp without its painted mouth and eyes.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.audio import AudioReadError, LogMel, load_audio
from models.landmarks import FaceLandmarker, align_portrait, load_image, transform_landmarks
from models.meshwarp import MeshWarp, MeshWarpConfig
from models.rig import BLENDSHAPE_NAMES, EMOTIONS, NUM_BLENDSHAPES, emotion_coefficients

__all__ = ["VIDEO_SUFFIXES", "PreparedClip", "find_videos", "prepare", "prepare_video", "synthesize"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
_SMOOTH_FRAMES = 9  # the crop follows the eyes averaged over this many detected frames (no jitter)
_JPEG_QUALITY = 95
_DEFAULT_PORTRAIT = Path(__file__).resolve().parent.parent / "assets" / "portrait.png"


@dataclass(frozen=True)
class PreparedClip:
    name: str
    video: str
    frames: int
    fps: float
    missed: int  # frames without a face, left out


def find_videos(root: Path) -> list[Path]:
    """Every video file under ``root``, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def _clip_name(video: Path, root: Path) -> str:
    rel = video.relative_to(root).with_suffix("")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "__".join(rel.parts))


def _read_frames(video: Path) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def _video_info(video: Path) -> tuple[float, int]:
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise ValueError("not a readable video")
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
        return fps, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"cannot write {path}")


def _save_meta(clip_dir: Path, **arrays: np.ndarray | float) -> None:
    tmp = clip_dir / "meta.partial.npz"
    np.savez(tmp, names=np.array(BLENDSHAPE_NAMES), format_version=FORMAT_VERSION, **arrays)
    tmp.replace(clip_dir / "meta.npz")  # written last: a clip with meta.npz is complete


def prepare_video(
    video: Path, clip_dir: Path, *, size: int = 512, every: int = 1, max_frames: int | None = None
) -> PreparedClip | str:
    """One video -> one clip folder. Returns the clip, or the reason it was skipped."""
    from tqdm import tqdm

    try:
        fps, total = _video_info(video)
    except ValueError as exc:
        return str(exc)
    # Pass 1: landmarks of every kept frame (tracking mode), so the crop can be smoothed in time.
    landmarks: dict[int, np.ndarray] = {}
    with FaceLandmarker(video=True) as tracker:
        frames = _read_frames(video)
        bar = tqdm(
            frames, total=total or None, desc=f"track {video.name}", unit="frame", leave=False, disable=None
        )
        for t, frame in enumerate(bar):
            if max_frames is not None and t >= max_frames * every:
                break
            if t % every:
                continue
            lm = tracker.detect_or_none(frame)
            if lm is not None:
                landmarks[t] = lm
    if not landmarks:
        return "no face found"
    kept = sorted(landmarks)
    raw = np.stack([landmarks[t] for t in kept])  # (T, 478, 3)
    kernel = np.ones(min(_SMOOTH_FRAMES, len(kept))) / min(_SMOOTH_FRAMES, len(kept))
    pad = len(kernel) // 2
    padded = np.pad(raw, ((pad, len(kernel) - 1 - pad), (0, 0), (0, 0)), mode="edge")
    smooth = np.stack([np.tensordot(kernel, padded[i : i + len(kernel)], axes=1) for i in range(len(kept))])

    # Pass 2: crops, fits and warps.
    (clip_dir / "frames").mkdir(parents=True, exist_ok=True)
    (clip_dir / "warped").mkdir(exist_ok=True)
    exps, poses, lms = [], [], []
    warp: MeshWarp | None = None
    first_pose = np.zeros(6)
    index = {t: k for k, t in enumerate(kept)}
    with FaceLandmarker() as still:
        for t, frame in enumerate(_read_frames(video)):
            k = index.get(t)
            if k is None:
                if t > kept[-1]:
                    break
                continue
            aligned = align_portrait(frame, smooth[k], size=size)
            lm = transform_landmarks(raw[k], aligned.matrix)
            if warp is None:
                warp = MeshWarp(aligned.image, lm)
                rig = warp.fitting_rig(still.detect, neutral=lm)
                _write_rgb(clip_dir / "source.png", aligned.image)
            fit = rig.fit(lm)
            if k == 0:
                first_pose = fit.pose
            pose = fit.pose - first_pose
            _write_rgb(clip_dir / "frames" / f"{k:06d}.jpg", aligned.image)
            _write_rgb(clip_dir / "warped" / f"{k:06d}.jpg", warp.render(fit.exp, pose))
            exps.append(fit.exp)
            poses.append(pose)
            lms.append(lm)
    try:
        mel = LogMel()(load_audio(video))
    except AudioReadError as exc:
        log.warning("%s: no mel features (%s)", video, exc)
        mel = np.zeros((0, 80), dtype=np.float32)
    _save_meta(
        clip_dir, exp=np.stack(exps).astype(np.float32), pose=np.stack(poses).astype(np.float32),
        landmarks=np.stack(lms).astype(np.float32), frame_index=np.array(kept), fps=fps,
        mel=mel.astype(np.float32),
    )  # fmt: skip
    return PreparedClip(
        clip_dir.name, str(video), len(kept), fps, missed=len(range(0, kept[-1] + 1, every)) - len(kept)
    )


def prepare(
    videos_dir: Path, out_dir: Path, *, size: int = 512, every: int = 1, max_frames: int | None = None
) -> tuple[list[PreparedClip], list[tuple[str, str]]]:
    """Every video under ``videos_dir`` -> clips under ``out_dir``. Returns (clips, skipped (video, reason))."""
    from tqdm import tqdm

    videos = find_videos(videos_dir)
    if not videos:
        raise FileNotFoundError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {videos_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    clips: list[PreparedClip] = []
    skipped: list[tuple[str, str]] = []
    for video in tqdm(videos, desc="videos", unit="video", disable=None):
        clip_dir = out_dir / _clip_name(video, videos_dir)
        if (clip_dir / "meta.npz").exists():  # done in an earlier run
            meta = np.load(clip_dir / "meta.npz")
            clips.append(PreparedClip(clip_dir.name, str(video), len(meta["exp"]), float(meta["fps"]), 0))
            continue
        result = prepare_video(video, clip_dir, size=size, every=every, max_frames=max_frames)
        if isinstance(result, str):
            skipped.append((str(video), result))
        else:
            clips.append(result)
    _write_index(out_dir, size, clips, skipped)
    return clips, skipped


def _write_index(out_dir: Path, size: int, clips: list[PreparedClip], skipped: list[tuple[str, str]]) -> None:
    index = {
        "format_version": FORMAT_VERSION,
        "size": size,
        "clips": [c.__dict__ for c in clips],
        "skipped": [{"video": v, "reason": r} for v, r in skipped],
    }
    tmp = out_dir / "index.json.partial"
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    tmp.replace(out_dir / "index.json")


def random_coefficients(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A plausible random frame: an emotion at some intensity, an open jaw, a few shapes, a blink, a pose."""
    exp = emotion_coefficients(EMOTIONS[rng.integers(len(EMOTIONS))], float(rng.uniform(0.0, 1.0)))
    exp[BLENDSHAPE_NAMES.index("jawOpen")] = max(exp[BLENDSHAPE_NAMES.index("jawOpen")], rng.uniform(0, 0.7))
    for i in rng.choice(NUM_BLENDSHAPES, size=2, replace=False):
        exp[i] = max(exp[i], rng.uniform(0.0, 0.8))
    if rng.random() < 0.2:
        blink = rng.uniform(0.5, 1.0)
        exp[BLENDSHAPE_NAMES.index("eyeBlinkLeft")] = blink
        exp[BLENDSHAPE_NAMES.index("eyeBlinkRight")] = blink
    pose = np.concatenate([rng.uniform(-0.12, 0.12, 3), rng.uniform(-0.05, 0.05, 3)])
    return np.clip(exp, 0.0, 1.0).astype(np.float32), pose.astype(np.float32)


def synthesize(
    out_dir: Path, *, frames: int = 400, size: int = 256, seed: int = 0, image: Path = _DEFAULT_PORTRAIT
) -> PreparedClip:
    """A one-clip dataset from the bundled portrait (see the module docstring): no video needed."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    photo = load_image(image)
    with FaceLandmarker() as still:
        aligned = align_portrait(photo, still.detect(photo), size=512)
    target_warp = MeshWarp(aligned.image, aligned.landmarks)
    plain_warp = MeshWarp(
        aligned.image, aligned.landmarks, rig=target_warp.rig,
        config=MeshWarpConfig(paint_mouth=False, paint_eyes=False),
    )  # fmt: skip
    clip_dir = out_dir / "portrait"
    (clip_dir / "frames").mkdir(parents=True, exist_ok=True)
    (clip_dir / "warped").mkdir(exist_ok=True)

    def small(rgb: np.ndarray) -> np.ndarray:
        return rgb if size == 512 else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)

    _write_rgb(clip_dir / "source.png", small(aligned.image))
    exps, poses, lms = [], [], []
    for k in tqdm(range(frames), desc="synthesize", unit="frame", disable=None):
        exp, pose = random_coefficients(rng)
        _write_rgb(clip_dir / "frames" / f"{k:06d}.jpg", small(target_warp.render(exp, pose)))
        _write_rgb(clip_dir / "warped" / f"{k:06d}.jpg", small(plain_warp.render(exp, pose)))
        exps.append(exp)
        poses.append(pose)
        lms.append(target_warp.rig.landmarks(exp, pose) * (size / 512))
    _save_meta(
        clip_dir, exp=np.stack(exps), pose=np.stack(poses), landmarks=np.stack(lms).astype(np.float32),
        frame_index=np.arange(frames), fps=25.0, mel=np.zeros((0, 80), dtype=np.float32),
    )  # fmt: skip
    clip = PreparedClip("portrait", "synthetic", frames, 25.0, 0)
    _write_index(out_dir, size, [clip], [])
    return clip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.prepare", description="Prepare VQIG training data from talking-face videos."
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, help="VIDEOS_DIR OUT_DIR (or OUT_DIR with --synthetic)"
    )
    parser.add_argument("--size", type=int, default=None, help="crop size in px (512; 256 with --synthetic)")
    parser.add_argument("--every", type=int, default=1, help="keep every n-th frame (%(default)s)")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many frames per video")
    parser.add_argument("--synthetic", action="store_true", help="render the bundled portrait instead")
    parser.add_argument("--frames", type=int, default=400, help="frames to synthesize (%(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.synthetic:
        if len(args.paths) != 1:
            parser.error("--synthetic takes one path: OUT_DIR")
        clip = synthesize(args.paths[0], frames=args.frames, size=args.size or 256, seed=args.seed)
        print(f"{args.paths[0]}: {clip.frames} synthetic frames")
        return 0
    if len(args.paths) != 2:
        parser.error("expected VIDEOS_DIR OUT_DIR")
    videos_dir, out_dir = args.paths
    if not videos_dir.is_dir():
        parser.error(f"not a directory: {videos_dir}")
    try:
        clips, skipped = prepare(
            videos_dir, out_dir, size=args.size or 512, every=args.every, max_frames=args.max_frames
        )
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 1
    print(f"{out_dir}: {len(clips)} clips, {sum(c.frames for c in clips)} frames")
    if skipped:
        print(f"skipped {len(skipped)} videos:")
        for video, reason in skipped:
            print(f"  {video}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
