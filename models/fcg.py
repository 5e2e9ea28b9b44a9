"""FCG: the flow-based coefficient generator of FlowVQTalker (Tan et al., CVPR 2024).

Speech (a log-mel window per video frame), an emotion label and the last tau frames of
coefficients condition two normalizing flows: ExpFlow over the 52 blendshapes (latent: a mixture
of multivariate Student's t, one component per emotion) and PoseFlow over the 6-d head pose
(latent: standard Gaussian). Sampling the latents with a temperature gives the one-to-many
mapping: different blinks, head motion and intensity for the same speech.

Layout (DESIGN.md, measured on this CPU): the paper's 2-layer, 8-head Transformer runs once per
frame as a shared context encoder over the tau past frames plus the current audio token, and
feeds small coupling networks, instead of living inside each of the 2 x 16 couplings.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.audio import AudioConfig
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.distributions import StandardNormal, StudentTMixture
from models.flow import Flow
from models.transformer import ContextEncoder

__all__ = [
    "FCG",
    "PRESETS",
    "CheckpointError",
    "FCGConfig",
    "FCGState",
    "FlowOutput",
    "TrainLosses",
    "emotion_label",
]

FORMAT_VERSION = 1
_MAX_NOISE = 3.5  # latent noise beyond this many scale units is clipped when sampling
_MAX_DEVIATION = 8.0  # generated coefficients stay within this many data standard deviations


@dataclass(frozen=True)
class FCGConfig:
    """FCG hyperparameters (paper values where the paper gives them)."""

    num_exp: int = 52  # E, expression coefficients
    num_pose: int = 6
    num_emotions: int = 8
    n_mels: int = 80
    window_frames: int = 16  # mel frames per video frame's audio window
    lookahead_ms: float = 80.0  # the window ends this long after the frame's time (paper: centred, 100)
    history: int = 10  # tau, past frames of coefficients in the context
    d_model: int = 64  # context transformer width
    num_heads: int = 8
    num_layers: int = 2
    audio_dim: int = 64  # f_a
    emotion_dim: int = 32  # f_e
    exp_steps: int = 16  # K for ExpFlow
    pose_steps: int = 16  # K for PoseFlow
    hidden: int = 128  # coupling network width
    nu: float = 50.0  # Student's t degrees of freedom
    neutral_emotion: int = 5  # index of "neutral" among the emotions (models.rig.EMOTIONS)
    history_dropout: float = 0.7  # MoGlow-style data dropout on the history, training only
    history_noise: float = 0.3  # Gaussian noise on the kept history (normalized units), training only

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "history_noise":
                if v < 0.0:
                    raise ValueError(f"history_noise must be >= 0, got {v}")
            elif f.name == "history_dropout":
                if not 0.0 <= v < 1.0:
                    raise ValueError(f"history_dropout must be in [0, 1), got {v}")
            elif f.name in ("history", "neutral_emotion", "lookahead_ms"):  # 0: no look-ahead
                if v < 0:
                    raise ValueError(f"{f.name} must be >= 0, got {v}")
            elif v <= 0:
                raise ValueError(f"{f.name} must be positive, got {v}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")

    def audio_config(self) -> AudioConfig:
        """The audio front end this model was trained with."""
        return AudioConfig(
            n_mels=self.n_mels, window_frames=self.window_frames, lookahead_ms=self.lookahead_ms
        )

    @property
    def context_dim(self) -> int:
        return self.d_model + self.emotion_dim

    @property
    def coeff_dim(self) -> int:
        return self.num_exp + self.num_pose


PRESETS: dict[str, FCGConfig] = {
    "paper": FCGConfig(),
    "tiny": FCGConfig(
        d_model=16, num_heads=2, audio_dim=16, emotion_dim=8, exp_steps=2, pose_steps=2, hidden=16
    ),
}


class TrainLosses(NamedTuple):
    nll: Tensor  # scalar, mean negative log-likelihood per dimension
    expression: Tensor  # scalar, MSE of the latent-centre coefficients against the target
    latent: Tensor  # scalar, latent consistency

    def total(self, expression_weight: float = 1.0, latent_weight: float = 1e-3) -> Tensor:
        return self.nll + expression_weight * self.expression + latent_weight * self.latent


class FlowOutput(NamedTuple):
    nll: Tensor  # (B,) negative log-likelihood per dimension (nats), exp and pose together
    log_prob: Tensor  # (B,) log p(exp, pose | context)
    z_exp: Tensor  # (B, E)
    z_pose: Tensor  # (B, 6)


@dataclass
class FCGState:
    """Streaming state of one sequence: the last tau frames of normalized coefficients, and the
    latent noise of the last frame (the sampling noise is correlated in time, see FCG.step)."""

    history: Tensor  # (1, tau, E + 6)
    noise_exp: Tensor  # (1, E), unit-scale deviation of ExpFlow's latent from its centre
    noise_pose: Tensor  # (1, 6)


def emotion_label(weights: Tensor, intensity: Tensor) -> Tensor:
    """The 9-d label: emotion weights (B, 8) (one-hot, or a blend during a transition) + intensity (B,)."""
    return torch.cat([weights, intensity[:, None]], dim=1)


def label_schedule(
    num_frames: int,
    changes: list[tuple[int, int, float]],
    *,
    num_emotions: int = 8,
    transition_frames: int = 10,
) -> Tensor:
    """Per-frame labels (num_frames, num_emotions + 1) from emotion changes.

    ``changes`` are (frame, emotion index, intensity), sorted by frame; the first applies from
    frame 0. Each change blends from the label before it over ``transition_frames`` frames with a
    smoothstep, so neither the emotion weights nor the intensity jump (the paper cannot
    interpolate between emotions; its Student's t mixture, blended, can).
    """
    if not changes:
        raise ValueError("expected at least one (frame, emotion, intensity) change")
    out = torch.zeros(num_frames, num_emotions + 1)
    current = torch.zeros(num_emotions + 1)
    current[changes[0][1]] = 1.0
    current[-1] = changes[0][2]
    out[:] = current
    for frame, emotion, intensity in changes[1:]:
        target = torch.zeros(num_emotions + 1)
        target[emotion] = 1.0
        target[-1] = intensity
        t = torch.arange(num_frames, dtype=torch.float32) - frame
        a = (t / max(transition_frames, 1)).clamp(0.0, 1.0)
        a = (a * a * (3.0 - 2.0 * a))[:, None]  # smoothstep
        out = torch.where((t >= 0)[:, None], out * (1 - a) + target * a, out)
        current = target
    return out


class _AudioEncoder(nn.Module):
    """E_a: a 1-D CNN over time with the mel bins as channels, then an MLP: (B, 16, 80) -> (B, 64)."""

    def __init__(self, cfg: FCGConfig) -> None:
        super().__init__()
        c = cfg.d_model
        self.conv = nn.Sequential(
            nn.Conv1d(cfg.n_mels, c, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(c, c, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(c, c, 3, stride=2, padding=1),
            nn.GELU(),
        )
        steps = (cfg.window_frames + 3) // 4
        self.mlp = nn.Sequential(
            nn.Linear(c * steps, 2 * cfg.audio_dim), nn.GELU(), nn.Linear(2 * cfg.audio_dim, cfg.audio_dim)
        )

    def forward(self, mel: Tensor) -> Tensor:
        h = self.conv(mel.transpose(1, 2))  # (B, C, T')
        return self.mlp(h.flatten(1))


class FCG(nn.Module):
    """Audio + emotion + history -> distributions over expression and pose coefficients."""

    dequantize = 0.01  # raw units of noise added to training targets

    def __init__(self, config: FCGConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.audio_encoder = _AudioEncoder(cfg)
        self.emotion_encoder = nn.Sequential(
            nn.Linear(cfg.num_emotions + 1, cfg.emotion_dim),
            nn.GELU(),
            nn.Linear(cfg.emotion_dim, cfg.emotion_dim),
        )
        self.history_in = nn.Linear(cfg.coeff_dim, cfg.d_model)
        self.audio_in = nn.Linear(cfg.audio_dim + cfg.emotion_dim, cfg.d_model)
        self.context = ContextEncoder(cfg.d_model, cfg.num_heads, cfg.num_layers, max_len=cfg.history + 1)
        self.exp_flow = Flow(cfg.num_exp, cfg.context_dim, cfg.exp_steps, cfg.hidden)
        self.pose_flow = Flow(cfg.num_pose, cfg.context_dim, cfg.pose_steps, cfg.hidden)
        self.exp_prior = StudentTMixture(cfg.num_exp, cfg.num_emotions, nu=cfg.nu)
        self.pose_prior = StandardNormal(cfg.num_pose)
        # Data statistics: the flows see normalized coefficients.
        self.register_buffer("coeff_mean", torch.zeros(cfg.coeff_dim))
        self.register_buffer("coeff_std", torch.ones(cfg.coeff_dim))
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))

    # -- normalization ----------------------------------------------------------------------
    def set_statistics(self, coeffs: Tensor, mel: Tensor) -> None:
        """Record normalization statistics: coeffs (N, E + 6), mel frames (M, n_mels)."""
        with torch.no_grad():
            self.coeff_mean.copy_(coeffs.mean(0))
            # Floor the scale: shapes that are almost never used must not blow up when they are.
            self.coeff_std.copy_(coeffs.std(0).clamp_min(0.05))
            self.mel_mean.copy_(mel.mean(0))
            self.mel_std.copy_(mel.std(0).clamp_min(1e-3))

    def normalize(self, coeffs: Tensor) -> Tensor:
        return (coeffs - self.coeff_mean) / self.coeff_std

    def denormalize(self, coeffs: Tensor) -> Tensor:
        return coeffs * self.coeff_std + self.coeff_mean

    # -- conditioning -------------------------------------------------------------------------
    def encode_context(self, mel: Tensor, label: Tensor, history: Tensor) -> Tensor:
        """Context c_t (B, context_dim) from mel windows (B, 16, 80), labels (B, 9), history (B, tau, E+6).

        The history is in normalized units; zeros stand for frames before the start.
        """
        f_a = self.audio_encoder((mel - self.mel_mean) / self.mel_std)
        f_e = self.emotion_encoder(label)
        token = self.audio_in(torch.cat([f_a, f_e], dim=1))[:, None]  # (B, 1, D)
        tokens = torch.cat([self.history_in(history), token], dim=1)  # (B, tau + 1, D)
        h = self.context(tokens)[:, -1]
        return torch.cat([h, f_e], dim=1)

    # -- training objective -------------------------------------------------------------------
    def _corrupt_history(self, history: Tensor) -> Tensor:
        """Training only. At inference the history is the model's own output, not the data: noise it
        so errors do not compound (exposure bias), and drop it (MoGlow) so the audio must be heard."""
        cfg = self.config
        if not self.training or cfg.history == 0:
            return history
        history = history + cfg.history_noise * torch.randn_like(history)
        keep = torch.rand(history.shape[0], 1, 1, device=history.device) >= cfg.history_dropout
        return history * keep.to(history)

    def _log_prob(self, x: Tensor, c: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log p (B,) of normalized coefficients x (B, E + 6), in raw units, and both latents."""
        cfg = self.config
        z_e, ld_e = self.exp_flow(x[:, : cfg.num_exp], context=c)
        z_p, ld_p = self.pose_flow(x[:, cfg.num_exp :], context=c)
        log_prob = self.exp_prior.log_prob(z_e, weights) + ld_e + self.pose_prior.log_prob(z_p) + ld_p
        return log_prob - torch.log(self.coeff_std).sum(), z_e, z_p  # back to raw units

    def forward(self, coeffs: Tensor, *, mel: Tensor, label: Tensor, history: Tensor) -> FlowOutput:
        """Per-sample NLL of target coefficients (B, E + 6) (raw units) given the conditioning."""
        c = self.encode_context(mel, label, self._corrupt_history(history))
        log_prob, z_e, z_p = self._log_prob(self.normalize(coeffs), c, label[:, : self.config.num_emotions])
        return FlowOutput(-log_prob / self.config.coeff_dim, log_prob, z_e, z_p)

    def losses(self, coeffs: Tensor, *, mel: Tensor, label: Tensor, history: Tensor) -> TrainLosses:
        """The training terms, sharing one context: NLL, the expression term and latent consistency.

        The expression term is the mean squared error (normalized units) between the coefficients
        at the latent's centre and the target; latent consistency pulls ExpFlow's latent towards
        its emotion's component. The paper weights them 1, 1 and 1e-3.
        """
        cfg = self.config
        history = self._corrupt_history(history)
        c = self.encode_context(mel, label, history)
        if self.training:
            # Dequantization: many targets sit exactly at 0 (clipped); a flow would collapse onto them.
            coeffs = coeffs + self.dequantize * torch.randn_like(coeffs)
        x = self.normalize(coeffs)
        weights = label[:, : cfg.num_emotions]
        log_prob, z_e, _ = self._log_prob(x, c, weights)
        nll = -log_prob / cfg.coeff_dim
        centre = weights @ self.exp_prior.means  # (B, E), differentiable
        x_e, _ = self.exp_flow.reverse(centre, context=c)
        expression = F.mse_loss(x_e, x[:, : cfg.num_exp])
        latent = ((z_e - centre) ** 2).mean()
        return TrainLosses(nll.mean(), expression, latent)

    # -- generation ---------------------------------------------------------------------------
    def initial_state(self) -> FCGState:
        """State at the start of a sequence (no history yet)."""
        p, cfg = self.coeff_mean, self.config
        return FCGState(
            history=p.new_zeros(1, cfg.history, cfg.coeff_dim),
            noise_exp=p.new_zeros(1, cfg.num_exp),
            noise_pose=p.new_zeros(1, cfg.num_pose),
        )

    @torch.no_grad()
    def step(
        self,
        state: FCGState,
        mel: Tensor,
        label: Tensor,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        exp_latent: Tensor | None = None,
        correlation: tuple[float, float] = (0.7, 0.95),
    ) -> tuple[Tensor, FCGState]:
        """One video frame: mel window (16, 80), label (9,) -> coefficients (E + 6,) and the new state.

        ``exp_latent`` (E,) replaces the emotion component's mean (emotion transfer from a
        reference). ``correlation`` (expression, pose): the latent noise follows an AR(1) process
        n_t = r n_(t-1) + sqrt(1 - r^2) e_t, which keeps each frame's distribution but stops
        independent draws from making the head shake from frame to frame. The state is explicit
        and never kept in the module.
        """
        cfg = self.config
        weights = label[None, : cfg.num_emotions]
        mean = self.exp_prior.sample_blended(weights, temperature=0.0)
        draw_e = self.exp_prior.sample_blended(weights, temperature=1.0, generator=generator) - mean
        draw_p = self.pose_prior.sample(1, temperature=1.0, generator=generator).to(mel)
        r_e, r_p = correlation
        noise_e = (r_e * state.noise_exp + (1.0 - r_e**2) ** 0.5 * draw_e).clamp(-_MAX_NOISE, _MAX_NOISE)
        noise_p = (r_p * state.noise_pose + (1.0 - r_p**2) ** 0.5 * draw_p).clamp(-_MAX_NOISE, _MAX_NOISE)
        # During a transition the label blends two emotions. Points between two components of the
        # latent mixture were never trained on and map erratically, so each emotion is generated
        # from its own component with the same noise and the coefficients are blended instead.
        x_e = torch.zeros(1, cfg.num_exp, dtype=mel.dtype)
        x_p = torch.zeros(1, cfg.num_pose, dtype=mel.dtype)
        for k in torch.nonzero(weights[0] > 1e-4).flatten().tolist():
            one = label.clone()
            one[: cfg.num_emotions] = 0.0
            one[k] = 1.0
            if k == cfg.neutral_emotion:
                one[-1] = 0.0  # neutral is trained at intensity 0 only
            c = self.encode_context(mel[None], one[None], state.history)
            centre = self.exp_prior.means[k][None] if exp_latent is None else exp_latent[None]
            w = weights[0, k] / weights[0].sum()
            x_e = x_e + w * self.exp_flow.reverse(centre + temperature * noise_e, context=c)[0]
            x_p = x_p + w * self.pose_flow.reverse(temperature * noise_p, context=c)[0]
        # A latent far in a tail can map to a wild coefficient, which the history would feed back
        # into the next frame; keep the autoregression inside what the data ever showed.
        x = torch.cat([x_e, x_p], dim=1).nan_to_num(0.0).clamp(-_MAX_DEVIATION, _MAX_DEVIATION)  # (1, E + 6)
        if cfg.history > 0:
            history = torch.cat([state.history[:, 1:], x[:, None]], dim=1)
        else:
            history = state.history
        return self.denormalize(x)[0], FCGState(history=history, noise_exp=noise_e, noise_pose=noise_p)

    @torch.no_grad()
    def generate(
        self,
        mel_windows: Tensor,
        labels: Tensor,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        exp_latent: Tensor | None = None,
        correlation: tuple[float, float] = (0.7, 0.95),
        progress: bool = False,
    ) -> Tensor:
        """A whole clip: mel windows (T, 16, 80) and labels (T, 9) -> coefficients (T, E + 6).

        Runs ``step`` frame by frame, so it gives exactly what streaming gives for the same seed.
        """
        if mel_windows.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected as many labels as frames, got {labels.shape[0]} and {mel_windows.shape[0]}"
            )
        state = self.initial_state()
        out = []
        frames = range(mel_windows.shape[0])
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, desc="fcg", unit="frame", disable=None)
        for t in frames:
            x, state = self.step(
                state,
                mel_windows[t],
                labels[t],
                temperature=temperature,
                generator=generator,
                exp_latent=exp_latent,
                correlation=correlation,
            )
            out.append(x)
        return torch.stack(out) if out else mel_windows.new_zeros(0, self.config.coeff_dim)

    @torch.no_grad()
    def emotion_latent(self, exp: Tensor, mel_silence: Tensor, label: Tensor) -> Tensor:
        """Emotion transfer: a reference's fitted expression (E,) mapped to ExpFlow's latent (E,).

        The flow is bijective: the reference face, seen in silence with no history, has a latent
        that stands for its emotion; sampling around it (``exp_latent``) carries it over.
        """
        cfg = self.config
        c = self.encode_context(mel_silence[None], label[None], self.initial_state().history)
        x = self.normalize(torch.cat([exp, self.coeff_mean[cfg.num_exp :]]))[None]
        z, _ = self.exp_flow(x[:, : cfg.num_exp], context=c)
        return z[0]

    def prepare_for_inference(self) -> FCG:
        self.eval()
        self.exp_flow.prepare_for_inference()
        self.pose_flow.prepare_for_inference()
        return self

    # -- checkpoints --------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into directory ``path``."""
        save_checkpoint(self, self.config, path, kind="fcg", version=FORMAT_VERSION)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu") -> FCG:
        """Rebuild from a checkpoint directory; missing or unexpected weights are an error."""
        return load_checkpoint(cls, FCGConfig, path, kind="fcg", version=FORMAT_VERSION, device=device)
