"""Evaluate the talking face the way the FlowVQTalker paper does (its Tables 1-4), on data we can hold.

    python -m bench.evaluate [--out docs/results] [--checkpoint assets/fcg]      # about 5-10 min on 2 cores
    python -m bench.evaluate --ablations [--steps 1200]                          # Table 3 style; trains 7 variants

Test set: 3 held-out synthesized voices (models.synth.VAL_VOICES, never trained on) x 8 emotions, one
held-out sentence each (24 clips), with the synthesizer's own coefficients as ground truth; rendered
by MeshWarp on two real photos (the bundled portrait and matplotlib's Grace Hopper). Three things are
rendered and measured the same way: the FCG's coefficients (seed 0, temperature 0.8), the ground-truth
coefficients, and the still photo (a baseline that never moves). Landmarks on the renders come from
MediaPipe. Prints one table, writes results.json, results.md and PNG plots into --out.

Ablations: each variant of the FCG is trained from scratch with the same short budget (--steps of
batch 256, one thread) on the same synthesized data (data/ablation/, built if missing); the baseline
is trained the same way. Their coefficients are measured on the same test set through the bundled
portrait's rig (landmarks from the rig, no rendering), which is cheaper and has no detector noise.
Checkpoints stay under data/ (not committed).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import math
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from agent.commands import DEFAULT_FCG, SourcePortrait, load_fcg, load_portrait, speech_coefficients
from models.fcg import FCG
from models.landmarks import FaceLandmarker
from models.meshwarp import MeshWarp
from models.metrics import (
    FACE_LANDMARKS,
    MOUTH_LANDMARKS,
    av_sync,
    blink_onsets,
    canonical_correlations,
    cpbd,
    eye_aperture,
    find_face_embedder,
    landmark_distance,
    mouth_aperture,
    pose_std,
    seed_diversity,
    speech_envelope,
    ssim,
)
from models.rig import EMOTIONS, NUM_BLENDSHAPES, Rig

log = logging.getLogger("bench.evaluate")

ROOT = Path(__file__).resolve().parent.parent
FPS = 25.0
INTENSITY = 0.8
TEMPERATURE = 0.8
SSIM_SIZE = 256  # px: SSIM on frames downscaled to the paper's resolution
CPBD_EVERY = 5  # frames
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline (tau 10, dropout 0.7, look-ahead 80 ms)": {},
    "without data dropout": {"history_dropout": 0.0},
    "tau 0 (no history)": {"history": 0},
    "tau 5": {"history": 5},
    "look-ahead 0 ms": {"lookahead_ms": 0.0},
    "look-ahead 40 ms": {"lookahead_ms": 40.0},
    "look-ahead 100 ms (centred window)": {"lookahead_ms": 100.0},
}
ABLATION_TEMPERATURES = (0.0, 0.5, 1.0)


@dataclass
class Clip:
    """One test utterance with its ground truth (the synthesizer's coefficients at 25 fps)."""

    name: str
    voice: str
    emotion: str
    text: str
    audio: np.ndarray  # (N,) float32, 16 kHz
    exp: np.ndarray  # (T, 52)
    pose: np.ndarray  # (T, 6)
    blinks: int  # blinks the synthesizer put in

    @property
    def seconds(self) -> float:
        return len(self.audio) / 16000


def test_set(emotions: tuple[str, ...] = EMOTIONS) -> list[Clip]:
    """Held-out voices x ``emotions``, a distinct held-out sentence each, fixed seeds."""
    from models.corpus import sentences
    from models.synth import AlignmentError, available_voices, make_sample

    voices = available_voices("val")
    if not voices:
        raise SystemExit(
            "no held-out voice is installed (flite slt, festival slt HTS, espeak-ng): run setup.sh"
        )
    texts = sentences(split="val")
    clips: list[Clip] = []
    i = 0
    for emotion in emotions:
        for voice in voices:
            rng = np.random.default_rng(7000 + i)
            try:
                s = make_sample(texts[i], voice, emotion, INTENSITY, rng)
            except (AlignmentError, RuntimeError) as exc:
                log.warning("test clip %d (%s, %s) skipped: %s", i, voice, emotion, exc)
                i += 1
                continue
            clips.append(
                Clip(
                    f"{voice.speaker} {emotion}",
                    str(voice),
                    emotion,
                    texts[i],
                    s.audio,
                    s.exp,
                    s.pose,
                    s.blinks,
                )
            )
            i += 1
    return clips


def _grace_hopper() -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _generate(
    model: FCG, clip: Clip, seed: int, temperature: float = TEMPERATURE
) -> tuple[np.ndarray, np.ndarray]:
    seq = speech_coefficients(model, clip.audio, emotion=clip.emotion, intensity=INTENSITY, seed=seed,
                              temperature=temperature)  # fmt: skip
    n = min(len(seq), len(clip.exp))
    return seq.exp[:n], seq.pose[:n]


# --- the main evaluation ------------------------------------------------------------------------


@dataclass
class _Track:
    """Per-frame measurements of one rendered stream (generated, ground truth or still) of one clip."""

    landmarks: list[np.ndarray | None] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    cpbd: list[float] = field(default_factory=list)


def _small(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (SSIM_SIZE, SSIM_SIZE), interpolation=cv2.INTER_AREA)


def _filled(lms: list[np.ndarray | None]) -> tuple[np.ndarray, int]:
    """Landmarks (T, 478, 3) with missed frames repeating the previous detection, and the miss count."""
    first = next((x for x in lms if x is not None), None)
    if first is None:
        raise RuntimeError("MediaPipe found no face in any frame of a clip")
    out, last, misses = [], first, 0
    for x in lms:
        if x is None:
            misses += 1
        else:
            last = x
        out.append(last)
    return np.stack(out), misses


def _render_clip(
    warp: MeshWarp, clip: Clip, gen: tuple[np.ndarray, np.ndarray], fl_gen: FaceLandmarker, fl_gt: FaceLandmarker,
    still: np.ndarray, keep: tuple[int, ...] = (),
) -> tuple[_Track, _Track, _Track, list[tuple[np.ndarray, np.ndarray]]]:  # fmt: skip
    g_exp, g_pose = gen
    tg, tt, ts = _Track(), _Track(), _Track()
    still_small = _small(still)
    kept = []
    for t in range(len(g_exp)):
        fg = warp.render(g_exp[t], g_pose[t])
        ft = warp.render(clip.exp[t], clip.pose[t])
        tg.landmarks.append(fl_gen.detect_or_none(fg))
        tt.landmarks.append(fl_gt.detect_or_none(ft))
        ft_small = _small(ft)
        tg.ssim.append(ssim(_small(fg), ft_small))
        ts.ssim.append(ssim(still_small, ft_small))
        if t % CPBD_EVERY == 0:
            tg.cpbd.append(cpbd(fg))
            tt.cpbd.append(cpbd(ft))
        if t in keep:
            kept.append((fg, ft))
    return tg, tt, ts, kept


def evaluate(checkpoint: Path, out: Path, *, seeds: int = 5, quick: bool = False) -> dict[str, Any]:
    t_start = time.monotonic()
    torch.set_num_threads(1)
    model = load_fcg(checkpoint)
    log.info("synthesizing the test set (held-out voices x emotions) ...")
    clips = test_set(("neutral", "happy") if quick else EMOTIONS)
    if quick:
        clips = clips[:2]
    log.info(
        "%d clips, %.1f s of speech (%.0f s)",
        len(clips),
        sum(c.seconds for c in clips),
        time.monotonic() - t_start,
    )

    # Coefficients: seed 0 is rendered; all seeds measure diversity. They do not depend on the photo.
    gens: list[list[tuple[np.ndarray, np.ndarray]]] = []
    fcg_ms = []
    for c in clips:
        t0 = time.perf_counter()
        gens.append([_generate(model, c, s) for s in range(seeds)])
        fcg_ms.append((time.perf_counter() - t0) * 1000 / (seeds * len(c.exp)))
    log.info("generated %d seeds per clip (%.0f s)", seeds, time.monotonic() - t_start)

    portraits = [("portrait", ROOT / "assets" / "portrait.png"), ("grace_hopper", _grace_hopper())]
    per_portrait: dict[str, Any] = {}
    tracks: dict[str, list[tuple[_Track, _Track, _Track]]] = {}
    strip: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    still_info: dict[str, Any] = {}
    for pname, path in portraits:
        source: SourcePortrait = load_portrait(path)
        warp = MeshWarp(source.image, source.landmarks)
        still = warp.render(np.zeros(NUM_BLENDSHAPES), np.zeros(6))
        with FaceLandmarker() as fl:
            still_lm = fl.detect(still)
        still_info[pname] = {"landmarks": still_lm, "cpbd": cpbd(still), "photo_cpbd": cpbd(source.image)}
        tracks[pname] = []
        with FaceLandmarker(video=True) as fl_gen, FaceLandmarker(video=True) as fl_gt:
            for k, c in enumerate(clips):
                t0 = time.monotonic()
                keep = tuple(np.linspace(5, len(c.exp) - 5, 5).astype(int)) if k == _shown(clips)[0] else ()
                tg, tt, ts, kept = _render_clip(warp, c, gens[k][0], fl_gen, fl_gt, still, keep)
                tracks[pname].append((tg, tt, ts))
                if kept:
                    strip[pname] = kept
                log.info(
                    "[%s %2d/%d] %-34s %5.1f s, %3d frames, %4.1f s   (total %3.0f s)",
                    pname, k + 1, len(clips), c.name, c.seconds, len(c.exp), time.monotonic() - t0,
                    time.monotonic() - t_start,
                )  # fmt: skip
        per_portrait[pname] = _image_metrics(clips, tracks[pname], still_info[pname])

    results = _summarize(clips, gens, per_portrait, fcg_ms, seeds)
    results["meta"] = _meta(checkpoint, len(clips), seeds, time.monotonic() - t_start, quick)
    out.mkdir(parents=True, exist_ok=True)
    _plots(out, clips, gens, tracks, strip)
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    md = _markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    return results


def _image_metrics(
    clips: list[Clip], tracks: list[tuple[_Track, _Track, _Track]], still: dict[str, Any]
) -> dict[str, Any]:
    """Everything measured on one photo's renders, pooled over the clips."""
    acc: dict[str, list[float]] = {k: [] for k in (
        "ssim_gen", "ssim_still", "mlmd_gen", "flmd_gen", "mlmd_still", "flmd_still", "cpbd_gen", "cpbd_gt",
        "aperture_r_gen", "aperture_r_still")}  # fmt: skip
    frames = misses = 0
    sync: dict[str, list[tuple[int, float]]] = {"gen": [], "gt": [], "still": []}
    blinks = {"gen": 0, "gt": 0, "still": 0, "synth": 0}
    onsets: dict[str, list[np.ndarray]] = {"gen": [], "gt": [], "still": []}
    minutes = 0.0
    apertures = []
    for c, (tg, tt, ts) in zip(clips, tracks, strict=True):
        lg, mg = _filled(tg.landmarks)
        lt, mt = _filled(tt.landmarks)
        n = len(lg)
        frames += n
        misses += mg + mt
        ls = np.repeat(still["landmarks"][None], n, axis=0)
        # Frame-weighted: each clip's mean times its length.
        for key, a, b in (("gen", lg, lt), ("still", ls, lt)):
            acc[f"mlmd_{key}"].append(landmark_distance(a, b, MOUTH_LANDMARKS) * n)
            acc[f"flmd_{key}"].append(landmark_distance(a, b, FACE_LANDMARKS) * n)
        acc["ssim_gen"].append(float(np.sum(tg.ssim)))
        acc["ssim_still"].append(float(np.sum(ts.ssim)))
        acc["cpbd_gen"] += tg.cpbd
        acc["cpbd_gt"] += tt.cpbd
        env = speech_envelope(c.audio, n)
        ap_g, ap_t = mouth_aperture(lg), mouth_aperture(lt)
        apertures.append((ap_g, ap_t, env))
        r = np.corrcoef(ap_g, ap_t)[0, 1] if np.ptp(ap_g) > 0 and np.ptp(ap_t) > 0 else 0.0
        acc["aperture_r_gen"].append(float(r) * n)
        for key, ap in (("gen", ap_g), ("gt", ap_t), ("still", mouth_aperture(ls))):
            s = av_sync(ap, env)
            sync[key].append((s.offset, s.confidence))
        for key, lm in (("gen", lg), ("gt", lt), ("still", ls)):
            on = blink_onsets(eye_aperture(lm))
            onsets[key].append(on)
            blinks[key] += len(on)
        blinks["synth"] += c.blinks
        minutes += n / FPS / 60
    return {
        "frames": frames,
        "detector_misses": misses,
        "ssim": {"gen": sum(acc["ssim_gen"]) / frames, "still": sum(acc["ssim_still"]) / frames},
        "m_lmd": {"gen": sum(acc["mlmd_gen"]) / frames, "still": sum(acc["mlmd_still"]) / frames},
        "f_lmd": {"gen": sum(acc["flmd_gen"]) / frames, "still": sum(acc["flmd_still"]) / frames},
        "aperture_r": {"gen": sum(acc["aperture_r_gen"]) / frames},
        "cpbd": {
            "gen": float(np.nanmean(acc["cpbd_gen"])),
            "gt": float(np.nanmean(acc["cpbd_gt"])),
            "still": still["cpbd"],
            "photo": still["photo_cpbd"],
        },  # fmt: skip
        "sync": {k: _sync_summary(v) for k, v in sync.items()},
        "blinks_per_min": {k: v / minutes for k, v in blinks.items()},
        "blink_onsets": onsets,
        "apertures": apertures,
    }


def _sync_summary(per_clip: list[tuple[int, float]]) -> dict[str, float]:
    off = np.array([o for o, _ in per_clip])
    conf = np.array([c for _, c in per_clip])
    return {
        "offset_median": float(np.median(off)) + 0.0,  # no "-0"
        "confidence_median": float(np.median(conf)),
        "within_1_frame": float(np.mean(np.abs(off) <= 1)),
        "clips": len(off),
    }


def _pose_metrics(gens: list[tuple[np.ndarray, np.ndarray]], truths: list[np.ndarray]) -> dict[str, float]:
    """Pose diversity (std over time, mean over clips) and CCA of generated vs ground-truth pose,
    pooled over clips after centring each clip (an emotion's posture offset is not motion)."""
    g_std = np.mean([pose_std(p) for _, p in gens], axis=0)
    t_std = np.mean([pose_std(p) for p in truths], axis=0)
    cat_g = np.concatenate([p - p.mean(0) for _, p in gens])
    cat_t = np.concatenate([p - p.mean(0) for p in truths])
    cc = canonical_correlations(cat_g, cat_t)
    still = np.zeros_like(cat_t)  # the still photo: no head motion at all
    return {
        "rot_std_deg_still": float(np.degrees(pose_std(still)[:3]).mean()),
        "trans_std_still": float(pose_std(still)[3:].mean()),
        "cca_mean_still": float(canonical_correlations(still, cat_t).mean()),
        "rot_std_deg_gen": float(np.degrees(g_std[:3]).mean()),
        "rot_std_deg_gt": float(np.degrees(t_std[:3]).mean()),
        "trans_std_gen": float(g_std[3:].mean()),
        "trans_std_gt": float(t_std[3:].mean()),
        "pose6_std_gen": float(g_std.mean()),
        "pose6_std_gt": float(t_std.mean()),
        "cca_mean": float(cc.mean()),
        "cca_first": float(cc[0]),
    }


def _summarize(clips: list[Clip], gens: list[list[tuple[np.ndarray, np.ndarray]]], per_portrait: dict[str, Any],
               fcg_ms: list[float], seeds: int) -> dict[str, Any]:  # fmt: skip
    """Pool the photos' image metrics (frame-weighted) and add the coefficient metrics."""
    names = list(per_portrait)
    w = np.array([per_portrait[p]["frames"] for p in names], dtype=float)

    def pooled(metric: str, key: str) -> float:
        return float(np.average([per_portrait[p][metric][key] for p in names], weights=w))

    pose = _pose_metrics([g[0] for g in gens], [c.pose for c in clips])
    div_exp = float(np.mean([seed_diversity(np.stack([e for e, _ in g])) for g in gens]))
    div_rot = float(np.mean([seed_diversity(np.degrees(np.stack([p[:, :3] for _, p in g]))) for g in gens]))
    div_still = seed_diversity(np.zeros((2, 1, NUM_BLENDSHAPES)))  # every seed gives the same still photo
    embedder = find_face_embedder()
    identity = (
        f"not measured: {embedder} is importable but this evaluation does not call it yet"
        if embedder
        else "not measured: no face-embedding model loads without network here (checked insightface, "
        "facenet_pytorch, face_recognition, deepface, arcface; MediaPipe 0.10.21 ships none)"
    )
    return {
        "pooled": {
            "ssim": {"gen": pooled("ssim", "gen"), "still": pooled("ssim", "still")},
            "m_lmd": {"gen": pooled("m_lmd", "gen"), "still": pooled("m_lmd", "still")},
            "f_lmd": {"gen": pooled("f_lmd", "gen"), "still": pooled("f_lmd", "still")},
            "aperture_r": {"gen": pooled("aperture_r", "gen")},
            "cpbd": {k: pooled("cpbd", k) for k in ("gen", "gt", "still")},
            "sync_offset": {
                k: float(np.median([per_portrait[p]["sync"][k]["offset_median"] for p in names])) + 0.0
                for k in ("gen", "gt", "still")
            },  # fmt: skip
            "sync_conf": {
                k: float(np.mean([per_portrait[p]["sync"][k]["confidence_median"] for p in names]))
                for k in ("gen", "gt", "still")
            },  # fmt: skip
            "sync_within_1": {
                k: float(np.mean([per_portrait[p]["sync"][k]["within_1_frame"] for p in names]))
                for k in ("gen", "gt", "still")
            },  # fmt: skip
            "blinks_per_min": {k: pooled("blinks_per_min", k) for k in ("gen", "gt", "still", "synth")},
        },
        "pose": pose,
        "diversity": {"exp": div_exp, "rot_deg": div_rot, "still": div_still, "seeds": seeds},
        "identity": identity,
        "fcg_ms_per_frame_median": float(np.median(fcg_ms)),
        "per_portrait": {
            p: {k: v for k, v in per_portrait[p].items() if k not in ("blink_onsets", "apertures")}
            for p in names
        },  # fmt: skip
        "clips": [
            {
                "name": c.name,
                "voice": c.voice,
                "text": c.text,
                "seconds": round(c.seconds, 2),
                "synth_blinks": c.blinks,
            }
            for c in clips
        ],  # fmt: skip
    }


def _meta(checkpoint: Path, clips: int, seeds: int, seconds: float, quick: bool) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT, check=False).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.evaluate" + (" --quick" if quick else ""),
        "commit": commit,
        "checkpoint": str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint),
        "machine": f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}, torch {torch.__version__}, one torch thread",
        "clips": clips,
        "seeds": seeds,
        "seconds": round(seconds, 1),
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _markdown(r: dict[str, Any]) -> str:
    p, pose, div, m = r["pooled"], r["pose"], r["diversity"], r["meta"]
    n_clips = m["clips"]
    renders = f"MediaPipe landmarks on MeshWarp renders, 2 photos x {n_clips} clips"
    rows = [
        "| metric | FCG (ours) | ground-truth coefficients | still photo | source |",
        "|---|---:|---:|---:|---|",
        "| **Against ground truth** | | | | |",
        f"| SSIM (higher is better) | {p['ssim']['gen']:.3f} | 1 (itself) | {p['ssim']['still']:.3f} | "
        f"luma at {SSIM_SIZE} px, every frame, vs the render of the ground-truth coefficients |",
        f"| M-LMD, px (lower is better) | {p['m_lmd']['gen']:.2f} | 0 (itself) | {p['m_lmd']['still']:.2f} | "
        f"{renders}; 40 lip points, similarity-aligned on eye corners + nose, 512 px frames |",
        f"| F-LMD, px | {p['f_lmd']['gen']:.2f} | 0 (itself) | {p['f_lmd']['still']:.2f} | same, 468 face points |",
        f"| mouth aperture r vs ground truth | {p['aperture_r']['gen']:.2f} | 1 (itself) | – | "
        f"{renders}: inner-lip gap per frame, Pearson r |",
        f"| pose CCA (mean of 6) | {pose['cca_mean']:.2f} | 1 (itself) | {pose['cca_mean_still']:.2f} | "
        f"coefficients, seed 0 vs the synthesizer's head motion, {n_clips} clips pooled (first: {pose['cca_first']:.2f}) |",
        "| **Without ground truth** | | | | |",
        f"| CPBD sharpness (higher is sharper) | {p['cpbd']['gen']:.3f} | {p['cpbd']['gt']:.3f} | "
        f"{p['cpbd']['still']:.3f} | MeshWarp renders, every {CPBD_EVERY}th frame |",
        f"| sync offset, frames (median) | {p['sync_offset']['gen']:+.1f} | {p['sync_offset']['gt']:+.1f} | – | "
        f"{renders}: mouth aperture vs speech RMS, +-15 frames; > 0: mouth late (still: undefined) |",
        f"| sync confidence (median) | {p['sync_conf']['gen']:.2f} | {p['sync_conf']['gt']:.2f} | "
        f"{p['sync_conf']['still']:.2f} | same: r at the offset minus the median r over offsets |",
        f"| clips with abs(offset) <= 1 | {100 * p['sync_within_1']['gen']:.0f} % | "
        f"{100 * p['sync_within_1']['gt']:.0f} % | – | same |",
        f"| blinks per minute | {p['blinks_per_min']['gen']:.1f} | {p['blinks_per_min']['gt']:.1f} "
        f"(synthesizer: {p['blinks_per_min']['synth']:.1f}) | {p['blinks_per_min']['still']:.1f} | "
        f"{renders}: eye aperture below 0.7 x its open level |",
        f"| head rotation std, deg | {pose['rot_std_deg_gen']:.2f} | {pose['rot_std_deg_gt']:.2f} | "
        f"{pose['rot_std_deg_still']:.2f} | "
        "coefficients: std over time of yaw, pitch, roll, mean of 3, per clip, mean over clips |",
        f"| head translation std, IOD | {pose['trans_std_gen']:.4f} | {pose['trans_std_gt']:.4f} | "
        f"{pose['trans_std_still']:.4f} | same, tx ty tz |",
        f"| diversity across {div['seeds']} seeds: blendshapes | {div['exp']:.3f} | – | {div['still']:.3f} | "
        "coefficients: std over seeds, mean over frames, shapes and clips |",
        f"| diversity across {div['seeds']} seeds: head rotation, deg | {div['rot_deg']:.2f} | – | {div['still']:.2f} | "
        "same, yaw pitch roll |",
        f"| identity similarity | – | – | – | {r['identity']} |",
    ]
    per = ["", "By photo (FCG / still photo):", "",
           "| photo | frames | detector misses | SSIM | M-LMD px | F-LMD px | CPBD FCG / GT render / photo | sync offset | blinks/min FCG / GT render |",  # noqa: E501
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, q in r["per_portrait"].items():
        per.append(
            f"| {name} | {q['frames']} | {q['detector_misses']} | {q['ssim']['gen']:.3f} / {q['ssim']['still']:.3f} | "
            f"{q['m_lmd']['gen']:.2f} / {q['m_lmd']['still']:.2f} | {q['f_lmd']['gen']:.2f} / {q['f_lmd']['still']:.2f} | "
            f"{q['cpbd']['gen']:.3f} / {q['cpbd']['gt']:.3f} / {q['cpbd']['photo']:.3f} | "
            f"{q['sync']['gen']['offset_median']:+.1f} | {q['blinks_per_min']['gen']:.1f} / {q['blinks_per_min']['gt']:.1f} |"
        )
    head = [
        f"Evaluation of `{m['checkpoint']}` ({m['date_utc']}, commit {m['commit']}, `{m['command']}`, "
        f"{m['seconds']:.0f} s on {m['machine']}).",
        f"Test set: {n_clips} clips = held-out synthesized voices x emotions (intensity {INTENSITY}), "
        f"FCG at temperature {TEMPERATURE}, seed 0; FCG {r['fcg_ms_per_frame_median']:.2f} ms per frame (median).",
        "",
    ]
    return "\n".join(head + rows + per) + "\n"


# --- plots ------------------------------------------------------------------------------------


def _plots(out: Path, clips: list[Clip], gens: list[list[tuple[np.ndarray, np.ndarray]]],
           tracks: dict[str, list[tuple[_Track, _Track, _Track]]], strip: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1. Mouth aperture against the speech envelope, one clip per voice, on the bundled portrait.
    pname = next(iter(tracks))
    picks = _shown(clips)
    fig, axes = plt.subplots(len(picks), 1, figsize=(10, 2.3 * len(picks)), squeeze=False)
    for ax, k in zip(axes[:, 0], picks, strict=True):
        tg, tt, _ = tracks[pname][k]
        ap_g, ap_t = mouth_aperture(_filled(tg.landmarks)[0]), mouth_aperture(_filled(tt.landmarks)[0])
        env = speech_envelope(clips[k].audio, len(ap_g))
        t = np.arange(len(ap_g)) / FPS
        ax.fill_between(
            t,
            0,
            env / max(env.max(), 1e-9) * max(ap_t.max(), 1e-3),
            color="0.85",
            label="speech RMS (scaled)",
        )
        ax.plot(t, ap_t, color="tab:green", label="ground-truth coefficients")
        ax.plot(t, ap_g, color="tab:blue", label="FCG")
        ax.set_title(f"{clips[k].name}: mouth aperture (MediaPipe on the renders)", fontsize=9)
        ax.set_ylabel("inner-lip gap")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out / "sync.png", dpi=70)
    plt.close(fig)

    # 2. Pose traces: ground truth and three seeds of one clip.
    k = picks[0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 2.8))
    for j, (ax, name) in enumerate(zip(axes, ("yaw", "pitch", "roll"), strict=True)):
        t = np.arange(len(clips[k].pose)) / FPS
        ax.plot(
            t, np.degrees(clips[k].pose[:, j]), color="tab:green", lw=2, label="ground truth (synthesizer)"
        )
        for s, (_, p) in enumerate(gens[k][:3]):
            ax.plot(t[: len(p)], np.degrees(p[:, j]), lw=1, label=f"FCG seed {s}")
        ax.set_title(f"{name} (deg), {clips[k].name}", fontsize=9)
        ax.set_xlabel("seconds")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pose.png", dpi=70)
    plt.close(fig)

    # 3. Blink rasters: detected blink onsets per clip, ground-truth render vs FCG render.
    fig, ax = plt.subplots(figsize=(10, 0.25 * len(clips) + 1.2))
    for k, (tg, tt, _) in enumerate(tracks[pname]):
        for lms, dy, color, label in ((tt.landmarks, 0.15, "tab:green", "ground-truth render"),
                                      (tg.landmarks, -0.15, "tab:blue", "FCG render")):  # fmt: skip
            on = blink_onsets(eye_aperture(_filled(lms)[0])) / FPS
            ax.plot(
                on, np.full(len(on), k + dy), "|", color=color, ms=7, mew=2, label=label if k == 0 else None
            )
    ax.set_yticks(range(len(clips)), [c.name for c in clips], fontsize=6)
    ax.set_xlabel("seconds")
    ax.set_title("blink onsets detected on the renders (eye aperture, MediaPipe)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "blinks.png", dpi=70)
    plt.close(fig)

    # 4. A strip of frames, the face cropped: FCG over ground truth, both photos, the first shown clip.
    from PIL import Image

    rows = []
    for kept in strip.values():
        for i, label in ((0, "FCG"), (1, "truth")):
            tiles = [cv2.resize(f[i][128:416, 112:400], (96, 96), interpolation=cv2.INTER_AREA) for f in kept]
            row = np.concatenate(tiles, axis=1)
            cv2.putText(row, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
            rows.append(row)
    if rows:
        # 256 colours keep the committed PNG small.
        Image.fromarray(np.concatenate(rows, axis=0)).quantize(256).save(out / "frames.png", optimize=True)


def _shown(clips: list[Clip]) -> list[int]:
    """Clips drawn in the plots: one per voice with different emotions (happy, neutral, sad) when present."""
    wanted = [("happy", 1), ("neutral", 0), ("sad", 2)]
    voices = list(dict.fromkeys(c.voice.split("@")[0] for c in clips))
    picks = []
    for emotion, v in wanted:
        for k, c in enumerate(clips):
            if c.emotion == emotion and voices.index(c.voice.split("@")[0]) == v % len(voices):
                picks.append(k)
                break
    return picks or list(range(min(3, len(clips))))


# --- ablations --------------------------------------------------------------------------------


def _ablation_data(data_dir: Path, minutes: float) -> tuple[Path, Path]:
    from models.synth import build_dataset

    train_path, val_path = data_dir / f"train-{minutes:g}min.npz", data_dir / "val.npz"
    if not train_path.exists():
        build_dataset(train_path, minutes=minutes, seed=0, split="train")
    if not val_path.exists():
        build_dataset(val_path, minutes=2.0, seed=1, split="val")
    return train_path, val_path


def _last_log(run: Path) -> dict[str, str]:
    try:
        with open(run / "log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    return rows[-1] if rows else {}


def _coeff_metrics(
    model: FCG, clips: list[Clip], rig: Rig, temperature: float, seeds: int = 3
) -> dict[str, float]:
    """The test set through the rig: landmark, sync, blink, pose and diversity metrics on coefficients."""
    mlmd, flmd, ap_r, offsets, confs, blinks, frames, ms = [], [], [], [], [], 0, 0, []
    gens0, div = [], []
    zero = np.zeros(6)
    for c in clips:
        t0 = time.perf_counter()
        g = [_generate(model, c, s, temperature) for s in range(seeds)]
        ms.append((time.perf_counter() - t0) * 1000 / (seeds * len(g[0][0])))
        e, p = g[0]
        n = len(e)
        lg = np.stack([rig.landmarks(e[t], p[t]) for t in range(n)])
        lt = np.stack([rig.landmarks(c.exp[t], c.pose[t]) for t in range(n)])
        mlmd.append(landmark_distance(lg, lt, MOUTH_LANDMARKS) * n)
        flmd.append(landmark_distance(lg, lt, FACE_LANDMARKS) * n)
        # Mouth and eyes without head motion, so only the expression speaks.
        ag = mouth_aperture(np.stack([rig.landmarks(x, zero) for x in e]))
        at = mouth_aperture(np.stack([rig.landmarks(x, zero) for x in c.exp[:n]]))
        ap_r.append((np.corrcoef(ag, at)[0, 1] if np.ptp(ag) > 0 and np.ptp(at) > 0 else 0.0) * n)
        s = av_sync(ag, speech_envelope(c.audio, n))
        offsets.append(s.offset)
        confs.append(s.confidence)
        blinks += len(blink_onsets(eye_aperture(np.stack([rig.landmarks(x, zero) for x in e]))))
        frames += n
        gens0.append((e, p))
        div.append(seed_diversity(np.stack([x for x, _ in g])))
    pose = _pose_metrics(gens0, [c.pose[: len(g[1])] for c, g in zip(clips, gens0, strict=True)])
    return {
        "m_lmd": sum(mlmd) / frames,
        "f_lmd": sum(flmd) / frames,
        "aperture_r": sum(ap_r) / frames,
        "sync_offset": float(np.median(offsets)) + 0.0,
        "sync_conf": float(np.median(confs)),
        "within_1": float(np.mean(np.abs(np.array(offsets)) <= 1)),
        "blinks_per_min": blinks / (frames / FPS / 60),
        "rot_std_deg": pose["rot_std_deg_gen"],
        "cca_mean": pose["cca_mean"],
        "diversity_exp": float(np.mean(div)),
        "fcg_ms": float(np.median(ms)),
    }


def ablations(
    out: Path, data_dir: Path, steps: int, minutes: float = 15.0, *, quick: bool = False
) -> dict[str, Any]:
    from models.train import train

    t_start = time.monotonic()
    torch.set_num_threads(1)
    train_path, val_path = _ablation_data(data_dir, minutes)
    clips = test_set(("neutral",))[:2] if quick else test_set()
    variants = dict(list(ABLATIONS.items())[:2]) if quick else ABLATIONS
    from models.landmarks import load_image

    with FaceLandmarker() as fl:
        rig = Rig(fl.detect(load_image(ROOT / "assets" / "portrait.png")))
    rows: dict[str, dict[str, Any]] = {}
    runs = data_dir / f"runs-{minutes:g}min-{steps}"
    for i, (name, overrides) in enumerate(variants.items()):
        run = runs / f"v{i}"
        if int(_last_log(run).get("step", 0) or 0) != steps:
            log.info("[%d/%d] training %s for %d steps (total %.0f s)", i + 1, len(variants), name, steps,
                     time.monotonic() - t_start)  # fmt: skip
            train(train_path, val_path, run, max_steps=steps, overrides=overrides, seed=0, threads=1)
        model = FCG.from_pretrained(run).prepare_for_inference()
        last = _last_log(run)
        temps = (TEMPERATURE, *ABLATION_TEMPERATURES) if not overrides else (TEMPERATURE,)
        for temp in temps:
            label = name if temp == TEMPERATURE else f"baseline, temperature {temp}"
            m = _coeff_metrics(model, clips, rig, temp)
            m |= {"val_nll": float(last["val_nll"]), "lookahead_ms": model.config.lookahead_ms,
                  "latency_ms": model.config.lookahead_ms + m["fcg_ms"], "temperature": temp}  # fmt: skip
            rows[label] = m
            log.info(
                "%s: %s (total %.0f s)",
                label,
                {k: round(v, 3) for k, v in m.items()},
                time.monotonic() - t_start,
            )
    committed = load_fcg(DEFAULT_FCG)
    m = _coeff_metrics(committed, clips, rig, TEMPERATURE)
    m |= {"val_nll": float("nan"), "lookahead_ms": committed.config.lookahead_ms,
          "latency_ms": committed.config.lookahead_ms + m["fcg_ms"], "temperature": TEMPERATURE}  # fmt: skip
    rows["shipped checkpoint assets/fcg (18,594 steps; not the same budget)"] = m
    meta = _meta(DEFAULT_FCG, len(clips), 3, time.monotonic() - t_start, False)
    meta["command"] = f"python -m bench.evaluate --ablations --steps {steps} --data-minutes {minutes:g}"
    result = {"meta": meta, "steps": steps, "data_minutes": minutes, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    md = _ablation_markdown(result)
    (out / "ablations.md").write_text(md)
    print(md)
    return result


def _ablation_markdown(r: dict[str, Any]) -> str:
    m = r["meta"]
    lines = [
        f"Ablations ({m['date_utc']}, commit {m['commit']}, `{m['command']}`, {m['seconds']:.0f} s on {m['machine']}).",
        f"Each variant trained from scratch for {r['steps']} steps of 256 frames (one thread, seed 0) on the same "
        f"{r['data_minutes']:g} minutes of synthesized speech (data/ablation/); measured on the "
        f"{m['clips']}-clip held-out test set through the bundled portrait's rig (landmarks from the rig, "
        "no rendering; M-LMD, F-LMD, aperture r and CCA against the synthesizer's ground truth). "
        "Latency = look-ahead + FCG time per frame (median, noisy shared machine).",
        "",
        "| variant | val NLL | M-LMD px | F-LMD px | aperture r vs GT | sync offset | sync conf | "
        "abs(offset) <= 1 | blinks/min | head std deg | pose CCA | seed diversity | look-ahead ms | "
        "FCG ms/frame | latency ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, x in r["rows"].items():
        nll = "–" if not math.isfinite(x["val_nll"]) else f"{x['val_nll']:.3f}"
        lines.append(
            f"| {name} | {nll} | {x['m_lmd']:.2f} | {x['f_lmd']:.2f} | {x['aperture_r']:.2f} | "
            f"{x['sync_offset']:+.1f} | {x['sync_conf']:.2f} | {100 * x['within_1']:.0f} % | {x['blinks_per_min']:.1f} | "
            f"{x['rot_std_deg']:.2f} | {x['cca_mean']:.2f} | {x['diversity_exp']:.3f} | {x['lookahead_ms']:.0f} | "
            f"{x['fcg_ms']:.2f} | {x['latency_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_FCG)
    parser.add_argument("--seeds", type=int, default=5, help="samples per clip for the diversity metric")
    parser.add_argument("--quick", action="store_true", help="two clips only (a smoke test)")
    parser.add_argument("--ablations", action="store_true", help="train and compare the ablation variants")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per ablation variant")
    parser.add_argument(
        "--data", type=Path, default=ROOT / "data" / "ablation", help="ablation data and runs"
    )
    parser.add_argument(
        "--data-minutes", type=float, default=15.0, help="synthesized training speech for ablations"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.seeds < 2:
        parser.error("--seeds must be >= 2 (diversity compares seeds)")
    if args.ablations:
        ablations(args.out, args.data, args.steps, args.data_minutes, quick=args.quick)
    else:
        evaluate(args.checkpoint, args.out, seeds=args.seeds, quick=args.quick)


if __name__ == "__main__":
    main()
