"""``python run_agent.py``: the live agent.

Assembles source -> pipeline -> sinks and the control server, runs until ``duration_s`` or
Ctrl-C, and shuts everything down cleanly (devices released, peers closed, no traceback).
Missing devices (microphone, virtual webcam, PulseAudio) each get one line and a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agent.clock import MediaClock
from agent.commands import DEFAULT_FCG, _describe, load_fcg, load_portrait, load_refiner, reference_latent
from agent.control import ControlState, Style
from agent.errors import AgentError, ConfigError, DeviceError, InputError
from agent.pipeline import Animator, LivePipeline
from agent.sources import FileSource, MicSource, PushSource
from models.meshwarp import MeshWarp
from models.rig import EMOTIONS, Rig
from models.watermark import Marker

__all__ = ["LiveAgent", "LiveOptions", "run_live"]

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


@dataclass
class LiveOptions:
    image: Path = ASSETS / "portrait.png"
    audio_source: str = "mic"  # mic | file:PATH | webrtc
    mic: str | None = None  # name (part of) or index
    virtualcam: bool = True
    virtual_mic: bool = True
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    emotion: str = "neutral"
    intensity: float = 0.8
    size: int = 512
    fps: int = 25
    device: str = "cpu"
    duration_s: float | None = None
    seed: int = 0
    checkpoint: Path = DEFAULT_FCG
    ice_servers: tuple[str, ...] = ()
    virtualcam_backend: str | None = None  # pyvirtualcam backend name (tests register one)
    badge: bool = True  # the visible "AI-generated" badge (the invisible watermark is always on)
    vqig: Path | None = None  # a VQIG checkpoint refines MeshWarp's frames
    fidelity: float = 0.5
    vqig_compile: str = "auto"

    def check(self) -> None:
        if self.emotion not in EMOTIONS:
            raise ConfigError(f"unknown emotion {self.emotion!r}; expected one of {', '.join(EMOTIONS)}")
        if not 0.0 <= self.intensity <= 1.0:
            raise ConfigError(f"--intensity must be in [0, 1], got {self.intensity}")
        if not 64 <= self.size <= 2048:
            raise ConfigError(f"--size must be in [64, 2048] pixels, got {self.size}")
        if not 1 <= self.fps <= 60:
            raise ConfigError(f"--fps must be in 1..60 (the virtual webcam's rate), got {self.fps}")
        if not (self.audio_source in ("mic", "webrtc") or self.audio_source.startswith("file:")):
            raise ConfigError(f"--audio-source must be mic, file:PATH or webrtc; got {self.audio_source!r}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"--duration must be positive, got {self.duration_s}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"--device must be cpu or cuda, got {self.device!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 0..65535, got {self.port}")


class LiveAgent:
    """Everything of one live session. ``start()`` then ``stop()``; in between, ``url`` serves."""

    def __init__(self, options: LiveOptions) -> None:
        options.check()
        self.options = options
        self.tasks: list[asyncio.Task] = []
        self.server = None
        self.virtualcam = None
        self.virtual_mic = None
        self.url: str | None = None
        self.port: int | None = None

    # -- building -------------------------------------------------------------------------------
    def _device(self) -> str:
        if self.options.device == "cuda" and not torch.cuda.is_available():
            log.warning("--device cuda: no CUDA device is available; running on the CPU")
            return "cpu"
        return self.options.device

    def _build(self) -> None:
        o = self.options
        torch.set_num_threads(1)  # the per-frame path: one thread beats two beside OpenCV
        source = load_portrait(o.image)
        self.portrait = source
        self.model = load_fcg(o.checkpoint)
        self.device = self._device()
        if self.device != "cpu":
            log.info("device: %s for VQIG (the FCG runs per frame at batch 1 on the CPU)", self.device)
        warp = MeshWarp(source.image, source.landmarks)
        render = warp.render
        if o.size != source.image.shape[0]:
            import cv2

            size = (o.size, o.size)

            def render(exp: np.ndarray, pose: np.ndarray) -> np.ndarray:
                return cv2.resize(warp.render(exp, pose), size, interpolation=cv2.INTER_AREA)

        self.marker = Marker(badge=o.badge)
        self.marker.prepare(o.size, o.size)
        log.info("watermark: every frame carries %s%s", self.marker.payload,
                 "" if o.badge else " (no visible badge)")  # fmt: skip
        self.refiner = None
        self.clock = MediaClock(16000)
        self.control = ControlState(emotion=o.emotion, intensity=o.intensity, style=Style(),
                                    fps=self.model.config.audio_config().fps)  # fmt: skip
        self.animator = Animator(self.model, render, self.control, seed=o.seed, post=self._post)
        self.pipeline = LivePipeline(self.animator, self.clock)

    def _post(self, image: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        """After MeshWarp, in the render worker: VQIG (when given), then the watermark and badge."""
        if self.refiner is not None:
            image = self.refiner(image, self.portrait.image, coeffs)
        return self.marker.apply(image)

    def _source(self):
        o = self.options
        if o.audio_source.startswith("file:"):
            src = FileSource(o.audio_source[5:], self.clock)
            log.info("audio: %s (%.1f s) at real-time pace", src.path, src.duration_s)
            return src
        if o.audio_source == "webrtc":
            self.push_source = PushSource(self.clock, name="webrtc audio in")
            log.info("audio: the first WebRTC peer that sends audio")
            return self.push_source
        try:
            return MicSource(self.clock, o.mic)
        except DeviceError as exc:
            log.error("microphone: %s; the face idles (the page and outputs still run)", exc)
            return PushSource(self.clock, name="no microphone")  # never yields: silence is filled in

    def _reference(self, data: bytes) -> tuple[torch.Tensor, str]:
        """A reference photo -> its ExpFlow latent (emotion transfer) and a one-line summary."""
        fd, name = tempfile.mkstemp(suffix=".img")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                ref = load_portrait(name)
            except InputError as exc:
                raise ValueError(str(exc).replace(name, "the reference image")) from exc
        finally:
            os.unlink(name)
        exp = Rig(ref.landmarks).photo_exp
        return reference_latent(self.model, exp, self.control.current_label()), _describe(exp)

    # -- running --------------------------------------------------------------------------------
    async def start(self) -> None:
        from streaming.server import ControlServer
        from streaming.webrtc import PeerManager, restrict_ice_to_loopback

        o = self.options
        await asyncio.to_thread(self._build)
        # The refiner is built in the render worker that calls it (CUDA graphs stay in their thread).
        self.refiner = await self.pipeline.in_worker(
            load_refiner, o.vqig, fidelity=o.fidelity, compile=o.vqig_compile, device=self.device
        )
        self.clock.start()
        self.push_source = None
        source = self._source()
        token = o.token
        if not is_loopback(o.host):
            if token is None:
                token = secrets.token_urlsafe(16)
                log.warning("binding %s (not loopback): a token is required; generated one", o.host)
        else:
            restrict_ice_to_loopback()
        self.peers = PeerManager(self.pipeline, ice_servers=list(o.ice_servers), audio_in=self.push_source)
        self.server = ControlServer(
            self.pipeline, self.control, self.peers, token=token, reference=self._reference,
            extra_status=self._extra_status,
        )  # fmt: skip
        self.port = await self.server.start(o.host, o.port)
        shown = f"[{o.host}]" if ":" in o.host else o.host
        self.url = f"http://{shown}:{self.port}/" + (f"?token={token}" if token else "")
        self.tasks.append(asyncio.create_task(self.pipeline.run(source), name="pipeline"))
        if o.virtualcam:
            from streaming.virtualcam import open_virtualcam

            self.virtualcam = open_virtualcam(
                self.pipeline, o.size, o.size, o.fps, backend=o.virtualcam_backend
            )
            if self.virtualcam is not None:
                self.tasks.append(asyncio.create_task(self.virtualcam.run(), name="virtualcam"))
        if o.virtual_mic:
            from streaming.virtualmic import VirtualMic

            self.virtual_mic = await VirtualMic.open(self.pipeline)
            if self.virtual_mic is not None:
                self.tasks.append(asyncio.create_task(self.virtual_mic.run(), name="virtual-mic"))
        log.info("live: open %s  (Ctrl-C stops)", self.url)

    def _extra_status(self) -> dict:
        return {
            "virtualcam": self.virtualcam is not None,
            "virtual_mic": self.virtual_mic is not None,
            "audio_source": self.options.audio_source,
        }

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        if self.virtual_mic is not None:
            await self.virtual_mic.close()
        if self.server is not None:
            await self.server.stop()
        log.info(
            "live: stopped after %d frames", self.pipeline.stats.frames if hasattr(self, "pipeline") else 0
        )

    async def run(self) -> None:
        """Start, serve until ``duration_s`` or SIGINT/SIGTERM, then stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            failed = asyncio.ensure_future(self._watch())
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait([failed, waiter], timeout=self.options.duration_s,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            failed.cancel()
            waiter.cancel()
            if failed.done() and not failed.cancelled() and failed.exception() is not None:
                raise failed.exception()
        finally:
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _watch(self) -> None:
        """Ends (raising) when the pipeline task fails; sinks that fail only log."""
        pipeline = self.tasks[0]
        await asyncio.wait([pipeline])
        if not pipeline.cancelled() and pipeline.exception() is not None:
            exc = pipeline.exception()
            if isinstance(exc, AgentError):
                raise exc
            raise RuntimeError(f"the pipeline stopped: {exc!r}") from exc


def run_live(options: LiveOptions) -> int:
    """Run the live agent; returns the exit code."""
    try:
        asyncio.run(LiveAgent(options).run())
    except OSError as exc:
        if exc.errno == 98:  # EADDRINUSE
            raise ConfigError(f"port {options.port} is in use; pick another with --port") from exc
        raise
    return 0
