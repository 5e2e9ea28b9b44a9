"""Virtual microphone: the captured voice, delayed to match the face, for any call app.

A virtual webcam carries no sound, so in a call the voice would arrive before the lips. With a
PulseAudio server (or PipeWire's PulseAudio server) the agent creates a null sink named "FlowVQ_Microphone"; call apps list its
monitor ("Monitor of FlowVQ_Microphone", source ``flowvq_mic.monitor``) as a microphone. The voice
is played into the sink through ``pacat``, each 20 ms block released the pipeline's measured
latency after it was captured. The sink is unloaded on exit. (A source remapped from the monitor
would carry a nicer name but added about a second of latency on PulseAudio 16, measured.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import subprocess

from agent.errors import DeviceError
from agent.pipeline import AudioBlock, LivePipeline

__all__ = ["VirtualMic", "install_hint"]

log = logging.getLogger(__name__)

SINK = "flowvq_mic"
SOURCE = f"{SINK}.monitor"
DESCRIPTION = "FlowVQ_Microphone"
# pacat may hold this much sound (room against underruns on a busy machine); the sink plays what it
# gets about OUTPUT_LATENCY_S later (measured through a recorder of the monitor: 20 ms), so each
# block is written that much before it is due.
PLAYBACK_BUFFER_MS = 60
OUTPUT_LATENCY_S = 0.02
LATE_S = 0.04  # a block this late is dropped


def install_hint() -> str:
    if platform.system() == "Linux":
        return "start a PulseAudio server (`apt-get install pulseaudio pulseaudio-utils`, then `pulseaudio --start`)"
    if platform.system() == "Darwin":
        return "install BlackHole and route the agent's audio to it"
    return "install VB-Cable and route the agent's audio to it"


def _pactl(*args: str) -> str:
    done = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise DeviceError(f"pactl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


class VirtualMic:
    """Create with ``VirtualMic.open(pipeline)``; ``run()`` plays; ``close()`` removes the devices."""

    def __init__(
        self, pipeline: LivePipeline, modules: list[str], process: asyncio.subprocess.Process
    ) -> None:
        self.pipeline = pipeline
        self._modules = modules
        self._process = process
        self._queue = pipeline.audio.subscribe(maxsize=100, name="virtual microphone")
        self.written = 0  # blocks played
        self.late = 0  # blocks dropped because they came too late

    @classmethod
    async def open(cls, pipeline: LivePipeline) -> VirtualMic | None:
        """The virtual microphone, or None (after one line saying how to get one)."""
        if shutil.which("pactl") is None or shutil.which("pacat") is None:
            log.warning("virtual microphone: off (no pactl/pacat); %s", install_hint())
            return None
        try:
            _pactl("info")
        except (DeviceError, subprocess.TimeoutExpired):
            log.warning("virtual microphone: off (no PulseAudio server is running); %s", install_hint())
            return None
        modules: list[str] = []
        try:
            modules.append(_pactl(
                "load-module", "module-null-sink", f"sink_name={SINK}", "rate=16000", "channels=1",
                f"sink_properties=device.description={DESCRIPTION}",
            ))  # fmt: skip
            process = await asyncio.create_subprocess_exec(
                "pacat", "--playback", f"--device={SINK}", "--raw", "--format=s16le", "--rate=16000",
                "--channels=1", f"--latency-msec={PLAYBACK_BUFFER_MS}", "--client-name=FlowVQ Agent",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, env=os.environ.copy(),
            )  # fmt: skip
        except (DeviceError, OSError) as exc:
            for module in reversed(modules):
                with contextlib.suppress(DeviceError, subprocess.TimeoutExpired):
                    _pactl("unload-module", module)
            log.warning("virtual microphone: off (%s)", exc)
            return None
        # A null sink first runs at its longest latency and hands its monitor's recorders about 2 s
        # lumps; once our stream plays into it, suspending and resuming it makes it honour the
        # stream's latency (measured: 2 s late before, about 10 ms after).
        try:
            process.stdin.write(bytes(2 * 16000 * 60 // 1000))
            await process.stdin.drain()
            await asyncio.sleep(0.2)
            await asyncio.to_thread(_pactl, "suspend-sink", SINK, "1")
            await asyncio.to_thread(_pactl, "suspend-sink", SINK, "0")
        except (DeviceError, OSError) as exc:
            log.warning("virtual microphone: could not reset its latency (%s); the voice may lag", exc)
        log.info("virtual microphone: 'Monitor of %s' (PulseAudio source %s); pick it as the microphone "
                 "in the call app", DESCRIPTION, SOURCE)  # fmt: skip
        return cls(pipeline, modules, process)

    async def run(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        while True:
            block: AudioBlock = await self._queue.get()
            due = block.arrival + self.pipeline.audio_delay() - OUTPUT_LATENCY_S
            wait = due - self.pipeline.clock.seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -LATE_S:
                # Sound written late would queue up in pacat and delay everything after it for good:
                # drop it instead (a short gap) and stay in sync.
                self.late += 1
                continue
            try:
                stdin.write(block.samples.tobytes())
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                log.warning("virtual microphone: the PulseAudio player stopped; no more voice")
                return
            self.written += 1

    async def close(self) -> None:
        self.pipeline.audio.unsubscribe(self._queue)
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        for module in reversed(self._modules):
            with contextlib.suppress(DeviceError, subprocess.TimeoutExpired):
                await asyncio.to_thread(_pactl, "unload-module", module)
        self._modules.clear()
