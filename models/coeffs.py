"""Coefficient sequences and their file format: per-frame blendshape weights and head pose.

A ``.npz`` (zip of ``.npy`` arrays) with four entries:

- ``exp``: (T, 52) float32, the ARKit blendshape weights in [0, 1], columns in ``names`` order;
- ``pose``: (T, 6) float32, yaw, pitch, roll (radians) and tx, ty, tz (inter-ocular distances of the
  face), relative to the source photo's own pose (DESIGN.md, "Face representation");
- ``fps``: scalar float, frames per second;
- ``names``: (52,) str, the blendshape names (models.rig.BLENDSHAPE_NAMES). A file with the same
  names in another order is read with its columns reordered.
"""

from __future__ import annotations

import io
import math
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.rig import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, POSE_NAMES

__all__ = ["CoeffFileError", "CoeffSequence", "load_coeffs", "save_coeffs"]

NUM_POSE = len(POSE_NAMES)
# Weights this far outside [0, 1] are float noise (e.g. from resampling) and are clipped; more is an error.
EXP_TOLERANCE = 1e-3
_KEYS = ("exp", "pose", "fps", "names")
# A fixed zip timestamp makes save_coeffs byte-reproducible (bundled assets do not churn in git).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class CoeffFileError(ValueError):
    """A coefficient file is missing, not an .npz, or does not hold a valid coefficient sequence."""


@dataclass(frozen=True, eq=False)
class CoeffSequence:
    """T frames of rig coefficients at a fixed frame rate.

    exp: (T, 52) float32 blendshape weights in [0, 1] (BLENDSHAPE_NAMES order). pose: (T, 6) float32,
    yaw, pitch, roll in radians and tx, ty, tz in inter-ocular distances. fps: frames per second.
    The arrays are stored as read-only float32 copies.
    """

    exp: np.ndarray
    pose: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        exp = _real_array("exp", self.exp)
        pose = _real_array("pose", self.pose)
        if exp.ndim != 2 or exp.shape[1] != NUM_BLENDSHAPES or exp.shape[0] < 1:
            raise ValueError(f"expected exp of shape (T, {NUM_BLENDSHAPES}) with T >= 1, got {exp.shape}")
        if pose.shape != (exp.shape[0], NUM_POSE):
            raise ValueError(
                f"expected pose of shape (T, {NUM_POSE}) = ({exp.shape[0]}, {NUM_POSE}) to match exp, "
                f"got {pose.shape}"
            )
        for name, arr in (("exp", exp), ("pose", pose)):
            bad = np.argwhere(~np.isfinite(arr))
            if len(bad):
                t, k = bad[0]
                raise ValueError(f"{name} must be finite; got {arr[t, k]} at frame {t}, column {k}")
        outside = np.argwhere((exp < -EXP_TOLERANCE) | (exp > 1.0 + EXP_TOLERANCE))
        if len(outside):
            t, k = outside[0]
            raise ValueError(
                f"exp weights must be in [0, 1]; got {exp[t, k]:.4g} for {BLENDSHAPE_NAMES[k]} at frame {t} "
                f"({len(outside)} values out of range)"
            )
        fps = self.fps
        if isinstance(fps, bool) or not isinstance(fps, int | float | np.integer | np.floating):
            raise TypeError(f"expected fps as a number, got {type(fps).__name__}")
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"expected fps > 0, got {fps}")
        exp = np.clip(exp, 0.0, 1.0).astype(np.float32)
        pose = pose.astype(np.float32)  # astype copies: the caller's arrays stay theirs
        exp.setflags(write=False)
        pose.setflags(write=False)
        object.__setattr__(self, "exp", exp)
        object.__setattr__(self, "pose", pose)
        object.__setattr__(self, "fps", float(fps))

    def __len__(self) -> int:
        return int(self.exp.shape[0])

    @property
    def duration_s(self) -> float:
        """Length in seconds: frames / fps."""
        return len(self) / self.fps


def _real_array(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"expected {name} as a real-valued array, got dtype {arr.dtype}")
    return arr


def save_coeffs(path: str | os.PathLike[str], seq: CoeffSequence) -> Path:
    """Write ``seq`` as a coefficient .npz (compressed), atomically; returns the path.

    The file appears complete or not at all: it is written next to ``path`` and moved onto it.
    Missing parent directories are created.
    """
    if not isinstance(seq, CoeffSequence):
        raise TypeError(f"expected a CoeffSequence, got {type(seq).__name__}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "exp": seq.exp,
        "pose": seq.pose,
        "fps": np.asarray(seq.fps, dtype=np.float64),
        "names": np.asarray(BLENDSHAPE_NAMES),
    }
    # Not mkstemp: its files are private (0600); "x" mode gives the usual umask permissions.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.partial")
    try:
        with open(tmp, "xb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arr, allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, buf.getvalue())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def load_coeffs(path: str | os.PathLike[str]) -> CoeffSequence:
    """Read a coefficient .npz written by :func:`save_coeffs` (or any tool following the format).

    Raises:
        CoeffFileError: the file is missing or not an .npz, an entry is missing or has the wrong
            shape or values, or its blendshape names are not this rig's 52 names.
    """
    path = Path(path)
    where = f"coefficient file {str(path)!r}"
    if not path.is_file():
        what = "it is a directory" if path.is_dir() else "no such file"
        raise CoeffFileError(f"cannot read {where}: {what}")
    try:
        arrays = _read_npz(path, where)
    except CoeffFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CoeffFileError(f"cannot read {where}: not an .npz archive of arrays ({exc})") from exc

    exp, names, fps = arrays["exp"], arrays["names"], arrays["fps"]
    if names.ndim != 1 or names.dtype.kind != "U":
        raise CoeffFileError(
            f"{where}: expected names as a 1-D array of strings, got {names.dtype} {names.shape}"
        )
    names_list = [str(n) for n in names]
    if len(set(names_list)) != len(names_list) or set(names_list) != set(BLENDSHAPE_NAMES):
        missing = [n for n in BLENDSHAPE_NAMES if n not in names_list]
        extra = [n for n in names_list if n not in BLENDSHAPE_NAMES]
        raise CoeffFileError(
            f"{where} uses other blendshapes than this rig's {NUM_BLENDSHAPES} ARKit names "
            f"(got {len(names_list)} names; missing {_few(missing)}; unexpected {_few(extra)}; "
            f"duplicated {len(names_list) - len(set(names_list))})"
        )
    if exp.ndim != 2 or exp.shape[1] != len(names_list):
        raise CoeffFileError(f"{where}: expected exp of shape (T, {len(names_list)}), got {exp.shape}")
    if names_list != list(BLENDSHAPE_NAMES):
        exp = exp[:, [names_list.index(n) for n in BLENDSHAPE_NAMES]]
    if fps.size != 1:
        raise CoeffFileError(f"{where}: expected fps as a scalar, got shape {fps.shape}")
    try:
        return CoeffSequence(exp=exp, pose=arrays["pose"], fps=fps.reshape(()).item())
    except (TypeError, ValueError) as exc:
        raise CoeffFileError(f"{where}: {exc}") from exc


def _read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    # Our own file handle: np.load(path) leaks its handle when the zip directory is damaged.
    with open(path, "rb") as f:
        magic = f.read(6)
        f.seek(0)
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            kind = "empty" if not magic else "not a zip archive"
            raise CoeffFileError(f"cannot read {where}: not an .npz archive of arrays ({kind})")
        loaded = np.load(f, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CoeffFileError(f"cannot read {where}: it holds one array, not an .npz archive of arrays")
        with loaded as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise CoeffFileError(
                    f"{where} lacks {', '.join(missing)}; expected entries {', '.join(_KEYS)}, "
                    f"got {', '.join(npz.files) or 'none'}"
                )
            return {k: npz[k] for k in _KEYS}


def _few(names: list[str], limit: int = 4) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
