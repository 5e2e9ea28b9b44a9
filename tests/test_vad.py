"""Voice activity on real (synthesized) speech with silences and a click."""

from __future__ import annotations

import numpy as np
import pytest

from agent.vad import SpeechDetector, VadConfig
from models.audio import load_audio
from tests.conftest import ASSETS


def _blocks(audio: np.ndarray, n: int = 320) -> list[np.ndarray]:
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return [pcm[i : i + n] for i in range(0, len(pcm) - n + 1, n)]


def test_speech_on_in_words_off_in_silence() -> None:
    speech = load_audio(ASSETS / "demo_speech.wav")  # two sentences with a 600 ms pause
    audio = np.concatenate([np.zeros(16000), speech, np.zeros(24000)]).astype(np.float32)
    det = SpeechDetector()
    on = np.array([det.process(b) for b in _blocks(audio)])
    assert not on[:45].any()  # leading second of silence
    assert on[50 : 50 + len(speech) // 320 - 10].mean() > 0.9  # words, and the gaps between them, held
    assert not on[-25:].any()  # the trailing silence switched it off after the hangover


def test_a_click_does_not_start_speech() -> None:
    audio = np.zeros(16000, np.float32)
    audio[8000:8160] = 0.8 * np.sin(np.arange(160) * 0.9)  # 10 ms burst
    det = SpeechDetector()
    assert not any(det.process(b) for b in _blocks(audio))


def test_bad_blocks_and_settings() -> None:
    det = SpeechDetector()
    with pytest.raises(TypeError, match="int16"):
        det.process(np.zeros(320, np.float32))
    with pytest.raises(ValueError, match="320"):
        det.process(np.zeros(160, np.int16))
    with pytest.raises(ValueError, match="10, 20 or 30"):
        VadConfig(frame_ms=25)
