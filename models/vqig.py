"""VQIG: the vector-quantized image generator of FlowVQTalker (Tan et al., CVPR 2024).

A VQGAN-style autoencoder (image encoder E_h, codebook C, decoder D_h; Esser et al. 2021) learns
a discrete prior of faces. A warped-image encoder E_w of the same structure reads the warped
frame I_w (MeshWarp's output); its features z_w and their nearest codes z_c are fused by phi (a
3-layer MLP per latent position) into z_f, which attends to the source portrait's features
(multi-head cross-attention: identity), is modulated by the 58 coefficients (AdaIN at the latent
and in every decoder block up to full resolution), and is decoded with CodeFormer's controllable
feature transform (Zhou et al. 2022): ``fidelity`` w in [0, 1] mixes in E_w's skip features,
0 = the codebook's prior (quality), 1 = closest to the input (fidelity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "PRESETS",
    "CheckpointError",
    "EncoderOutput",
    "QuantizeOutput",
    "VQIG",
    "VQIGConfig",
    "VQIGOutput",
    "VectorQuantizer",
]

FORMAT_VERSION = 1
NUM_COEFFS = 58  # 52 blendshapes + 6 pose


@dataclass(frozen=True)
class VQIGConfig:
    """VQIG hyperparameters. The latent grid is image_size / 2 ** (len(channels) - 1) square."""

    image_size: int = 512  # px, square
    channels: tuple[int, ...] = (64, 128, 128, 256, 256, 512)  # per resolution, highest first
    num_res_blocks: int = 2  # per resolution
    codebook_size: int = 1024  # K
    code_dim: int = 256  # D
    num_heads: int = 8  # cross-attention heads
    fuse_hidden: int = 512  # phi's width
    coeff_dim: int = NUM_COEFFS
    style_dim: int = 256  # the coefficients' embedding that drives AdaIN
    cft_levels: int = 3  # the controllable feature transform acts on this many top resolutions
    beta: float = 0.25  # commitment weight

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "channels":
                if len(v) < 2 or any(c <= 0 or c % 8 for c in v):
                    raise ValueError(f"channels must be >= 2 positive multiples of 8, got {v}")
            elif v <= 0:
                raise ValueError(f"{f.name} must be positive, got {v}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} is not divisible by {self.downsample}")
        if self.code_dim % self.num_heads:
            raise ValueError(f"code_dim ({self.code_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.cft_levels > len(self.channels):
            raise ValueError(f"cft_levels must be <= {len(self.channels)}, got {self.cft_levels}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample


PRESETS: dict[str, VQIGConfig] = {
    # The paper's scale: 512x512, a 16x16 latent, 1024 codes (CodeFormer's layout).
    "full": VQIGConfig(),
    # Real time on a GPU: 256x256, 16x16 latent, half the codes, one block per resolution.
    "lite": VQIGConfig(
        image_size=256,
        channels=(32, 64, 128, 256, 256),
        num_res_blocks=1,
        codebook_size=512,
        code_dim=128,
        num_heads=4,
        fuse_hidden=256,
        style_dim=128,
    ),  # fmt: skip
    # Tests on a CPU: 32x32, 8x8 latent, 32 codes.
    "tiny": VQIGConfig(
        image_size=32,
        channels=(16, 32, 32),
        num_res_blocks=1,
        codebook_size=32,
        code_dim=16,
        num_heads=2,
        fuse_hidden=32,
        style_dim=16,
        cft_levels=2,
    ),  # fmt: skip
}


class QuantizeOutput(NamedTuple):
    z_q: Tensor  # (B, D, h, w) straight-through: forward = codes, gradient = identity to z
    indices: Tensor  # (B, h, w) int64 in [0, K)
    commit_loss: Tensor  # scalar, beta * ||z - sg(z_q)||^2 (trains the encoder)
    codebook_loss: Tensor  # scalar, ||sg(z) - z_q||^2 (trains the codebook)


class EncoderOutput(NamedTuple):
    z: Tensor  # (B, D, h, w) pre-quantization latent
    features: tuple[Tensor, ...]  # one per resolution, highest first: (B, channels[i], H / 2^i, W / 2^i)


class VQIGOutput(NamedTuple):
    image: Tensor  # (B, 3, H, W) in about [-1, 1]
    z_w: Tensor  # (B, D, h, w) E_w's latent
    quantize: QuantizeOutput  # z_w against the codebook


def _groups(channels: int) -> int:
    return math.gcd(32, channels // 4) or 1


class AdaGroupNorm(nn.Module):
    """GroupNorm whose scale and shift are modulated by a style vector: AdaIN over groups.

    The modulation starts at zero (identity), so a decoder trained without coefficients is unchanged
    until the coefficient path is trained.
    """

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.to_scale_shift = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: Tensor, style: Tensor | None) -> Tensor:
        x = self.norm(x)
        if style is None:
            return x
        scale, shift = self.to_scale_shift(style)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return x * (1 + scale) + shift


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, style_dim: int = 0) -> None:
        super().__init__()
        self.style_dim = style_dim
        if style_dim:
            self.norm1: nn.Module = AdaGroupNorm(c_in, style_dim)
            self.norm2: nn.Module = AdaGroupNorm(c_out, style_dim)
        else:
            self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
            self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def _norm(self, norm: nn.Module, x: Tensor, style: Tensor | None) -> Tensor:
        return norm(x, style) if self.style_dim else norm(x)

    def forward(self, x: Tensor, style: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self._norm(self.norm1, x, style)))
        h = self.conv2(F.silu(self._norm(self.norm2, h, style)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """Image (B, 3, H, W) -> latent (B, D, h, w) and the features at every resolution."""

    def __init__(self, config: VQIGConfig) -> None:
        super().__init__()
        ch = config.channels
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.down = nn.ModuleList()
        c = ch[0]
        for i, c_out in enumerate(ch):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(c, c_out))
                c = c_out
            self.levels.append(nn.ModuleList(blocks))
            if i < len(ch) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(c, c)
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, config.code_dim, 1)

    def forward(self, x: Tensor) -> EncoderOutput:
        h = self.conv_in(x)
        features = []
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h)
            features.append(h)
            if i < len(self.down):
                h = self.down[i](h)
        h = self.mid(h)
        return EncoderOutput(self.conv_out(F.silu(self.norm_out(h))), tuple(features))


class ControllableFeatureTransform(nn.Module):
    """CodeFormer's CFT: F_d + w * (F_d * alpha + beta), alpha and beta from [F_e, F_d].

    Zero-initialised, so it is the identity until stage 3 trains it.
    """

    def __init__(self, c_enc: int, c_dec: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_enc + c_dec, c_dec, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c_dec, c_dec, 3, padding=1),
        )
        self.to_alpha = nn.Conv2d(c_dec, c_dec, 3, padding=1)
        self.to_beta = nn.Conv2d(c_dec, c_dec, 3, padding=1)
        for conv in (self.to_alpha, self.to_beta):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, dec: Tensor, enc: Tensor, fidelity: Tensor) -> Tensor:
        h = F.leaky_relu(self.body(torch.cat([enc, dec], dim=1)), 0.2)
        return dec + fidelity.view(-1, 1, 1, 1) * (dec * self.to_alpha(h) + self.to_beta(h))


class Decoder(nn.Module):
    """Latent (B, D, h, w) -> image (B, 3, H, W), with AdaIN by the coefficients and CFT skips."""

    def __init__(self, config: VQIGConfig) -> None:
        super().__init__()
        ch = config.channels[::-1]  # lowest resolution first
        s = config.style_dim
        c = ch[0]
        self.conv_in = nn.Conv2d(config.code_dim, c, 3, padding=1)
        self.mid = ResBlock(c, c, s)
        self.levels = nn.ModuleList()
        self.up = nn.ModuleList()
        for i, c_out in enumerate(ch):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(c, c_out, s))
                c = c_out
            self.levels.append(nn.ModuleList(blocks))
            if i < len(ch) - 1:
                self.up.append(nn.Conv2d(c, c, 3, padding=1))
        n = len(ch)
        self.cft_start = n - config.cft_levels  # decoder level index of the first CFT
        self.cft = nn.ModuleList(ControllableFeatureTransform(ch[i], ch[i]) for i in range(self.cft_start, n))
        self.norm_out = AdaGroupNorm(c, s)  # image-level AdaIN
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(
        self,
        z: Tensor,
        *,
        style: Tensor | None = None,
        skips: tuple[Tensor, ...] | None = None,
        fidelity: Tensor | None = None,
    ) -> Tensor:
        h = self.mid(self.conv_in(z), style)
        n = len(self.levels)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, style)
            if skips is not None and fidelity is not None and i >= self.cft_start:
                h = self.cft[i - self.cft_start](h, skips[n - 1 - i], fidelity)
            if i < len(self.up):
                h = self.up[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h, style)))


class VectorQuantizer(nn.Module):
    """Codebook C of K codes of dimension D: nearest-code lookup with a straight-through gradient.

    Usage statistics: ``code_usage`` is an exponential moving average of how many latent positions
    pick each code per batch (training only); :meth:`restart_dead_codes` moves codes that fell out
    of use onto current encoder outputs.
    """

    def __init__(
        self, codebook_size: int, code_dim: int, beta: float = 0.25, usage_decay: float = 0.99
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.beta = beta
        self.usage_decay = usage_decay
        self.embedding = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.register_buffer("code_usage", torch.zeros(codebook_size))

    def distances(self, z: Tensor) -> Tensor:
        """Squared distances (B, h, w, K) from each latent position to every code, in fp32."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1)  # (B, h, w, D)
            codes = self.embedding.weight.float()
            return (
                flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(-1)
            )  # (B, h, w, K)

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes for indices (B, h, w) -> (B, D, h, w)."""
        return self.embedding(indices).permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> QuantizeOutput:
        indices = self.distances(z).argmin(-1)  # (B, h, w)
        z_q = self.lookup(indices).to(z.dtype)
        commit = self.beta * F.mse_loss(z, z_q.detach())
        codebook = F.mse_loss(z_q, z.detach())
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(indices.flatten(), minlength=self.codebook_size).float()
                self.code_usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        z_st = z + (z_q - z).detach()
        return QuantizeOutput(z_st, indices, commit, codebook)

    @torch.no_grad()
    def restart_dead_codes(self, z: Tensor, min_usage: float = 0.03) -> int:
        """Re-seed codes whose usage fell below ``min_usage`` with random positions of ``z`` (B, D, h, w).

        Returns how many codes were restarted.
        """
        dead = (self.code_usage < min_usage).nonzero().flatten()
        if len(dead) == 0:
            return 0
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, self.code_dim)  # (N, D)
        pick = torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)
        noise = 0.01 * flat.std() * torch.randn(len(dead), self.code_dim, device=flat.device)
        self.embedding.weight.data[dead] = (flat[pick] + noise).to(self.embedding.weight.dtype)
        self.code_usage[dead] = 2 * min_usage  # unless they get used, dead again in about 70 batches
        return len(dead)


class Fuse(nn.Module):
    """phi: a 3-layer MLP per latent position, [z_c, z_w] -> z_f = z_c + phi(...).

    The last layer starts at zero, so z_f starts as the codebook's z_c (stage 2's output).
    """

    def __init__(self, code_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * code_dim, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, hidden, 1), nn.SiLU(),
            nn.Conv2d(hidden, code_dim, 1),
        )  # fmt: skip
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z_c: Tensor, z_w: Tensor) -> Tensor:
        return z_c + self.net(torch.cat([z_c, z_w], dim=1))


class CrossAttention(nn.Module):
    """Multi-head cross-attention from the frame's latent tokens to the source portrait's tokens."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pos = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        for layer in (self.proj, self.ff[-1]):  # residual branches start at zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, z: Tensor, source: Tensor) -> Tensor:
        """z (B, D, h, w), source tokens (B, N, D) -> (B, D, h, w)."""
        b, d, h, w = z.shape
        x = z.flatten(2).transpose(1, 2) + self.pos  # (B, N, D)
        kv = self.to_kv(self.norm_kv(source + self.pos)).view(b, -1, 2, self.num_heads, d // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4)  # (B, heads, N, D / heads) each
        q = self.to_q(self.norm_q(x)).view(b, -1, self.num_heads, d // self.num_heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, d)  # (B, N, D)
        x = x + self.proj(a)
        x = x + self.ff(self.norm_ff(x)) - self.pos
        return x.transpose(1, 2).reshape(b, d, h, w)


class LatentAdaIN(nn.Module):
    """Feature-level AdaIN: z + gamma(s) * instance_norm(z) + beta(s), zero at initialisation."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.to_scale_shift = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, z: Tensor, style: Tensor) -> Tensor:
        gamma, beta = self.to_scale_shift(style)[:, :, None, None].chunk(2, dim=1)
        return z + gamma * F.instance_norm(z) + beta


class VQIG(nn.Module):
    """The refinement network: warped frame + source tokens + coefficients -> frame.

    Parts: ``encoder`` (E_h), ``quantizer`` (C), ``decoder`` (D_h), ``warp_encoder`` (E_w),
    ``fuse`` (phi), ``cross_attention``, ``style`` (coefficients -> AdaIN style), ``latent_adain``.
    Images are (B, 3, H, W) in [-1, 1] at ``config.image_size``.
    """

    def __init__(self, config: VQIGConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = VectorQuantizer(config.codebook_size, config.code_dim, config.beta)
        self.decoder = Decoder(config)
        self.warp_encoder = Encoder(config)
        self.fuse = Fuse(config.code_dim, config.fuse_hidden)
        self.cross_attention = CrossAttention(config.code_dim, config.num_heads, config.latent_size**2)
        self.style = nn.Sequential(
            nn.Linear(config.coeff_dim, config.style_dim), nn.SiLU(),
            nn.Linear(config.style_dim, config.style_dim), nn.SiLU(),
        )  # fmt: skip
        self.latent_adain = LatentAdaIN(config.code_dim, config.style_dim)

    def _check_image(self, image: Tensor) -> None:
        size = self.config.image_size
        if image.ndim != 4 or image.shape[1:] != (3, size, size):
            raise ValueError(f"expected images of shape (B, 3, {size}, {size}), got {tuple(image.shape)}")

    # -- stage 1: the codebook autoencoder ----------------------------------------------------
    def autoencode(self, image: Tensor) -> tuple[Tensor, QuantizeOutput]:
        """E_h -> C -> D_h: (reconstruction (B, 3, H, W), quantization)."""
        self._check_image(image)
        q = self.quantizer(self.encoder(image).z)
        return self.decoder(q.z_q), q

    def encode(self, image: Tensor) -> Tensor:
        """Code indices (B, h, w) of images (B, 3, H, W)."""
        self._check_image(image)
        return self.quantizer(self.encoder(image).z).indices

    def decode(self, indices: Tensor) -> Tensor:
        """Images (B, 3, H, W) of code indices (B, h, w), no coefficients or skips."""
        return self.decoder(self.quantizer.lookup(indices))

    # -- stage 3 and inference ----------------------------------------------------------------
    def source_tokens(self, source: Tensor) -> Tensor:
        """The source portrait's identity tokens (B, h * w, D): E_h's latent. Cache them per source."""
        self._check_image(source)
        return self.encoder(source).z.flatten(2).transpose(1, 2)

    def forward(self, warped: Tensor, *, source: Tensor, coeffs: Tensor, fidelity: Tensor) -> VQIGOutput:
        """Refine warped frames (B, 3, H, W).

        Args:
            source: (B, N, D) from :meth:`source_tokens`.
            coeffs: (B, 58) the frame's 52 blendshapes and 6 pose values.
            fidelity: (B,) or (1,) w in [0, 1].
        """
        self._check_image(warped)
        if coeffs.ndim != 2 or coeffs.shape[1] != self.config.coeff_dim:
            raise ValueError(
                f"expected coeffs of shape (B, {self.config.coeff_dim}), got {tuple(coeffs.shape)}"
            )
        enc = self.warp_encoder(warped)
        q = self.quantizer(enc.z)
        z = self.fuse(q.z_q, enc.z)
        z = self.cross_attention(z, source)
        style = self.style(coeffs)
        z = self.latent_adain(z, style)
        image = self.decoder(z, style=style, skips=enc.features, fidelity=fidelity)
        return VQIGOutput(image, enc.z, q)

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """The parts each training stage updates (the rest stay frozen)."""
        if stage == 1:
            return [self.encoder, self.quantizer, self.decoder]
        if stage == 2:
            return [self.warp_encoder]
        if stage == 3:
            return [self.warp_encoder, self.fuse, self.cross_attention, self.style, self.latent_adain]
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}")

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        params = [p for m in self.stage_modules(stage) for p in m.parameters()]
        if stage == 3:  # the decoder's coefficient modulation and CFT; its convolutions stay fixed
            params += [p for n, p in self.decoder.named_parameters() if "to_scale_shift" in n or "cft." in n]
        return params

    # -- checkpoints --------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into directory ``path``."""
        save_checkpoint(self, self.config, path, kind="vqig", version=FORMAT_VERSION)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu") -> VQIG:
        """Rebuild from a checkpoint directory; missing or unexpected weights are an error."""
        return load_checkpoint(cls, VQIGConfig, path, kind="vqig", version=FORMAT_VERSION, device=device)
