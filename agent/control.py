"""What the user steers while the agent runs: emotion, intensity, transitions and style.

One ``ControlState`` per agent. The websocket server validates requests and calls its setters; the
animator reads ``label(frame)`` and the style fields once per video frame. Every change is
validated first and raises ``ValueError`` naming the problem, so a bad request changes nothing.
Listeners (the server's broadcast) are called after every accepted change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from models.rig import EMOTIONS

__all__ = ["Blinker", "ControlState", "OutOfRangeError", "Style", "smoothstep"]

NEUTRAL = EMOTIONS.index("neutral")
MAX_TRANSITION_MS = 10_000.0
TEMPERATURE_RANGE = (0.0, 2.0)
POSE_SCALE_RANGE = (0.0, 3.0)
BLINK_RATE_RANGE = (0.0, 5.0)


def smoothstep(x: float) -> float:
    """0 below 0, 1 above 1, 3x^2 - 2x^3 between: a blend with no jump in value or slope."""
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class Style:
    temperature: float = 0.8  # sampling temperature of the flows (0: the mean face, 1: full variety)
    pose_scale: float = 1.0  # multiplies the generated head motion
    blink_rate: float = 1.0  # multiplies the blink rate (0: no blinks)


class OutOfRangeError(ValueError):
    """A number outside its allowed range (the protocol's ``out_of_range``)."""


def _number(name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise OutOfRangeError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


class ControlState:
    """The live controls. ``fps`` turns ``transition_ms`` into frames."""

    def __init__(
        self, *, emotion: str = "neutral", intensity: float = 0.8, style: Style | None = None, fps: int = 25
    ) -> None:
        self.fps = fps
        self._listeners: list[Callable[[dict], None]] = []
        self._check_emotion(emotion, intensity)
        self.emotion = emotion
        self.intensity = float(intensity)
        self.transition_ms = 400.0
        self.style = style or Style()
        self.reference_latent: torch.Tensor | None = None  # (E,) set by an emotion reference
        self.reference_summary: str | None = None
        target = self._label_vector(emotion, intensity)
        # (previous label, target label, frame the change began, its length in frames): replaced as
        # one value, so the render worker never sees half of a change made by the server.
        self._transition = (target, target, 0, 0.0)
        self._frame = 0  # the newest frame the animator asked for

    # -- reading (the animator, once per frame) -------------------------------------------------
    def label(self, frame: int) -> torch.Tensor:
        """The (9,) FCG label for video frame ``frame`` (the animator's clock: changes begin at the
        newest frame it asked for): blended from the previous emotion over the transition that
        began at the last change."""
        self._frame = frame
        return self._blend(frame)

    def current_label(self) -> torch.Tensor:
        """The label of the newest frame, without moving the animator's clock."""
        return self._blend(self._frame)

    def _blend(self, frame: int) -> torch.Tensor:
        previous, target, start, duration = self._transition
        progress = 1.0 if duration <= 0 else smoothstep((frame - start) / duration)
        return previous + (target - previous) * progress

    def snapshot(self) -> dict:
        """The state as the protocol's ``state`` message."""
        return {
            "type": "state",
            "emotion": self.emotion,
            "intensity": self.intensity,
            "transition_ms": self.transition_ms,
            "temperature": self.style.temperature,
            "pose_scale": self.style.pose_scale,
            "blink_rate": self.style.blink_rate,
            "reference": self.reference_summary,
        }

    # -- changing (the server, after validation) ------------------------------------------------
    def add_listener(self, callback: Callable[[dict], None]) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[dict], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def set_emotion(
        self, emotion: str, intensity: float | None = None, transition_ms: float | None = None
    ) -> None:
        intensity = self.intensity if intensity is None else intensity
        self._check_emotion(emotion, intensity)
        if transition_ms is not None:
            transition_ms = _number("transition_ms", transition_ms, 0.0, MAX_TRANSITION_MS)
        frame = self._frame
        current = self._blend(frame)  # start from wherever a running transition has got to
        if transition_ms is not None:
            self.transition_ms = transition_ms
        self.emotion, self.intensity = emotion, float(intensity)
        self.reference_latent, self.reference_summary = None, None
        target = self._label_vector(emotion, float(intensity))
        self._transition = (current, target, frame, self.transition_ms * self.fps / 1000.0)
        self._changed()

    def set_style(
        self,
        temperature: float | None = None,
        pose_scale: float | None = None,
        blink_rate: float | None = None,
    ) -> None:
        s = self.style
        new = Style(
            temperature=s.temperature if temperature is None else _number("temperature", temperature, *TEMPERATURE_RANGE),
            pose_scale=s.pose_scale if pose_scale is None else _number("pose_scale", pose_scale, *POSE_SCALE_RANGE),
            blink_rate=s.blink_rate if blink_rate is None else _number("blink_rate", blink_rate, *BLINK_RATE_RANGE),
        )  # fmt: skip
        self.style = new
        self._changed()

    def set_reference(self, latent: torch.Tensor, summary: str) -> None:
        """Carry over a reference face's expression (its ExpFlow latent replaces the emotion centre)."""
        self.reference_latent, self.reference_summary = latent, summary
        self._changed()

    def _changed(self) -> None:
        snap = self.snapshot()
        for callback in list(self._listeners):
            callback(snap)

    @staticmethod
    def _check_emotion(emotion: object, intensity: object) -> None:
        if not isinstance(emotion, str) or emotion not in EMOTIONS:
            raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
        _number("intensity", intensity, 0.0, 1.0)

    @staticmethod
    def _label_vector(emotion: str, intensity: float) -> torch.Tensor:
        out = torch.zeros(len(EMOTIONS) + 1)
        out[EMOTIONS.index(emotion)] = 1.0
        out[-1] = 0.0 if emotion == "neutral" else intensity  # neutral is trained at intensity 0
        return out


class Blinker:
    """Extra blinks for ``blink_rate`` above 1 (the FCG makes its own, at the rate of its data).

    A Poisson process of ``(rate - 1) * base_per_min`` blinks a minute, each a 200 ms
    close-and-open; ``weight(frame, rate)`` is the eyelid closure to add.
    """

    def __init__(self, fps: int = 25, base_per_min: float = 15.0, seed: int = 0) -> None:
        self.fps, self.base = fps, base_per_min
        self._rng = np.random.default_rng(seed)
        self._next: float | None = None
        self._shape = np.sin(np.linspace(0.0, np.pi, max(3, round(0.2 * fps)))) ** 0.7

    def weight(self, frame: int, rate: float) -> float:
        extra = max(rate - 1.0, 0.0) * self.base / 60.0  # blinks per second
        if extra <= 0.0:
            self._next = None
            return 0.0
        if self._next is None:
            self._next = frame + self._rng.exponential(self.fps / extra)
        k = frame - math.floor(self._next)
        if k >= len(self._shape):
            self._next = frame + self._rng.exponential(self.fps / extra)
            return 0.0
        return float(self._shape[k]) if k >= 0 else 0.0
