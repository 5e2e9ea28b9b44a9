"""Tests for models/coeffs.py: CoeffSequence validation and the .npz format, plus the bundled demo."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models.coeffs import EXP_TOLERANCE, CoeffFileError, CoeffSequence, load_coeffs, save_coeffs
from models.rig import BLENDSHAPE_NAMES, NUM_BLENDSHAPES

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo_coeffs.npz"
NAMES = np.asarray(BLENDSHAPE_NAMES)
JAW = BLENDSHAPE_NAMES.index("jawOpen")


def _seq(num_frames: int = 12, fps: float = 30.0) -> CoeffSequence:
    rng = np.random.default_rng(1)
    return CoeffSequence(
        exp=rng.uniform(0.0, 1.0, (num_frames, NUM_BLENDSHAPES)),
        pose=rng.normal(0.0, 0.05, (num_frames, 6)),
        fps=fps,
    )


def _write_npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _good_arrays(num_frames: int = 5) -> dict[str, np.ndarray]:
    seq = _seq(num_frames)
    return {"exp": seq.exp, "pose": seq.pose, "fps": np.float64(seq.fps), "names": NAMES}


# --- CoeffSequence -----------------------------------------------------------------------------


def test_sequence_stores_read_only_float32_copies() -> None:
    exp = np.full((4, NUM_BLENDSHAPES), 0.5)
    seq = CoeffSequence(exp=exp, pose=np.zeros((4, 6)), fps=25)
    assert len(seq) == 4 and seq.duration_s == pytest.approx(0.16)
    assert seq.exp.dtype == np.float32 and seq.pose.dtype == np.float32 and isinstance(seq.fps, float)
    exp[0, 0] = 0.9  # the caller's array is not shared
    assert seq.exp[0, 0] == 0.5
    with pytest.raises(ValueError, match="read-only"):
        seq.exp[0, 0] = 1.0


def test_sequence_clips_float_noise_only() -> None:
    exp = np.zeros((2, NUM_BLENDSHAPES))
    exp[0, 0], exp[1, 1] = 1.0 + EXP_TOLERANCE / 2, -EXP_TOLERANCE / 2
    seq = CoeffSequence(exp=exp, pose=np.zeros((2, 6)), fps=25.0)
    assert seq.exp.max() == 1.0 and seq.exp.min() == 0.0


@pytest.mark.parametrize(
    ("exp_shape", "pose_shape", "fps", "bad", "match"),
    [
        ((3, 51), (3, 6), 25.0, None, r"expected exp of shape \(T, 52\).*got \(3, 51\)"),
        ((0, 52), (0, 6), 25.0, None, r"T >= 1"),
        ((3, 52), (4, 6), 25.0, None, r"expected pose of shape .*\(3, 6\).*got \(4, 6\)"),
        ((3, 52), (3, 3), 25.0, None, r"got \(3, 3\)"),
        ((3, 52), (3, 6), 25.0, ("exp", np.nan), r"exp must be finite; got nan at frame 1"),
        ((3, 52), (3, 6), 25.0, ("pose", np.inf), r"pose must be finite"),
        ((3, 52), (3, 6), 25.0, ("exp", 1.2), r"in \[0, 1\]; got 1\.2 for browDownRight at frame 1"),
        ((3, 52), (3, 6), 25.0, ("exp", -0.1), r"in \[0, 1\]; got -0\.1"),
        ((3, 52), (3, 6), 0.0, None, r"expected fps > 0, got 0"),
        ((3, 52), (3, 6), float("nan"), None, r"expected fps > 0"),
    ],
)
def test_sequence_rejects_bad_values(
    exp_shape: tuple[int, int],
    pose_shape: tuple[int, int],
    fps: float,
    bad: tuple[str, float] | None,
    match: str,
) -> None:
    arrays = {"exp": np.zeros(exp_shape), "pose": np.zeros(pose_shape)}
    if bad is not None:
        arrays[bad[0]][1, 1] = bad[1]
    with pytest.raises(ValueError, match=match):
        CoeffSequence(exp=arrays["exp"], pose=arrays["pose"], fps=fps)


def test_sequence_rejects_wrong_types() -> None:
    with pytest.raises(TypeError, match="fps as a number, got bool"):
        CoeffSequence(exp=np.zeros((1, 52)), pose=np.zeros((1, 6)), fps=True)
    with pytest.raises(TypeError, match="real-valued"):
        CoeffSequence(exp=np.zeros((1, 52), dtype=complex), pose=np.zeros((1, 6)), fps=25.0)


# --- the file format ---------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    seq = _seq()
    path = save_coeffs(tmp_path / "sub" / "c.npz", seq)
    back = load_coeffs(path)
    np.testing.assert_array_equal(back.exp, seq.exp)
    np.testing.assert_array_equal(back.pose, seq.pose)
    assert back.fps == 30.0
    with np.load(path) as npz:  # the documented entries, readable by plain numpy
        assert sorted(npz.files) == ["exp", "fps", "names", "pose"]
        assert npz["exp"].dtype == np.float32 and npz["fps"].shape == ()
        assert tuple(npz["names"]) == BLENDSHAPE_NAMES
    # Byte-reproducible, and no temporary file left beside it.
    assert save_coeffs(tmp_path / "again.npz", seq).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.npz"]


def test_reorders_columns_of_a_file_with_the_same_names_in_another_order(tmp_path: Path) -> None:
    seq = _seq(4)
    order = np.random.default_rng(3).permutation(NUM_BLENDSHAPES)
    path = _write_npz(tmp_path / "c.npz", exp=seq.exp[:, order], pose=seq.pose, fps=25.0, names=NAMES[order])
    np.testing.assert_array_equal(load_coeffs(path).exp, seq.exp)


def _bad(key: str, value: object) -> dict[str, object]:
    arrays: dict[str, object] = dict(_good_arrays())
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    return arrays


OTHER_RIG = NAMES.copy()
OTHER_RIG[5] = "cheekBlow"


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (_bad("pose", None), r"lacks pose; expected entries exp, pose, fps, names, got exp, fps, names"),
        (_bad("names", None), r"lacks names"),
        (_bad("exp", np.zeros((5, 50))), r"expected exp of shape \(T, 52\), got \(5, 50\)"),
        (_bad("pose", np.zeros((5, 3))), r"expected pose of shape"),
        (_bad("fps", np.array([25.0, 30.0])), r"expected fps as a scalar, got shape \(2,\)"),
        (_bad("fps", np.float64(-1.0)), r"expected fps > 0, got -1"),
        (_bad("exp", np.full((5, 52), 2.0)), r"in \[0, 1\]; got 2"),
        (_bad("names", OTHER_RIG), r"other blendshapes.*missing cheekPuff; unexpected cheekBlow"),
        (_bad("names", NAMES[:51]), r"got 51 names; missing tongueOut"),
        (_bad("names", np.arange(52)), r"names as a 1-D array of strings"),
    ],
    ids=[
        "no-pose", "no-names", "exp-columns", "pose-shape", "fps-array", "fps-negative", "exp-range",
        "other-rig", "51-names", "int-names",
    ],
)  # fmt: skip
def test_load_rejects_bad_contents(tmp_path: Path, arrays: dict[str, object], match: str) -> None:
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CoeffFileError, match=match) as info:
        load_coeffs(path)
    assert "bad.npz" in str(info.value)


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "npy", "truncated"])
def test_load_rejects_files_that_are_not_npz(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c.npz"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("jawOpen,0.5\n")
    elif kind == "npy":
        np.save(tmp_path / "c.npy", np.zeros((3, 52)))
        (tmp_path / "c.npy").rename(path)
    elif kind == "truncated":
        save_coeffs(path, _seq())
        path.write_bytes(path.read_bytes()[:200])
    expected = {
        "missing": "no such file",
        "directory": "it is a directory",
        "empty": r"not an \.npz archive of arrays \(empty\)",
        "text": r"not an \.npz archive of arrays \(not a zip archive\)",
        "npy": "one array, not an .npz",
        "truncated": "not an .npz archive",
    }[kind]
    with pytest.raises(CoeffFileError, match=expected):
        load_coeffs(path)


def test_coeff_file_error_is_a_value_error() -> None:
    assert issubclass(CoeffFileError, ValueError)
    assert zipfile.is_zipfile(DEMO)


# --- the bundled demo --------------------------------------------------------------------------


def test_demo_coeffs_match_their_script_and_look_like_talking() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_demo_coeffs", ROOT / "scripts" / "make_demo_coeffs.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fresh = script.make_demo(np.random.default_rng(script.SEED))

    demo = load_coeffs(DEMO)
    assert DEMO.stat().st_size < 100_000
    np.testing.assert_array_equal(demo.exp, fresh.exp)  # the asset is what the script makes
    np.testing.assert_array_equal(demo.pose, fresh.pose)
    assert demo.fps == 25.0 and 7.5 <= demo.duration_s <= 8.5

    jaw = demo.exp[:, JAW]
    assert 0.35 <= jaw.max() <= 0.55
    peaks = np.sum((jaw[1:-1] > jaw[:-2]) & (jaw[1:-1] >= jaw[2:]) & (jaw[1:-1] > 0.1))
    assert 3.0 <= peaks / demo.duration_s <= 6.0  # syllable rate, pauses included
    lid = demo.exp[:, BLENDSHAPE_NAMES.index("eyeBlinkLeft")]
    np.testing.assert_array_equal(lid, demo.exp[:, BLENDSHAPE_NAMES.index("eyeBlinkRight")])
    assert np.sum((lid[1:] > 0.9) & (lid[:-1] <= 0.9)) >= 2
    assert np.abs(demo.pose[:, :3]).max() <= 0.1 and np.abs(np.diff(demo.pose[:, :3], axis=0)).max() < 0.02
    smile = demo.exp[:, BLENDSHAPE_NAMES.index("mouthSmileLeft")]
    third = len(demo) // 3
    assert smile[-third:].min() > 0.4 > smile[:third].max()
