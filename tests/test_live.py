"""The live agent with real components: websockets, aiortc peers. (Its sound, PulseAudio and the
command line: test_live_audio.py.)

The virtual webcam is the one mock: v4l2loopback (a kernel module) cannot be loaded here, so the
sink is tested through pyvirtualcam's backend interface with a recording backend.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from agent.control import ControlState, OutOfRangeError
from agent.pipeline import Animator, AudioBlock
from models.audio import load_audio
from models.rig import BLENDSHAPE_NAMES
from streaming.viewer import av_skew, view
from tests.live_helpers import AgentThread, int16

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "assets" / "demo_speech.wav"
JAW = BLENDSHAPE_NAMES.index("jawOpen")


# -- control and the animator (no network) ----------------------------------------------------------
def test_control_state_validates_blends_and_notifies() -> None:
    control = ControlState(emotion="neutral", fps=25)
    seen: list[dict] = []
    control.add_listener(seen.append)
    for bad in (lambda: control.set_emotion("giddy"), lambda: control.set_emotion("happy", 1.5),
                lambda: control.set_style(temperature=-1), lambda: control.set_style(blink_rate=float("nan"))):  # fmt: skip
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(OutOfRangeError):
        control.set_emotion("happy", 2.0)
    assert seen == [] and control.emotion == "neutral"  # nothing changed
    control.label(10)
    assert torch.equal(control.current_label(), control.label(10))  # reading it moves no clock
    control.set_emotion("happy", 0.6, transition_ms=400)  # 10 frames at 25 fps, from frame 10
    assert seen[-1]["emotion"] == "happy" and seen[-1]["intensity"] == 0.6
    labels = torch.stack([control.label(t) for t in range(10, 22)])
    from models.rig import EMOTIONS

    h, n = EMOTIONS.index("happy"), EMOTIONS.index("neutral")
    assert labels[0, n] == 1.0 and labels[0, h] == 0.0
    assert torch.all(labels[1:, h] >= labels[:-1, h]) and 0.0 < labels[5, h] < 1.0
    assert labels[-1, h] == 1.0 and abs(float(labels[-1, -1]) - 0.6) < 1e-6
    control.set_style(pose_scale=0.5)
    assert control.style.pose_scale == 0.5 and seen[-1]["pose_scale"] == 0.5


def test_audio_delay_follows_a_machine_that_gets_busier() -> None:
    from agent.clock import MediaClock
    from agent.pipeline import LivePipeline

    pipeline = LivePipeline(None, MediaClock())  # the delay needs only the frame latencies
    assert pipeline.audio_delay() == pytest.approx(0.1)  # before any frame
    for latency in [0.06] * 250 + [0.065, 0.07] * 20:  # 10 s steady, then a jitter under 15 ms
        pipeline.stats.latencies.append(latency)
        pipeline._update_delay()  # noqa: SLF001 - called once per published frame
    assert pipeline.audio_delay() == pytest.approx(0.06)  # small jitter leaves the sound alone
    for latency in np.linspace(0.06, 0.16, 50):  # the worker falls behind over 2 s
        pipeline.stats.latencies.append(float(latency))
        pipeline._update_delay()  # noqa: SLF001
    # The last 2 s of frames, not the last 10: the voice is held about as long as frames now take.
    assert 0.12 < pipeline.audio_delay() < 0.16


@pytest.fixture(scope="module")
def engine():
    from agent.commands import load_fcg, load_portrait
    from models.meshwarp import MeshWarp

    source = load_portrait(ROOT / "assets" / "portrait.png")
    return load_fcg(), MeshWarp(source.image, source.landmarks), source


def _drive(engine, audio: np.ndarray, **kwargs) -> list[tuple[int, bool, np.ndarray]]:
    model, warp, _ = engine
    animator = Animator(model, lambda e, p: np.zeros((8, 8, 3), np.uint8), ControlState(), **kwargs)
    x = int16(audio)
    out = []
    for k in range(len(x) // 320):
        for job in animator.push(AudioBlock(x[k * 320 : (k + 1) * 320], k * 0.02)):
            _, coeffs = animator.run(job)
            out.append((job.index, job.speaking, coeffs))
    return out


def test_animator_opens_the_mouth_for_speech_not_for_noise_or_silence(engine) -> None:
    speech = load_audio(SPEECH)[: 16000 * 3]
    rng = np.random.default_rng(0)
    noise = 0.02 * rng.standard_normal(16000)  # a steady hiss, -34 dBFS
    audio = np.concatenate([np.zeros(16000), noise, speech, np.zeros(16000)])
    frames = _drive(engine, audio)
    assert [f[0] for f in frames] == list(range(len(frames)))  # every frame, in order
    jaw = np.array([f[2][JAW] for f in frames])
    speaking = np.array([f[1] for f in frames])
    silence, hiss, talk = jaw[5:25], jaw[30:50], jaw[55:125]
    # webrtcvad may flag the first ~0.3 s of a sudden hiss (plus the hangover), never steady hiss.
    assert not speaking[:23].any() and not speaking[38:50].any(), "the VAD took silence or hiss for speech"
    assert speaking[55:125].mean() > 0.8
    assert talk.max() > 0.3 and talk.mean() > 3 * max(silence.mean(), hiss.mean(), 0.01)
    assert silence.max() < 0.1 and hiss.max() < 0.1


# -- a running agent ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live():
    from agent.live import LiveOptions

    agent = AgentThread(
        LiveOptions(audio_source=f"file:{SPEECH}", virtualcam=False, virtual_mic=False, port=0)
    )
    yield agent
    agent.stop()


async def _exchange(url: str, messages: list) -> list[dict]:
    import aiohttp

    replies = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
        for m in messages:  # with no subscription, each request gets exactly one reply
            await (ws.send_str(m) if isinstance(m, str) else ws.send_bytes(m))
            replies.append(json.loads((await ws.receive(timeout=30)).data))
    return replies


def test_bad_websocket_messages_each_get_an_error_and_change_nothing(live) -> None:
    before = live.agent.control.snapshot()
    big = json.dumps({"type": "set_style", "temperature": 0.5, "pad": "x" * (8 * 1024 * 1024 + 10)})
    bad = [
        ("{not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        (json.dumps({"emotion": "happy"}), "bad_request"),
        (json.dumps({"type": "dance", "id": 7}), "unknown_type"),
        (json.dumps({"type": "set_emotion", "emotion": "giddy", "id": "a"}), "bad_request"),
        (json.dumps({"type": "set_emotion", "emotion": "happy", "intensity": 3}), "out_of_range"),
        (json.dumps({"type": "set_emotion", "emotion": "happy", "intensity": "high"}), "bad_request"),
        (json.dumps({"type": "set_emotion", "emotion": "happy", "transition_ms": -5}), "out_of_range"),
        (json.dumps({"type": "set_style", "temperature": 9}), "out_of_range"),
        (json.dumps({"type": "set_style"}), "bad_request"),
        (json.dumps({"type": "set_style", "pose_scale": True}), "bad_request"),
        (json.dumps({"type": "subscribe", "streams": ["gossip"]}), "bad_request"),
        (json.dumps({"type": "emotion_reference", "image": "@@not base64@@"}), "bad_request"),
        (json.dumps({"type": "emotion_reference", "image": "aGVsbG8="}), "bad_request"),  # b"hello"
        (json.dumps({"type": "offer", "sdp": "v=0 nonsense"}), "bad_request"),
        (b"\x00\x01", "bad_request"),
        (big, "too_large"),
    ]
    replies = asyncio.run(_exchange(live.ws_url, [m for m, _ in bad]))
    for (message, code), reply in zip(bad, replies, strict=True):
        assert reply["type"] == "error" and reply["code"] == code, (message[:80], reply)
        assert reply["message"]
    assert replies[3]["id"] == 7 and replies[4]["id"] == "a"
    assert live.agent.control.snapshot() == before


def test_control_changes_are_acknowledged_and_broadcast(live) -> None:
    import aiohttp

    async def run() -> tuple[list[dict], list[dict]]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(live.ws_url) as watcher, session.ws_connect(live.ws_url) as steer:
                await watcher.send_json({"type": "subscribe", "streams": ["state", "status", "blendshapes"]})
                await steer.send_json(
                    {"type": "set_emotion", "emotion": "surprised", "intensity": 0.9, "id": 1}
                )
                await steer.send_json({"type": "set_style", "temperature": 0.5, "pose_scale": 0.5, "id": 2})
                acks = [await steer.receive_json(timeout=10), await steer.receive_json(timeout=10)]
                seen: list[dict] = []
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    seen.append(await watcher.receive_json(timeout=10))
                    kinds = {m["type"] for m in seen}
                    states = sum(m["type"] == "state" for m in seen)
                    statuses = sum(m["type"] == "status" for m in seen)
                    if "blendshapes" in kinds and states >= 3 and statuses >= 3:
                        break
                await steer.send_json({"type": "set_emotion", "emotion": "neutral", "transition_ms": 0})
                await steer.receive_json(timeout=10)
                await steer.send_json({"type": "set_style", "temperature": 0.8, "pose_scale": 1.0})
                await steer.receive_json(timeout=10)
                return acks, seen

    acks, seen = asyncio.run(run())
    assert acks == [
        {"type": "ok", "request": "set_emotion", "id": 1},
        {"type": "ok", "request": "set_style", "id": 2},
    ]
    states = [m for m in seen if m["type"] == "state"]
    assert any(s["emotion"] == "surprised" and s["intensity"] == 0.9 for s in states)
    assert any(s["temperature"] == 0.5 and s["pose_scale"] == 0.5 for s in states)
    status = [m for m in seen if m["type"] == "status"][-1]  # the first may precede any frame
    assert status["fps"] > 10 and status["latency_ms"]["p95"] is not None and "dropped_frames" in status
    shapes = next(m for m in seen if m["type"] == "blendshapes")
    assert (
        shapes["names"] == list(BLENDSHAPE_NAMES) and len(shapes["values"]) == 52 and len(shapes["pose"]) == 6
    )


def test_emotion_reference_photo_is_carried_over(live) -> None:
    import base64

    import aiohttp

    photo = base64.b64encode((ROOT / "assets" / "portrait.png").read_bytes()).decode()

    async def run() -> list[dict]:
        async with aiohttp.ClientSession() as session, session.ws_connect(live.ws_url) as ws:
            await ws.send_json({"type": "emotion_reference", "image": photo, "id": 3})
            ok = await ws.receive_json(timeout=60)
            await ws.send_json({"type": "get_state"})
            state = await ws.receive_json(timeout=10)
            await ws.send_json({"type": "set_emotion", "emotion": "neutral"})  # clears the reference
            await ws.receive_json(timeout=10)
            return [ok, state]

    ok, state = asyncio.run(run())
    assert ok == {"type": "ok", "request": "emotion_reference", "id": 3}
    assert state["reference"]  # a summary of the fitted expression (the portrait smiles)
    assert live.agent.control.reference_latent is None and live.agent.control.emotion == "neutral"


def test_token_is_required_when_set(live) -> None:
    import aiohttp

    from streaming.server import ControlServer

    async def run() -> tuple[dict, dict]:
        server = ControlServer(live.agent.pipeline, live.agent.control, live.agent.peers, token="s3cret")
        port = await server.start("127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
                    refused = await ws.receive_json(timeout=10)
                async with session.ws_connect(f"ws://127.0.0.1:{port}/ws?token=s3cret") as ws:
                    await ws.send_json({"type": "get_state"})
                    accepted = await ws.receive_json(timeout=10)
        finally:
            await server.stop()
        return refused, accepted

    refused, accepted = asyncio.run_coroutine_threadsafe(run(), live.loop).result(60)
    assert refused["type"] == "error" and refused["code"] == "unauthorized"
    assert accepted["type"] == "state"


def test_webrtc_viewer_gets_the_face_and_the_voice_in_sync(live) -> None:
    async def run():
        task = asyncio.ensure_future(view(live.ws_url, 5.0))
        while not live.agent.peers.tracks:
            await asyncio.sleep(0.05)
        video, audio = next(iter(live.agent.peers.tracks.values()))
        got = await task
        return got, video.first_pts, audio.first_pts

    got, v0, a0 = asyncio.run(run())
    assert len(got.video) >= 60, f"only {len(got.video)} frames in 5 s"
    assert got.video[-1][2].shape == (512, 512, 3)
    from models.watermark import detect

    mark = detect(got.video[-1][2])  # through VP8: every frame that leaves is marked
    assert mark.found and mark.payload == live.agent.marker.payload
    audio = np.concatenate([s for _, _, s in got.audio])
    assert len(audio) >= 48000 * 3.5
    skew, decoded = av_skew(got, v0, a0)
    assert abs(skew) < 0.045, f"audio packets arrive {1000 * skew:+.0f} ms after the matching frame's"
    assert -0.045 < decoded < 0.045 + 0.1, f"decoded audio {1000 * decoded:+.0f} ms after its frame"
    assert live.agent.peers.viewers == 0 or all(
        pc.connectionState != "connected" for pc in live.agent.peers.peers
    )


def test_twenty_viewers_in_turn_leak_nothing(live) -> None:
    loop_tasks = lambda: live.call(_count_tasks())  # noqa: E731
    pipeline = live.agent.pipeline

    async def one() -> int:
        got = await view(live.ws_url, 0.6, keep_images=False)
        return len(got.video)

    asyncio.run(one())
    time.sleep(1.0)
    gc.collect()
    base_tasks, base_threads = loop_tasks(), threading.active_count()
    base_rss = psutil.Process().memory_info().rss
    counts = []
    for _ in range(20):
        counts.append(asyncio.run(one()))
    deadline = time.monotonic() + 10
    while (live.agent.peers.viewers or loop_tasks() > base_tasks) and time.monotonic() < deadline:
        time.sleep(0.2)
    gc.collect()
    growth_mb = (psutil.Process().memory_info().rss - base_rss) / 2**20
    assert sum(c > 0 for c in counts) >= 18, counts  # each viewer saw the face
    assert live.agent.peers.viewers == 0 and not live.agent.peers.tracks
    assert pipeline.frames.subscribers == 1 and pipeline.audio.subscribers == 0  # only the blendshape stream
    assert loop_tasks() <= base_tasks
    assert threading.active_count() <= base_threads + 2
    assert growth_mb < 40, f"memory grew {growth_mb:.0f} MB over 20 viewers"


async def _count_tasks() -> int:
    return len(asyncio.all_tasks())


def test_virtual_webcam_sink_through_pyvirtualcam_backend(live, caplog) -> None:
    """v4l2loopback cannot be loaded here: a recording backend stands in for the device."""
    import pyvirtualcam

    from streaming.virtualcam import open_virtualcam

    received: dict[str, list] = {}

    class Recording:
        def __init__(self, *, width, height, fps, fourcc, device, **kw) -> None:
            self.size = (width, height)
            self.frames = received.setdefault(f"{fps:g}", [])

        def device(self) -> str:
            return "test-camera"

        def send(self, frame: np.ndarray) -> None:
            self.frames.append(frame.reshape(self.size[1], self.size[0], 3).copy())  # it comes flat

        def close(self) -> None:
            self.frames.append(None)

    pyvirtualcam.register_backend("flowvq-test", Recording)

    async def run() -> None:
        sinks = [
            open_virtualcam(live.agent.pipeline, 256, 256, fps, backend="flowvq-test") for fps in (25, 30)
        ]
        assert None not in sinks
        tasks = [asyncio.ensure_future(sink.run()) for sink in sinks]
        await asyncio.sleep(2.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(run(), live.loop).result(30)
    at25, at30 = ([f for f in received[k] if f is not None] for k in ("25", "30"))
    assert received["25"][-1] is None and received["30"][-1] is None  # the cameras were closed
    assert len(at25) >= 35  # every frame of the pipeline (25 fps)
    assert 1.1 < len(at30) / len(at25) < 1.3  # a 30 fps camera gets 30 a second, on its own clock
    assert at25[-1].shape == (256, 256, 3) and at25[-1].dtype == np.uint8 and at25[-1].std() > 20
    with caplog.at_level(logging.WARNING):
        # Linux's own backend: no v4l2loopback device exists here.
        assert open_virtualcam(live.agent.pipeline, 512, 512, 25, backend="v4l2loopback") is None
    assert "virtual webcam: off" in caplog.text and "v4l2loopback" in caplog.text


# -- PulseAudio: a real microphone and the virtual microphone ---------------------------------------
def test_microphone_is_chosen_by_index_or_name_with_a_clear_error() -> None:
    from agent.errors import DeviceError
    from agent.sources import MicSource

    inputs = [(0, "HDA Intel PCH: ALC3246 Analog"), (3, "USB Audio Device: Mic"), (5, "pulse")]
    assert MicSource._choose(None, inputs) is None  # the default device
    assert MicSource._choose("3", inputs) == 3 and MicSource._choose(5, inputs) == 5
    assert MicSource._choose("usb", inputs) == 3 and MicSource._choose("PULSE", inputs) == 5
    with pytest.raises(DeviceError, match=r"no input device named like 'webcam'; inputs are 0: HDA"):
        MicSource._choose("webcam", inputs)
    with pytest.raises(DeviceError, match="no input device with index 7"):
        MicSource._choose(7, inputs)


def test_only_loopback_binds_without_a_token() -> None:
    from agent.live import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "myhost.example"))
