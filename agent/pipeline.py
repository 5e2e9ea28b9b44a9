"""The live pipeline: timestamped audio blocks in, timestamped frames out, at 25 fps.

::

    AudioSource -> VAD (gate) -> MelStream -> FCG.step per frame -> MeshWarp -> post -> Broadcast
                                                  (worker thread: off the event loop)

Frames are driven by the audio: frame t (it depicts audio time t / fps) is made as soon as the
audio its window needs (t / fps + look-ahead) has arrived, so the frame rate follows the audio
clock and lip sync holds by construction. Every block carries its arrival time on the one
``MediaClock``; a frame's latency is the time it was handed to the sinks minus the arrival of
the audio it depicts, and the audio sinks delay the sound by that measured latency.

In silence the face idles: the VAD gates the mel features (silent blocks become ``LOG_FLOOR``)
so noise does not move the mouth while the FCG keeps making blinks and head motion. When the
source stalls (a peer vanished), silence is filled in so the face keeps idling.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from agent.clock import MediaClock, Pacer
from agent.control import Blinker, ControlState
from agent.errors import AgentError
from agent.queues import Broadcast
from agent.vad import SpeechDetector, VadConfig
from models.audio import LOG_FLOOR, MelStream, frames_needed
from models.fcg import FCG
from models.rig import BLENDSHAPE_NAMES, NUM_BLENDSHAPES

__all__ = ["AudioBlock", "Animator", "Frame", "LivePipeline", "PipelineStats"]

log = logging.getLogger(__name__)

BLOCK_MS = 20
# The audio delay follows the 75th percentile of the latency of the last 50 frames (2 s). On a busy
# machine the latency climbs as the worker falls behind and drops when frames are skipped; a median
# over 10 s lagged behind it and the voice was heard 28-70 ms before its frame (2-core machine with
# two busy processes beside the agent, measured), now within 20 ms either way. A voice a little late
# is less noticeable than one early.
DELAY_FRAMES = 50
DELAY_PERCENTILE = 75
_BLINKS = [BLENDSHAPE_NAMES.index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight")]


@dataclass(frozen=True)
class AudioBlock:
    """20 ms of 16 kHz mono int16 audio. ``arrival``: clock seconds when it was captured (its end).
    ``pts``: its first sample's index on the pipeline's timeline (set by the pipeline)."""

    samples: np.ndarray
    arrival: float
    pts: int = -1


@dataclass(frozen=True, eq=False)
class Frame:
    index: int  # video frame number since start
    pts: int  # audio samples: the time this frame depicts
    image: np.ndarray  # (H, W, 3) uint8 RGB
    coeffs: np.ndarray  # (58,) the 52 blendshapes then the 6-d pose it was rendered from
    speaking: bool
    audio_arrival: float  # clock seconds when the audio at ``pts`` arrived
    ready: float  # clock seconds when the frame was handed to the sinks

    @property
    def latency(self) -> float:
        return self.ready - self.audio_arrival


@dataclass
class _Job:
    index: int
    pts: int
    window: np.ndarray  # (window_frames, n_mels), gated
    speaking: bool
    audio_arrival: float


class Animator:
    """The per-frame work, free of asyncio: feed blocks, get frame jobs, run each job in order.

    ``post``: applied to every rendered frame (VQIG refinement, watermark), in the worker thread.
    """

    def __init__(
        self,
        model: FCG,
        render: Callable[[np.ndarray, np.ndarray], np.ndarray],
        control: ControlState,
        *,
        post: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        seed: int = 0,
        vad: VadConfig | None = None,
    ) -> None:
        self.model, self.render, self.control, self.post = model, render, control, post
        self.audio_config = model.config.audio_config()
        self.fps = self.audio_config.fps
        self.sample_rate = self.audio_config.sample_rate
        self.block = self.sample_rate * BLOCK_MS // 1000
        self.vad = SpeechDetector(vad or VadConfig(onset_ms=40, hangover_ms=300))
        self.mel = MelStream(self.audio_config)
        self._mels: collections.deque[np.ndarray] = collections.deque(
            maxlen=self.audio_config.window_frames + 8
        )
        self._mel_speech: collections.deque[bool] = collections.deque(
            maxlen=self.audio_config.window_frames + 8
        )
        self._block_speech: collections.deque[bool] = collections.deque(maxlen=16)
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque(maxlen=64)
        self._samples = 0  # samples consumed
        self._next_frame = 0
        self.state = model.initial_state()
        self.generator = torch.Generator().manual_seed(seed)
        self.blinker = Blinker(self.fps, seed=seed)
        self.stage_ms: dict[str, collections.deque[float]] = {
            k: collections.deque(maxlen=250) for k in ("fcg", "render", "post")
        }

    @property
    def speaking(self) -> bool:
        return self.vad.speaking

    def push(self, block: AudioBlock) -> list[_Job]:
        """One 20 ms block -> the frame jobs whose audio is now complete (0, 1 or 2)."""
        samples = block.samples
        if samples.shape != (self.block,) or samples.dtype != np.int16:
            raise ValueError(f"expected {self.block} int16 samples, got {samples.dtype} {samples.shape}")
        was = self.vad.speaking
        now = self.vad.process(samples)
        self._block_speech.append(now)
        if now and not was:  # speech confirmed: the onset blocks before it were speech too
            onset = min(self.vad.onset_blocks, len(self._block_speech))
            for i in range(1, onset + 1):
                self._block_speech[-i] = True
        self._arrivals.append((self._samples, block.arrival))
        self._samples += len(samples)
        for m in self.mel.push(samples):
            self._mels.append(m)
            self._mel_speech.append(False)
        self._refresh_speech()
        jobs = []
        while frames_needed(self._next_frame, self.audio_config) <= self.mel.frames_done:
            t = self._next_frame
            pts = t * self.sample_rate // self.fps
            jobs.append(_Job(t, pts, self._window(t), self.vad.speaking, self._arrival_of(pts)))
            self._next_frame += 1
        return jobs

    def _refresh_speech(self) -> None:
        """Speech flags of the kept mel frames from their blocks' (possibly back-filled) flags."""
        hop, first = self.audio_config.hop, self.mel.frames_done - len(self._mels)
        last_block = self._samples // self.block - 1
        for i in range(len(self._mels)):
            end_sample = (first + i + 1) * hop - 1  # the mel frame's last new sample
            b = end_sample // self.block
            back = last_block - b
            self._mel_speech[i] = (
                self._block_speech[-1 - back] if 0 <= back < len(self._block_speech) else False
            )

    def _window(self, t: int) -> np.ndarray:
        cfg = self.audio_config
        last = frames_needed(t, cfg) - 1
        first_kept = self.mel.frames_done - len(self._mels)
        out = np.full((cfg.window_frames, cfg.n_mels), LOG_FLOOR, dtype=np.float32)
        for k, j in enumerate(range(last - cfg.window_frames + 1, last + 1)):
            i = j - first_kept
            if j >= 0 and 0 <= i < len(self._mels) and self._mel_speech[i]:
                out[k] = self._mels[i]
        return out

    def _arrival_of(self, pts: int) -> float:
        """Arrival time of the block holding sample ``pts`` (the newest one if it has not come)."""
        for start, arrival in self._arrivals:
            if start <= pts < start + self.block:
                return arrival
        return self._arrivals[-1][1]

    def run(self, job: _Job) -> tuple[np.ndarray, np.ndarray]:
        """FCG step, style, render, post for one job: -> (image, coeffs (58,)). Not thread-safe: one
        worker runs the jobs in order (the FCG state is sequential)."""
        style, control = self.control.style, self.control
        t0 = time.perf_counter()
        x, self.state = self.model.step(
            self.state,
            torch.from_numpy(job.window),
            control.label(job.index),
            temperature=style.temperature,
            generator=self.generator,
            exp_latent=control.reference_latent,
        )
        coeffs = x.numpy().astype(np.float32)
        exp = np.clip(coeffs[:NUM_BLENDSHAPES], 0.0, 1.0)
        exp[_BLINKS] = np.clip(
            exp[_BLINKS] * min(style.blink_rate, 1.0) + self.blinker.weight(job.index, style.blink_rate), 0, 1
        )
        pose = coeffs[NUM_BLENDSHAPES:] * style.pose_scale
        t1 = time.perf_counter()
        image = self.render(exp, pose)
        t2 = time.perf_counter()
        out = np.concatenate([exp, pose]).astype(np.float32)
        if self.post is not None:
            image = self.post(image, out)
        t3 = time.perf_counter()
        for k, v in (("fcg", t1 - t0), ("render", t2 - t1), ("post", t3 - t2)):
            self.stage_ms[k].append(1000.0 * v)
        return image, out


@dataclass
class PipelineStats:
    """Rolling numbers for the status message and the benchmark."""

    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=250))
    ready_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))
    frames: int = 0
    skipped: int = 0  # frames the worker could not keep up with (not rendered)
    filled_blocks: int = 0  # silence filled in while the source stalled

    def fps(self, now: float, span: float = 2.0) -> float:
        recent = [t for t in self.ready_times if t > now - span]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def latency_ms(self) -> dict[str, float | None]:
        if not self.latencies:
            return {"p50": None, "p95": None, "max": None}
        a = np.asarray(self.latencies) * 1000.0
        return {"p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
                "max": round(float(a.max()), 1)}  # fmt: skip


class LivePipeline:
    """Runs an ``Animator`` on a source in real time and publishes frames and audio.

    ``frames``: a ``Broadcast`` of ``Frame``; ``audio``: a ``Broadcast`` of ``AudioBlock`` (with pts),
    for sinks that play the sound (they delay it by ``audio_delay()``).
    """

    def __init__(
        self,
        animator: Animator,
        clock: MediaClock,
        *,
        max_pending: int = 3,
        stall_s: float = 0.12,
        on_frame: Callable[[Frame], None] | None = None,
    ) -> None:
        self.animator, self.clock = animator, clock
        self.frames: Broadcast[Frame] = Broadcast("frames")
        self.audio: Broadcast[AudioBlock] = Broadcast("audio")
        self.stats = PipelineStats()
        self.max_pending, self.stall_s = max_pending, stall_s
        self.on_frame = on_frame
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="render")
        self._pending: asyncio.Queue = asyncio.Queue()
        self._delay: float | None = None
        self.last_frame: Frame | None = None

    def audio_delay(self) -> float:
        """Seconds to hold audio so it leaves with its frame: the recent frame latency (see
        DELAY_PERCENTILE; 0.1 s until frames exist), updated once per frame."""
        return 0.1 if self._delay is None else self._delay

    def _update_delay(self) -> None:
        """Follow the recent latency, moving only when it drifts by more than 15 ms (each change is a
        small gap or overlap in the sound)."""
        recent = list(itertools.islice(reversed(self.stats.latencies), DELAY_FRAMES))
        target = float(np.percentile(recent, DELAY_PERCENTILE))
        if self._delay is None or abs(target - self._delay) > 0.015:
            self._delay = target

    async def in_worker(self, fn: Callable, *args, **kwargs):
        """Run ``fn`` in the render worker thread (where per-frame models must live)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def run(self, source: AsyncIterator[AudioBlock]) -> None:
        """Consume ``source`` until cancelled; after it ends (or while it stalls) feed silence."""
        publisher = asyncio.create_task(self._publish(), name="pipeline-publish")
        try:
            try:
                await self._consume(source)
                log.info("audio source ended; the face idles")
            except AgentError as exc:  # a microphone that fails to open or vanishes
                log.error("audio source: %s; the face idles", exc)
            await self._idle()
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            self._pool.shutdown(wait=True, cancel_futures=True)

    async def _consume(self, source: AsyncIterator[AudioBlock]) -> None:
        """Feed the source's blocks; fill silence while it stalls; return when it ends."""
        queue: asyncio.Queue[AudioBlock | None] = asyncio.Queue()
        failure: list[BaseException] = []

        async def pump() -> None:  # a timeout must never cancel the source's own iterator
            try:
                async for block in source:
                    queue.put_nowait(block)
            except AgentError as exc:
                failure.append(exc)
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(pump(), name="audio-source")
        last = self.clock.seconds()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.stall_s):
                        block = await queue.get()
                except TimeoutError:
                    now = self.clock.seconds()
                    n = int((now - last) / (BLOCK_MS / 1000))
                    for k in range(n):
                        self._feed(self._silence(last + (k + 1) * BLOCK_MS / 1000))
                    self.stats.filled_blocks += n
                    last += n * BLOCK_MS / 1000
                    continue
                if block is None:
                    if failure:
                        raise failure[0]
                    return
                last = block.arrival
                self._feed(block)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _idle(self) -> None:
        pacer = Pacer(self.clock, BLOCK_MS / 1000)
        while True:
            tick = await pacer.wait()
            self._feed(self._silence(tick))

    def _silence(self, arrival: float) -> AudioBlock:
        return AudioBlock(np.zeros(self.animator.block, np.int16), arrival)

    def _feed(self, block: AudioBlock) -> None:
        block = AudioBlock(block.samples, block.arrival, self.animator._samples)
        jobs = self.animator.push(block)
        self.audio.publish(block)
        loop = asyncio.get_running_loop()
        for job in jobs:
            if self._pending.qsize() >= self.max_pending:
                self.stats.skipped += 1  # the worker is behind: show the newest frames instead
                continue
            self._pending.put_nowait((job, loop.run_in_executor(self._pool, self.animator.run, job)))

    async def _publish(self) -> None:
        while True:
            job, future = await self._pending.get()
            image, coeffs = await future
            now = self.clock.seconds()
            frame = Frame(job.index, job.pts, image, coeffs, job.speaking, job.audio_arrival, now)
            self.stats.frames += 1
            self.stats.latencies.append(frame.latency)
            self._update_delay()
            self.stats.ready_times.append(now)
            self.last_frame = frame
            self.frames.publish(frame)
            if self.on_frame is not None:
                self.on_frame(frame)
