"""Audio sources of the live agent: 16 kHz mono int16 in 20 ms blocks, each stamped on arrival.

Every source is an async iterator of ``AudioBlock``; it ends when its input ends (a file), and the
pipeline then keeps the face idling on silence.

- ``FileSource``: a file played at real-time pace (any format ``load_audio`` reads).
- ``MicSource``: a microphone through sounddevice (PortAudio), chosen by name or index.
- ``PushSource``: blocks pushed from elsewhere (the audio track of a WebRTC peer), any length.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np

from agent.clock import MediaClock, Pacer
from agent.errors import DeviceError, InputError
from agent.pipeline import BLOCK_MS, AudioBlock
from agent.queues import DropOldestQueue
from models.audio import AudioReadError, load_audio

__all__ = ["FileSource", "MicSource", "PushSource", "list_input_devices"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
BLOCK = SAMPLE_RATE * BLOCK_MS // 1000


def _to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


class FileSource:
    """Plays ``path`` at real-time pace: block k is delivered when it would have been captured."""

    def __init__(self, path: str | Path, clock: MediaClock) -> None:
        try:
            audio = load_audio(path)
        except AudioReadError as exc:
            raise InputError(str(exc)) from exc
        if len(audio) == 0:
            raise InputError(f"{path}: no audio samples")
        n = -(-len(audio) // BLOCK) * BLOCK
        self.samples = np.zeros(n, np.int16)
        self.samples[: len(audio)] = _to_int16(audio)
        self.path, self.clock = Path(path), clock
        self.duration_s = len(audio) / SAMPLE_RATE

    def __aiter__(self):
        return self._blocks()

    async def _blocks(self):
        pacer = Pacer(self.clock, BLOCK_MS / 1000)
        await pacer.wait()  # the start of block 0
        for k in range(len(self.samples) // BLOCK):
            await pacer.wait()  # the end of block k: it has now been "captured"
            yield AudioBlock(self.samples[k * BLOCK : (k + 1) * BLOCK], self.clock.seconds())


class PushSource:
    """Blocks pushed by another component (call ``push`` from the event loop's thread)."""

    def __init__(self, clock: MediaClock, maxsize: int = 50, name: str = "pushed audio") -> None:
        self.clock = clock
        self.name = name
        self._queue: DropOldestQueue[AudioBlock] = DropOldestQueue(maxsize, name)
        self._rest = np.zeros(0, np.int16)

    def push(self, samples: np.ndarray) -> None:
        """Any number of 16 kHz mono int16 samples; whole 20 ms blocks go out, the rest waits."""
        data = np.concatenate([self._rest, samples.astype(np.int16, copy=False)])
        whole = len(data) // BLOCK * BLOCK
        now = self.clock.seconds()
        for k in range(0, whole, BLOCK):
            self._queue.put_nowait(AudioBlock(data[k : k + BLOCK].copy(), now))
        self._rest = data[whole:]

    def __aiter__(self):
        return self

    async def __anext__(self) -> AudioBlock:
        return await self._queue.get()


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # PortAudio missing
        raise DeviceError(
            f"no microphone: PortAudio is not installed ({exc}); on Debian `apt-get install libportaudio2`"
        ) from exc
    # PortAudio lists devices once, when it starts: restart it so devices (or a PulseAudio server)
    # that appeared since are seen.
    sounddevice._terminate()
    sounddevice._initialize()
    return sounddevice


def list_input_devices() -> list[tuple[int, str]]:
    """(index, name) of every device with input channels."""
    sd = _sounddevice()
    return [(i, d["name"]) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


class MicSource:
    """A microphone: ``device`` is an index, a (case-insensitive) part of a name, or None (default).

    Raises:
        DeviceError: no such device, or no input device at all, with the list of what exists.
    """

    def __init__(self, clock: MediaClock, device: str | int | None = None) -> None:
        self.clock = clock
        sd = _sounddevice()
        inputs = [(i, d["name"]) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
        if not inputs:
            raise DeviceError(
                "no microphone: sounddevice sees no input device (no sound card, and no PulseAudio or "
                "PipeWire server running); use --audio-source file:PATH or webrtc"
            )
        self.device = self._choose(device, inputs)
        self.name = dict(inputs)[self.device] if self.device is not None else "default input"
        self._sd = sd
        self._queue: DropOldestQueue[AudioBlock] | None = None
        self._stream = None

    @staticmethod
    def _choose(device: str | int | None, inputs: list[tuple[int, str]]) -> int | None:
        if device is None:
            return None
        listing = "; ".join(f"{i}: {n}" for i, n in inputs)
        if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
            index = int(device)
            if index not in dict(inputs):
                raise DeviceError(f"no input device with index {index}; inputs are {listing}")
            return index
        matches = [i for i, n in inputs if device.lower() in n.lower()]
        if not matches:
            raise DeviceError(f"no input device named like {device!r}; inputs are {listing}")
        return matches[0]

    def __aiter__(self):
        return self._blocks()

    async def _blocks(self):
        loop = asyncio.get_running_loop()
        queue: DropOldestQueue[AudioBlock] = DropOldestQueue(50, "microphone")

        def callback(indata, frames, time_info, status) -> None:  # PortAudio's thread
            if status:
                log.debug("microphone: %s", status)
            block = AudioBlock(indata[:, 0].copy(), self.clock.seconds())
            loop.call_soon_threadsafe(queue.put_nowait, block)

        try:
            stream = self._sd.InputStream(
                samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=BLOCK,
                device=self.device, callback=callback,
            )  # fmt: skip
            stream.start()
        except Exception as exc:  # PortAudioError and friends: one line, not a traceback
            raise DeviceError(f"cannot open microphone {self.name!r}: {exc}") from exc
        log.info("microphone: %s at %d Hz", self.name, SAMPLE_RATE)
        try:
            while True:
                yield await queue.get()
        finally:
            stream.stop()
            stream.close()
