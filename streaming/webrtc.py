"""WebRTC out (and in): aiortc peers that carry the face and the matching, delayed voice.

Each viewer gets its own ``FaceVideoTrack`` and ``VoiceAudioTrack``, fed from the pipeline's
broadcasts through bounded drop-oldest queues, so a slow viewer loses its own frames and never
holds up the others. The voice leaves ``pipeline.audio_delay()`` after it was captured: the
measured latency of the frames, so lips and sound leave together. A frame's RTP timestamp is its
pts (the audio time it depicts) on the 90 kHz clock.

ICE: no STUN or TURN server unless the user names one (aiortc adds a public STUN server when
``iceServers`` is left out). A loopback server only has local viewers, so its candidates are
restricted to 127.0.0.1 (aioice leaves 127.0.0.1 out of its host candidates otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from agent.pipeline import AudioBlock, Frame, LivePipeline
from agent.sources import PushSource

__all__ = ["FaceVideoTrack", "PeerManager", "VoiceAudioTrack", "restrict_ice_to_loopback"]

log = logging.getLogger(__name__)

VIDEO_RATE = 90_000
SAMPLE_RATE = 16_000
# aiortc's Opus path hands out each 20 ms packet one frame late (measured with bench.live --viewer:
# audio packets arrived 21 ms after the video packets of the same time); release blocks that early.
AUDIO_ENCODER_DELAY_S = 0.02


def restrict_ice_to_loopback() -> None:
    """Offer only 127.0.0.1 as a host candidate (the server binds to loopback: no one else can
    reach it, and no other address of the machine is ever exposed)."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]


class FaceVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, pipeline: LivePipeline) -> None:
        super().__init__()
        self.pipeline = pipeline
        self._queue = pipeline.frames.subscribe(maxsize=2, name="webrtc video")
        self.first_pts: int | None = None  # pts of the first frame sent (tests measure sync with it)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame: Frame = await self._queue.get()
        if self.first_pts is None:
            self.first_pts = frame.pts
        out = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
        out.pts = frame.pts * VIDEO_RATE // SAMPLE_RATE
        out.time_base = fractions.Fraction(1, VIDEO_RATE)
        return out

    def stop(self) -> None:
        self.pipeline.frames.unsubscribe(self._queue)
        super().stop()


class VoiceAudioTrack(MediaStreamTrack):
    """The captured voice, each 20 ms block released ``audio_delay()`` after it arrived."""

    kind = "audio"

    def __init__(self, pipeline: LivePipeline) -> None:
        super().__init__()
        self.pipeline = pipeline
        self._queue = pipeline.audio.subscribe(maxsize=100, name="webrtc audio")
        self.first_pts: int | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        block: AudioBlock = await self._queue.get()
        due = (
            block.arrival
            + self.pipeline.audio_delay()
            - AUDIO_ENCODER_DELAY_S
            - self.pipeline.clock.seconds()
        )
        if due > 0:
            await asyncio.sleep(due)
        if self.first_pts is None:
            self.first_pts = block.pts
        out = av.AudioFrame.from_ndarray(block.samples[None, :], format="s16", layout="mono")
        out.sample_rate = SAMPLE_RATE
        out.pts = block.pts
        out.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return out

    def stop(self) -> None:
        self.pipeline.audio.unsubscribe(self._queue)
        super().stop()


class PeerManager:
    """The viewers: answers offers, tracks peers, closes them. ``audio_in``: when given, the first
    peer that sends audio becomes the agent's microphone."""

    def __init__(
        self,
        pipeline: LivePipeline,
        *,
        ice_servers: list[str] | None = None,
        audio_in: PushSource | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.ice_servers = [RTCIceServer(urls=u) for u in (ice_servers or [])]
        self.audio_in = audio_in
        self.peers: set[RTCPeerConnection] = set()
        self.tracks: dict[RTCPeerConnection, tuple[FaceVideoTrack, VoiceAudioTrack]] = {}
        self._feeding = False
        self._tasks: set[asyncio.Task] = set()
        # (video, audio) pts of the first frame and block each closed viewer was sent (for sync checks)
        self.first_pts_log: list[tuple[int | None, int | None]] = []

    @property
    def viewers(self) -> int:
        return len(self.peers)

    async def answer(self, sdp: str) -> tuple[str, RTCPeerConnection]:
        """An offer's SDP -> the answer's SDP (with all our candidates: aiortc does not trickle)."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        self.peers.add(pc)
        video, audio = FaceVideoTrack(self.pipeline), VoiceAudioTrack(self.pipeline)
        self.tracks[pc] = (video, audio)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("viewer %s: %s", id(pc) % 10000, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self.audio_in is not None and not self._feeding:
                self._feeding = True
                task = asyncio.create_task(self._feed(track), name="webrtc-audio-in")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            kinds = {t.kind for t in pc.getTransceivers()}
            for track in (video, audio):
                if track.kind in kinds:
                    pc.addTrack(track)
                else:
                    track.stop()  # the viewer asked for no such stream
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self.close(pc)
            raise
        return pc.localDescription.sdp, pc

    async def _feed(self, track: MediaStreamTrack) -> None:
        """Resample a peer's audio to 16 kHz mono int16 and push it to the pipeline."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        log.info("microphone: audio of a WebRTC peer")
        try:
            while True:
                frame = await track.recv()
                for out in resampler.resample(frame):
                    self.audio_in.push(np.asarray(out.to_ndarray()).reshape(-1).astype(np.int16))
        except MediaStreamError:
            log.info("the WebRTC peer's audio ended; the face idles")
        finally:
            self._feeding = False

    async def close(self, pc: RTCPeerConnection) -> None:
        if pc not in self.peers:
            return
        self.peers.discard(pc)
        tracks = self.tracks.pop(pc, ())
        if tracks:
            self.first_pts_log.append((tracks[0].first_pts, tracks[1].first_pts))
        for track in tracks:
            track.stop()
        with contextlib.suppress(Exception):
            await pc.close()

    async def close_all(self) -> None:
        for pc in list(self.peers):
            await self.close(pc)
        for task in list(self._tasks):
            task.cancel()
