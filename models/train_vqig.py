"""Train VQIG (and the learned FlowWarp) on data made by ``python -m models.prepare``.

    python -m models.train_vqig --data data/vqig --out runs/vqig --preset lite --stage all --steps 20000

Stages (DESIGN.md, "VQIG"): 1, the codebook autoencoder (E_h, C, D_h) on face crops; 2, E_w on
warped frames, trained to land on the codes of the real frame; 3, phi, cross-attention, AdaIN and
the controllable feature transform by self-reenactment (the clip's source frame warped to a driving
frame's coefficients, compared with the driving frame). ``--stage warp`` trains FlowWarp (into
OUT/flowwarp). Losses: L1, multi-scale SSIM and image-gradient terms (no pretrained network is
needed), codebook and commitment terms, and a hinge adversarial loss from a small patch
discriminator after ``--adv-start`` steps. Resumable (``train_state.pt``); ``log.csv`` and PNG
sample grids under ``samples/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.flowwarp import FLOW_PRESETS, FlowWarp
from models.vqig import PRESETS, VQIG

__all__ = ["Batch", "PairData", "PatchDiscriminator", "TrainOptions", "gradient_loss", "ssim", "train"]

log = logging.getLogger(__name__)

_LOG_COLUMNS = ["stage", "step", "minutes", "lr", "loss", "l1", "ssim", "grad", "codebook", "commit",
                "latent", "code_ce", "code_acc", "g_adv", "d_loss", "codes_used"]  # fmt: skip
_CACHE_BYTES = 3 * 2**30  # datasets smaller than this (decoded) are kept in memory


# -- data ---------------------------------------------------------------------------------------
class Batch:
    """A batch on the training device: images (B, 3, S, S) in [-1, 1], coeffs (B, 58)."""

    def __init__(self, frame: Tensor, warped: Tensor, source: Tensor, coeffs: Tensor) -> None:
        self.frame, self.warped, self.source, self.coeffs = frame, warped, source, coeffs

    @classmethod
    def from_uint8(cls, items: dict[str, Tensor], device: torch.device) -> Batch:
        def img(x: Tensor) -> Tensor:
            return x.to(device, non_blocking=True).float() / 127.5 - 1.0

        return cls(
            img(items["frame"]), img(items["warped"]), img(items["source"]), items["coeffs"].to(device)
        )


class PairData(torch.utils.data.Dataset):
    """Every prepared frame with its warped input, its clip's source frame and its coefficients."""

    def __init__(self, root: Path, size: int, *, cache: bool | None = None) -> None:
        root = Path(root)
        clips = sorted(p.parent for p in root.glob("*/meta.npz"))
        if not clips:
            raise FileNotFoundError(
                f"no prepared clips (*/meta.npz) under {root}; run python -m models.prepare"
            )
        self.size = size
        self.items: list[tuple[Path, int, int]] = []  # (clip folder, frame, clip number)
        self.sources: list[Tensor] = []
        coeffs = []
        for c, clip in enumerate(clips):
            meta = np.load(clip / "meta.npz")
            coeffs.append(np.concatenate([meta["exp"], meta["pose"]], axis=1).astype(np.float32))
            self.items += [(clip, k, c) for k in range(len(meta["exp"]))]
            self.sources.append(self._read(clip / "source.png"))
        self.coeffs = torch.from_numpy(np.concatenate(coeffs))
        nbytes = len(self.items) * 2 * 3 * size * size
        self.cache = nbytes < _CACHE_BYTES if cache is None else cache
        self._cached: dict[int, tuple[Tensor, Tensor]] = {}

    def _read(self, path: Path) -> Tensor:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read {path}")
        if bgr.shape[:2] != (self.size, self.size):
            bgr = cv2.resize(bgr, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)  # (3, S, S) uint8 RGB

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        clip, k, c = self.items[i]
        pair = self._cached.get(i)
        if pair is None:
            pair = (
                self._read(clip / "frames" / f"{k:06d}.jpg"),
                self._read(clip / "warped" / f"{k:06d}.jpg"),
            )
            if self.cache:
                self._cached[i] = pair
        return {"frame": pair[0], "warped": pair[1], "source": self.sources[c], "coeffs": self.coeffs[i]}


def _batches(
    data: PairData, batch_size: int, seed: int, workers: int, device: torch.device
) -> Iterator[Batch]:
    gen = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(data, replacement=True, num_samples=2**40, generator=gen)
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )  # fmt: skip
    for items in loader:
        yield Batch.from_uint8(items, device)


# -- losses -------------------------------------------------------------------------------------
def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()  # (3, 1, k, k)


def ssim(x: Tensor, y: Tensor, *, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM (B,) of images (B, 3, H, W) in [-1, 1] (compared in [0, 1]); a Gaussian window.

    Always fp32, autocast or not: the variances are differences of nearly equal means, which
    bf16 cancels to noise on smooth images (an SSIM of 0.79 read as 0.51).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _ssim(x.float(), y.float(), window, sigma)


def _ssim(x: Tensor, y: Tensor, window: int, sigma: float) -> Tensor:
    x, y = (x + 1) / 2, (y + 1) / 2
    window = min(window, x.shape[-1] // 2 * 2 - 1)
    w = _gaussian_window(window, sigma * window / 11, x.device)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def gradient_loss(x: Tensor, y: Tensor) -> Tensor:
    """L1 between the horizontal and vertical image gradients (edges, no pretrained network)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
    dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def reconstruction_losses(x: Tensor, target: Tensor, scales: int = 3) -> dict[str, Tensor]:
    """L1 + multi-scale (1 - SSIM) + multi-scale gradient L1: the perceptual-free reconstruction terms."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _reconstruction_losses(x.float(), target.float(), scales)


def _reconstruction_losses(x: Tensor, target: Tensor, scales: int) -> dict[str, Tensor]:
    l1 = (x - target).abs().mean()
    s_loss, g_loss = x.new_zeros(()), x.new_zeros(())
    n = 0
    for _ in range(scales):
        if x.shape[-1] < 16:
            break
        s_loss = s_loss + (1 - ssim(x, target)).mean()
        g_loss = g_loss + gradient_loss(x, target)
        n += 1
        x, target = F.avg_pool2d(x, 2), F.avg_pool2d(target, 2)
    n = max(n, 1)
    return {"l1": l1, "ssim": s_loss / n, "grad": g_loss / n}


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: (B, 3, H, W) -> (B, 1, h, w) realness logits."""

    def __init__(self, image_size: int, channels: int = 64) -> None:
        super().__init__()
        n = max(1, min(3, int(math.log2(image_size)) - 4))
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, n + 1):
            c_out = channels * min(2**i, 8)
            layers += [
                nn.Conv2d(c, c_out, 4, 2 if i < n else 1, 1),
                nn.GroupNorm(8, c_out),
                nn.LeakyReLU(0.2),
            ]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# -- training -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainOptions:
    preset: str = "lite"
    steps: int | None = None  # per stage; None: train for ``minutes``
    minutes: float = 30.0  # per stage, when steps is None
    batch_size: int = 8
    lr: float = 2e-4
    adv_weight: float = 0.1
    adv_start: int = 5000  # steps before the discriminator joins (0: from the start; -1: never)
    restart_every: int = 25  # stage 1: re-seed unused codes this often (steps)
    log_every: int = 50
    sample_every: int = 500
    save_every: int = 1000
    workers: int = 0
    device: str = "auto"
    seed: int = 0


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to_rgb(x: Tensor) -> np.ndarray:
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def _save_grid(path: Path, columns: list[Tensor]) -> None:
    """Rows are samples, columns the given image batches (B, 3, H, W)."""
    rows = [np.concatenate([_to_rgb(col[i]) for col in columns], axis=1) for i in range(columns[0].shape[0])]
    grid = np.concatenate(rows, axis=0)
    if grid.shape[0] < 256:  # tiny models: enlarge so the grid can be looked at
        f = 256 // grid.shape[0] + 1
        grid = cv2.resize(grid, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


class _Trainer:
    """One stage of training: builds the optimizers, resumes, runs steps, logs, samples and saves."""

    def __init__(self, data: PairData, out: Path, stage: str, opts: TrainOptions) -> None:
        self.data, self.out, self.stage, self.opts = data, out, stage, opts
        self.device = _device(opts.device)
        self.flow = stage == "warp"
        if self.flow:
            self.model: nn.Module = self._load_flow()
            params = list(self.model.parameters())
        else:
            self.model = self._load_vqig()
            vqig = self._vqig
            for p in vqig.parameters():
                p.requires_grad_(False)
            params = vqig.stage_parameters(int(stage))
            for p in params:
                p.requires_grad_(True)
        self.model.to(self.device).train()
        self.opt = torch.optim.Adam(params, lr=opts.lr, betas=(0.5, 0.9))
        self.disc = PatchDiscriminator(data.size).to(self.device)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=opts.lr, betas=(0.5, 0.9))
        self.step, self.elapsed = 0, 0.0
        self.state_path = out / ("flowwarp" if self.flow else ".") / "train_state.pt"
        if self.state_path.exists():
            state = torch.load(self.state_path, weights_only=True, map_location=self.device)
            if state["stage"] == stage:
                self.opt.load_state_dict(state["optimizer"])
                self.disc.load_state_dict(state["disc"])
                self.disc_opt.load_state_dict(state["disc_optimizer"])
                self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
                log.info("stage %s: resumed at step %d (%.1f min)", stage, self.step, self.elapsed / 60)
        self.autocast = torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        )
        fixed = [data[i] for i in np.linspace(0, len(data) - 1, min(4, len(data))).astype(int)]
        self.fixed = Batch.from_uint8({k: torch.stack([f[k] for f in fixed]) for k in fixed[0]}, self.device)

    @property
    def _vqig(self) -> VQIG:
        assert isinstance(self.model, VQIG)
        return self.model

    def _load_vqig(self) -> VQIG:
        config = PRESETS[self.opts.preset]
        if config.image_size != self.data.size:
            raise ValueError(
                f"preset {self.opts.preset} is {config.image_size} px, the data {self.data.size}"
            )
        if (self.out / "model.safetensors").exists():
            model = VQIG.from_pretrained(self.out)
            if model.config != config:
                raise ValueError(f"{self.out} holds a different VQIG config than preset {self.opts.preset}")
            return model
        torch.manual_seed(self.opts.seed)
        return VQIG(config)

    def _load_flow(self) -> FlowWarp:
        path = self.out / "flowwarp"
        if (path / "model.safetensors").exists():
            return FlowWarp.from_pretrained(path)
        torch.manual_seed(self.opts.seed)
        config = FLOW_PRESETS[self.opts.preset]
        if config.image_size != self.data.size:
            raise ValueError(
                f"preset {self.opts.preset} is {config.image_size} px, the data {self.data.size}"
            )
        return FlowWarp(config)

    def finished(self) -> bool:
        o = self.opts
        return self.step >= o.steps if o.steps is not None else self.elapsed >= o.minutes * 60

    # one step ------------------------------------------------------------------------------
    def _generate(self, b: Batch, fidelity: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The stage's output image and its non-adversarial loss terms."""
        m = self.model
        if self.flow:
            assert isinstance(m, FlowWarp)
            out = m(b.source, b.coeffs).image
            return out, reconstruction_losses(out, b.frame)
        vqig = self._vqig
        if self.stage == "1":
            enc = vqig.encoder(b.frame)
            q = vqig.quantizer(enc.z)
            out = vqig.decoder(q.z_q)
            self._z, self._indices = enc.z, q.indices
            return out, {
                **reconstruction_losses(out, b.frame),
                "codebook": q.codebook_loss,
                "commit": q.commit_loss,
            }
        if self.stage == "2":
            with torch.no_grad():
                target = vqig.quantizer(vqig.encoder(b.frame).z).indices  # (B, h, w)
            z_w = vqig.warp_encoder(b.warped).z
            logits = -vqig.quantizer.distances(z_w)  # (B, h, w, K)
            self._indices = logits.argmax(-1)
            with torch.no_grad():
                out = vqig.decode(self._indices)
            terms = {
                "latent": F.mse_loss(z_w.float(), vqig.quantizer.lookup(target).float()),
                "code_ce": F.cross_entropy(logits.flatten(0, 2), target.flatten()),
                "code_acc": (self._indices == target).float().mean(),
                "l1": (out - b.frame).abs().mean(),
            }
            return out, terms
        with torch.no_grad():
            tokens = vqig.source_tokens(b.source)
        if fidelity is None:  # CodeFormer trains w = 1; half the batch gets another w so every w works
            fidelity = torch.rand(b.frame.shape[0], device=self.device)
            fidelity = torch.where(torch.rand_like(fidelity) < 0.5, torch.ones_like(fidelity), fidelity)
        res = vqig(b.warped, source=tokens, coeffs=b.coeffs, fidelity=fidelity)
        self._indices = res.quantize.indices
        return res.image, {**reconstruction_losses(res.image, b.frame), "commit": res.quantize.commit_loss}

    def _train_step(self, b: Batch) -> dict[str, float]:
        o = self.opts
        adversarial = self.stage != "2" and o.adv_start >= 0 and self.step >= o.adv_start
        with self.autocast:
            out, terms = self._generate(b)
            metrics = ("code_acc", "l1") if self.stage == "2" else ()  # logged, not optimized
            loss = sum(
                (v for k, v in terms.items() if k not in metrics), start=torch.zeros((), device=self.device)
            )
            if adversarial:
                terms["g_adv"] = -self.disc(out).float().mean()
                loss = loss + o.adv_weight * terms["g_adv"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
        self.opt.step()
        if adversarial:
            with self.autocast:
                d_loss = F.relu(1 - self.disc(b.frame)).mean() + F.relu(1 + self.disc(out.detach())).mean()
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_opt.step()
            terms["d_loss"] = d_loss
        if self.stage == "1" and o.restart_every and self.step % o.restart_every == 0:
            self._vqig.quantizer.restart_dead_codes(self._z)
        terms["loss"] = loss
        return {k: float(v.detach()) for k, v in terms.items()}

    # the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        from tqdm import tqdm

        o = self.opts
        if self.finished():
            log.info("stage %s: already trained (%d steps)", self.stage, self.step)
            return
        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a", newline="")
        writer = csv.DictWriter(log_file, fieldnames=_LOG_COLUMNS)
        if new_log:
            writer.writeheader()
        batches = _batches(self.data, o.batch_size, o.seed + self.step, o.workers, self.device)
        total = o.steps if o.steps is not None else round(o.minutes * 60)
        bar = tqdm(total=total, initial=self.step if o.steps is not None else round(self.elapsed),
                   desc=f"stage {self.stage}", unit="step" if o.steps is not None else "s", disable=None)  # fmt: skip
        sums: dict[str, float] = {}
        count = 0
        used = torch.zeros(self._vqig.config.codebook_size if not self.flow else 1, device=self.device)
        try:
            while not self.finished():
                t0 = time.monotonic()
                b = next(batches)
                for k, v in self._train_step(b).items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                if not self.flow:
                    used += torch.bincount(self._indices.flatten(), minlength=len(used))
                self.step += 1
                dt = time.monotonic() - t0
                self.elapsed += dt
                bar.update(1 if o.steps is not None else dt)
                done = self.finished()
                if self.step % o.log_every == 0 or done:
                    row: dict[str, object] = {k: f"{v / count:.5f}" for k, v in sums.items()}
                    row.update(stage=self.stage, step=self.step, minutes=f"{self.elapsed / 60:.2f}",
                               lr=f"{o.lr:.1e}", codes_used="" if self.flow else f"{float((used > 0).float().mean()):.3f}")  # fmt: skip
                    writer.writerow(row)
                    log_file.flush()
                    bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
                    sums, count = {}, 0
                    used.zero_()
                if self.step % o.sample_every == 0 or done:
                    self.sample()
                if self.step % o.save_every == 0 or done:
                    self.save()
        finally:
            bar.close()
            log_file.close()

    @torch.no_grad()
    def sample(self) -> Path:
        self.model.eval()
        b = self.fixed
        path = self.out / "samples" / f"stage{self.stage}_{self.step:06d}.png"
        with self.autocast:
            if self.stage in ("1", "2", "warp"):
                out, _ = self._generate(b)
                cols = [b.frame, out] if self.stage == "1" else [b.source, b.warped, out, b.frame]
            else:
                ones = torch.ones(b.frame.shape[0], device=self.device)
                outs = [self._generate(b, ones * w)[0] for w in (0.0, 0.5, 1.0)]
                cols = [b.source, b.warped, *outs, b.frame]
        _save_grid(path, cols)
        self.model.train()
        return path

    def save(self) -> None:
        target = self.out / "flowwarp" if self.flow else self.out
        self.model.save_pretrained(target)  # type: ignore[operator]
        tmp = self.state_path.with_suffix(".partial")
        torch.save({"stage": self.stage, "step": self.step, "elapsed": self.elapsed,
                    "optimizer": self.opt.state_dict(), "disc": self.disc.state_dict(),
                    "disc_optimizer": self.disc_opt.state_dict()}, tmp)  # fmt: skip
        tmp.replace(self.state_path)


def train(
    data: Path | PairData, out: Path, *, stages: tuple[str, ...] = ("1", "2", "3"), opts: TrainOptions
) -> Path:
    """Run the given stages in order (each resumes where it stopped). Returns ``out``."""
    torch.manual_seed(opts.seed)
    size = PRESETS[opts.preset].image_size
    pairs = data if isinstance(data, PairData) else PairData(Path(data), size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_options.json").write_text(json.dumps(opts.__dict__, indent=2) + "\n")
    for stage in stages:
        _Trainer(pairs, out, stage, opts).run()
    return out


def main(argv: list[str] | None = None) -> None:
    d = TrainOptions()
    p = argparse.ArgumentParser(prog="python -m models.train_vqig", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a folder made by python -m models.prepare")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    p.add_argument("--preset", choices=sorted(PRESETS), default=d.preset)
    p.add_argument("--stage", choices=["1", "2", "3", "all", "warp"], default="all")
    p.add_argument("--steps", type=int, default=None, help="steps per stage (else --minutes per stage)")
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--adv-weight", type=float, default=d.adv_weight)
    p.add_argument("--adv-start", type=int, default=d.adv_start, help="-1: no adversarial loss")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--sample-every", type=int, default=d.sample_every)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--workers", type=int, default=d.workers, help="data loader processes")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(a.threads)
    opts = TrainOptions(
        preset=a.preset, steps=a.steps, minutes=a.minutes, batch_size=a.batch_size, lr=a.lr,
        adv_weight=a.adv_weight, adv_start=a.adv_start, log_every=a.log_every, sample_every=a.sample_every,
        save_every=a.save_every, workers=a.workers, device=a.device, seed=a.seed,
    )  # fmt: skip
    stages = ("1", "2", "3") if a.stage == "all" else (a.stage,)
    print(f"training VQIG {a.preset} stages {', '.join(stages)} on {_device(a.device)}")
    train(a.data, a.out, stages=stages, opts=opts)
    print(a.out)


if __name__ == "__main__":
    main()
