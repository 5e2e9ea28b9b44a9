"""The live agent's sound with real components: a private PulseAudio server as the microphone and
behind the virtual microphone, an aiortc peer as the microphone, the command line.

These tests time sound against frames, so they live apart from test_live.py: its module-wide agent
renders at 25 fps until its module ends, and beside it on a 2-core machine the voice was heard 58 ms
early and 143 ms late (measured) for reasons that were the neighbour's, not the agent's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.commands import load_portrait
from models.audio import load_audio
from models.rig import BLENDSHAPE_NAMES
from streaming.viewer import view
from tests.live_helpers import AgentThread, PulseServer, Recorder, int16, mouth_darkness, window_lags

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "assets" / "demo_speech.wav"
JAW = BLENDSHAPE_NAMES.index("jawOpen")
needs_pulse = pytest.mark.skipif(
    not PulseServer.available(), reason="PulseAudio is not installed (setup.sh installs it)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def pulse(tmp_path_factory, monkeypatch):
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    server.start()
    for key in ("XDG_RUNTIME_DIR", "HOME", "PULSE_RUNTIME_PATH"):
        monkeypatch.setenv(key, server.env[key])
    yield server
    server.stop()


def _speech_wav(path: Path, lead_s: float = 0.0) -> Path:
    audio = np.concatenate([np.zeros(int(16000 * lead_s)), load_audio(SPEECH)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(int16(audio).tobytes())
    return path


@needs_pulse
def test_microphone_through_pulseaudio_moves_the_mouth_only_in_speech(pulse, tmp_path) -> None:
    """`run_agent.py --audio-source mic` in a subprocess; speech is played into the null sink whose
    monitor is the default microphone; a websocket subscriber and a WebRTC viewer watch."""
    port = _free_port()
    agent = subprocess.Popen(
        [sys.executable, str(ROOT / "run_agent.py"), "--audio-source", "mic", "--no-virtualcam",
         "--no-virtual-mic", "--port", str(port), "--duration", "60"],
        env=pulse.env | {"PYTHONUNBUFFERED": "1"}, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wav = _speech_wav(tmp_path / "speech.wav")
    url = f"ws://127.0.0.1:{port}/ws"

    async def watch() -> tuple[list[dict], object]:
        import aiohttp

        deadline = time.monotonic() + 90
        while True:
            try:
                session = aiohttp.ClientSession()
                ws = await session.ws_connect(url)
                break
            except aiohttp.ClientError:
                await session.close()
                assert agent.poll() is None, agent.stderr.read()
                assert time.monotonic() < deadline, "the agent did not start"
                await asyncio.sleep(0.5)
        await ws.send_json({"type": "subscribe", "streams": ["blendshapes"]})
        viewer = asyncio.ensure_future(view(url, 9.0))
        shapes: list[dict] = []
        start = time.monotonic()
        player = None
        while time.monotonic() - start < 9.0:
            if player is None and time.monotonic() - start > 2.5:
                player = pulse.play(wav)  # 2.5 s of silence, then the speech
            msg = await ws.receive_json(timeout=10)
            if msg["type"] == "blendshapes":
                shapes.append(msg | {"received": time.monotonic() - start})
        await ws.close()
        await session.close()
        got = await viewer
        if player is not None:
            player.wait(timeout=30)
        return shapes, got

    try:
        shapes, got = asyncio.run(watch())
    finally:
        agent.send_signal(signal.SIGINT)
        _, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert "Traceback" not in err and "microphone:" in err
    jaw = np.array([m["values"][JAW] for m in shapes])
    when = np.array([m["received"] for m in shapes])
    speaking = np.array([m["speaking"] for m in shapes])
    quiet, talk = jaw[(when > 0.5) & (when < 2.4)], jaw[(when > 3.2) & (when < 8.0)]
    assert len(quiet) > 20 and len(talk) > 60
    assert quiet.max() < 0.1 and not speaking[(when > 0.5) & (when < 2.4)].any()
    assert talk.max() > 0.3 and speaking[(when > 3.2) & (when < 8.0)].mean() > 0.7
    # The frames themselves: the mouth opens (dark cavity) while speech plays, not before.
    source = load_portrait(ROOT / "assets" / "portrait.png")
    t0 = got.video[0][0]
    dark = mouth_darkness([img for _, _, img in got.video], source.landmarks)
    arrival = np.array([t for t, _, _ in got.video]) - t0
    assert dark[(arrival > 0.5) & (arrival < 1.8)].max() < dark[(arrival > 3.0) & (arrival < 7.0)].max()
    assert dark[(arrival > 3.0) & (arrival < 7.0)].std() > 2 * dark[(arrival > 0.5) & (arrival < 1.8)].std()


@needs_pulse
def test_virtual_microphone_carries_the_voice_delayed_to_the_frames(pulse, tmp_path) -> None:
    from agent.live import LiveOptions
    from streaming.virtualmic import SINK, SOURCE

    wav = _speech_wav(tmp_path / "speech.wav", lead_s=0.5)
    agent = AgentThread(LiveOptions(audio_source=f"file:{wav}", virtualcam=False, virtual_mic=True, port=0))
    frames: list[tuple[int, float]] = []
    published: list[tuple[int, np.ndarray]] = []
    try:
        assert agent.agent.virtual_mic is not None
        sources = pulse.pactl("list", "short", "sources").stdout
        assert SOURCE in sources
        recorder = Recorder(pulse, SOURCE, tmp_path / "recording")
        time.sleep(1.0)  # the recording runs before anything is measured
        frames_q = agent.agent.pipeline.frames.subscribe(maxsize=500)
        audio_q = agent.agent.pipeline.audio.subscribe(maxsize=1000)
        time.sleep(5.0)
        samples, chunks = recorder.stop()

        async def drain() -> None:
            while len(frames_q):
                f = await frames_q.get()
                frames.append((f.pts, f.ready))
            while len(audio_q):
                b = await audio_q.get()
                published.append((b.pts, b.samples))

        agent.call(drain())
        clock_start = agent.agent.clock._start_ns * 1e-9  # noqa: SLF001 - mapping monotonic to media time
    finally:
        agent.stop()
    assert SINK not in pulse.pactl("list", "short", "sinks").stdout  # removed on exit
    assert SOURCE not in pulse.pactl("list", "short", "sources").stdout
    # Where in the recording is each published block? Cross-correlate the published stream with it.
    first = published[0][0]
    sent = np.concatenate([s for _, s in published]).astype(np.float32)
    rec = samples.astype(np.float32)
    assert np.abs(rec).max() > 1000, "the virtual microphone carried no sound"
    lags = window_lags(sent, rec, window=4000)
    assert len(lags) >= 4, f"the recording matches the speech in only {len(lags)} windows"
    # Window by window: sent sample i (pts first + i) was heard at heard_at(i + lag); its frame left at
    # ready(pts) (frames every 640 samples, interpolated).
    pts, ready = np.array(frames, dtype=np.float64).T
    skews = [
        Recorder.heard_at(start + lag, chunks) - clock_start - np.interp(first + start, pts, ready)
        for start, lag in lags
    ]
    skew = float(np.median(skews))
    # EBU R37's window for broadcast: sound at most 40 ms before its picture, at most 60 ms after
    # (a late voice is the harder to notice; on a busy 2-core machine the held voice once measured
    # +48 ms against a symmetric 45 ms bound).
    assert -0.040 < skew < 0.060, f"the voice is heard {1000 * skew:+.0f} ms after its frame"


def test_cli_duration_stops_cleanly_and_reports_a_missing_microphone(tmp_path) -> None:
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent", PYTHONUNBUFFERED="1")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_agent.py"), "--no-virtual-mic", "--port", str(_free_port()),
         "--duration", "3"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("microphone:") and "idles" in line for line in lines), result.stderr
    assert any("virtual webcam: off" in line for line in lines)
    assert any("live: stopped" in line for line in lines)
    assert time.monotonic() - started < 100


def test_webrtc_peer_audio_drives_the_face(tmp_path) -> None:
    """--audio-source webrtc: the first peer that sends audio is the microphone."""
    import aiohttp

    from agent.live import LiveOptions

    wav = _speech_wav(tmp_path / "speech.wav", lead_s=1.0)
    agent = AgentThread(LiveOptions(audio_source="webrtc", virtualcam=False, virtual_mic=False, port=0))

    async def run() -> list[dict]:
        async with aiohttp.ClientSession() as session, session.ws_connect(agent.ws_url) as ws:
            await ws.send_json({"type": "subscribe", "streams": ["blendshapes"]})
            talker = asyncio.ensure_future(view(agent.ws_url, 6.0, keep_images=False, send_audio=wav))
            shapes = []
            start = time.monotonic()
            while time.monotonic() - start < 6.0:
                msg = await ws.receive_json(timeout=10)
                if msg["type"] == "blendshapes":
                    shapes.append(msg)
            await talker
            return shapes

    try:
        shapes = asyncio.run(run())
    finally:
        agent.stop()
    jaw = np.array([m["values"][JAW] for m in shapes])
    speaking = np.array([m["speaking"] for m in shapes])
    # The face is made at 25 fps throughout; this process also decodes the viewer's video, so
    # under load the slow subscriber loses some messages to its drop-oldest outbox (by design).
    frames = [m["frame"] for m in shapes]
    assert frames[-1] - frames[0] > 100 and len(shapes) > 60 and speaking.any()
    assert jaw.max() > 0.3 and jaw[speaking].mean() > 3 * max(jaw[:10].mean(), 0.01)
