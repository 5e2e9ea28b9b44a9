"""Voice activity: webrtcvad per 20 ms block, with onset and hangover so words are not clipped.

Speech starts after ``onset_ms`` of consecutive voiced blocks and ends only after ``hangover_ms``
without one, so the face neither reacts to a click nor shuts its mouth between words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SpeechDetector", "VadConfig"]


@dataclass(frozen=True)
class VadConfig:
    sample_rate: int = 16000  # Hz: 8000, 16000, 32000 or 48000 (webrtcvad)
    frame_ms: int = 20  # 10, 20 or 30 (webrtcvad)
    aggressiveness: int = 2  # 0 (permissive) .. 3 (strict)
    onset_ms: int = 100  # voiced time before speech starts (webrtcvad alone holds a 10 ms click for 80)
    hangover_ms: int = 300  # unvoiced time before speech ends

    def __post_init__(self) -> None:
        import webrtcvad

        samples = self.sample_rate * self.frame_ms // 1000
        if not webrtcvad.valid_rate_and_frame_length(self.sample_rate, samples):
            raise ValueError(
                f"webrtcvad takes 10, 20 or 30 ms frames at 8, 16, 32 or 48 kHz; "
                f"got {self.frame_ms} ms at {self.sample_rate} Hz"
            )
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be in 0..3, got {self.aggressiveness}")
        if self.onset_ms < 0 or self.hangover_ms < 0:
            raise ValueError(
                f"onset_ms and hangover_ms must be >= 0, got {self.onset_ms}, {self.hangover_ms}"
            )

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000


class SpeechDetector:
    """Feed 16-bit mono blocks of exactly ``frame_ms``; ``process`` says whether speech is on."""

    def __init__(self, config: VadConfig | None = None) -> None:
        import webrtcvad

        self.config = config or VadConfig()
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        self._onset = max(1, -(-self.config.onset_ms // self.config.frame_ms))
        self._hangover = -(-self.config.hangover_ms // self.config.frame_ms)
        self.speaking = False
        self._voiced_run = 0
        self._silent_run = 0

    @property
    def onset_blocks(self) -> int:
        """Voiced blocks in a row that start speech: when ``speaking`` turns on, the last this many
        blocks were speech too."""
        return self._onset

    def process(self, block: np.ndarray) -> bool:
        if block.dtype != np.int16:
            raise TypeError(f"expected int16 samples, got {block.dtype}")
        if block.shape != (self.config.frame_samples,):
            raise ValueError(
                f"expected a block of {self.config.frame_samples} samples, got shape {block.shape}"
            )
        voiced = self._vad.is_speech(block.tobytes(), self.config.sample_rate)
        if voiced:
            self._voiced_run += 1
            self._silent_run = 0
            if not self.speaking and self._voiced_run >= self._onset:
                self.speaking = True
        else:
            self._voiced_run = 0
            self._silent_run += 1
            if self.speaking and self._silent_run > self._hangover:
                self.speaking = False
        return self.speaking

    def reset(self) -> None:
        self.speaking = False
        self._voiced_run = self._silent_run = 0
