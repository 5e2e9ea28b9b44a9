"""Normalizing-flow layers over feature vectors (B, D): actnorm, LU linear, affine coupling, and a stack.

Glow (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039) on vectors, with couplings conditioned
on a context vector as in MoGlow (Henter et al. 2020, https://arxiv.org/abs/1905.06598). Every layer has
``forward(x, *, context) -> (y, logdet)`` and ``reverse(y, *, context) -> (x, logdet)``; logdet is a (B,)
tensor, log|det dy/dx| forward and log|det dx/dy| in reverse, so the two sum to zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ActNorm", "AffineCoupling", "Flow", "FlowStep", "InvLinearLU"]

# Coupling scales are sigmoid(raw + 2) / sigmoid(2): bounded in (0, 1.135) like Glow's sigmoid(raw + 2),
# and exactly 1 for the zero-initialised conditioner, so a fresh coupling is the identity.
_LOGSIGMOID_2 = -math.log1p(math.exp(-2.0))


def _drop_cache_after_load(module: nn.Module, incompatible_keys: object) -> None:
    # New weights make inference caches stale; prepare_for_inference() builds them again.
    module.clear_cache()  # type: ignore[operator]


class ActNorm(nn.Module):
    """Per-feature affine map y = (x + loc) * exp(log_scale), initialised from the first training batch.

    The first forward() in training mode sets loc and log_scale so that batch has zero mean and unit
    variance per feature. Until then (or in eval mode before any training) the layer is the identity.
    """

    initialized: Tensor

    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        # A buffer, so the flag travels with state_dict() and a loaded model is not re-initialised.
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Fit loc and log_scale to a batch x (B, D), B >= 2, and mark the layer initialised."""
        if x.shape[0] < 2:
            raise ValueError(f"ActNorm initialisation needs a batch of at least 2 samples, got {x.shape[0]}")
        self.loc.copy_(-x.mean(0))
        self.log_scale.copy_(-torch.log(x.std(0, correction=0) + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: Tensor, *, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # `self.training` first: an eval-mode (traced) call never reads the flag's value.
        if self.training and not self.initialized:
            self.initialize(x)
        y = (x + self.loc) * self.log_scale.exp()
        return y, x.new_zeros(x.shape[0]) + self.log_scale.sum()

    def reverse(self, y: Tensor, *, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = y * (-self.log_scale).exp() - self.loc
        return x, y.new_zeros(y.shape[0]) - self.log_scale.sum()

    def extra_repr(self) -> str:
        return f"{self.dim}"


class InvLinearLU(nn.Module):
    """Invertible linear map y = W x with W = P L U (Glow's LU-decomposed 1x1 convolution, on vectors).

    P is a fixed permutation, L is unit lower triangular and U is upper triangular with diagonal
    sign_s * exp(log_s) (sign_s fixed), so log|det W| = sum(log_s). W starts as a random orthogonal
    matrix drawn from torch's global generator.
    """

    perm: Tensor
    sign_s: Tensor
    _weight_inv: Tensor | None

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        weight = torch.linalg.qr(torch.randn(dim, dim))[0]
        perm, lower, upper = torch.linalg.lu(weight)
        diag = upper.diagonal()
        self.register_buffer("perm", perm)
        self.register_buffer("sign_s", diag.sign())
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(diag.abs().log())
        self.register_buffer("_weight_inv", None, persistent=False)
        self.register_load_state_dict_post_hook(_drop_cache_after_load)

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * self.log_s.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """W (D, D)."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def weight_inverse(self) -> Tensor:
        """W^-1 (D, D), from two triangular solves (more accurate than inverting W)."""
        lower, upper = self._factors()
        inv = torch.linalg.solve_triangular(lower, self.perm.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, inv, upper=True)

    def forward(self, x: Tensor, *, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return F.linear(x, self.weight()), x.new_zeros(x.shape[0]) + self.log_s.sum()

    def reverse(self, y: Tensor, *, context: Tensor | None) -> tuple[Tensor, Tensor]:
        weight_inv = self._weight_inv if self._weight_inv is not None else self.weight_inverse()
        return F.linear(y, weight_inv), y.new_zeros(y.shape[0]) - self.log_s.sum()

    @torch.no_grad()
    def prepare_for_inference(self) -> None:
        """Cache W^-1 for reverse(). Dropped by train(True) and load_state_dict()."""
        self._weight_inv = self.weight_inverse()

    def clear_cache(self) -> None:
        self._weight_inv = None

    def train(self, mode: bool = True) -> InvLinearLU:
        if mode:
            self.clear_cache()
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"{self.dim}"


class AffineCoupling(nn.Module):
    """Affine coupling: one part of x is scaled and shifted by a conditioner of the other part and the context.

    x splits at D // 2 into a first and a second part; parity 0 transforms the second part given the
    first, parity 1 the first given the second (alternate it between steps so every feature changes).
    With (shift, raw) = MLP([x_keep, context]) and scale = sigmoid(raw + 2) / sigmoid(2):
    y_change = (x_change + shift) * scale, logdet = sum(log scale).
    """

    def __init__(self, dim: int, context_dim: int, hidden: int, *, parity: int = 0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"AffineCoupling needs dim >= 2, got {dim}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity}")
        self.dim = dim
        self.context_dim = context_dim
        self.parity = parity
        self.split = dim // 2
        self.num_keep = self.split if parity == 0 else dim - self.split
        self.num_change = dim - self.num_keep
        self.net = nn.Sequential(
            nn.Linear(self.num_keep + context_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, 2 * self.num_change),
        )
        # Zero shift and raw scale make a fresh coupling exactly the identity, so a deep flow starts
        # near the identity and trains stably (Glow's zero-initialised last convolution).
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first, second = x[:, : self.split], x[:, self.split :]
        return (first, second) if self.parity == 0 else (second, first)

    def _merge(self, keep: Tensor, change: Tensor) -> Tensor:
        return torch.cat([keep, change] if self.parity == 0 else [change, keep], dim=1)

    def _shift_and_log_scale(self, keep: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = self.net(torch.cat([keep, context], dim=1)).chunk(2, dim=1)
        return shift, F.logsigmoid(raw + 2.0) - _LOGSIGMOID_2

    def forward(self, x: Tensor, *, context: Tensor) -> tuple[Tensor, Tensor]:
        keep, change = self._split(x)
        shift, log_scale = self._shift_and_log_scale(keep, context)
        change = (change + shift) * log_scale.exp()
        return self._merge(keep, change), log_scale.sum(dim=1)

    def reverse(self, y: Tensor, *, context: Tensor) -> tuple[Tensor, Tensor]:
        keep, change = self._split(y)
        shift, log_scale = self._shift_and_log_scale(keep, context)
        change = change * (-log_scale).exp() - shift
        return self._merge(keep, change), -log_scale.sum(dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}, parity={self.parity}"


class FlowStep(nn.Module):
    """One Glow step: ActNorm -> InvLinearLU -> AffineCoupling."""

    _affine_inv: Tensor | None
    _bias_inv: Tensor | None
    _logdet_inv: Tensor | None

    def __init__(self, dim: int, context_dim: int, hidden: int, *, parity: int = 0) -> None:
        super().__init__()
        self.actnorm = ActNorm(dim)
        self.linear = InvLinearLU(dim)
        self.coupling = AffineCoupling(dim, context_dim, hidden, parity=parity)
        self.register_buffer("_affine_inv", None, persistent=False)
        self.register_buffer("_bias_inv", None, persistent=False)
        self.register_buffer("_logdet_inv", None, persistent=False)
        self.register_load_state_dict_post_hook(_drop_cache_after_load)

    def forward(self, x: Tensor, *, context: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = self.actnorm(x, context=context)
        x, ld = self.linear(x, context=context)
        logdet = logdet + ld
        x, ld = self.coupling(x, context=context)
        return x, logdet + ld

    def reverse(self, y: Tensor, *, context: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = self.coupling.reverse(y, context=context)
        if self._affine_inv is not None and self._bias_inv is not None and self._logdet_inv is not None:
            # ActNorm and the linear map undone together: one (B, D) x (D, D) product.
            return torch.addmm(self._bias_inv, y, self._affine_inv), logdet + self._logdet_inv
        y, ld = self.linear.reverse(y, context=context)
        logdet = logdet + ld
        y, ld = self.actnorm.reverse(y, context=context)
        return y, logdet + ld

    @torch.no_grad()
    def prepare_for_inference(self) -> None:
        """Cache the inverse of ActNorm followed by the linear map as one affine map x = A y + b.

        ActNorm inverse: x = u * exp(-log_scale) - loc; linear inverse: u = W^-1 y. Stored as A^T for addmm.
        """
        weight_inv = self.linear.weight_inverse()
        inv_scale = (-self.actnorm.log_scale).exp()
        self._affine_inv = (inv_scale[:, None] * weight_inv).T.contiguous()
        self._bias_inv = -self.actnorm.loc.detach().clone()
        self._logdet_inv = -(self.actnorm.log_scale.sum() + self.linear.log_s.sum())

    def clear_cache(self) -> None:
        self._affine_inv = None
        self._bias_inv = None
        self._logdet_inv = None

    def train(self, mode: bool = True) -> FlowStep:
        if mode:
            self.clear_cache()
        return super().train(mode)


class Flow(nn.Module):
    """A stack of num_steps FlowSteps over (B, dim) vectors, conditioned on a (B, context_dim) context.

    forward() maps data x to latent z with log|det dz/dx|; reverse() maps z back to x with log|det dx/dz|.
    Couplings alternate which half of the features they transform.
    """

    def __init__(self, dim: int, context_dim: int, num_steps: int, hidden: int) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.dim = dim
        self.context_dim = context_dim
        self.steps = nn.ModuleList(FlowStep(dim, context_dim, hidden, parity=i % 2) for i in range(num_steps))

    def _check(self, name: str, x: Tensor, context: Tensor) -> None:
        # Shapes are traced values under torch.jit.trace: check them only when running eagerly.
        if torch.jit.is_tracing():
            return
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"Expected {name} of shape (B, {self.dim}), got {tuple(x.shape)}")
        if context.ndim != 2 or context.shape != (x.shape[0], self.context_dim):
            raise ValueError(
                f"Expected context of shape ({x.shape[0]}, {self.context_dim}), got {tuple(context.shape)}"
            )

    def forward(self, x: Tensor, *, context: Tensor) -> tuple[Tensor, Tensor]:
        self._check("x", x, context)
        logdet = x.new_zeros(x.shape[0])
        for step in self.steps:
            x, ld = step(x, context=context)
            logdet = logdet + ld
        return x, logdet

    def reverse(self, z: Tensor, *, context: Tensor) -> tuple[Tensor, Tensor]:
        self._check("z", z, context)
        logdet = z.new_zeros(z.shape[0])
        for step in reversed(self.steps):
            z, ld = step.reverse(z, context=context)
            logdet = logdet + ld
        return z, logdet

    @torch.no_grad()
    def prepare_for_inference(self) -> None:
        """Switch to eval mode and cache each step's inverse affine part, so reverse() is cheap at batch 1.

        The caches are dropped by train(True) and load_state_dict(); after editing parameters in place,
        call this again.
        """
        self.eval()
        for step in self.steps:
            step.prepare_for_inference()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}, num_steps={len(self.steps)}"
