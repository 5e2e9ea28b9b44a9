"""VQIG speed per frame (batch 1) for each configuration and compile path, on the present device.

    python -m bench.vqig --device cuda                       # full and lite; tensorrt, inductor, none
    python -m bench.vqig --device cpu --configs tiny --compile none --frames 5

Weights are random (speed does not depend on them). "net" times the network alone on tensors
already on the device; "frame" times Refiner.__call__ on a 512x512 uint8 frame (upload, resize,
network, upscaled correction, download). A compile path that is unavailable falls back, and the
table says to what and why.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

import numpy as np
import torch

from models.refine import Refiner
from models.vqig import NUM_COEFFS, PRESETS, VQIG

REAL_TIME_FPS = 25.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: object, frames: int, device: torch.device) -> np.ndarray:
    times = []
    for _ in range(frames):
        _sync(device)
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return np.array(times)


def bench(config_name: str, compile_path: str, *, device: str, frames: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = VQIG(PRESETS[config_name])
    refiner = Refiner(model, device=device, compile=compile_path, announce=False)  # type: ignore[arg-type]
    dev = refiner.device
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    coeffs = rng.uniform(0, 1, NUM_COEFFS).astype(np.float32)
    refiner(frame, frame, coeffs)  # encodes and caches the source
    s = refiner.size
    with torch.inference_mode():  # as the Refiner makes its inputs (a normal tensor would recompile)
        x = torch.zeros(1, 3, s, s, device=dev, dtype=refiner.dtype)
        c = torch.zeros(1, NUM_COEFFS, device=dev, dtype=refiner.dtype)
    tokens = refiner.source_tokens(frame)

    def net() -> None:
        with torch.inference_mode():
            refiner.net(x, tokens, c, refiner.fidelity_tensor)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    net_ms = _time(net, frames, dev)
    frame_ms = _time(lambda: refiner(frame, frame, coeffs), frames, dev)
    mem = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    row = {
        "config": config_name, "size": s, "params": sum(p.numel() for p in model.parameters()) / 1e6,
        "asked": compile_path, "path": refiner.compile_path, "compile_s": refiner.compile_s,
        "net_ms": float(np.median(net_ms)), "net_p90": float(np.percentile(net_ms, 90)),
        "frame_ms": float(np.median(frame_ms)), "frame_p90": float(np.percentile(frame_ms, 90)),
        "mem_mib": mem, "note": refiner.description.split("compile=", 1)[1].split(", compiled in")[0],
    }  # fmt: skip
    torch._dynamo.reset()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.vqig", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cuda, cpu (%(default)s)")
    p.add_argument("--configs", nargs="+", choices=sorted(PRESETS), default=["full", "lite"])
    p.add_argument("--compile", nargs="+", choices=["tensorrt", "inductor", "none"],
                   default=["tensorrt", "inductor", "none"])  # fmt: skip
    p.add_argument("--frames", type=int, default=100, help="timed frames per row (%(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (%(default)s)")
    p.add_argument("--worker", action="store_true",
                   help="build and run each refiner in one worker thread, as the live agent does")  # fmt: skip
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {a.threads} thread(s)"
    where = "in a worker thread" if a.worker else "in the main thread"
    print(f"device: {name}; torch {torch.__version__}; batch 1; {a.frames} frames per row; medians; {where}")
    rows = []
    worker = concurrent.futures.ThreadPoolExecutor(1) if a.worker else None
    for config in a.configs:
        for path in a.compile:
            if worker is not None:
                row = worker.submit(bench, config, path, device=device, frames=a.frames).result()
            else:
                row = bench(config, path, device=device, frames=a.frames)
            rows.append(row)
            print(f"  done {config} {path} -> {row['path']}: {row['net_ms']:.2f} ms", flush=True)
    print()
    print("| config | size | params (M) | compile asked | compile used | compile s | net ms | net p90 | "
          "frame ms | frame p90 | frames/s | real time (>= 25 fps) | peak MiB |")  # fmt: skip
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        fps = 1000.0 / r["frame_ms"]  # type: ignore[operator]
        print(f"| {r['config']} | {r['size']} | {r['params']:.1f} | {r['asked']} | {r['note']} | "
              f"{r['compile_s']:.0f} | {r['net_ms']:.2f} | {r['net_p90']:.2f} | {r['frame_ms']:.2f} | "
              f"{r['frame_p90']:.2f} | {fps:.0f} | {'yes' if fps >= REAL_TIME_FPS else 'no'} | "
              f"{r['mem_mib']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
