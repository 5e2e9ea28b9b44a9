"""Virtual webcam sink: the face as a camera that any video-call app can pick.

pyvirtualcam finds the platform's virtual camera (v4l2loopback on Linux, OBS or Unity Capture on
Windows and macOS). Where none exists, ``open_virtualcam`` returns None after one line that names
what to install, and the agent carries on with its other outputs. Frames are sent from a thread,
fed through a bounded drop-oldest queue: a slow device never stalls the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import platform

import cv2
import numpy as np

from agent.clock import Pacer
from agent.pipeline import Frame, LivePipeline

__all__ = ["VirtualCamSink", "install_hint", "open_virtualcam"]

log = logging.getLogger(__name__)


def install_hint() -> str:
    if platform.system() == "Linux":
        return (
            "install v4l2loopback (`sudo apt-get install v4l2loopback-dkms && "
            "sudo modprobe v4l2loopback exclusive_caps=1 card_label=FlowVQ`)"
        )
    return "install OBS Studio (its virtual camera) and start it once"


class VirtualCamSink:
    """Sends frames to ``camera`` (a pyvirtualcam.Camera), resized to its size.

    At the pipeline's own rate (25 fps) every frame goes out as it comes; at another camera rate
    the newest frame is sent on the camera's own clock (repeated or skipped as needed), as a camera
    would.
    """

    def __init__(self, camera, pipeline: LivePipeline, fps: float = 25.0) -> None:
        self.camera, self.pipeline, self.fps = camera, pipeline, fps
        self.size = (camera.width, camera.height)
        self.sent = 0
        self._queue = pipeline.frames.subscribe(maxsize=2, name="virtual webcam")
        self._latest: Frame | None = None

    def _send(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.camera.send(np.ascontiguousarray(image))
        self.sent += 1

    async def run(self) -> None:
        try:
            if abs(self.fps - self.pipeline.animator.fps) < 1e-6:
                while True:
                    frame: Frame = await self._queue.get()
                    await asyncio.to_thread(self._send, frame.image)
            else:
                await self._run_own_clock()
        finally:
            self.pipeline.frames.unsubscribe(self._queue)
            self.camera.close()

    async def _run_own_clock(self) -> None:
        async def take() -> None:
            while True:
                self._latest = await self._queue.get()

        taker = asyncio.create_task(take(), name="virtual webcam frames")
        pacer = Pacer(self.pipeline.clock, 1.0 / self.fps)
        try:
            while True:
                await pacer.wait()
                if self._latest is not None:
                    await asyncio.to_thread(self._send, self._latest.image)
        finally:
            taker.cancel()


def open_virtualcam(
    pipeline: LivePipeline, width: int, height: int, fps: float, *, backend: str | None = None
) -> VirtualCamSink | None:
    """The virtual webcam sink, or None (with one line saying what to install) when there is none."""
    try:
        import pyvirtualcam
    except ImportError:
        log.warning("virtual webcam: off (pyvirtualcam is not installed: `pip install pyvirtualcam`)")
        return None
    try:
        camera = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, backend=backend)
    except RuntimeError as exc:
        first = str(exc).split(". ")[0]
        log.warning("virtual webcam: off (%s); to get one, %s", first, install_hint())
        return None
    log.info("virtual webcam: %s (%dx%d at %g fps)", camera.device, width, height, fps)
    return VirtualCamSink(camera, pipeline, fps)
