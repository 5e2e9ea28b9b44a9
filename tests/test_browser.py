"""The web page in a real browser: Debian's Chromium, driven by Playwright, plays the agent's WebRTC
video and steers its emotion (DESIGN.md, "Real components in tests").

The agent runs in this process on its own event loop (tests/live_helpers.py ``AgentThread``), with
the bundled speech clip as its microphone. Chromium loads the page, which negotiates WebRTC over the
websocket with loopback-only ICE; the test reads the decoded video back through a canvas in the
page, clicks the "happy" button, and checks the server's state, the page and the face itself
(MediaPipe landmarks on the frames the browser decoded: the mouth widens and its corners rise).
"""

from __future__ import annotations

import base64
import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.landmarks import FaceLandmarker, interocular_distance
from tests.live_helpers import AgentThread

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (setup.sh installs it)"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="playwright (Python) is not installed"
    ),
]

# Playwright passes its own --disable-features list and Chromium keeps only the last one, so ours
# repeats Playwright's (1.65's chromiumSwitches) before adding WebRtcHideLocalIpsWithMdns: with mDNS
# hiding on, Chromium offers "<uuid>.local" host names that aiortc cannot resolve.
_PLAYWRIGHT_DISABLED = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect", "TcpPortRandomizationWin",
    "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
)  # fmt: skip
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=" + ",".join((*_PLAYWRIGHT_DISABLED, "WebRtcHideLocalIpsWithMdns")),
]

# Before the page's own script: count the decoded frames the <video> presents (times are
# performance.now(), milliseconds since navigation), and record the blendshape stream on a second
# websocket so values can be split at the click.
_INIT_SCRIPT = """
window.__frames = { n: 0, first: null, last: null, width: 0, height: 0 };
window.__blendshapes = [];
document.addEventListener("DOMContentLoaded", () => {
  const video = document.getElementById("video");
  const tick = (now, meta) => {
    const f = window.__frames;
    f.n += 1; f.first ??= now; f.last = now; f.width = meta.width; f.height = meta.height;
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
  const ws = new WebSocket("ws://" + location.host + "/ws");
  ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", streams: ["blendshapes"] }));
  ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type !== "blendshapes") return;
    const v = (name) => m.values[m.names.indexOf(name)];
    window.__blendshapes.push([performance.now(), (v("mouthSmileLeft") + v("mouthSmileRight")) / 2]);
  };
});
"""
_GRAB = """() => {
  const v = document.getElementById("video");
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  return [window.__frames.n, c.toDataURL("image/png")];
}"""
_FRAMES = "() => window.__frames"
# The page's RTCPeerConnection (its global ``pc``): what it received and over which candidates.
_RTC_STATS = """async () => {
  const stats = [...(await pc.getStats()).values()];
  const inbound = (kind) => stats.find((r) => r.type === "inbound-rtp" && r.kind === kind) || {};
  const byId = new Map(stats.map((r) => [r.id, r]));
  const transport = stats.find((r) => r.type === "transport") || {};
  const pair = byId.get(transport.selectedCandidatePairId) || {};
  return {
    framesDecoded: inbound("video").framesDecoded || 0,
    audioPackets: inbound("audio").packetsReceived || 0,
    selected: [(byId.get(pair.localCandidateId) || {}).address, (byId.get(pair.remoteCandidateId) || {}).address],
    remote: stats.filter((r) => r.type === "remote-candidate").map((r) => r.address),
  };
}"""


def _decode(data_url: str) -> np.ndarray:
    raw = base64.b64decode(data_url.partition(",")[2])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _grab_frames(page, count: int, timeout_s: float = 20.0) -> list[np.ndarray]:
    """``count`` distinct decoded frames (each grabbed after the frame counter moved), RGB 512x512."""
    out, seen = [], -1
    deadline = time.monotonic() + timeout_s
    while len(out) < count:
        assert time.monotonic() < deadline, f"only {len(out)} of {count} new frames in {timeout_s} s"
        n, url = page.evaluate(_GRAB)
        if n != seen:
            seen = n
            out.append(_decode(url))
        page.wait_for_timeout(80)
    return out


def _smile(images: list[np.ndarray]) -> np.ndarray:
    """Per frame (MediaPipe on the decoded image): mouth width and the corners' lift above the lips'
    middle, both in inter-ocular distances."""
    rows = []
    with FaceLandmarker() as landmarker:
        for image in images:
            lm = landmarker.detect(image)
            iod = interocular_distance(lm)
            width = np.linalg.norm(lm[61, :2] - lm[291, :2]) / iod
            lift = ((lm[13, 1] + lm[14, 1]) / 2 - (lm[61, 1] + lm[291, 1]) / 2) / iod
            rows.append((width, lift))
    return np.asarray(rows)


@pytest.fixture
def agent():
    from agent.live import LiveOptions

    options = LiveOptions(
        audio_source=f"file:{ROOT / 'assets' / 'demo_speech.wav'}",
        virtualcam=False,
        virtual_mic=False,
        port=0,
    )
    running = AgentThread(options)
    yield running
    running.stop()


def test_page_plays_webrtc_video_and_steers_emotion(agent, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    live = agent.agent
    errors: list[str] = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1120, "height": 700},
        )  # fmt: skip
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            context.add_init_script(_INIT_SCRIPT)
            page.goto(live.url)

            # 1. The WebRTC video plays: frames decoded at 512x512, and the count keeps growing.
            page.wait_for_function("() => window.__frames.n >= 3", timeout=60_000)
            video = page.evaluate(
                "() => { const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight,"
                " v.paused, v.readyState, v.getVideoPlaybackQuality().totalVideoFrames]; }"
            )
            assert video[:2] == [512, 512], f"decoded size {video[:2]}, expected 512x512"
            assert video[2] is False and video[3] >= 2, (
                f"video not playing: paused={video[2]} readyState={video[3]}"
            )
            start = page.evaluate(_FRAMES)
            assert (start["width"], start["height"]) == (512, 512)
            page.wait_for_function(f"() => window.__frames.n >= {start['n'] + 40}", timeout=40_000)
            end = page.evaluate(_FRAMES)
            fps = (end["n"] - start["n"]) / ((end["last"] - start["last"]) / 1000.0)
            total, dropped = page.evaluate(
                "() => { const q = document.getElementById('video').getVideoPlaybackQuality();"
                " return [q.totalVideoFrames, q.droppedVideoFrames]; }"
            )
            assert total > video[4], "getVideoPlaybackQuality().totalVideoFrames stopped growing"
            assert fps > 5.0, f"the browser decoded only {fps:.1f} frames/s"
            # Decoded by the page's peer connection, with the voice beside it, over loopback only.
            rtc = page.evaluate(_RTC_STATS)
            assert rtc["framesDecoded"] >= 40 and rtc["audioPackets"] > 0, rtc
            assert rtc["selected"] == ["127.0.0.1", "127.0.0.1"], rtc
            assert rtc["remote"] and set(rtc["remote"]) == {"127.0.0.1"}, rtc
            print(f"\nfirst frame presented {start['first'] / 1000:.2f} s after navigation; {fps:.1f} fps"
                  f" over {end['n'] - start['n']} frames; {total} decoded, {dropped} dropped by the browser")  # fmt: skip

            # The page's status table and the server agree on the viewer and the running state.
            page.wait_for_function(
                "() => document.getElementById('st-viewers').textContent === '1'", timeout=15_000
            )
            assert page.inner_text("#st-emotion").startswith("neutral")
            assert live.control.emotion == "neutral"
            neutral = _grab_frames(page, 12)

            # 2. Click "happy": the server's state changes, the page shows it, the face smiles.
            t_click = page.evaluate("() => performance.now()")
            page.click("#emotion-happy")
            page.wait_for_function(
                "() => document.getElementById('st-emotion').textContent.startsWith('happy')", timeout=15_000
            )
            assert live.control.emotion == "happy"
            assert page.get_attribute("#emotion-happy", "class") == "active"
            assert page.get_attribute("#emotion-neutral", "class") in ("", None)
            # Past the 400 ms transition and the video's latency: 30 more decoded frames (1.2 s of video).
            n_click = page.evaluate(_FRAMES)["n"]
            page.wait_for_function(f"() => window.__frames.n >= {n_click + 30}", timeout=30_000)
            happy = _grab_frames(page, 12)
            smile_bar = page.evaluate(
                "() => { const i = [...document.querySelectorAll('#bars > div:not(.bar)')]"
                ".findIndex((d) => d.textContent === 'mouthSmileLeft');"
                " return parseFloat(document.querySelectorAll('#bars .bar > div')[i].style.width); }"
            )
            blendshapes = np.asarray(page.evaluate("() => window.__blendshapes"))

            # 3. The intensity slider, and a refused request through the page's control path: the error
            # is shown, nothing changes, and no unhandled rejection reaches the console.
            page.locator("#intensity").fill("0.3")
            page.wait_for_function(
                "() => document.getElementById('st-emotion').textContent === 'happy 0.30'", timeout=15_000
            )
            assert live.control.intensity == pytest.approx(0.3)
            page.evaluate("() => request({ type: 'set_emotion', emotion: 'giddy' })")
            page.wait_for_function("() => document.getElementById('log').textContent !== ''", timeout=15_000)
            assert page.inner_text("#log").startswith("bad_request: unknown emotion 'giddy'")
            assert (live.control.emotion, live.control.intensity) == ("happy", pytest.approx(0.3))

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            video_box = cv2.imdecode(
                np.frombuffer(page.locator("#video").screenshot(), np.uint8), cv2.IMREAD_COLOR
            )
            print(f"screenshot: {shot}")
        finally:
            context.close()

    # The browser decoded real frames of the face, and the page composited them (not a black box).
    assert video_box.mean() > 60 and video_box.std() > 30, (video_box.mean(), video_box.std())
    assert not errors, errors

    # The blendshape stream: mouthSmile rises after the click; the page's bar shows it.
    before = blendshapes[blendshapes[:, 0] < t_click, 1]
    after = blendshapes[blendshapes[:, 0] > t_click + 1000.0, 1]
    assert len(before) >= 10 and len(after) >= 10, (len(before), len(after))
    print(
        f"mouthSmile (stream) neutral {before.mean():.2f} -> happy {after.mean():.2f}; page bar {smile_bar:.0f}%"
    )
    assert after.mean() > before.mean() + 0.3, (before.mean(), after.mean())
    assert smile_bar > 100 * (before.mean() + 0.2)

    # The face: MediaPipe on the frames the browser decoded sees a wider mouth with raised corners.
    n_width, n_lift = np.median(_smile(neutral), axis=0)
    h_width, h_lift = np.median(_smile(happy), axis=0)
    print(f"mouth width {n_width:.3f} -> {h_width:.3f} IOD, corner lift {n_lift:.3f} -> {h_lift:.3f} IOD")
    # Measured: width +9..14 %, lift +0.04..0.09 IOD (speaking or idle on either side of the click).
    assert h_width > n_width * 1.04, (n_width, h_width)
    assert h_lift > n_lift + 0.025, (n_lift, h_lift)


def test_page_reconnects_when_the_agent_restarts(tmp_path: Path) -> None:
    """The agent stops and a new one starts on the same port: the page says it is reconnecting, then
    plays the new agent's video without a reload."""
    from playwright.sync_api import sync_playwright

    from agent.live import LiveOptions

    def start(port: int) -> AgentThread:
        return AgentThread(LiveOptions(audio_source=f"file:{ROOT / 'assets' / 'demo_speech.wav'}",
                                       virtualcam=False, virtual_mic=False, port=port))  # fmt: skip

    first = start(0)
    port = first.agent.port
    second = None
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(first.agent.url)
            page.wait_for_function(
                "() => document.getElementById('st-viewers').textContent === '1'", timeout=60_000
            )
            first.stop()
            page.wait_for_function(
                "() => document.getElementById('log').textContent.includes('reconnecting')", timeout=20_000
            )
            second = start(port)
            page.wait_for_function(
                "() => document.getElementById('start').textContent === 'Connected'"
                " && document.getElementById('st-viewers').textContent === '1'"
                " && document.getElementById('video').videoWidth === 512",
                timeout=60_000,
            )
            assert page.text_content("#log") == ""
            assert second.agent.peers.viewers == 1
        finally:
            context.close()
            if second is not None:
                second.stop()
