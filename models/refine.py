"""VQIG inference after MeshWarp, compiled for the GPU.

``Refiner(checkpoint)(warped, source, coeffs) -> frame``: uint8 RGB in, uint8 RGB out, one frame
at a time (batch 1). Compile paths, best first: ``tensorrt`` (torch-tensorrt, an optional extra),
``inductor`` (torch.compile; CUDA graphs on a GPU), ``none`` (eager). A missing backend or a
failed compile falls back to the next path; the chosen path is printed at start-up. fp16 on CUDA.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.vqig import NUM_COEFFS, VQIG

__all__ = ["COMPILE_CHOICES", "CompileChoice", "Refiner"]

CompileChoice = Literal["auto", "tensorrt", "inductor", "none"]
COMPILE_CHOICES: tuple[str, ...] = ("auto", "tensorrt", "inductor", "none")


class _FrameNet(nn.Module):
    """The per-frame network as one tensor function (what gets compiled)."""

    def __init__(self, model: VQIG) -> None:
        super().__init__()
        self.model = model

    def forward(self, warped: Tensor, tokens: Tensor, coeffs: Tensor, fidelity: Tensor) -> Tensor:
        return self.model(warped, source=tokens, coeffs=coeffs, fidelity=fidelity).image


def _has_c_compiler() -> bool:
    return any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))


class Refiner:
    """VQIG after MeshWarp: ``refiner(warped, source, coeffs) -> refined``.

    Args:
        model: a :class:`VQIG` or a checkpoint directory (``VQIG.save_pretrained``).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        compile: "auto" (tensorrt, else inductor on CUDA; eager on the CPU), "tensorrt", "inductor", "none".
        fidelity: w in [0, 1]: 0 favours the codebook's quality, 1 fidelity to the warped frame.
        announce: print the chosen path (one line on stderr).

    Frames of any square-or-not size are accepted; a model smaller than the frame refines a
    downscaled copy and adds its correction, upscaled, to the full-size warped frame (the
    warp's own fine detail stays). The source portrait's identity features are computed once
    per source and cached. Not thread-safe: build it in the thread that calls it (the inference
    worker), so CUDA graphs are recorded where they are replayed.
    """

    def __init__(
        self,
        model: VQIG | str | Path,
        *,
        device: str = "auto",
        compile: CompileChoice = "auto",
        fidelity: float = 0.5,
        announce: bool = True,
    ) -> None:
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {compile!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA was asked for but torch sees no CUDA device")
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if not isinstance(model, VQIG):
            model = VQIG.from_pretrained(model)
        self.model = model.eval().to(self.device, self.dtype)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.config = model.config
        self.size = model.config.image_size
        # w lives in a device tensor: changing it never recompiles (a Python float would).
        self.fidelity_tensor = torch.zeros(1, device=self.device, dtype=self.dtype)
        self.fidelity = fidelity
        self._source_key: tuple[int, bytes] | None = None
        self._tokens: Tensor | None = None
        self.net: Callable[
            ..., Tensor
        ]  # the per-frame network (x, tokens, coeffs, fidelity) -> image, maybe compiled
        self.compile_path, reason, self.compile_s = self._build(compile)
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        self.description = (
            f"VQIG: {self.size}x{self.size}, {params:.1f} M parameters, {self.device.type} "
            f"{str(self.dtype).removeprefix('torch.')}, compile={self.compile_path}"
            + (f" ({reason})" if reason else "")
            + (f", compiled in {self.compile_s:.1f} s" if self.compile_path != "none" else "")
        )
        if announce:
            print(self.description, file=sys.stderr, flush=True)

    @property
    def fidelity(self) -> float:
        return float(self.fidelity_tensor[0])

    @fidelity.setter
    def fidelity(self, w: float) -> None:
        if not 0.0 <= float(w) <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1], got {w}")
        self.fidelity_tensor.fill_(float(w))

    # -- compile paths --------------------------------------------------------------------------
    def _build(self, choice: str) -> tuple[str, str, float]:
        """Try the paths from ``choice`` down; returns (path, why earlier ones were skipped, seconds)."""
        net = _FrameNet(self.model)
        self._eager = net
        cuda = self.device.type == "cuda"
        if choice == "auto":
            order = ["tensorrt", "inductor", "none"] if cuda else ["none"]
        else:
            order = ["tensorrt", "inductor", "none"][["tensorrt", "inductor", "none"].index(choice) :]
        reasons: list[str] = []
        for path in order:
            if path == "none":
                self.net = net
                return "none", "; ".join(reasons), 0.0
            if path == "tensorrt":
                try:
                    import torch_tensorrt  # noqa: F401  (registers the backend)
                except ImportError:
                    reasons.append("torch_tensorrt is not installed")
                    continue
                if not cuda:
                    reasons.append("TensorRT needs CUDA")
                    continue
                compiled = torch.compile(
                    net, backend="torch_tensorrt", dynamic=False,
                    # torch-tensorrt reads a set of dtypes here; torch's stub expects scalars.
                    options={"enabled_precisions": {torch.float16}, "min_block_size": 1},  # type: ignore[dict-item]
                )  # fmt: skip
            else:
                if not cuda and not _has_c_compiler():
                    reasons.append("inductor on the CPU needs a C++ compiler, none found")
                    continue
                compiled = torch.compile(net, mode="reduce-overhead" if cuda else "default", dynamic=False)
            self.net = compiled
            t0 = time.monotonic()
            try:
                self._warmup()
            except Exception as exc:  # a compiler failure of any kind: fall back, say why
                reasons.append(f"{path} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                torch._dynamo.reset()
                continue
            return path, "; ".join(r for r in reasons if r), time.monotonic() - t0
        raise AssertionError("unreachable: eager always works")

    @torch.inference_mode()
    def _warmup(self, runs: int = 3) -> None:
        s = self.size
        x = torch.zeros(1, 3, s, s, device=self.device, dtype=self.dtype)
        tokens = torch.zeros(
            1, self.config.latent_size**2, self.config.code_dim, device=self.device, dtype=self.dtype
        )
        c = torch.zeros(1, NUM_COEFFS, device=self.device, dtype=self.dtype)
        for _ in range(runs):
            self.net(x, tokens, c, self.fidelity_tensor)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- frames ---------------------------------------------------------------------------------
    def _to_tensor(self, image: np.ndarray, what: str) -> Tensor:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError(
                f"{what}: expected a uint8 numpy image, got {getattr(image, 'dtype', type(image))}"
            )
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{what}: expected an (H, W, 3) RGB image, got shape {image.shape}")
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, non_blocking=True)
        return (x.permute(2, 0, 1)[None].to(self.dtype) / 127.5 - 1.0).contiguous()  # (1, 3, H, W)

    def _resize(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        mode = "area" if x.shape[-1] > size[1] else "bilinear"
        return F.interpolate(
            x, size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {})
        )

    def _run(self, x: Tensor, tokens: Tensor, coeffs: Tensor) -> Tensor:
        """The network; a compiled path that fails at run time is dropped for eager, with one line.

        (CUDA graphs recorded in one thread have failed when replayed from another on some torch
        versions, pytorch/pytorch#123177: build the Refiner in the thread that calls it.)
        """
        try:
            return self.net(x, tokens, coeffs, self.fidelity_tensor)
        except Exception as exc:
            if self.net is self._eager:
                raise
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            print(f"VQIG: compile={self.compile_path} failed at run time ({type(exc).__name__}: {first}); "
                  "continuing eager (compile=none)", file=sys.stderr, flush=True)  # fmt: skip
            self.net, self.compile_path = self._eager, "none"
            return self.net(x, tokens, coeffs, self.fidelity_tensor)

    @torch.inference_mode()
    def source_tokens(self, source: np.ndarray) -> Tensor:
        """The identity features of a source portrait (cached: the same photo is encoded once)."""
        key = (
            id(source),
            source[:: max(source.shape[0] // 16, 1), :: max(source.shape[1] // 16, 1)].tobytes(),
        )
        if self._source_key != key or self._tokens is None:
            x = self._resize(self._to_tensor(source, "source"), (self.size, self.size))
            self._tokens = self.model.source_tokens(x).contiguous()
            self._source_key = key
        return self._tokens

    @torch.inference_mode()
    def __call__(self, warped: np.ndarray, source: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        """Refine one frame.

        Args:
            warped: (H, W, 3) uint8 RGB, MeshWarp's frame.
            source: (h, w, 3) uint8 RGB, the source portrait (usually the one MeshWarp animates).
            coeffs: (58,) the frame's 52 blendshapes then 6 pose values.

        Returns:
            (H, W, 3) uint8 RGB.
        """
        c = np.asarray(coeffs, dtype=np.float32)
        if c.shape != (NUM_COEFFS,):
            raise ValueError(
                f"expected coeffs of shape ({NUM_COEFFS},) (52 blendshapes + 6 pose), got {c.shape}"
            )
        tokens = self.source_tokens(source)
        x = self._to_tensor(warped, "warped")
        full = (int(x.shape[-2]), int(x.shape[-1]))
        small = self._resize(x, (self.size, self.size)).contiguous()
        ct = torch.from_numpy(c).to(self.device, self.dtype)[None]
        out = self._run(small, tokens, ct)
        if full != (self.size, self.size):
            out = x + self._resize(out - small, full)  # the correction, upscaled, on the full-size frame
        return ((out[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
