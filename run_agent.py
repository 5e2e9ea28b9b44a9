"""FlowVQ Agent command line: the live agent (the default: `run_agent.py [live] [options]`) and the
offline `render`, `animate`, `reenact` and `pose`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agent import commands
from agent.errors import AgentError
from models.rig import EMOTIONS

ASSETS = Path(__file__).resolve().parent / "assets"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_agent.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("live", help="the live agent (the default when no command is given)")
    _live_arguments(p)
    p = sub.add_parser("animate", help="render a coefficient .npz on a photo")
    p.add_argument("--image", type=Path, default=ASSETS / "portrait.png", help="source photo (%(default)s)")
    p.add_argument("--coeffs", type=Path, default=ASSETS / "demo_coeffs.npz", help="(%(default)s)")
    p.add_argument("--audio", type=Path, default=None, help="audio file to mux in (optional)")
    p.add_argument("--out", type=Path, default=Path("out/demo.mp4"), help="output .mp4 (%(default)s)")
    _badge_argument(p)
    _vqig_arguments(p)
    p = sub.add_parser("reenact", help="drive a photo with the face in a video")
    p.add_argument("--image", type=Path, default=ASSETS / "portrait.png", help="source photo (%(default)s)")
    p.add_argument("--driving", type=Path, required=True, help="video of a face to copy")
    p.add_argument("--out", type=Path, default=Path("out/reenact.mp4"), help="output .mp4 (%(default)s)")
    p.add_argument("--coeffs-out", type=Path, default=None, help="also save the tracked coefficients (.npz)")
    p.add_argument("--no-audio", dest="keep_audio", action="store_false", help="drop the driving audio")
    _badge_argument(p)
    _vqig_arguments(p)
    p = sub.add_parser("render", help="speech -> talking face video (FCG + MeshWarp)")
    p.add_argument("--image", type=Path, default=ASSETS / "portrait.png", help="source photo (%(default)s)")
    p.add_argument(
        "--audio", type=Path, default=ASSETS / "demo_speech.wav", help="speech, any format (%(default)s)"
    )
    p.add_argument("--emotion", choices=EMOTIONS, default="neutral")
    p.add_argument("--intensity", type=float, default=0.8, help="in [0, 1] (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="different seeds: different blinks and head motion")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (%(default)s)")
    p.add_argument("--out", type=Path, default=Path("out/render.mp4"), help="output .mp4 (%(default)s)")
    p.add_argument(
        "--coeffs-out", type=Path, default=None, help="also save the generated coefficients (.npz)"
    )
    p.add_argument("--emotion-reference", type=Path, default=None, help="carry over this photo's expression")
    _badge_argument(p)
    _vqig_arguments(p)
    p = sub.add_parser("pose", help="render one still with an emotion and a head pose")
    p.add_argument("--image", type=Path, default=ASSETS / "portrait.png", help="source photo (%(default)s)")
    p.add_argument("--emotion", choices=EMOTIONS, default="happy")
    p.add_argument("--intensity", type=float, default=0.8, help="in [0, 1] (%(default)s)")
    for angle in ("yaw", "pitch", "roll"):
        p.add_argument(f"--{angle}", type=float, default=0.0, help="radians (%(default)s)")
    p.add_argument("--out", type=Path, default=Path("out/pose.png"), help="output .png/.jpg (%(default)s)")
    _badge_argument(p)
    p = sub.add_parser("verify", help="is a video, image or folder of frames marked as AI-generated?")
    p.add_argument(
        "path", type=Path, metavar="VIDEO_OR_IMAGE", help="a video, an image, or a folder of frames"
    )
    return parser


def _badge_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-badge", dest="badge", action="store_false",
                   help='leave out the visible "AI-generated" badge (the invisible watermark stays)')  # fmt: skip


def _vqig_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vqig",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="refine MeshWarp's frames with this VQIG checkpoint (python -m models.train_vqig)",
    )
    p.add_argument(
        "--fidelity",
        type=float,
        default=0.5,
        metavar="W",
        help="VQIG w in [0, 1]: 0 favours the codebook's quality, 1 fidelity to the warp (%(default)s)",
    )
    p.add_argument(
        "--vqig-compile",
        choices=("auto", "tensorrt", "inductor", "none"),
        default="auto",
        help="VQIG compile path; a missing backend falls back to the next (%(default)s)",
    )


def _vqig(args: argparse.Namespace) -> dict[str, object]:
    return {"vqig": args.vqig, "fidelity": args.fidelity, "vqig_compile": args.vqig_compile}


NO_BADGE_REMINDER = (
    'note: --no-badge: no visible "AI-generated" badge; the invisible watermark is still in every frame. '
    "Tell your viewers this face is generated."
)


def _verify(path: Path) -> int:
    """Exit code 0: the watermark is present; 1: it is not; 2: the file cannot be read."""
    from agent.verify import verify

    try:
        report = verify(path)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return report.exit_code


def _live_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", type=Path, default=ASSETS / "portrait.png", help="source photo (%(default)s)")
    p.add_argument("--audio-source", default="mic", metavar="mic|file:PATH|webrtc",
                   help="where the speech comes from (%(default)s)")  # fmt: skip
    p.add_argument("--mic", default=None, help="microphone: index or part of its name (default device)")
    p.add_argument("--virtualcam", action=argparse.BooleanOptionalAction, default=True,
                   help="send the face to a virtual webcam when one exists (%(default)s)")  # fmt: skip
    p.add_argument("--virtual-mic", action=argparse.BooleanOptionalAction, default=True,
                   help="play the voice, in sync, into a virtual microphone (PulseAudio) (%(default)s)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address of the page and websocket (%(default)s)")
    p.add_argument("--port", type=int, default=8765, help="(%(default)s)")
    p.add_argument("--token", default=None, help="required by clients as ?token=; needed off loopback")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server for WebRTC (none unless given)")  # fmt: skip
    p.add_argument("--emotion", choices=EMOTIONS, default="neutral")
    p.add_argument("--intensity", type=float, default=0.8, help="in [0, 1] (%(default)s)")
    p.add_argument("--size", type=int, default=512, help="output frame size in pixels (%(default)s)")
    p.add_argument(
        "--fps",
        type=int,
        default=25,
        help="virtual webcam frames per second (%(default)s: the face is made at 25 fps, "
        "another rate repeats or skips frames)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(%(default)s)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    p.add_argument("--seed", type=int, default=0, help="different seeds: different blinks and head motion")
    _badge_argument(p)
    _vqig_arguments(p)


def _run_live(args: argparse.Namespace) -> int:
    from agent.live import LiveOptions, run_live

    options = LiveOptions(
        image=args.image, audio_source=args.audio_source, mic=args.mic, virtualcam=args.virtualcam,
        virtual_mic=args.virtual_mic, host=args.host, port=args.port, token=args.token,
        emotion=args.emotion, intensity=args.intensity, size=args.size, fps=args.fps, device=args.device,
        duration_s=args.duration, seed=args.seed, ice_servers=tuple(args.ice_server), badge=args.badge,
        vqig=args.vqig, fidelity=args.fidelity, vqig_compile=args.vqig_compile,
    )  # fmt: skip
    return run_live(options)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["live", *argv]  # no command: the live agent
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "verify":
        return _verify(args.path)
    if not getattr(args, "badge", True):
        print(NO_BADGE_REMINDER, file=sys.stderr)
    try:
        if args.command == "animate":
            out = commands.animate(
                args.image, args.coeffs, args.out, audio=args.audio, badge=args.badge, **_vqig(args)
            )
        elif args.command == "reenact":
            out = commands.reenact(
                args.image,
                args.driving,
                args.out,
                coeffs_out=args.coeffs_out,
                keep_audio=args.keep_audio,
                badge=args.badge,
                **_vqig(args),
            )
        elif args.command == "render":
            out = commands.render(
                args.image, args.audio, args.out, emotion=args.emotion, intensity=args.intensity,
                seed=args.seed, temperature=args.temperature, coeffs_out=args.coeffs_out,
                emotion_reference=args.emotion_reference, badge=args.badge, **_vqig(args),
            )  # fmt: skip
        elif args.command == "pose":
            angles = {"yaw": args.yaw, "pitch": args.pitch, "roll": args.roll}
            out = commands.pose(
                args.image, args.emotion, args.intensity, args.out, **angles, badge=args.badge
            )
        else:
            return _run_live(args)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
