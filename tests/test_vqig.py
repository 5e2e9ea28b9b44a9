"""VQIG, FlowWarp, data preparation, training, the Refiner and its integration: tiny configs on the CPU.

The dataset is made here: the bundled portrait rendered by MeshWarp under random coefficients
(targets with the painted mouth and eyes, inputs without them), at 32x32.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from models.flowwarp import FLOW_PRESETS, FlowWarp, FlowWarpRenderer
from models.prepare import synthesize
from models.refine import Refiner
from models.train_vqig import PairData, TrainOptions, reconstruction_losses, ssim, train
from models.vqig import PRESETS, VQIG, CheckpointError, VectorQuantizer

ROOT = Path(__file__).resolve().parent.parent
TINY = PRESETS["tiny"]


def _log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _images(data: PairData, key: str, idx: list[int] | None = None) -> torch.Tensor:
    idx = list(range(len(data))) if idx is None else idx
    return torch.stack([data[i][key] for i in idx]).float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PairData:
    root = tmp_path_factory.mktemp("vqig_data")
    synthesize(root, frames=64, size=32, seed=0)
    return PairData(root, 32)


@pytest.fixture(scope="module")
def trained(dataset: PairData, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VQIG]:
    """Stages 1-3 of a tiny model, a few hundred steps in all (about 20-40 s on two busy cores)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("vqig_run")
    common = dict(preset="tiny", batch_size=8, lr=1e-3, log_every=25, sample_every=10_000, save_every=10_000)
    train(dataset, out, stages=("1",), opts=TrainOptions(steps=250, adv_start=200, **common))  # type: ignore[arg-type]
    train(dataset, out, stages=("2",), opts=TrainOptions(steps=80, **common))  # type: ignore[arg-type]
    train(dataset, out, stages=("3",), opts=TrainOptions(steps=150, adv_start=-1, **common))  # type: ignore[arg-type]
    return out, VQIG.from_pretrained(out).eval()


# -- model --------------------------------------------------------------------------------------
def test_presets() -> None:
    assert PRESETS["full"].image_size == 512 and PRESETS["full"].latent_size == 16
    assert PRESETS["lite"].image_size == 256 and PRESETS["lite"].latent_size == 16
    assert TINY.latent_size == 8
    with pytest.raises(ValueError, match="divisible"):
        type(TINY)(image_size=34, channels=(16, 32, 32))


def test_shapes() -> None:
    torch.manual_seed(0)
    model = VQIG(TINY).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    indices = model.encode(x)
    assert indices.shape == (2, 8, 8) and indices.dtype == torch.int64
    assert int(indices.min()) >= 0 and int(indices.max()) < TINY.codebook_size
    assert model.decode(indices).shape == (2, 3, 32, 32)
    tokens = model.source_tokens(x)
    assert tokens.shape == (2, 64, TINY.code_dim)
    out = model(x, source=tokens, coeffs=torch.zeros(2, 58), fidelity=torch.ones(2))
    assert out.image.shape == (2, 3, 32, 32) and torch.isfinite(out.image).all()
    assert out.z_w.shape == (2, TINY.code_dim, 8, 8) and out.quantize.indices.shape == (2, 8, 8)
    with pytest.raises(ValueError, match="expected images"):
        model.encode(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="coeffs"):
        model(x, source=tokens, coeffs=torch.zeros(2, 52), fidelity=torch.ones(2))


def test_codebook_lookup_and_straight_through() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4, beta=0.25)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    # Nearest code by brute force, and z_q equals the looked-up codes in value.
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(flat, q.embedding.weight.detach()).argmin(-1).reshape(2, 3, 3)
    assert torch.equal(out.indices, brute)
    torch.testing.assert_close(out.z_q, q.lookup(out.indices))
    # Straight-through: the gradient reaching z is exactly the gradient at z_q.
    g = torch.randn_like(z)
    (out.z_q * g).sum().backward()
    torch.testing.assert_close(z.grad, g)
    # The commitment term trains the encoder only, the codebook term the codebook only.
    z.grad = None
    q.embedding.weight.grad = None
    out = q(z)
    out.commit_loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0 and q.embedding.weight.grad is None
    z.grad = None
    out = q(z)
    out.codebook_loss.backward()
    assert z.grad is None and q.embedding.weight.grad.abs().sum() > 0
    torch.testing.assert_close(out.commit_loss.detach(), 0.25 * out.codebook_loss.detach())


def test_usage_statistics_and_dead_code_restart() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(8, 2).train()
    z = torch.randn(1, 2, 4, 4) + 10.0  # far from every initial code: one code takes everything
    q(z)
    assert int((q.code_usage > 0).sum()) == 1
    restarted = q.restart_dead_codes(z)
    assert restarted == 7
    out = q(z)
    assert len(out.indices.unique()) > 1  # the re-seeded codes now sit on the data and get used


def test_fresh_stage3_path_is_stage2_output() -> None:
    """phi, cross-attention, AdaIN and CFT start at zero: stage 3 starts from stage 2's output, any w."""
    torch.manual_seed(0)
    model = VQIG(TINY).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    tokens = model.source_tokens(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        plain = model.decoder(model.quantizer(model.warp_encoder(x).z).z_q)
        for w in (0.0, 1.0):
            out = model(x, source=tokens, coeffs=torch.rand(1, 58), fidelity=torch.tensor([w])).image
            torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VQIG(TINY).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = VQIG.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == TINY
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = model(x, source=model.source_tokens(x), coeffs=torch.ones(1, 58), fidelity=torch.ones(1)).image
        b = loaded(x, source=loaded.source_tokens(x), coeffs=torch.ones(1, 58), fidelity=torch.ones(1)).image
    assert torch.equal(a, b)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    del state["quantizer.embedding.weight"]
    save_file(state, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="quantizer.embedding.weight"):
        VQIG.from_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="cannot read"):
        VQIG.from_pretrained(tmp_path / "missing")


def test_ssim_and_losses() -> None:
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-4)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert float(ssim(x, noisy).mean()) < 0.9
    terms = reconstruction_losses(noisy, x)
    assert set(terms) == {"l1", "ssim", "grad"} and all(float(v) > 0 for v in terms.values())
    assert all(float(v) < 1e-6 for v in reconstruction_losses(x, x).values())


# -- training -----------------------------------------------------------------------------------
def test_synthesized_dataset(dataset: PairData) -> None:
    assert len(dataset) == 64 and len(dataset.sources) == 1
    item = dataset[0]
    assert item["frame"].shape == (3, 32, 32) and item["frame"].dtype == torch.uint8
    assert item["coeffs"].shape == (58,)
    # Inputs lack the painted layers: they differ from the targets, but only a little.
    diff = (_images(dataset, "frame") - _images(dataset, "warped")).abs().mean()
    assert 0.0 < float(diff) < 0.05


def test_training_reduces_loss_and_uses_the_codebook(dataset: PairData, trained: tuple[Path, VQIG]) -> None:
    out, model = trained
    frames = _images(dataset, "frame")
    torch.manual_seed(0)
    fresh = VQIG(TINY).eval()
    with torch.no_grad():
        before = float((fresh.decode(fresh.encode(frames)) - frames).abs().mean())
        after = float((model.decode(model.encode(frames)) - frames).abs().mean())
        used = len(model.encode(frames).unique()) / TINY.codebook_size
    assert after < 0.5 * before, (before, after)
    assert used > 0.5, used
    rows = _log(out / "log.csv")
    stage1 = [float(r["l1"]) for r in rows if r["stage"] == "1"]
    assert stage1[-1] < 0.5 * stage1[0]
    assert any(r["d_loss"] for r in rows if r["stage"] == "1")  # the discriminator joined at step 200
    acc = [float(r["code_acc"]) for r in rows if r["stage"] == "2"]
    assert acc[-1] > 0.5  # E_w lands on the real frame's codes
    stage3 = [float(r["l1"]) for r in rows if r["stage"] == "3"]
    assert stage3[-1] < stage3[0]
    grids = sorted((out / "samples").glob("stage3_*.png"))
    assert grids and grids[-1].stat().st_size > 1000


def test_higher_fidelity_stays_closer_to_the_input(dataset: PairData, trained: tuple[Path, VQIG]) -> None:
    _, model = trained
    warped = _images(dataset, "warped")
    tokens = model.source_tokens(_images(dataset, "source", [0]).expand(len(dataset), -1, -1, -1))
    coeffs = dataset.coeffs
    scores = []
    with torch.no_grad():
        for w in (0.0, 0.5, 1.0):
            out = model(warped, source=tokens, coeffs=coeffs, fidelity=torch.full((len(dataset),), w)).image
            scores.append(float(ssim(out, warped).mean()))
    assert scores[2] > scores[0] + 0.01, scores
    assert scores[1] >= scores[0], scores


def test_training_resumes(dataset: PairData, tmp_path: Path) -> None:
    opts = TrainOptions(preset="tiny", steps=6, batch_size=4, log_every=3, sample_every=100, save_every=3)
    train(dataset, tmp_path, stages=("1",), opts=opts)
    first = (tmp_path / "model.safetensors").read_bytes()
    train(dataset, tmp_path, stages=("1",), opts=opts)  # already done: nothing changes
    assert (tmp_path / "model.safetensors").read_bytes() == first
    train(dataset, tmp_path, stages=("1",), opts=TrainOptions(**{**opts.__dict__, "steps": 9}))
    steps = [int(r["step"]) for r in _log(tmp_path / "log.csv")]
    assert steps == [3, 6, 9]  # resumed at 6, not restarted
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["step"] == 9


# -- FlowWarp -----------------------------------------------------------------------------------
def test_flowwarp_starts_as_identity_and_learns(dataset: PairData, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FlowWarp(FLOW_PRESETS["tiny"])
    source = _images(dataset, "source", [0])
    out = model(source, torch.rand(1, 58))
    assert out.flow.shape == (1, 2, 32, 32)
    torch.testing.assert_close(out.image, source, atol=1e-5, rtol=1e-5)
    out.image.sum().backward()
    assert model.to_flow.weight.grad is not None and model.to_flow.weight.grad.abs().sum() > 0
    opts = TrainOptions(preset="tiny", steps=120, batch_size=8, lr=1e-3, adv_start=-1, log_every=40,
                        sample_every=1000, save_every=1000)  # fmt: skip
    train(dataset, tmp_path, stages=("warp",), opts=opts)
    l1 = [float(r["l1"]) for r in _log(tmp_path / "log.csv")]
    assert l1[-1] < l1[0]
    trained = FlowWarp.from_pretrained(tmp_path / "flowwarp")
    photo = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    frame = FlowWarpRenderer(trained, photo).render(np.zeros(52), np.zeros(6))
    assert frame.shape == (48, 40, 3) and frame.dtype == np.uint8


# -- Refiner ------------------------------------------------------------------------------------
def test_refiner_frames_and_fallback(
    dataset: PairData,
    trained: tuple[Path, VQIG],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util

    import models.refine

    if importlib.util.find_spec("torch_tensorrt") is None:
        monkeypatch.setattr(models.refine, "_has_c_compiler", lambda: False)  # and no compiler: eager
        refiner = Refiner(trained[0], device="cpu", compile="tensorrt", fidelity=1.0)
        assert refiner.compile_path == "none"
        line = capsys.readouterr().err
        assert "torch_tensorrt is not installed" in line and "compile=none" in line
    else:
        refiner = Refiner(trained[0], device="cpu", compile="none", fidelity=1.0)
    import cv2

    def frame(key: str) -> np.ndarray:
        return cv2.resize(dataset[3][key].permute(1, 2, 0).numpy(), (64, 64), interpolation=cv2.INTER_CUBIC)

    source, warped = frame("source"), frame("warped")
    out = refiner(warped, source, dataset.coeffs[3].numpy())
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # The model is 32x32: the 64x64 frame keeps its own detail and receives an upscaled correction.
    assert 0 < np.abs(out.astype(int) - warped).mean() < 10
    refiner.fidelity = 0.0
    assert not np.array_equal(refiner(warped, source, np.zeros(58)), out)
    with pytest.raises(ValueError, match="fidelity"):
        refiner.fidelity = 1.5
    with pytest.raises(ValueError, match="58"):
        refiner(warped, source, np.zeros(52))
    with pytest.raises(TypeError, match="uint8"):
        refiner(warped.astype(np.float32), source, np.zeros(58))
    with pytest.raises(ValueError, match="compile"):
        Refiner(trained[0], compile="xla")  # type: ignore[arg-type]
    # A compiled path that breaks at run time is replaced by eager, once, with one line.
    refiner.fidelity = 1.0

    def broken(*args: object) -> torch.Tensor:
        raise AssertionError("cudagraph tls")

    refiner.net, refiner.compile_path = broken, "inductor"  # type: ignore[assignment]
    capsys.readouterr()
    assert np.array_equal(refiner(warped, source, dataset.coeffs[3].numpy()), out)
    assert refiner.compile_path == "none" and "continuing eager" in capsys.readouterr().err


def test_animate_with_vqig(
    trained: tuple[Path, VQIG], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agent import commands
    from agent.errors import CheckpointError as AgentCheckpointError
    from agent.errors import ConfigError
    from models.coeffs import CoeffSequence, save_coeffs

    exp = np.zeros((3, 52), np.float32)
    exp[:, 24] = [0.0, 0.4, 0.8]  # jawOpen
    coeffs = save_coeffs(
        tmp_path / "c.npz", CoeffSequence(exp=exp, pose=np.zeros((3, 6), np.float32), fps=25.0)
    )
    image = ROOT / "assets" / "portrait.png"
    with caplog.at_level(logging.INFO):
        plain = commands.animate(image, coeffs, tmp_path / "plain.mp4")
    assert "MeshWarp's output stands" in caplog.text
    refined = commands.animate(
        image, coeffs, tmp_path / "vqig.mp4", vqig=trained[0], fidelity=1.0, vqig_compile="none"
    )
    assert plain.stat().st_size > 0 and refined.stat().st_size > 0
    from streaming.file import iter_frames

    a, b = next(iter_frames(plain)), next(iter_frames(refined))
    assert a.shape == b.shape == (512, 512, 3) and not np.array_equal(a, b)
    with pytest.raises(ConfigError, match="fidelity"):
        commands.load_refiner(trained[0], fidelity=2.0)
    with pytest.raises(AgentCheckpointError, match="train_vqig"):
        commands.load_refiner(tmp_path / "nothing")


def test_bench_runs_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.vqig import main

    main(["--device", "cpu", "--configs", "tiny", "--compile", "none", "--frames", "2"])
    out = capsys.readouterr().out
    assert "| tiny | 32 |" in out and "| none |" in out


# -- data preparation ---------------------------------------------------------------------------
def test_prepare_videos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models.landmarks import FaceLandmarker, load_image
    from models.meshwarp import MeshWarp
    from models.prepare import main
    from streaming.file import Mp4Writer

    photo = load_image(ROOT / "assets" / "portrait.png")
    with FaceLandmarker() as still:
        warp = MeshWarp(photo, still.detect(photo))
    videos = tmp_path / "videos" / "M003" / "front"
    videos.mkdir(parents=True)
    jaw = np.zeros(52)
    with Mp4Writer(
        videos / "talk.mp4", fps=25, size=(512, 512), audio=ROOT / "assets" / "demo_speech.wav"
    ) as w:
        for t in range(6):
            jaw[24] = 0.15 * t
            w.write(warp.render(jaw, np.array([0.02 * t, 0, 0, 0, 0, 0])))
    rng = np.random.default_rng(0)
    with Mp4Writer(videos / "noface.mp4", fps=25, size=(128, 96)) as w:
        for _ in range(3):
            w.write(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    out = tmp_path / "prepared"
    assert main([str(tmp_path / "videos"), str(out), "--size", "256"]) == 0
    printed = capsys.readouterr().out
    assert "1 clips, 6 frames" in printed and "noface.mp4: no face found" in printed
    clip = out / "M003__front__talk"
    meta = np.load(clip / "meta.npz")
    assert (
        meta["exp"].shape == (6, 52)
        and meta["pose"].shape == (6, 6)
        and meta["landmarks"].shape == (6, 478, 3)
    )
    assert meta["mel"].shape[1] == 80 and meta["mel"].shape[0] > 0  # the soundtrack's log-mel
    assert meta["exp"][-1, 24] > meta["exp"][0, 24] + 0.2  # the fitted jaw opens as it was driven
    assert len(list((clip / "frames").glob("*.jpg"))) == 6 and len(list((clip / "warped").glob("*.jpg"))) == 6
    import json

    index = json.loads((out / "index.json").read_text())
    assert [c["name"] for c in index["clips"]] == ["M003__front__talk"]
    assert index["skipped"][0]["reason"] == "no face found"
    data = PairData(out, 32)  # what the trainer reads
    assert len(data) == 6 and data[5]["warped"].shape == (3, 32, 32)
