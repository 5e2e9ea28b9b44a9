"""Smoke tests of the renderer benchmark (bench/meshwarp.py), the contact sheet and emotion stills scripts."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

STAGES = (
    "Rig construction (once)",
    "MeshWarp construction (once)",
    "render (total)",
    "rig.fit",
    "MediaPipe detect (static)",
    "MediaPipe track (video)",
)


def _run(args: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_meshwarp_prints_table(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    proc = _run(["-m", "bench.meshwarp", "--frames", "30", "--json", str(out_json)])
    lines = proc.stdout.splitlines()
    assert lines[0] == "| stage | median ms | p90 ms | p99 ms | frames/s | target |"
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 6, line
        rows[cells[0]] = cells
    for stage in STAGES:
        assert stage in rows, f"missing stage {stage!r} in:\n{proc.stdout}"
        median = float(rows[stage][1])
        assert math.isfinite(median) and median > 0.0
        if "(once)" not in stage:
            p90, p99, fps = (float(c) for c in rows[stage][2:5])
            assert all(math.isfinite(x) and x > 0.0 for x in (p90, p99, fps))
            assert median <= p90 <= p99
    assert "< 10 ms" in rows["render (total)"][5] and "< 5 ms" in rows["rig.fit"][5]
    assert "peak RSS" in proc.stdout and "machine:" in proc.stdout

    result = json.loads(out_json.read_text())
    assert result["frames"] == 30
    assert {s["stage"] for s in result["stages"]} >= set(STAGES)
    assert all(math.isfinite(s["median_ms"]) for s in result["stages"])


def test_contact_sheet_grid(tmp_path: Path) -> None:
    sheet = _load_script("contact_sheet")
    out = tmp_path / "sheet.png"
    tile_px = 96
    _run(["scripts/contact_sheet.py", "--out", str(out), "--tile", str(tile_px)])
    assert out.is_file() and out.stat().st_size < sheet.MAX_BYTES
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None
    n_tiles = len(sheet.tiles())
    assert n_tiles == 2 + 8 + len(sheet.BLENDSHAPE_TILES) + len(sheet.POSE_TILES)
    rows = math.ceil(n_tiles / sheet.COLUMNS)
    assert img.shape == (rows * (sheet.LABEL_H + tile_px), sheet.COLUMNS * tile_px, 3)


def test_emotion_stills_renders_every_judged_emotion_and_skips_a_photo_without_a_face(tmp_path: Path) -> None:
    stills = _load_script("emotion_stills")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, dtype=np.uint8))
    out = tmp_path / "stills"
    proc = _run(
        ["scripts/emotion_stills.py", str(ROOT / "assets" / "portrait.png"), str(blank), "--out", str(out)]
    )
    assert "skipped" in proc.stderr and "blank.png" in proc.stderr
    assert "1 of 2 photos rendered" in proc.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["portrait__src.png"] + [f"portrait_{e}.png" for e in stills.JUDGED])
    neutral, angry = (cv2.imread(str(out / f"portrait_{e}.png")) for e in ("neutral", "angry"))
    assert neutral.shape == (512, 512, 3) and float(abs(neutral.astype(int) - angry).mean()) > 1.0
