"""One port for everything: the web page at ``/``, and at ``/ws`` the websocket that carries control,
WebRTC signaling, state, status and blendshapes (the JSON protocol of DESIGN.md and the README).

Every request is validated before anything changes; a bad one gets an ``error`` reply naming the
problem (``bad_request``, ``unknown_type``, ``out_of_range``, ``unauthorized``, ``too_large``).
Each client has a bounded outgoing queue that drops its oldest messages, so a slow client never
holds up the agent. Loopback only unless a token is given (clients pass ``?token=...``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import WSMsgType, web

from agent.control import ControlState, OutOfRangeError
from agent.pipeline import Frame, LivePipeline
from agent.queues import DropOldestQueue
from models.rig import BLENDSHAPE_NAMES
from streaming.webrtc import PeerManager

__all__ = ["ControlServer", "MAX_MESSAGE_BYTES"]

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent / "web"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # a reference photo as base64 fits; anything larger is refused
STREAMS = ("status", "blendshapes", "state")
STATUS_PERIOD_S = 1.0


class RequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _field(msg: dict, name: str, kind: type | tuple[type, ...], required: bool = False):
    if name not in msg or msg[name] is None:
        if required:
            raise RequestError("bad_request", f"missing field {name!r}")
        return None
    value = msg[name]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RequestError("bad_request", f"field {name!r} must be {names}, got {type(value).__name__}")
    return value


class _Client:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.streams: set[str] = set()
        self.outbox: DropOldestQueue[str] = DropOldestQueue(64, "websocket client")

    def send(self, message: dict) -> None:
        self.outbox.put_nowait(json.dumps(message))


class ControlServer:
    """The aiohttp application. ``reference``: photo bytes -> (ExpFlow latent, summary), run in a
    thread; it raises ValueError with a message when the photo is unusable."""

    def __init__(
        self,
        pipeline: LivePipeline,
        control: ControlState,
        peers: PeerManager,
        *,
        token: str | None = None,
        reference: Callable[[bytes], tuple[object, str]] | None = None,
        extra_status: Callable[[], dict] | None = None,
    ) -> None:
        self.pipeline, self.control, self.peers = pipeline, control, peers
        self.token = token
        self.reference = reference
        self.extra_status = extra_status
        self.clients: set[_Client] = set()
        self._tasks: set[asyncio.Task] = set()
        control.add_listener(self._on_state)
        self._frame_queue = pipeline.frames.subscribe(maxsize=4, name="blendshape stream")
        self.app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        self.app.router.add_get("/", self._page)
        self.app.router.add_get("/ws", self._websocket)
        self.app.router.add_static("/static", WEB)
        self.app.on_shutdown.append(self._shutdown)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        """Serve on host:port (port 0: any free port); returns the port."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self._spawn(self._status_loop(), "status")
        self._spawn(self._blendshape_loop(), "blendshapes")
        sockets = site._server.sockets if site._server is not None else []  # noqa: SLF001
        return sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.control.remove_listener(self._on_state)
        self.pipeline.frames.unsubscribe(self._frame_queue)
        await self.peers.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _shutdown(self, app: web.Application) -> None:
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.ws.close(code=1001, message=b"server shutting down")

    def _spawn(self, coro: Awaitable, name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- http -----------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        return web.FileResponse(WEB / "index.html", headers={"Cache-Control": "no-store"})

    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest(request.query.get("token", ""), self.token)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=2 * MAX_MESSAGE_BYTES, heartbeat=20.0)
        await ws.prepare(request)
        if not self._authorized(request):
            await ws.send_json(
                {"type": "error", "code": "unauthorized", "message": "missing or wrong ?token="}
            )
            await ws.close(code=4401, message=b"unauthorized")
            return ws
        client = _Client(ws)
        self.clients.add(client)
        writer = self._spawn(self._write(client), "ws-writer")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._handle(client, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    client.send(
                        self._error("bad_request", "binary messages are not understood; send JSON text")
                    )
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.discard(client)
            writer.cancel()
        return ws

    async def _write(self, client: _Client) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not client.ws.closed:
                await client.ws.send_str(await client.outbox.get())

    # -- the protocol ---------------------------------------------------------------------------
    @staticmethod
    def _error(code: str, message: str, request_id: object = None) -> dict:
        out = {"type": "error", "code": code, "message": message}
        if request_id is not None:
            out["id"] = request_id
        return out

    async def _handle(self, client: _Client, text: str) -> None:
        request_id = None
        try:
            if len(text.encode()) > MAX_MESSAGE_BYTES:
                raise RequestError(
                    "too_large", f"message of {len(text)} bytes; the limit is {MAX_MESSAGE_BYTES}"
                )
            try:
                msg = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RequestError("bad_request", f"not JSON: {exc.msg} at character {exc.pos}") from exc
            if not isinstance(msg, dict):
                raise RequestError("bad_request", f"expected a JSON object, got {type(msg).__name__}")
            request_id = msg.get("id")
            kind = msg.get("type")
            if not isinstance(kind, str):
                raise RequestError("bad_request", "missing field 'type'")
            handler = getattr(self, f"_on_{kind}", None) if kind.isidentifier() else None
            if handler is None:
                raise RequestError(
                    "unknown_type",
                    f"unknown type {kind!r}; expected one of offer, set_emotion, set_style, "
                    "emotion_reference, subscribe, get_state",
                )
            reply = await handler(client, msg)
        except RequestError as exc:
            client.send(self._error(exc.code, str(exc), request_id))
            return
        except OutOfRangeError as exc:
            client.send(self._error("out_of_range", str(exc), request_id))
            return
        except ValueError as exc:
            client.send(self._error("bad_request", str(exc), request_id))
            return
        reply = reply or {"type": "ok", "request": kind}
        if request_id is not None:
            reply["id"] = request_id
        client.send(reply)

    async def _on_offer(self, client: _Client, msg: dict) -> dict:
        sdp = _field(msg, "sdp", str, required=True)
        try:
            answer, _ = await self.peers.answer(sdp)
        except Exception as exc:  # aiortc raises ValueError and friends on a bad SDP
            raise RequestError("bad_request", f"cannot answer this offer: {exc}") from exc
        return {"type": "answer", "sdp": answer}

    async def _on_set_emotion(self, client: _Client, msg: dict) -> None:
        self.control.set_emotion(
            _field(msg, "emotion", str, required=True),
            _field(msg, "intensity", (int, float)),
            _field(msg, "transition_ms", (int, float)),
        )

    async def _on_set_style(self, client: _Client, msg: dict) -> None:
        values = {k: _field(msg, k, (int, float)) for k in ("temperature", "pose_scale", "blink_rate")}
        if all(v is None for v in values.values()):
            raise RequestError("bad_request", "set_style needs temperature, pose_scale or blink_rate")
        self.control.set_style(**values)

    async def _on_emotion_reference(self, client: _Client, msg: dict) -> None:
        data = _field(msg, "image", str, required=True)
        if self.reference is None:
            raise RequestError("bad_request", "emotion references are not available in this agent")
        if data.startswith("data:"):
            data = data.partition(",")[2]
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError("bad_request", f"image is not valid base64: {exc}") from exc
        latent, summary = await asyncio.to_thread(self.reference, raw)
        self.control.set_reference(latent, summary)

    async def _on_subscribe(self, client: _Client, msg: dict) -> None:
        streams = _field(msg, "streams", list, required=True)
        bad = [s for s in streams if s not in STREAMS]
        if bad or not streams:
            raise RequestError("bad_request", f"unknown streams {bad}; expected some of {', '.join(STREAMS)}")
        client.streams.update(streams)
        client.send(self.control.snapshot())
        if "status" in streams:
            client.send(self.status())

    async def _on_get_state(self, client: _Client, msg: dict) -> dict:
        return self.control.snapshot()

    # -- broadcasts -----------------------------------------------------------------------------
    def _on_state(self, snapshot: dict) -> None:
        for client in list(self.clients):
            if client.streams:
                client.send(snapshot)

    def status(self) -> dict:
        p = self.pipeline
        now = p.clock.seconds()
        stages = {k: round(sorted(v)[len(v) // 2], 2) for k, v in p.animator.stage_ms.items() if v}
        out = {
            "type": "status",
            "fps": round(p.stats.fps(now), 2),
            "latency_ms": p.stats.latency_ms(),
            "speaking": p.animator.speaking,
            "dropped_frames": p.frames.dropped + p.stats.skipped,
            "frames": p.stats.frames,
            "viewers": self.peers.viewers,
            "audio_delay_ms": round(1000.0 * p.audio_delay(), 1),
            "stage_ms": stages,
            "uptime_s": round(now, 1),
        }
        if self.extra_status is not None:
            out.update(self.extra_status())
        return out

    async def _status_loop(self) -> None:
        next_t = time.monotonic()
        while True:
            next_t += STATUS_PERIOD_S
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            subscribers = [c for c in self.clients if "status" in c.streams]
            if subscribers:
                status = self.status()
                for client in subscribers:
                    client.send(status)

    async def _blendshape_loop(self) -> None:
        names = list(BLENDSHAPE_NAMES)
        while True:
            frame: Frame = await self._frame_queue.get()
            subscribers = [c for c in self.clients if "blendshapes" in c.streams]
            if not subscribers:
                continue
            message = {
                "type": "blendshapes",
                "t": round(frame.pts / 16000, 4),
                "frame": frame.index,
                "speaking": frame.speaking,
                "names": names,
                "values": [round(float(v), 4) for v in frame.coeffs[: len(names)]],
                "pose": [round(float(v), 4) for v in frame.coeffs[len(names) :]],
            }
            for client in subscribers:
                client.send(message)
