"""Real components for the live-agent tests: a private PulseAudio server and a recorder of it, and an
agent on its own event loop. (The aiortc viewer is ``streaming.viewer``.)"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] as 16-bit samples."""
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


# -- PulseAudio ----------------------------------------------------------------------------------
class PulseServer:
    """A private PulseAudio daemon with a null sink ``vsink`` whose monitor is the default source
    (DESIGN.md's recipe: a silent stream keeps the sink from delivering audio in 2 s lumps)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.env.update(
            XDG_RUNTIME_DIR=str(root / "run"),
            HOME=str(root / "home"),
            PULSE_RUNTIME_PATH=str(root / "run" / "pulse"),
        )
        self.env.pop("PULSE_SERVER", None)
        self._keepalive: subprocess.Popen | None = None

    def start(self) -> None:
        for d in ("run", "home"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "run", 0o700)
        subprocess.run(
            ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disallow-exit", "--daemonize=yes",
             "-L", "module-native-protocol-unix", "-L", "module-null-sink sink_name=vsink rate=48000",
             "-L", "module-always-sink"],
            env=self.env, check=True, timeout=30, capture_output=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while self.pactl("info", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("PulseAudio did not start")
            time.sleep(0.1)
        self.pactl("set-default-source", "vsink.monitor")
        self.pactl("set-default-sink", "vsink")
        self._keepalive = subprocess.Popen(
            ["pacat", "--playback", "--device=vsink", "--latency-msec=20", "--raw", "/dev/zero"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)
        self.pactl("suspend-sink", "vsink", "1")
        self.pactl("suspend-sink", "vsink", "0")

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=15, check=check
        )

    def play(self, wav: Path, device: str = "vsink") -> subprocess.Popen:
        return subprocess.Popen(["paplay", f"--device={device}", str(wav)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.kill()
            self._keepalive.wait()
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=15)

    @staticmethod
    def available() -> bool:
        return all(shutil.which(t) for t in ("pulseaudio", "pactl", "pacat", "paplay", "parec"))


_RECORD = """
import os, signal, subprocess, sys, time
device, out = sys.argv[1], sys.argv[2]
proc = subprocess.Popen(["parec", "--device=" + device, "--raw", "--format=s16le", "--rate=16000",
                         "--channels=1", "--latency-msec=10"], stdout=subprocess.PIPE)
signal.signal(signal.SIGTERM, lambda *a: proc.kill())
n = 0
with open(out + ".raw", "wb") as raw, open(out + ".times", "w") as times:
    while True:
        data = os.read(proc.stdout.fileno(), 1 << 16)
        if not data:
            break
        t = time.monotonic()
        raw.write(data)
        n += len(data)
        times.write(f"{n // 2} {t!r}\\n")
"""


class Recorder:
    """Records a PulseAudio source (16 kHz mono int16) in a separate process, which stamps every read
    with the monotonic time (a process of its own: the agent's threads cannot delay the stamps)."""

    def __init__(self, pulse: PulseServer, device: str, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen([sys.executable, "-c", _RECORD, device, str(out)], env=pulse.env)

    def stop(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (samples, (end index, monotonic arrival) per read)."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        data = Path(f"{self.out}.raw").read_bytes()
        samples = np.frombuffer(data[: len(data) // 2 * 2], np.int16)
        chunks = np.loadtxt(f"{self.out}.times", ndmin=2)
        return samples, chunks

    @staticmethod
    def heard_at(index: int, chunks: np.ndarray) -> float:
        """Monotonic time at which recorded sample ``index`` was captured. A chunk is read at or after
        its last sample was captured (the reader thread can be late, never early), so the earliest
        (arrival - samples so far) over all chunks maps sample numbers to time."""
        return float(np.min(chunks[:, 1] - chunks[:, 0] / 16000) + index / 16000)


# -- the agent on its own loop ---------------------------------------------------------------------
class AgentThread:
    """A LiveAgent running on an event loop in a background thread."""

    def __init__(self, options) -> None:
        from agent.live import LiveAgent

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.agent = LiveAgent(options)
        self.call(self.agent.start(), timeout=120)

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.agent.stop(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.agent.port}/ws"


def mouth_darkness(images: list[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """Per frame, the fraction of dark pixels in the box around the lips: the open mouth's cavity."""
    lips = landmarks[[13, 14, 78, 308, 0, 17], :2]
    x0, y0 = np.floor(lips.min(0)).astype(int) - 4
    x1, y1 = np.ceil(lips.max(0)).astype(int) + 4
    out = []
    for img in images:
        box = img[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
        out.append(float((box < 60).mean()))
    return np.asarray(out)


def window_lags(
    sent: np.ndarray, rec: np.ndarray, window: int = 8000, min_corr: float = 0.8
) -> list[tuple[int, int]]:
    """Where each voiced window of ``sent`` appears in ``rec``: [(start in sent, lag)] with
    rec[start + lag : ...] matching sent[start : start + window] (normalized correlation >= min_corr).
    Window by window, so a gap or an overlap in the played sound moves only its own windows."""
    sent, rec = sent.astype(np.float64), rec.astype(np.float64)
    out = []
    for start in range(0, len(sent) - window, window // 2):
        piece = sent[start : start + window]
        if np.sqrt((piece**2).mean()) < 300:  # silence matches anything
            continue
        n = len(rec) + window
        corr = np.fft.irfft(np.fft.rfft(rec, 2 * n) * np.conj(np.fft.rfft(piece, 2 * n)), 2 * n)[
            : len(rec) - window
        ]
        energy = np.sqrt(np.convolve(rec**2, np.ones(window), "valid")[: len(rec) - window]) * np.linalg.norm(
            piece
        )
        score = np.where(energy > 0.1 * np.linalg.norm(piece) ** 2, corr / np.maximum(energy, 1e-9), 0.0)
        best = int(np.argmax(score))
        if score[best] >= min_corr:
            out.append((start, best - start))
    return out
