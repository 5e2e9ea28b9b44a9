"""The offline commands behind run_agent.py: animate, reenact and pose.

Each takes explicit arguments, renders with MeshWarp on a source portrait and returns the path it
wrote. Bad inputs raise InputError and output failures StreamError, each with one clear message;
an output file is either complete or absent.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from tqdm import tqdm

from agent.errors import CheckpointError, ConfigError, InputError, StreamError
from agent.verify import provenance, with_provenance
from models.audio import AudioReadError, LogMel, load_audio, mel_windows, num_video_frames
from models.coeffs import CoeffFileError, CoeffSequence, load_coeffs, save_coeffs
from models.fcg import FCG, emotion_label
from models.fcg import CheckpointError as FCGCheckpointError
from models.landmarks import (
    FaceLandmarker,
    FaceNotFoundError,
    ImageReadError,
    align_portrait,
    eye_centers,
    load_image,
)
from models.meshwarp import MeshWarp
from models.rig import BLENDSHAPE_NAMES, EMOTIONS, NUM_BLENDSHAPES, Rig, emotion_coefficients
from models.watermark import Marker
from streaming.file import Mp4Writer, VideoReadError, VideoWriteError, extract_audio, iter_frames, read_video

if TYPE_CHECKING:  # models.refine is imported only when --vqig is given
    from models.refine import Refiner

__all__ = [
    "PORTRAIT_SIZE",
    "SourcePortrait",
    "animate",
    "load_portrait",
    "load_fcg",
    "load_refiner",
    "reference_latent",
    "pose",
    "reenact",
    "render",
    "speech_coefficients",
    "render_coeffs",
    "track_video",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

PORTRAIT_SIZE = 512  # px, the square the renderer works in
# A photo counts as already aligned when it is PORTRAIT_SIZE square, its eyes are level within this
# angle, and its inter-ocular distance is within this fraction of what align_portrait would make.
_LEVEL_TOLERANCE_RAD = math.radians(2.0)
_IOD_TOLERANCE = 0.10
_ALIGN_IOD_FRACTION: float = inspect.signature(align_portrait).parameters["iod_fraction"].default
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True, eq=False)
class SourcePortrait:
    """The photo to animate. image: (512, 512, 3) uint8 RGB; landmarks: (478, 3) float32 pixels."""

    path: Path
    image: np.ndarray
    landmarks: np.ndarray


def load_portrait(path: PathLike) -> SourcePortrait:
    """Read a photo, find its face and align it to a 512x512 portrait unless it already is one.

    Raises:
        InputError: the file is missing or not an image, or holds no usable face.
    """
    path = Path(path)
    try:
        image = load_image(path)
    except ImageReadError as exc:
        raise InputError(str(exc)) from exc
    with FaceLandmarker() as landmarker:
        try:
            landmarks = landmarker.detect(image)
        except FaceNotFoundError as exc:
            raise InputError(f"{path}: {exc}") from exc
    if not _is_aligned(image, landmarks):
        aligned = align_portrait(image, landmarks, size=PORTRAIT_SIZE)
        log.info(
            "aligned %s (%dx%d) to a %dx%d portrait (eyes level, %.0f px apart)",
            path, image.shape[1], image.shape[0], PORTRAIT_SIZE, PORTRAIT_SIZE,
            _ALIGN_IOD_FRACTION * PORTRAIT_SIZE,
        )  # fmt: skip
        image, landmarks = aligned.image, aligned.landmarks
    return SourcePortrait(path=path, image=image, landmarks=landmarks)


def _is_aligned(image: np.ndarray, landmarks: np.ndarray) -> bool:
    if image.shape[:2] != (PORTRAIT_SIZE, PORTRAIT_SIZE):
        return False
    left, right = eye_centers(landmarks)
    dx, dy = right - left
    iod = math.hypot(dx, dy)
    expected_iod = _ALIGN_IOD_FRACTION * PORTRAIT_SIZE
    is_level = abs(math.atan2(dy, dx)) <= _LEVEL_TOLERANCE_RAD
    return is_level and abs(iod - expected_iod) <= _IOD_TOLERANCE * expected_iod


def render_coeffs(
    source: SourcePortrait,
    seq: CoeffSequence,
    out: PathLike,
    *,
    audio: PathLike | None = None,
    desc: str = "render",
    badge: bool = True,
    refiner: Refiner | None = None,
) -> Path:
    """Render a coefficient sequence on ``source`` to an .mp4 at ``seq.fps``, muxing ``audio`` if given.

    ``refiner`` (VQIG, :func:`load_refiner`) refines each MeshWarp frame; without it MeshWarp's frame stands.

    A progress bar (tqdm) shows on a terminal. The audio is cut or padded to the video's length.
    Every frame carries the invisible watermark and, unless ``badge`` is False, the visible
    "AI-generated" badge; the container names the generator, its version and the date.

    Raises:
        InputError: the audio file is missing or undecodable.
        StreamError: the video could not be encoded or written (nothing is left at ``out``).
    """
    out = Path(out)
    warp = MeshWarp(source.image, source.landmarks)
    height, width = source.image.shape[:2]
    marker = Marker(badge=badge)
    log.info("watermark payload %s", marker.payload)
    try:
        with Mp4Writer(out, fps=seq.fps, size=(width, height), audio=audio, metadata=provenance()) as writer:
            for t in tqdm(range(len(seq)), desc=desc, unit="frame", disable=None):
                frame = warp.render(seq.exp[t], seq.pose[t])
                if refiner is not None:
                    frame = refiner(frame, source.image, np.concatenate([seq.exp[t], seq.pose[t]]))
                writer.write(marker.apply(frame))
    except VideoReadError as exc:  # the audio, probed when the writer opens
        raise InputError(str(exc)) from exc
    except VideoWriteError as exc:
        raise StreamError(str(exc)) from exc
    except OSError as exc:
        raise StreamError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return out


def load_refiner(
    vqig: PathLike | None, *, fidelity: float = 0.5, compile: str = "auto", device: str = "auto"
) -> Refiner | None:
    """The VQIG refiner for ``--vqig CHECKPOINT`` (prints its device and compile path), or None.

    Without a checkpoint it says, once, that MeshWarp's output stands.

    Raises:
        ConfigError: ``fidelity`` outside [0, 1] or an unknown compile path.
        CheckpointError: the checkpoint is missing or does not match its config.
    """
    if vqig is None:
        log.info("VQIG: off (no --vqig checkpoint): MeshWarp's output stands")
        return None
    from models.refine import COMPILE_CHOICES, Refiner
    from models.vqig import CheckpointError as VQIGCheckpointError

    if not 0.0 <= fidelity <= 1.0:
        raise ConfigError(f"--fidelity must be in [0, 1], got {fidelity}")
    if compile not in COMPILE_CHOICES:
        raise ConfigError(f"--vqig-compile must be one of {', '.join(COMPILE_CHOICES)}, got {compile!r}")
    try:
        return Refiner(vqig, fidelity=fidelity, compile=compile, device=device)  # type: ignore[arg-type]
    except VQIGCheckpointError as exc:
        raise CheckpointError(f"{exc} (train one with `python -m models.train_vqig`)") from exc


def animate(
    image: PathLike,
    coeffs: PathLike,
    out: PathLike,
    *,
    audio: PathLike | None = None,
    badge: bool = True,
    vqig: PathLike | None = None,
    fidelity: float = 0.5,
    vqig_compile: str = "auto",
) -> Path:
    """Render a coefficient .npz (models.coeffs) on the photo ``image`` to the video ``out``.

    ``vqig``: a VQIG checkpoint that refines each frame, at ``fidelity`` w (see :func:`load_refiner`).
    """
    try:
        seq = load_coeffs(coeffs)
    except CoeffFileError as exc:
        raise InputError(str(exc)) from exc
    if audio is not None and not Path(audio).is_file():
        raise InputError(f"audio file not found: {audio}")
    source = load_portrait(image)
    refiner = load_refiner(vqig, fidelity=fidelity, compile=vqig_compile)
    return render_coeffs(source, seq, out, audio=audio, desc="animate", badge=badge, refiner=refiner)


def track_video(driving: PathLike) -> tuple[CoeffSequence, int]:
    """Fit rig coefficients to every frame of a video of a face.

    The rig is built on the first frame with a face and fits are relative to it: that frame reads
    as all-zero blendshapes and zero pose (start the driving video relaxed, facing the camera).
    Frames without a face repeat the previous frame's coefficients (those before the first face
    take the first face's).

    Returns:
        (the sequence at the video's frame rate, the number of frames without a face)

    Raises:
        InputError: the video cannot be read, or no frame has a face.
    """
    try:
        info = read_video(driving)
        frames = iter_frames(driving)
    except VideoReadError as exc:
        raise InputError(str(exc)) from exc
    rig: Rig | None = None
    first_pose = np.zeros(6, dtype=np.float32)
    exps: list[np.ndarray] = []
    poses: list[np.ndarray] = []
    leading_misses = 0  # frames before the first face
    misses = 0
    with FaceLandmarker(video=True) as landmarker:
        for frame in tqdm(frames, desc="track", unit="frame", total=info.num_frames, disable=None):
            landmarks = landmarker.detect_or_none(frame)
            if landmarks is None:
                misses += 1
                if rig is None:
                    leading_misses += 1
                else:
                    exps.append(exps[-1])
                    poses.append(poses[-1])
                continue
            if rig is None:
                rig = _fitting_rig(frame, landmarks)
            fit = rig.fit(landmarks)
            if not exps:
                first_pose = fit.pose
            exps.append(fit.exp)
            poses.append(fit.pose - first_pose)
    if rig is None:
        raise InputError(f"no face found in any of the {leading_misses} frames of {driving}")
    exp = np.stack([exps[0]] * leading_misses + exps)  # (T, 52)
    pose_seq = np.stack([poses[0]] * leading_misses + poses)  # (T, 6)
    return CoeffSequence(exp=exp, pose=pose_seq, fps=info.fps), misses


def _fitting_rig(frame: np.ndarray, landmarks: np.ndarray) -> Rig:
    """A rig on the driving actor's first face: fits are relative to that frame.

    Its blendshape basis is calibrated to what MediaPipe sees when that face is rendered with
    each blendshape (MeshWarp.fitting_rig), which removes the detector's damping of small
    motions; about half a second.
    """
    with FaceLandmarker() as still:
        return MeshWarp(frame, landmarks).fitting_rig(still.detect, neutral=landmarks)


def reenact(
    image: PathLike,
    driving: PathLike,
    out: PathLike,
    *,
    coeffs_out: PathLike | None = None,
    keep_audio: bool = True,
    badge: bool = True,
    vqig: PathLike | None = None,
    fidelity: float = 0.5,
    vqig_compile: str = "auto",
) -> Path:
    """Transfer the expressions and head motion of a driving video onto the photo ``image``.

    Tracks the driving video (see :func:`track_video`), optionally saves the coefficients to
    ``coeffs_out``, and renders them on the photo at the driving frame rate with its audio.
    """
    source = load_portrait(image)
    refiner = load_refiner(vqig, fidelity=fidelity, compile=vqig_compile)
    seq, misses = track_video(driving)
    total = len(seq)
    if misses:
        log.warning("no face in %d of %d driving frames; they repeat the previous frame", misses, total)
    else:
        log.info("tracked a face in all %d driving frames", total)
    if coeffs_out is not None:
        try:
            save_coeffs(coeffs_out, seq)
        except OSError as exc:
            raise StreamError(f"cannot write {coeffs_out}: {exc.strerror or exc}") from exc
        log.info("saved the coefficients to %s", coeffs_out)
    with tempfile.TemporaryDirectory(prefix="reenact-") as tmp:
        wav: Path | None = None
        if keep_audio:
            try:
                # 48 kHz: extract_audio's 16 kHz default is for speech features, not for listening.
                wav = extract_audio(driving, Path(tmp) / "audio.wav", sample_rate=48000)
            except VideoReadError as exc:
                raise InputError(str(exc)) from exc
        return render_coeffs(source, seq, out, audio=wav, desc="reenact", badge=badge, refiner=refiner)


DEFAULT_FCG = Path(__file__).resolve().parent.parent / "assets" / "fcg"


def load_fcg(path: PathLike = DEFAULT_FCG) -> FCG:
    """The trained coefficient generator, ready for inference (one thread: the per-frame path).

    Raises:
        CheckpointError: the checkpoint is missing or does not match its config.
    """
    try:
        model = FCG.from_pretrained(path)
    except FCGCheckpointError as exc:
        raise CheckpointError(f"{exc} (train one with `python -m models.train`)") from exc
    return model.prepare_for_inference()


def speech_coefficients(
    model: FCG,
    audio: np.ndarray,
    *,
    emotion: str = "neutral",
    intensity: float = 0.8,
    seed: int = 0,
    temperature: float = 0.8,
    reference_exp: np.ndarray | None = None,
    progress: bool = False,
) -> CoeffSequence:
    """Coefficients for 16 kHz mono speech: one video frame per 1/25 s of audio, any length.

    ``reference_exp`` (52,): the blendshapes of a reference face whose emotion to carry over
    (emotion transfer through the bijective flow: its latent replaces the emotion's centre).

    Raises:
        InputError: unknown emotion or intensity outside [0, 1].
    """
    if emotion not in EMOTIONS:
        raise InputError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    if not 0.0 <= intensity <= 1.0:
        raise InputError(f"intensity must be in [0, 1], got {intensity}")
    if temperature < 0.0:
        raise InputError(f"temperature must be >= 0, got {temperature}")
    audio_cfg = model.config.audio_config()
    frames = num_video_frames(len(audio), audio_cfg)
    windows = torch.from_numpy(mel_windows(LogMel(audio_cfg)(audio), frames, audio_cfg))
    weights = torch.zeros(frames, len(EMOTIONS))
    weights[:, EMOTIONS.index(emotion)] = 1.0
    labels = emotion_label(weights, torch.full((frames,), 0.0 if emotion == "neutral" else float(intensity)))
    generator = torch.Generator().manual_seed(seed)
    with _torch_threads(1):
        latent = None
        if reference_exp is not None:
            latent = reference_latent(model, reference_exp, labels[0])
        out = model.generate(
            windows,
            labels,
            temperature=temperature,
            generator=generator,
            exp_latent=latent,
            progress=progress,
        )
    coeffs = out.numpy()
    exp = np.clip(coeffs[:, :NUM_BLENDSHAPES], 0.0, 1.0).astype(np.float32)
    return CoeffSequence(exp=exp, pose=coeffs[:, NUM_BLENDSHAPES:].astype(np.float32), fps=audio_cfg.fps)


@torch.no_grad()
def reference_latent(model: FCG, exp: np.ndarray, label: torch.Tensor) -> torch.Tensor:
    """A reference face's fitted blendshapes (52,) -> the ExpFlow latent that carries its emotion
    over (seen in silence with no history; see ``FCG.emotion_latent``)."""
    audio_cfg = model.config.audio_config()
    silence = torch.from_numpy(mel_windows(LogMel(audio_cfg)(np.zeros(16000, np.float32)), 1, audio_cfg))[0]
    return model.emotion_latent(torch.from_numpy(exp.astype(np.float32)), silence, label)


class _torch_threads:  # noqa: N801 - used as a context manager
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def render(
    image: PathLike,
    audio: PathLike,
    out: PathLike,
    *,
    emotion: str = "neutral",
    intensity: float = 0.8,
    seed: int = 0,
    temperature: float = 0.8,
    coeffs_out: PathLike | None = None,
    emotion_reference: PathLike | None = None,
    checkpoint: PathLike = DEFAULT_FCG,
    badge: bool = True,
    vqig: PathLike | None = None,
    fidelity: float = 0.5,
    vqig_compile: str = "auto",
) -> Path:
    """Speech -> talking face: the FCG generates coefficients for ``audio``, MeshWarp renders them
    on ``image``, and the speech is muxed into the .mp4. ``emotion_reference``: a photo whose
    facial expression is carried over instead of ``emotion``'s prototype centre."""
    try:
        speech = load_audio(audio)
    except AudioReadError as exc:
        raise InputError(str(exc)) from exc
    if len(speech) < 160:
        raise InputError(f"{audio}: too short to speak ({len(speech)} samples at 16 kHz)")
    source = load_portrait(image)
    model = load_fcg(checkpoint)
    refiner = load_refiner(vqig, fidelity=fidelity, compile=vqig_compile)
    reference = None
    if emotion_reference is not None:
        ref = load_portrait(emotion_reference)
        reference = Rig(ref.landmarks).photo_exp
        log.info("emotion reference %s: %s", emotion_reference, _describe(reference))
    seq = speech_coefficients(
        model, speech, emotion=emotion, intensity=intensity, seed=seed, temperature=temperature,
        reference_exp=reference, progress=True,
    )  # fmt: skip
    if coeffs_out is not None:
        try:
            save_coeffs(coeffs_out, seq)
        except OSError as exc:
            raise StreamError(f"cannot write {coeffs_out}: {exc.strerror or exc}") from exc
    return render_coeffs(source, seq, out, audio=audio, desc="render", badge=badge, refiner=refiner)


def _describe(exp: np.ndarray) -> str:
    top = np.argsort(exp)[::-1][:4]
    return ", ".join(f"{BLENDSHAPE_NAMES[i]} {exp[i]:.2f}" for i in top if exp[i] > 0.05) or "relaxed"


def pose(
    image: PathLike,
    emotion: str,
    intensity: float,
    out: PathLike,
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    badge: bool = True,
) -> Path:
    """Render one still of the photo with an emotion at ``intensity`` in [0, 1] and a head pose.

    yaw, pitch, roll are in radians (DESIGN.md signs: yaw > 0 turns the nose to the image right).
    The image format follows the suffix of ``out`` (.png, .jpg or .jpeg); the write is atomic. The still
    carries the invisible watermark, the "AI-generated" badge unless ``badge`` is False, and the
    generator's name, version and date in its PNG text chunks or JPEG comment.
    """
    if emotion not in EMOTIONS:
        raise InputError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    if not (isinstance(intensity, int | float) and 0.0 <= intensity <= 1.0):
        raise InputError(f"intensity must be in [0, 1], got {intensity}")
    for name, angle in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        if not math.isfinite(angle):
            raise InputError(f"{name} must be a finite angle in radians, got {angle}")
    out = Path(out)
    if out.suffix.lower() not in _IMAGE_SUFFIXES:
        raise InputError(f"expected an output image ending in {', '.join(_IMAGE_SUFFIXES)}, got {out}")
    exp = emotion_coefficients(emotion, float(intensity))
    source = load_portrait(image)
    frame = MeshWarp(source.image, source.landmarks).render(exp, np.array([yaw, pitch, roll, 0, 0, 0]))
    marker = Marker(badge=badge)
    log.info("watermark payload %s", marker.payload)
    return _write_image(out, marker.apply(frame))


def _write_image(out: Path, rgb: np.ndarray) -> Path:
    """Encode by suffix and write atomically (a temp file next to ``out``, then os.replace)."""
    ok, encoded = cv2.imencode(out.suffix.lower(), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise StreamError(f"cannot encode {out}: OpenCV's {out.suffix} encoder failed")
    # Not mkstemp: its files are private (0600); "x" mode gives the usual umask permissions.
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            f.write(with_provenance(encoded.tobytes(), out.suffix))
        os.replace(tmp, out)
    except OSError as exc:
        raise StreamError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return out
