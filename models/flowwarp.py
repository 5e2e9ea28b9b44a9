"""FlowWarp: a learned flow-field warp W in the style of PIRenderer (Ren et al., ICCV 2021).

The second implementation of the warp beside MeshWarp: a mapping network embeds the 58
coefficients (52 blendshapes + 6 pose), an hourglass over the source portrait, modulated by that
embedding through AdaIN, predicts a dense backward flow, and the source is resampled along it
(``grid_sample``). The flow head starts at zero, so an untrained FlowWarp returns the source.
:class:`FlowWarpRenderer` gives it MeshWarp's interface: ``render(exp, pose) -> uint8 frame``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.vqig import NUM_COEFFS, AdaGroupNorm, CheckpointError

__all__ = ["FLOW_PRESETS", "FlowWarp", "FlowWarpConfig", "FlowWarpRenderer", "WarpOutput"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FlowWarpConfig:
    """FlowWarp hyperparameters; the flow is predicted at image_size / 4 and upsampled."""

    image_size: int = 256  # px, square
    channels: tuple[int, ...] = (32, 64, 128, 256, 256)  # hourglass widths, highest resolution first
    coeff_dim: int = NUM_COEFFS
    style_dim: int = 256  # the mapping network's output

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) < 2 or any(c <= 0 or c % 8 for c in self.channels):
            raise ValueError(f"channels must be >= 2 positive multiples of 8, got {self.channels}")
        for f in fields(self):
            if f.name != "channels" and getattr(self, f.name) <= 0:
                raise ValueError(f"{f.name} must be positive, got {getattr(self, f.name)}")
        if self.image_size % 2 ** len(self.channels):
            raise ValueError(f"image_size {self.image_size} is not divisible by {2 ** len(self.channels)}")


FLOW_PRESETS: dict[str, FlowWarpConfig] = {
    "full": FlowWarpConfig(image_size=512),
    "lite": FlowWarpConfig(),
    "tiny": FlowWarpConfig(image_size=32, channels=(16, 32, 32), style_dim=16),
}


class WarpOutput(NamedTuple):
    image: Tensor  # (B, 3, H, W) the warped source
    flow: Tensor  # (B, 2, H, W) backward flow in normalized coordinates ([-1, 1] spans the image)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, style_dim: int) -> None:
        super().__init__()
        self.norm = AdaGroupNorm(c_in, style_dim)
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        return self.conv(F.leaky_relu(self.norm(x, style), 0.2))


class FlowWarp(nn.Module):
    """Source (B, 3, H, W) in [-1, 1] + coefficients (B, 58) -> the source warped to them."""

    def __init__(self, config: FlowWarpConfig) -> None:
        super().__init__()
        self.config = config
        s = config.style_dim
        self.mapping = nn.Sequential(
            nn.Linear(config.coeff_dim, s), nn.LeakyReLU(0.2), nn.Linear(s, s), nn.LeakyReLU(0.2),
            nn.Linear(s, s), nn.LeakyReLU(0.2),
        )  # fmt: skip
        ch = config.channels
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down = nn.ModuleList(_Block(ch[max(i - 1, 0)], ch[i], s) for i in range(len(ch)))
        # Decoder: back up to image_size / 2, adding the encoder's features at each resolution.
        self.up = nn.ModuleList(_Block(ch[i + 1], ch[i], s) for i in reversed(range(1, len(ch) - 1)))
        self.to_flow = nn.Conv2d(ch[1], 2, 3, padding=1)
        nn.init.zeros_(self.to_flow.weight)
        nn.init.zeros_(self.to_flow.bias)
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, config.image_size), torch.linspace(-1, 1, config.image_size), indexing="ij"
        )
        self.register_buffer(
            "base_grid", torch.stack([xs, ys], dim=-1)[None], persistent=False
        )  # (1, H, W, 2)

    def forward(self, source: Tensor, coeffs: Tensor) -> WarpOutput:
        size = self.config.image_size
        if source.ndim != 4 or source.shape[1:] != (3, size, size):
            raise ValueError(f"expected sources of shape (B, 3, {size}, {size}), got {tuple(source.shape)}")
        if coeffs.ndim != 2 or coeffs.shape[1] != self.config.coeff_dim:
            raise ValueError(
                f"expected coeffs of shape (B, {self.config.coeff_dim}), got {tuple(coeffs.shape)}"
            )
        style = self.mapping(coeffs)
        h = self.conv_in(source)
        skips = []
        for block in self.down:
            h = F.avg_pool2d(block(h, style), 2)
            skips.append(h)
        for i, block in enumerate(self.up):
            h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = block(h, style) + skips[-2 - i]
        flow = F.interpolate(self.to_flow(h), size=(size, size), mode="bilinear", align_corners=False)
        grid = self.base_grid.to(flow.dtype) + flow.permute(0, 2, 3, 1)
        image = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return WarpOutput(image, flow)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into directory ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "model": "flowwarp", "config": asdict(self.config)}
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors.partial"))
        (path / "model.safetensors.partial").replace(path / "model.safetensors")
        (path / "config.json.partial").write_text(json.dumps(meta, indent=2) + "\n")
        (path / "config.json.partial").replace(path / "config.json")

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu") -> FlowWarp:
        """Rebuild from a checkpoint directory; missing or unexpected weights are an error."""
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "config.json").read_text())
            if meta.get("model") != "flowwarp" or meta.get("format_version") != FORMAT_VERSION:
                raise CheckpointError(f"{path}: expected a flowwarp checkpoint of format {FORMAT_VERSION}")
            model = cls(FlowWarpConfig(**meta["config"]))
            model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{path}: cannot load a flowwarp checkpoint: {exc}") from exc
        return model.to(device)


class FlowWarpRenderer:
    """MeshWarp's interface over a trained FlowWarp: ``render(exp (52,), pose (6,)) -> (H, W, 3) uint8``.

    The photo is resized to the model's size and the output back to the photo's size.
    """

    def __init__(self, model: FlowWarp, image: np.ndarray) -> None:
        import cv2

        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            raise TypeError("expected an (H, W, 3) uint8 RGB image")
        self.model = model.eval()
        self.height, self.width = image.shape[:2]
        size = model.config.image_size
        small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        device = next(model.parameters()).device
        self._source = torch.from_numpy(small).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1.0

    @torch.no_grad()
    def render(self, exp: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
        import cv2

        pose = np.zeros(6) if pose is None else pose
        coeffs = torch.from_numpy(np.concatenate([exp, pose]).astype(np.float32))[None].to(
            self._source.device
        )
        out = self.model(self._source, coeffs).image[0]
        frame = ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
