"""Train the FCG on synthesized (models.synth) or prepared datasets.

    python -m models.train --data data/train.npz --val data/val.npz --out assets/fcg --steps 18594

(what made assets/fcg; ``--minutes N`` trains for a time budget instead.)

Synthesizes the datasets first when the files do not exist. Resumable (``train_state.pt`` next to
the checkpoint), with a progress bar, a loss log (``log.csv``) and a plot (``loss.png``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.audio import LogMel, mel_windows
from models.fcg import FCG, PRESETS, FCGConfig, emotion_label
from models.rig import BLENDSHAPE_NAMES, EMOTIONS
from models.synth import augment, build_dataset, load_dataset

__all__ = ["FrameData", "prepare", "train"]

log = logging.getLogger(__name__)
_JAW = BLENDSHAPE_NAMES.index("jawOpen")


class FrameData:
    """All frames of a dataset as tensors: mel windows, coefficients, labels and history indices."""

    def __init__(self, mel: np.ndarray, coeffs: np.ndarray, labels: np.ndarray, starts: np.ndarray) -> None:
        self.mel = torch.from_numpy(mel)  # (V, N, 16, 80) float16: V audio versions
        self.coeffs = torch.from_numpy(coeffs)  # (N, 58) float32
        self.labels = torch.from_numpy(labels)  # (N, 9)
        self.starts = torch.from_numpy(starts)  # (N,) index of each frame's utterance start

    def __len__(self) -> int:
        return self.coeffs.shape[0]

    def batch(
        self, idx: torch.Tensor, model: FCG, version: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        tau = model.config.history
        v = version if version is not None else torch.zeros_like(idx)
        mel = self.mel[v, idx].float()
        past = idx[:, None] - torch.arange(tau, 0, -1)[None]  # (B, tau)
        valid = past >= self.starts[idx][:, None]
        hist = model.normalize(self.coeffs[past.clamp_min(0)]) * valid[..., None]
        return mel, self.labels[idx], hist, self.coeffs[idx]


def prepare(path: Path, config: FCGConfig, *, augmented: int, seed: int) -> FrameData:
    """Mel windows (clean + ``augmented`` noisy versions of every utterance) and targets of a dataset."""
    from tqdm import tqdm

    data = load_dataset(path)
    audio_cfg = config.audio_config()
    logmel = LogMel(audio_cfg)
    rng = np.random.default_rng(seed)
    a_off, f_off = data["audio_offsets"], data["frame_offsets"]
    n = int(f_off[-1])
    mel = np.zeros((1 + augmented, n, config.window_frames, config.n_mels), dtype=np.float16)
    starts = np.zeros(n, dtype=np.int64)
    for u in tqdm(range(len(a_off) - 1), desc=f"features {path.name}", unit="utt", disable=None):
        pcm = data["audio"][a_off[u] : a_off[u + 1]].astype(np.float32) / 32768.0
        f0, f1 = int(f_off[u]), int(f_off[u + 1])
        for k in range(1 + augmented):
            x = pcm if k == 0 else augment(pcm, rng)
            mel[k, f0:f1] = mel_windows(logmel(x), f1 - f0, audio_cfg)
        starts[f0:f1] = f0
    coeffs = np.concatenate([data["exp"], data["pose"]], axis=1).astype(np.float32)
    onehot = np.eye(len(EMOTIONS), dtype=np.float32)[np.repeat(data["emotion"], np.diff(f_off))]
    intensity = np.repeat(data["intensity"], np.diff(f_off)).astype(np.float32)
    labels = emotion_label(torch.from_numpy(onehot), torch.from_numpy(intensity)).numpy()
    return FrameData(mel, coeffs, labels, starts)


_MAX_SKIPPED = 20  # non-finite batches in a row before training gives up


@torch.no_grad()
def _validate(model: FCG, data: FrameData, max_frames: int = 4096) -> dict[str, float]:
    model.eval()
    idx = torch.arange(min(len(data), max_frames))
    mel, label, hist, target = data.batch(idx, model)
    nll = float(model(target, mel=mel, label=label, history=hist).nll.mean())
    # Lip sync of the mode, fed its own history (free-running, as at inference) per utterance.
    jaw_pred, jaw_true = [], []
    starts = data.starts[idx].unique()
    for s in starts[:12].tolist():
        end = int((data.starts == s).nonzero().max()) + 1
        frames = torch.arange(s, end)
        out = model.generate(data.mel[0, frames].float(), data.labels[frames], temperature=0.0)
        jaw_pred.append(out[:, _JAW])
        jaw_true.append(data.coeffs[frames, _JAW])
    p, t = torch.cat(jaw_pred), torch.cat(jaw_true)
    corr = float(torch.corrcoef(torch.stack([p, t]))[0, 1])
    model.train()
    return {"val_nll": nll, "val_jaw_corr": corr, "val_jaw_mae": float((p - t).abs().mean())}


def train(
    data_path: Path,
    val_path: Path,
    out: Path,
    *,
    preset: str = "paper",
    minutes: float = 30.0,
    batch_size: int = 256,
    lr: float = 5e-4,
    augmented: int = 1,
    seed: int = 0,
    threads: int = 1,
    max_steps: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Train for ``minutes`` of training time, or ``max_steps`` optimizer steps when given (the
    reproducible choice: the step count does not depend on the machine's speed). Resumes from
    ``out/train_state.pt`` if present. ``overrides``: FCGConfig fields replaced in the preset
    (ablations, e.g. ``{"history": 5}``)."""
    from tqdm import tqdm

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = replace(PRESETS[preset], **(overrides or {}))
    train_data = prepare(data_path, config, augmented=augmented, seed=seed)
    val_data = prepare(val_path, config, augmented=0, seed=seed + 1)
    model = FCG(config)
    model.set_statistics(train_data.coeffs, train_data.mel[0, :, -1].float())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    state_path = out / "train_state.pt"
    step, elapsed = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        log.info("resumed at step %d (%.1f min trained)", step, elapsed / 60)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.csv"
    new_log = not log_path.exists() or step == 0
    log_file = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log_file)
    if new_log:
        writer.writerow(
            ["step", "minutes", "lr", "nll", "expression", "latent", "val_nll", "val_jaw_corr", "val_jaw_mae"]
        )
    budget = minutes * 60.0
    gen = torch.Generator().manual_seed(seed + step)
    bar = tqdm(total=round(budget), initial=round(elapsed), unit="s", desc="train", disable=None)
    last_eval = elapsed
    model.train()
    running = np.zeros(3)
    count = 0
    skipped = 0  # non-finite batches in a row
    try:
        while (step < max_steps) if max_steps is not None else (elapsed < budget):
            t0 = time.monotonic()
            frac = step / max_steps if max_steps is not None else elapsed / budget
            for g in opt.param_groups:
                g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))  # cosine to lr/10
            idx = torch.randint(0, len(train_data), (batch_size,), generator=gen)
            version = torch.randint(0, train_data.mel.shape[0], (batch_size,), generator=gen)
            mel, label, hist, target = train_data.batch(idx, model, version)
            losses = model.losses(target, mel=mel, label=label, history=hist)
            loss = losses.total()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            if not (torch.isfinite(loss) and torch.isfinite(norm)):
                # One non-finite batch would poison every weight through Adam's moments: skip it.
                skipped += 1
                if skipped > _MAX_SKIPPED:
                    raise RuntimeError(
                        f"training diverged: {_MAX_SKIPPED} batches in a row gave a non-finite loss or "
                        f"gradient at step {step}; lower --lr or resume from an earlier train_state.pt"
                    )
                log.warning("step %d: non-finite loss or gradient, batch skipped", step)
                opt.zero_grad(set_to_none=True)
                continue
            skipped = 0
            opt.step()
            step += 1
            running += [float(v.detach()) for v in losses]
            count += 1
            dt = time.monotonic() - t0
            elapsed += dt
            bar.update(dt)
            done = step >= max_steps if max_steps is not None else elapsed >= budget
            if elapsed - last_eval >= 60.0 or done:
                metrics = _validate(model, val_data)
                mean = running / max(count, 1)
                writer.writerow([step, f"{elapsed / 60:.2f}", f"{opt.param_groups[0]['lr']:.2e}", *np.round(mean, 4),
                                 *(round(metrics[k], 4) for k in ("val_nll", "val_jaw_corr", "val_jaw_mae"))])  # fmt: skip
                log_file.flush()
                bar.set_postfix(nll=f"{mean[0]:.3f}", jaw_r=f"{metrics['val_jaw_corr']:.3f}")
                running[:] = 0
                count = 0
                last_eval = elapsed
                model.save_pretrained(out)
                tmp = state_path.with_suffix(".partial")
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                            "elapsed": elapsed}, tmp)  # fmt: skip
                tmp.replace(state_path)
    finally:
        bar.close()
        log_file.close()
    _plot(log_path, out / "loss.png")
    return out


def _plot(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    minutes = [float(r["minutes"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(minutes, [float(r["nll"]) for r in rows], label="train")
    axes[0].plot(minutes, [float(r["val_nll"]) for r in rows], label="validation (held-out voices)")
    axes[0].set_title("NLL per dimension")
    axes[0].legend()
    axes[1].plot(minutes, [float(r["expression"]) for r in rows])
    axes[1].set_title("expression term (train)")
    axes[2].plot(minutes, [float(r["val_jaw_corr"]) for r in rows])
    axes[2].set_title("validation jawOpen correlation (free-running)")
    for ax in axes:
        ax.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the FCG (synthesizing the data first if needed).")
    parser.add_argument("--data", type=Path, default=Path("data/train.npz"))
    parser.add_argument("--val", type=Path, default=Path("data/val.npz"))
    parser.add_argument("--out", type=Path, default=Path("assets/fcg"))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--minutes", type=float, default=30.0, help="training-time budget")
    parser.add_argument("--steps", type=int, default=None, help="train exactly this many steps instead")
    parser.add_argument(
        "--data-minutes", type=float, default=30.0, help="speech to synthesize if --data is missing"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one leaves a core free)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.data.exists():
        build_dataset(args.data, minutes=args.data_minutes, seed=args.seed, split="train")
    if not args.val.exists():
        build_dataset(args.val, minutes=max(args.data_minutes / 8, 2.0), seed=args.seed + 1, split="val")
    train(args.data, args.val, args.out, preset=args.preset, minutes=args.minutes, batch_size=args.batch_size,
          lr=args.lr, seed=args.seed, threads=args.threads, max_steps=args.steps)  # fmt: skip


if __name__ == "__main__":
    main()
