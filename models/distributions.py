"""Latent distributions of the flows: a mixture of multivariate Student's t (one component per class)
and a standard normal.

FlowVQTalker (https://arxiv.org/abs/2403.06375) puts ExpFlow's latent under a mixture of Student's t
distributions, one per emotion, with nu = 50, and PoseFlow's under a standard Gaussian.
Sampling takes an explicit torch.Generator; temperature scales the deviation from the mean. Draws are
reparameterised (mean + scale * noise), so gradients reach the means and scales; wrap calls in
torch.no_grad() where none is wanted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["StandardNormal", "StudentTMixture"]

_LOG_2PI = math.log(2.0 * math.pi)


def _standard_gamma(
    alpha: float, n: int, *, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """n draws from Gamma(alpha, 1) using the given generator (torch's own gamma sampler takes none).

    Marsaglia & Tsang (2000), "A simple method for generating gamma variables"; for alpha < 1 it draws
    Gamma(alpha + 1) and multiplies by U^(1 / alpha). Acceptance is above 95 %, so the loop rarely repeats.
    """
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=dtype, device=device)
    todo = torch.arange(n, device=device)
    while todo.numel() > 0:
        x = torch.randn(todo.numel(), generator=generator, dtype=dtype, device=device)
        u = torch.rand(todo.numel(), generator=generator, dtype=dtype, device=device)
        v = (1.0 + c * x) ** 3
        log_v = torch.log(v.clamp_min(torch.finfo(dtype).tiny))
        accept = (v > 0) & (torch.log(u) < 0.5 * x.square() + d - d * v + d * log_v)
        out[todo[accept]] = d * v[accept]
        todo = todo[~accept]
    if alpha < 1.0:
        u = torch.rand(n, generator=generator, dtype=dtype, device=device)
        out = out * u.pow(1.0 / alpha)
    return out


def _check_weights(weights: Tensor, num_components: int) -> None:
    if weights.ndim != 2 or weights.shape[1] != num_components:
        raise ValueError(f"Expected weights of shape (B, {num_components}), got {tuple(weights.shape)}")


class StudentTMixture(nn.Module):
    """Mixture over num_components multivariate Student's t distributions in dim dimensions.

    Component k has a learnable mean mu_k and diagonal scale exp(log_scales[k]) (initially 1), and nu
    degrees of freedom. Mixture weights are given per sample: a one-hot class, or a soft blend.
    """

    def __init__(self, dim: int, num_components: int, nu: float = 50.0, *, mean_std: float = 0.5) -> None:
        super().__init__()
        if nu <= 0:
            raise ValueError(f"nu must be > 0, got {nu}")
        self.dim = dim
        self.num_components = num_components
        self.nu = float(nu)
        # Spread the means a little (global torch generator), so the components start apart.
        self.means = nn.Parameter(mean_std * torch.randn(num_components, dim))
        self.log_scales = nn.Parameter(torch.zeros(num_components, dim))
        self._log_norm = (
            math.lgamma(0.5 * (self.nu + dim))
            - math.lgamma(0.5 * self.nu)
            - 0.5 * dim * math.log(self.nu * math.pi)
        )

    def log_prob_components(self, z: Tensor) -> Tensor:
        """log t_nu(z; mu_k, diag sigma_k^2) for every component: z (B, dim) -> (B, num_components)."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"Expected z of shape (B, {self.dim}), got {tuple(z.shape)}")
        diff = (z[:, None, :] - self.means) * (-self.log_scales).exp()  # (B, K, D)
        maha = diff.square().sum(dim=2)  # (B, K)
        return (
            self._log_norm
            - self.log_scales.sum(dim=1)
            - 0.5 * (self.nu + self.dim) * torch.log1p(maha / self.nu)
        )

    def log_prob(self, z: Tensor, weights: Tensor) -> Tensor:
        """log sum_k w_k t_k(z): z (B, dim), weights (B, num_components) with rows summing to 1 -> (B,).

        Components with zero weight drop out exactly (and pass no NaN gradients); an all-zero row gives -inf.
        """
        _check_weights(weights, self.num_components)
        # log(w) with log(0) = -inf; the clamp keeps log's gradient finite where the weight is zero.
        log_w = torch.where(weights > 0, weights.clamp_min(torch.finfo(weights.dtype).tiny).log(), -math.inf)
        return torch.logsumexp(log_w + self.log_prob_components(z), dim=1)

    def _draw(
        self, mean: Tensor, scale: Tensor, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        # Multivariate t: mean + scale * n / sqrt(u / nu), n ~ N(0, I), u ~ chi2(nu) = 2 Gamma(nu / 2), one u per sample.
        if temperature == 0.0:
            return mean  # no draws: the generator's state is left as it was
        B = mean.shape[0]
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        chi2 = 2.0 * _standard_gamma(
            0.5 * self.nu, B, generator=generator, dtype=mean.dtype, device=mean.device
        )
        noise = noise * torch.rsqrt(chi2 / self.nu)[:, None]
        return mean + temperature * scale * noise

    def sample(
        self, weights: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw from the mixture: a component per sample picked by weights (B, K), then its t. Returns (B, dim).

        For smooth transitions between classes use sample_blended(): a mixture sample jumps between modes.
        """
        _check_weights(weights, self.num_components)
        index = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B,)
        return self._draw(self.means[index], self.log_scales[index].exp(), temperature, generator)

    def sample_blended(
        self, weights: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw from one t whose mean and scale are the weight-averaged component means and scales. (B, dim).

        Continuous in the weights, so blending the weights from one class to another moves the samples
        smoothly; with one-hot weights it is the same distribution as sample().
        """
        _check_weights(weights, self.num_components)
        mean = weights.to(self.means.dtype) @ self.means  # (B, D)
        scale = weights.to(self.means.dtype) @ self.log_scales.exp()  # (B, D)
        return self._draw(mean, scale, temperature, generator)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_components={self.num_components}, nu={self.nu}"


class StandardNormal(nn.Module):
    """N(0, I) in dim dimensions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I): z (B, dim) -> (B,)."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"Expected z of shape (B, {self.dim}), got {tuple(z.shape)}")
        return -0.5 * (z.square().sum(dim=1) + self.dim * _LOG_2PI)

    @torch.no_grad()
    def sample(
        self,
        batch: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """temperature * N(0, I) draws, (batch, dim); device defaults to the generator's (else CPU)."""
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        return temperature * torch.randn(batch, self.dim, generator=generator, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
