"""A WebRTC viewer of the agent (aiortc): negotiates over the websocket and records what arrives.

For checks and measurements: the frames and the sound with their arrival times, and every RTP packet
as it arrives, before the receiver's jitter buffers (aiortc's audio receiver holds 4 packets before
it plays any, which delays decoded audio by 60-80 ms; a browser syncs audio and video itself).
Optionally sends a sound file as its microphone (for ``--audio-source webrtc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Received", "av_skew", "view"]


@dataclass
class Received:
    video: list[tuple[float, int, np.ndarray | None]] = field(default_factory=list)  # (arrival, pts, rgb)
    audio: list[tuple[float, int, np.ndarray]] = field(default_factory=list)  # (arrival, pts at 48k, mono)
    # RTP packets as they arrive, before the receiver's jitter buffers: (arrival, RTP timestamp)
    packets: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: {"audio": [], "video": []})

    def packet_times(self, kind: str, rate: int) -> np.ndarray:
        """(arrival, seconds since the first packet's timestamp) of the first packet of each frame."""
        seen: dict[int, float] = {}
        for t, ts in self.packets[kind]:
            seen.setdefault(ts, t)
        if not seen:
            return np.zeros((0, 2))
        first = self.packets[kind][0][1]
        return np.array([(t, ((ts - first) % 2**32) / rate) for ts, t in seen.items()])


async def view(
    ws_url: str,
    seconds: float,
    *,
    keep_images: bool = True,
    keep_audio: bool = True,
    send_audio: Path | None = None,
) -> Received:
    """Connect over the websocket, negotiate WebRTC, record video and audio for ``seconds``."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer
    from aiortc.mediastreams import MediaStreamError

    got = Received()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    player = None
    if send_audio is not None:
        player = MediaPlayer(str(send_audio))
        pc.addTransceiver(player.audio, direction="sendrecv")
    else:
        pc.addTransceiver("audio", direction="recvonly")
    tasks = []

    async def consume(track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    got.video.append(
                        (now, frame.pts, frame.to_ndarray(format="rgb24") if keep_images else None)
                    )
                else:
                    mono = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(np.int16)
                    got.audio.append((now, frame.pts, mono if keep_audio else mono[:0]))

    @pc.on("track")
    def on_track(track) -> None:
        tasks.append(asyncio.ensure_future(consume(track)))

    for transceiver in pc.getTransceivers():  # stamp RTP packets on arrival
        receiver, kind = transceiver.receiver, transceiver.kind
        handle = receiver._handle_rtp_packet  # noqa: SLF001

        async def stamped(packet, arrival_time_ms, handle=handle, kind=kind):
            got.packets[kind].append((time.monotonic(), packet.timestamp))
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = stamped  # noqa: SLF001

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_str(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp, "id": 1}))
        while True:
            msg = json.loads((await ws.receive(timeout=30)).data)
            if msg.get("type") == "answer":
                break
            assert msg.get("type") != "error", msg
        await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
        await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await pc.close()
    return got


def av_skew(got: Received, video_first_pts: int, audio_first_pts: int) -> tuple[float, float]:
    """Audio arrival minus video arrival for the same media time (s), medians over the stream:
    (RTP packets as they arrive, frames as the aiortc receiver hands them out).

    ``*_first_pts``: the agent's pts (16 kHz samples) of the first frame and block it sent this
    viewer (``FaceVideoTrack.first_pts``, ``VoiceAudioTrack.first_pts``): RTP timestamps start at
    a random origin, so the first one received stands for them."""
    v = got.packet_times("video", 90000)
    a = got.packet_times("audio", 48000)
    packets = float(
        np.median(a[:, 0] - a[:, 1] - audio_first_pts / 16000)
        - np.median(v[:, 0] - v[:, 1] - video_first_pts / 16000)
    )
    vd = np.array([(t, video_first_pts / 16000 + pts / 90000) for t, pts, _ in got.video])
    ad = np.array([(t, audio_first_pts / 16000 + pts / 48000) for t, pts, _ in got.audio])
    decoded = float(np.median(ad[:, 0] - ad[:, 1]) - np.median(vd[:, 0] - vd[:, 1]))
    return packets, decoded
