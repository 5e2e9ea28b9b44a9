"""FCG: streaming == whole clip, checkpoints, training signal, transitions, the shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agent.commands import DEFAULT_FCG, load_fcg, speech_coefficients
from models.audio import load_audio
from models.fcg import FCG, PRESETS, CheckpointError, FCGConfig, emotion_label, label_schedule
from models.rig import BLENDSHAPE_NAMES, EMOTIONS
from tests.conftest import ASSETS

JAW = BLENDSHAPE_NAMES.index("jawOpen")
HAPPY = EMOTIONS.index("happy")


@pytest.fixture(autouse=True)
def _torch_seed() -> None:
    torch.manual_seed(0)


def _inputs(cfg: FCGConfig, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    mel = torch.randn(batch, cfg.window_frames, cfg.n_mels)
    weights = torch.nn.functional.one_hot(
        torch.randint(0, cfg.num_emotions, (batch,)), cfg.num_emotions
    ).float()
    label = emotion_label(weights, torch.rand(batch))
    history = torch.randn(batch, cfg.history, cfg.coeff_dim)
    coeffs = torch.rand(batch, cfg.coeff_dim)
    return mel, label, history, coeffs


def test_generate_equals_step_by_step() -> None:
    model = FCG(PRESETS["tiny"]).prepare_for_inference()
    mel, label, _, _ = _inputs(model.config, 12)
    whole = model.generate(mel, label, temperature=0.9, generator=torch.Generator().manual_seed(5))
    state = model.initial_state()
    gen = torch.Generator().manual_seed(5)
    frames = []
    for t in range(12):
        x, state = model.step(state, mel[t], label[t], temperature=0.9, generator=gen)
        frames.append(x)
    torch.testing.assert_close(whole, torch.stack(frames), rtol=0, atol=0)
    other = model.generate(mel, label, temperature=0.9, generator=torch.Generator().manual_seed(6))
    assert (other - whole).abs().max() > 1e-3  # another seed, another sample


def test_flows_invert_inside_the_model() -> None:
    model = FCG(PRESETS["tiny"])
    mel, label, history, coeffs = _inputs(model.config, 16)
    model(coeffs, mel=mel, label=label, history=history)  # initializes ActNorm
    model.eval()
    c = model.encode_context(mel, label, history)
    x = model.normalize(coeffs)
    z, ld_f = model.exp_flow(x[:, :52], context=c)
    back, ld_r = model.exp_flow.reverse(z, context=c)
    torch.testing.assert_close(back, x[:, :52], atol=1e-4, rtol=0)
    torch.testing.assert_close(ld_f + ld_r, torch.zeros(16), atol=1e-4, rtol=0)


def test_training_signal_overfits_a_batch() -> None:
    model = FCG(PRESETS["tiny"])
    mel, label, history, coeffs = _inputs(model.config, 32)
    model.set_statistics(coeffs, mel.reshape(-1, model.config.n_mels))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(120):
        loss = model.losses(coeffs, mel=mel, label=label, history=history).total()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < first - 1.0


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = FCG(PRESETS["tiny"])
    mel, label, history, coeffs = _inputs(model.config, 8)
    model(coeffs, mel=mel, label=label, history=history)
    model.eval()
    model.save_pretrained(tmp_path / "ck")
    again = FCG.from_pretrained(tmp_path / "ck").eval()
    assert again.config == model.config
    torch.testing.assert_close(
        again(coeffs, mel=mel, label=label, history=history).nll,
        model(coeffs, mel=mel, label=label, history=history).nll,
    )
    (tmp_path / "ck" / "config.json").write_text(
        (tmp_path / "ck" / "config.json").read_text().replace('"hidden": 16', '"hidden": 24')
    )
    with pytest.raises(CheckpointError, match="do not match"):
        FCG.from_pretrained(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="cannot read"):
        FCG.from_pretrained(tmp_path / "missing")


def test_label_schedule_has_no_jumps() -> None:
    labels = label_schedule(50, [(0, EMOTIONS.index("neutral"), 0.0), (20, HAPPY, 0.9)], transition_frames=10)
    assert labels.shape == (50, 9)
    torch.testing.assert_close(labels.sum(1) - labels[:, -1], torch.ones(50))  # weights sum to 1
    assert labels[19, HAPPY] == 0 and labels[30, HAPPY] == 1 and abs(float(labels[30, -1]) - 0.9) < 1e-6
    assert labels.diff(dim=0).abs().max() < 0.2  # spread over 10 frames, not one step


needs_checkpoint = pytest.mark.skipif(
    not (DEFAULT_FCG / "model.safetensors").exists(), reason="no trained FCG"
)


@pytest.fixture(scope="module")
def trained() -> FCG:
    return load_fcg()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(ASSETS / "demo_speech.wav")


@needs_checkpoint
def test_trained_model_opens_the_mouth_on_speech(trained: FCG, speech: np.ndarray) -> None:
    seq = speech_coefficients(trained, speech, seed=0)
    assert len(seq) == int(np.ceil(len(speech) / 16000 * 25))
    rms = np.array([np.sqrt(np.mean(speech[k * 640 : (k + 1) * 640] ** 2)) for k in range(len(seq))])
    loud, quiet = rms > 0.2 * rms.max(), rms < 0.01 * rms.max()
    assert seq.exp[loud, JAW].mean() > 2 * seq.exp[quiet, JAW].mean() + 0.03


@needs_checkpoint
def test_seeds_differ_emotions_show(trained: FCG, speech: np.ndarray) -> None:
    a = speech_coefficients(trained, speech, seed=0)
    b = speech_coefficients(trained, speech, seed=1)
    assert np.abs(a.pose - b.pose).mean() > 0.005  # different head motion
    assert np.corrcoef(a.exp[:, JAW], b.exp[:, JAW])[0, 1] > 0.5  # the same speech
    happy = speech_coefficients(trained, speech, emotion="happy", intensity=1.0, seed=0)
    smile = [BLENDSHAPE_NAMES.index("mouthSmileLeft"), BLENDSHAPE_NAMES.index("mouthSmileRight")]
    assert happy.exp[:, smile].mean() > a.exp[:, smile].mean() + 0.1


@needs_checkpoint
def test_emotion_change_is_smooth(trained: FCG, speech: np.ndarray) -> None:
    from models.audio import LogMel, mel_windows

    cfg = trained.config.audio_config()
    windows = torch.from_numpy(mel_windows(LogMel(cfg)(speech), 150, cfg))
    neutral = EMOTIONS.index("neutral")

    def run(transition: int) -> np.ndarray:
        labels = label_schedule(150, [(0, neutral, 0.0), (75, HAPPY, 1.0)], transition_frames=transition)
        return trained.generate(windows, labels, temperature=0.0).numpy()

    smooth, abrupt = run(12), run(1)
    smile = BLENDSHAPE_NAMES.index("mouthSmileLeft")
    assert smooth[110:, smile].mean() > smooth[:70, smile].mean() + 0.1  # it did change
    assert np.isfinite(smooth).all()
    # The abrupt switch jumps in one frame; the transition eases in over its first frames.
    jump = float(np.diff(abrupt[73:78, smile]).max())
    assert jump > 0.2
    assert float(np.diff(smooth[73:80, smile]).max()) < 0.5 * jump


@needs_checkpoint
def test_emotion_transfer_from_a_smiling_photo(trained: FCG, speech: np.ndarray) -> None:
    """The bundled portrait smiles: carried over through the flow's latent, the face smiles more."""
    from models.landmarks import FaceLandmarker, load_image
    from models.rig import Rig

    image = load_image(ASSETS / "portrait.png")
    with FaceLandmarker() as fl:
        reference = Rig(fl.detect(image)).photo_exp
    smile = [BLENDSHAPE_NAMES.index("mouthSmileLeft"), BLENDSHAPE_NAMES.index("mouthSmileRight")]
    assert reference[smile].mean() > 0.2
    plain = speech_coefficients(trained, speech, seed=0)
    carried = speech_coefficients(trained, speech, seed=0, reference_exp=reference)
    assert carried.exp[:, smile].mean() > plain.exp[:, smile].mean() + 0.05


@pytest.mark.skipif(
    __import__("shutil").which("espeak-ng") is None
    or __import__("importlib").util.find_spec("pocketsphinx") is None,
    reason="espeak-ng and pocketsphinx make the training data (setup.sh installs them)",
)
def test_training_command_end_to_end(tmp_path: Path) -> None:
    """Synthesize a tiny dataset, train the tiny preset a few steps, load what it wrote."""
    from models.train import main

    out = tmp_path / "fcg"
    args = ["--data", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz"), "--out", str(out),
            "--preset", "tiny", "--data-minutes", "0.2", "--steps", "4", "--batch-size", "16"]  # fmt: skip
    main(args)
    model = FCG.from_pretrained(out)
    assert model.config == PRESETS["tiny"]
    assert (out / "log.csv").read_text().count("\n") == 2  # header + the final evaluation
    assert (out / "loss.png").stat().st_size > 1000
    main(args[:-4] + ["--steps", "6", "--batch-size", "16"])  # resumes from train_state.pt
    assert (out / "log.csv").read_text().splitlines()[-1].startswith("6,")


def test_training_skips_a_non_finite_batch_and_gives_up_on_divergence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One NaN batch is skipped (the weights stay finite); a run that only makes NaN stops clearly."""
    from models import train as train_mod

    real = FCG.losses
    calls = {"n": 0}

    def flaky(self: FCG, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        out = real(self, *args, **kwargs)
        if calls["n"] == 2:  # the second batch goes bad
            return type(out)(*(v * float("nan") for v in out))
        return out

    monkeypatch.setattr(FCG, "losses", flaky)
    args = ["--data", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz"), "--out", str(tmp_path / "a"),
            "--preset", "tiny", "--data-minutes", "0.2", "--steps", "4", "--batch-size", "16"]  # fmt: skip
    train_mod.main(args)
    assert "non-finite loss or gradient, batch skipped" in caplog.text
    model = FCG.from_pretrained(tmp_path / "a")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert (tmp_path / "a" / "log.csv").read_text().splitlines()[-1].startswith("4,")  # 4 real steps

    def always_nan(self: FCG, *args: object, **kwargs: object) -> object:
        out = real(self, *args, **kwargs)
        return type(out)(*(v * float("nan") for v in out))

    monkeypatch.setattr(FCG, "losses", always_nan)
    with pytest.raises(RuntimeError, match="training diverged"):
        train_mod.main(args[:5] + [str(tmp_path / "b")] + args[6:])
