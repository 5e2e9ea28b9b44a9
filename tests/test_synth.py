"""Training-data synthesis: corpus, speech engines, alignment, visemes, blinks, pose, augmentation, dataset."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy.signal import correlate

from models import corpus, synth
from models.rig import BLENDSHAPE_NAMES, EMOTIONS
from models.synth import FPS, SAMPLE_RATE, Voice
from models.visemes import MOUTH_CHANNELS, VISEMES, mouth_curves, normalize_phone, phone_curves

IDX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}
MOUTH = [IDX[n] for n in MOUTH_CHANNELS]
ESPEAK = Voice("espeak", "en-us")

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt)"
)


@pytest.fixture(scope="module")
def pocketsphinx() -> ModuleType:
    return pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip)")


def _timeline(rng: np.random.Generator, seconds: float) -> tuple[list[tuple[str, float, float]], float]:
    """Random phones in 1.5-4 s phrases separated by 0.3-1.5 s pauses."""
    vocab = ["AA", "M", "IY", "P", "S", "T", "UW", "OW", "F", "AE", "N", "L", "K", "R", "EH", "B"]
    phones, t = [("SIL", 0.0, 0.5)], 0.5
    while t < seconds:
        end = t + rng.uniform(1.5, 4.0)
        while t < end:
            d = rng.uniform(0.05, 0.15)
            phones.append((str(rng.choice(vocab)), t, t + d))
            t += d
        pause = rng.uniform(0.3, 1.5)
        phones.append(("SIL", t, t + pause))
        t += pause
    return phones, t


def _gap(exp: np.ndarray) -> np.ndarray:
    """How far apart the lips are: the jaw's opening minus what mouthClose takes back."""
    return exp[..., IDX["jawOpen"]] - exp[..., IDX["mouthClose"]]


# --- corpus -----------------------------------------------------------------------------------


def test_corpus_is_deterministic_varied_and_split_by_index() -> None:
    a, b = corpus.all_sentences(0), corpus.all_sentences(0)
    assert a == b and len(a) == corpus.NUM_SENTENCES == len(set(a))
    assert corpus.all_sentences(1) != a
    train, val = corpus.sentences(split="train"), corpus.sentences(split="val")
    assert len(train) + len(val) == len(a) and not set(train) & set(val)
    assert val == a[:: corpus.VAL_EVERY] and len(val) >= 100
    assert corpus.sentences(50) == train[:50] and corpus.sentences(0, split="val") == []
    lengths = [len(s.split()) for s in a]
    assert min(lengths) <= 3 and max(lengths) >= 12
    assert all(s == s.lower() and s.replace(" ", "").isalpha() for s in a)
    with pytest.raises(ValueError, match="split"):
        corpus.sentences(split="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count"):
        corpus.sentences(len(val) + 1, split="val")


def test_corpus_words_are_in_the_aligner_dictionary(pocketsphinx: ModuleType) -> None:
    d = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    known = {line.split(maxsplit=1)[0] for line in d.read_text().splitlines() if line}
    words = {w for s in corpus.all_sentences(0) for w in s.split()}
    assert sorted(words - known) == []


# --- voices and speech ------------------------------------------------------------------------


def test_validation_voices_are_held_out() -> None:
    train = {v.speaker for v in synth.TRAIN_VOICES}
    val = {v.speaker for v in synth.VAL_VOICES}
    assert not train & val
    # The same human speaker behind two engines is held out on both.
    assert {"flite:slt", "festival:cmu_us_slt_arctic_hts"} <= val
    assert not any("slt" in s for s in train)
    for split in ("train", "val"):
        assert set(synth.available_voices(split)) <= set(synth.TRAIN_VOICES + synth.VAL_VOICES)
    with pytest.raises(ValueError, match="engine"):
        Voice("say", "alex")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        Voice("espeak", "en-us", rate=10.0)


def test_a_missing_engine_is_skipped_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(synth.shutil, "which", lambda b: None if b == "flite" else real_which(b))
    synth._engine_ok.cache_clear()
    try:
        with caplog.at_level("INFO", logger="models.synth"):
            voices = synth.available_voices("train") + synth.available_voices("val")
        assert not any(v.engine == "flite" for v in voices)
        assert sum("flite" in r.getMessage() for r in caplog.records) == 1
    finally:
        synth._engine_ok.cache_clear()


@needs_espeak
def test_synthesize_gives_16khz_float_speech() -> None:
    audio = synth.synthesize("please pass the bread", ESPEAK)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.7 < len(audio) / SAMPLE_RATE < 3.0  # four words at 175 words/min
    assert 0.05 < np.abs(audio).max() <= 1.0
    slow = synth.synthesize("please pass the bread", Voice("espeak", "en-us", rate=0.6))
    assert len(slow) > 1.4 * len(audio)


@needs_espeak
def test_alignment_covers_the_speech_in_order(pocketsphinx: ModuleType) -> None:
    text = "the old man opened the heavy box near the river"
    speech = synth._trim(synth.synthesize(text, ESPEAK))
    lead, tail = 0.6, 0.4
    audio = np.concatenate([np.zeros(int(lead * SAMPLE_RATE)), speech, np.zeros(int(tail * SAMPLE_RATE))])
    audio = audio.astype(np.float32)
    al = synth.align(audio, text)
    assert [w for w, _, _ in al.words] == text.split()
    starts = [s for _, s, _ in al.words]
    assert starts == sorted(starts)
    speech_end = lead + len(speech) / SAMPLE_RATE
    assert lead - 0.05 <= al.words[0][1] <= lead + 0.15  # the first word starts after the leading silence
    assert speech_end - 0.15 <= al.words[-1][2] <= speech_end + 0.05
    spoken = [p for p in al.phones if normalize_phone(p[0]) != "SIL"]
    assert spoken[0][1] >= lead - 0.05
    # Phones tile the audio: contiguous from 0 to the end, all known to the viseme table.
    assert al.phones[0][1] == 0.0 and abs(al.phones[-1][2] - len(audio) / SAMPLE_RATE) < 0.03
    assert all(abs(a[2] - b[1]) < 1e-6 for a, b in zip(al.phones[:-1], al.phones[1:], strict=True))
    assert all(p in VISEMES for p, _, _ in al.phones)


@needs_espeak
def test_alignment_rejects_unknown_words(pocketsphinx: ModuleType) -> None:
    with pytest.raises(synth.AlignmentError, match="dictionary"):
        synth.align(np.zeros(SAMPLE_RATE, np.float32), "hello zzxqvw")


# --- visemes ----------------------------------------------------------------------------------


def _mama_papa() -> list[tuple[str, float, float]]:
    phones, t = [("SIL", 0.0, 0.5)], 0.5
    for p in ["M", "AA", "M", "AA", "P", "AA", "P", "AA"]:
        d = 0.07 if p in "MP" else 0.12
        phones.append((p, t, t + d))
        t += d
    return [*phones, ("SIL", t, t + 0.8)]


def test_bilabials_close_the_lips_and_open_vowels_open_the_jaw() -> None:
    phones = _mama_papa()
    fps = 1000.0  # sample finely to look at the centres
    curves = mouth_curves(phones, int(phones[-1][2] * fps), fps)
    assert np.array_equal(curves.exp, phone_curves(phones, int(phones[-1][2] * fps), fps))
    for p, s, e in phones[1:-1]:
        k = int(0.5 * (s + e) * fps)
        x = curves.exp[k]
        if p in "MP":
            assert curves.closure[k] > 0.8, p
            assert x[IDX["jawOpen"]] < 0.12, p
            assert _gap(x) < 0.02, p
            assert x[IDX["mouthPressLeft"]] > 0.3 and x[IDX["mouthPressRight"]] > 0.3, p
        else:
            assert x[IDX["jawOpen"]] > 0.3, p
            assert _gap(x) > 0.25, p
            assert x[IDX["mouthPressLeft"]] < 0.15, p


def test_rounded_spread_and_labiodental_shapes() -> None:
    def centre(phone: str) -> np.ndarray:
        phones = [("SIL", 0.0, 0.3), ("HH", 0.3, 0.35), (phone, 0.35, 0.55), ("SIL", 0.55, 1.0)]
        return phone_curves(phones, 1000, 1000.0)[450]

    uw, iy, f, th = centre("UW"), centre("IY"), centre("F"), centre("TH")
    assert uw[IDX["mouthPucker"]] > 0.5 and iy[IDX["mouthPucker"]] < 0.05
    assert iy[IDX["mouthStretchLeft"]] > 0.25 and uw[IDX["mouthStretchLeft"]] < 0.05
    assert f[IDX["mouthRollLower"]] > 0.4 and f[IDX["jawOpen"]] < 0.15
    assert 0.1 < th[IDX["tongueOut"]] < 0.5


def test_silence_is_closed_and_relaxed() -> None:
    curves = phone_curves(_mama_papa(), 60, FPS)
    assert np.abs(curves[:8]).max() < 1e-3  # 0-0.3 s, well before the first M
    assert np.abs(curves[-5:]).max() < 1e-3
    assert not curves[:, [i for i in range(52) if i not in MOUTH]].any()
    # No phones at all: nothing moves.
    assert not phone_curves([], 30, FPS).any()
    # Stress digits and noise phones.
    assert normalize_phone("aa1") == "AA" and normalize_phone("+NSN+") == "SIL"


@needs_espeak
def test_real_speech_closes_the_lips_on_bilabials(pocketsphinx: ModuleType) -> None:
    s = synth.make_sample("mama papa bob", ESPEAK, "neutral", 0.5, np.random.default_rng(0))
    bilabial = [(a + b) / 2 for p, a, b in s.phones if p in ("M", "P", "B")]
    vowels = [(a + b) / 2 for p, a, b in s.phones if p == "AA"]
    assert len(bilabial) == 6 and len(vowels) >= 3
    gap = _gap(s.exp)
    for c in bilabial:
        assert gap[round(c * FPS)] < 0.06, c  # the frame nearest the closure's centre
    assert max(gap[round(c * FPS)] for c in vowels) > 0.3


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("duration_s", [1.0, 2.37, 3.01])
def test_targets_have_the_right_length_and_range(duration_s: float) -> None:
    phones = [("SIL", 0.0, 0.3), ("M", 0.3, 0.4), ("AA", 0.4, 0.6), ("SIL", 0.6, duration_s)]
    for emotion in EMOTIONS:
        tg = synth.make_targets(phones, duration_s, emotion, 1.0, np.random.default_rng(0))
        n = math.ceil(duration_s * FPS - 1e-9)
        assert tg.exp.shape == (n, 52) and tg.pose.shape == (n, 6)
        assert tg.exp.dtype == np.float32 and tg.pose.dtype == np.float32
        assert tg.exp.min() >= 0.0 and tg.exp.max() <= 1.0


def test_targets_are_deterministic_and_validate_input() -> None:
    phones, end = _timeline(np.random.default_rng(0), 10.0)
    a = synth.make_targets(phones, end, "happy", 0.7, np.random.default_rng(5))
    b = synth.make_targets(phones, end, "happy", 0.7, np.random.default_rng(5))
    assert np.array_equal(a.exp, b.exp) and np.array_equal(a.pose, b.pose)
    with pytest.raises(ValueError, match="emotion"):
        synth.make_targets(phones, end, "bored", 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="intensity"):
        synth.make_targets(phones, end, "happy", 1.5, np.random.default_rng(0))


def test_emotion_shows_and_follows_intensity() -> None:
    phones, end = _timeline(np.random.default_rng(1), 20.0)
    smile = []
    for intensity in (0.3, 1.0):
        tg = synth.make_targets(phones, end, "happy", intensity, np.random.default_rng(2))
        smile.append(tg.exp[:, [IDX["mouthSmileLeft"], IDX["mouthSmileRight"]]].mean())
    neutral = synth.make_targets(phones, end, "neutral", 1.0, np.random.default_rng(2))
    assert neutral.exp[:, IDX["mouthSmileLeft"]].mean() < 0.05 < smile[0] < smile[1]
    sad = synth.make_targets(phones, end, "sad", 1.0, np.random.default_rng(2))
    assert sad.exp[:, IDX["browInnerUp"]].mean() > 0.5
    # Sad speech moves the jaw less than neutral speech.
    assert sad.exp[:, IDX["jawOpen"]].std() < neutral.exp[:, IDX["jawOpen"]].std()


def test_an_angry_face_presses_its_lips_in_pauses_and_parts_them_to_speak() -> None:
    phones, end = _timeline(np.random.default_rng(3), 20.0)
    tg = synth.make_targets(phones, end, "angry", 1.0, np.random.default_rng(4))
    t = (np.arange(len(tg.exp)) + 0.5) / 25.0
    talking = np.array([any(s <= x < e for p, s, e in phones if p != "SIL") for x in t])
    press = tg.exp[:, [IDX["mouthPressLeft"], IDX["mouthPressRight"]]].mean(1)
    # Pressed thin in the pauses (the emotion), mostly let go while words are spoken.
    assert press[~talking].mean() > 0.35
    assert press[talking].mean() < 0.7 * press[~talking].mean()


def test_blinks_over_a_long_timeline() -> None:
    phones, end = _timeline(np.random.default_rng(0), 600.0)
    t = np.arange(math.ceil(end * FPS)) / FPS
    speaking = synth._speaking(phones, t)
    rates = []
    in_pause = 0
    for k, emotion in enumerate(EMOTIONS):
        tg = synth.make_targets(phones, end, emotion, 0.8, np.random.default_rng(k))
        left, right = tg.exp[:, IDX["eyeBlinkLeft"]], tg.exp[:, IDX["eyeBlinkRight"]]
        onsets = np.flatnonzero((left[1:] > 0.5) & (left[:-1] <= 0.5)) + 1
        rates.append(len(onsets) / (end / 60.0))
        assert abs(len(onsets) - tg.blinks) <= 2
        in_pause += int((~speaking[onsets]).sum())
        # Both eyes together, with tiny differences.
        assert np.corrcoef(left, right)[0, 1] > 0.95 and not np.array_equal(left, right)
        # Each blink closes fully and lasts 150-310 ms: 2-8 frames above half-closed.
        above = np.diff((left > 0.5).astype(int))  # runs cut by the clip's ends are left out
        ups, downs = np.flatnonzero(above == 1), np.flatnonzero(above == -1)
        runs = downs[downs > ups[0]][: len(ups)] - ups[: len(downs[downs > ups[0]])]
        assert runs.min() >= 2 and runs.max() <= 8
    assert all(10.0 <= r <= 30.0 for r in rates), rates
    # Blinks come more often in pauses than their share of the time.
    assert in_pause / (sum(rates) * end / 60.0) > 1.3 * (~speaking).mean()


def test_head_pose_is_bounded_and_smooth() -> None:
    phones, end = _timeline(np.random.default_rng(3), 300.0)
    for k, emotion in enumerate(EMOTIONS):
        pose = synth.make_targets(phones, end, emotion, 1.0, np.random.default_rng(k)).pose
        assert np.abs(pose[:, :3]).max() <= synth.POSE_LIMIT_RAD
        assert np.abs(pose[:, 3:]).max() <= synth.TRANSLATION_LIMIT
        assert np.abs(np.diff(pose[:, :3], axis=0)).max() <= 0.02
        assert pose[:, :3].std(axis=0).min() > 0.005  # it does move


def test_head_nods_with_the_speech() -> None:
    phones, end = _timeline(np.random.default_rng(4), 120.0)
    t = np.arange(math.ceil(end * FPS)) / FPS
    speaking = synth._speaking(phones, t)
    motion_talk, motion_idle = [], []
    for k in range(4):
        pose = synth.make_targets(phones, end, "neutral", 0.5, np.random.default_rng(k)).pose
        speed = np.abs(np.diff(pose[:, 1]))
        motion_talk.append(speed[speaking[1:]].mean())
        motion_idle.append(speed[~speaking[1:]].mean())
    assert np.mean(motion_talk) > 1.2 * np.mean(motion_idle)


# --- augmentation -----------------------------------------------------------------------------


def test_augment_keeps_length_timing_and_finite_values() -> None:
    rng = np.random.default_rng(0)
    clean = np.zeros(2 * SAMPLE_RATE, np.float32)
    clean[SAMPLE_RATE // 2 : SAMPLE_RATE] = rng.normal(0.0, 0.2, SAMPLE_RATE // 2)  # a broadband burst
    for _ in range(30):
        y = synth.augment(clean, rng)
        assert y.shape == clean.shape and y.dtype == np.float32
        assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
        # Nothing moved in time: the best match of the clean signal is at lag 0.
        xcorr = correlate(y, clean, mode="full", method="fft")
        assert int(np.argmax(xcorr)) - (len(clean) - 1) == 0
    assert synth.augment(np.zeros(10, np.float32), rng).shape == (10,)
    with pytest.raises(ValueError, match="mono"):
        synth.augment(np.zeros((2, 100), np.float32), rng)


# --- dataset ----------------------------------------------------------------------------------


@needs_espeak
def test_build_dataset_writes_a_loadable_dataset(tmp_path: Path, pocketsphinx: ModuleType) -> None:
    out = synth.build_dataset(
        tmp_path / "ds", minutes=0.2, seed=0, split="train", progress=False, shard_utterances=2
    )
    assert len(list(out.glob("train-*.npz"))) >= 2
    summary = json.loads((out / "summary-train.json").read_text())
    assert summary["minutes"] >= 0.2 and summary["alignment_failures"] == 0
    ds = synth.load_dataset(out)
    n = len(ds)
    assert n == summary["utterances"] >= 3
    assert len(ds.audio_slices) == len(ds.frame_slices) == len(ds.voice) == len(ds.phones) == n
    assert ds.audio_offsets[0] == 0 and ds.audio_offsets[-1] == len(ds.audio) == ds["audio_offsets"][-1]
    assert ds.frame_offsets[-1] == len(ds.exp) and (np.diff(ds.frame_offsets) > 0).all()
    assert ds["exp"] is ds.exp
    assert ds.audio.dtype == np.int16 and ds.exp.shape == (ds.frame_slices[-1].stop, 52)
    assert ds.pose.shape == (len(ds.exp), 6) and ds.exp.min() >= 0.0 and ds.exp.max() <= 1.0
    assert set(ds.emotion.tolist()) <= set(range(len(EMOTIONS)))
    assert ((ds.intensity >= 0.3) & (ds.intensity <= 1.0)).all()
    for i in range(n):
        samples = ds.audio_slices[i].stop - ds.audio_slices[i].start
        frames = ds.frame_slices[i].stop - ds.frame_slices[i].start
        assert frames == math.ceil(samples / SAMPLE_RATE * FPS - 1e-9)
        assert ds.text[i] in corpus.sentences(split="train")
    # Voices cycle through the split's voices, emotions change every len(voices) utterances.
    voices = synth.available_voices("train")
    assert [v.split("@")[0] for v in ds.voice] == [voices[i % len(voices)].speaker for i in range(n)]
    a = ds.utterance_audio(0)
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0
    # One shard file loads alone; a directory with both splits needs the split named.
    first = synth.load_dataset(out / "train-00000.npz")
    assert len(first) == 2 and np.array_equal(first.exp, ds.exp[: first.frame_offsets[-1]])
    shutil.copy(out / "train-00000.npz", out / "val-00000.npz")
    with pytest.raises(ValueError, match="split"):
        synth.load_dataset(out)
    assert len(synth.load_dataset(out, split="train")) == n


@needs_espeak
def test_build_dataset_into_one_file(tmp_path: Path, pocketsphinx: ModuleType) -> None:
    path = synth.build_dataset(tmp_path / "val.npz", minutes=0.05, split="val", progress=False)
    assert path == tmp_path / "val.npz" and path.is_file()
    assert json.loads((tmp_path / "val.summary.json").read_text())["utterances"] == len(
        synth.load_dataset(path)
    )


@needs_espeak
def test_build_dataset_is_the_same_with_two_workers(tmp_path: Path, pocketsphinx: ModuleType) -> None:
    one = synth.load_dataset(synth.build_dataset(tmp_path / "a", minutes=0.08, split="val", progress=False))
    two = synth.load_dataset(
        synth.build_dataset(tmp_path / "b", minutes=0.08, split="val", workers=2, progress=False)
    )
    assert len(one) == len(two) >= 2 and one.text == two.text and one.phones == two.phones
    assert np.array_equal(one.audio, two.audio) and np.array_equal(one.exp, two.exp)
    assert np.array_equal(one.pose, two.pose)
