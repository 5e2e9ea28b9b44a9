"""Flow layers, the context encoder and the latent distributions (models/flow.py, transformer.py, distributions.py)."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp
from torch import Tensor, nn

from models.distributions import StandardNormal, StudentTMixture
from models.flow import ActNorm, AffineCoupling, Flow, FlowStep, InvLinearLU
from models.transformer import ContextEncoder

DIM = 7  # odd on purpose: the coupling halves differ in size
CONTEXT_DIM = 5
HIDDEN = 16
BATCH = 4


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny ops run faster on one thread (DESIGN.md), and stay fast when the machine is busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _perturb(module: nn.Module, std: float = 0.1) -> None:
    """Move every parameter off its initial value, so a layer is not trivially the identity."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))


LAYERS: dict[str, Callable[[], nn.Module]] = {
    "actnorm": lambda: ActNorm(DIM),
    "linear": lambda: InvLinearLU(DIM),
    "coupling0": lambda: AffineCoupling(DIM, CONTEXT_DIM, HIDDEN, parity=0),
    "coupling1": lambda: AffineCoupling(DIM, CONTEXT_DIM, HIDDEN, parity=1),
    "step": lambda: FlowStep(DIM, CONTEXT_DIM, HIDDEN, parity=1),
    "flow": lambda: Flow(DIM, CONTEXT_DIM, num_steps=2, hidden=HIDDEN),
    "flow_even_dim": lambda: Flow(DIM - 1, CONTEXT_DIM, num_steps=2, hidden=HIDDEN),
}


def _make(name: str, dtype: torch.dtype) -> tuple[nn.Module, Tensor, Tensor]:
    """A layer with data-initialised ActNorms and perturbed weights, plus an input batch and its context."""
    layer = LAYERS[name]().to(dtype)
    dim = DIM - 1 if name == "flow_even_dim" else DIM
    x = 2.0 * torch.randn(BATCH, dim, dtype=dtype) + 1.0
    context = torch.randn(BATCH, CONTEXT_DIM, dtype=dtype)
    layer.train()
    layer(x, context=context)  # data-dependent ActNorm initialisation
    _perturb(layer)
    return layer.eval(), x, context


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_reverse_inverts_forward(name: str, dtype: torch.dtype, tol: float) -> None:
    layer, x, context = _make(name, dtype)
    y, logdet_f = layer(x, context=context)
    x_back, logdet_r = layer.reverse(y, context=context)
    for t in (y, logdet_f, x_back, logdet_r):
        assert torch.isfinite(t).all()
        assert t.dtype == dtype
    assert y.shape == x.shape and x_back.shape == x.shape
    assert logdet_f.shape == (BATCH,) and logdet_r.shape == (BATCH,)
    assert (x_back - x).abs().max() < tol
    assert (logdet_f + logdet_r).abs().max() < tol * 10


@pytest.mark.parametrize("name", list(LAYERS))
def test_logdet_matches_brute_force_jacobian(name: str) -> None:
    layer, x, context = _make(name, torch.float64)
    _, logdet = layer(x, context=context)
    for i in range(BATCH):
        jac = torch.autograd.functional.jacobian(
            lambda xi, i=i: layer(xi[None], context=context[i : i + 1])[0][0], x[i]
        )
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        assert abs(logabsdet.item() - logdet[i].item()) < 1e-9


@pytest.mark.parametrize("parity", [0, 1])
def test_fresh_coupling_is_identity(parity: int) -> None:
    coupling = AffineCoupling(DIM, CONTEXT_DIM, HIDDEN, parity=parity)
    x = torch.randn(BATCH, DIM)
    context = torch.randn(BATCH, CONTEXT_DIM)
    y, logdet = coupling(x, context=context)
    assert torch.equal(y, x)
    assert torch.equal(logdet, torch.zeros(BATCH))


@pytest.mark.parametrize("parity", [0, 1])
def test_coupling_keeps_one_part(parity: int) -> None:
    coupling = AffineCoupling(DIM, CONTEXT_DIM, HIDDEN, parity=parity)
    _perturb(coupling)
    x = torch.randn(BATCH, DIM)
    y, _ = coupling(x, context=torch.randn(BATCH, CONTEXT_DIM))
    kept = slice(0, DIM // 2) if parity == 0 else slice(DIM // 2, DIM)
    changed = slice(DIM // 2, DIM) if parity == 0 else slice(0, DIM // 2)
    assert torch.equal(y[:, kept], x[:, kept])
    assert not torch.allclose(y[:, changed], x[:, changed])


def test_actnorm_initialises_from_first_training_batch() -> None:
    actnorm = ActNorm(DIM)
    x = 3.0 * torch.randn(64, DIM) - 2.0
    assert not actnorm.initialized
    actnorm.eval()
    y, _ = actnorm(x, context=None)
    assert torch.equal(y, x) and not actnorm.initialized  # eval mode never initialises
    actnorm.train()
    y, _ = actnorm(x, context=None)
    assert actnorm.initialized
    assert y.mean(0).abs().max() < 1e-5
    assert (y.std(0, correction=0) - 1).abs().max() < 1e-4
    loc = actnorm.loc.detach().clone()
    actnorm(x + 5.0, context=None)  # a second batch does not re-initialise
    assert torch.equal(actnorm.loc, loc)


def test_actnorm_rejects_batch_of_one_for_init() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        ActNorm(DIM).train()(torch.randn(1, DIM), context=None)


def test_actnorm_init_flag_survives_save_and_load() -> None:
    flow = Flow(DIM, CONTEXT_DIM, num_steps=2, hidden=HIDDEN)
    flow.train()
    flow(torch.randn(16, DIM), context=torch.randn(16, CONTEXT_DIM))
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    fresh = Flow(DIM, CONTEXT_DIM, num_steps=2, hidden=HIDDEN)
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    fresh.train()
    assert all(step.actnorm.initialized for step in fresh.steps)
    x = torch.randn(16, DIM) + 10.0
    context = torch.randn(16, CONTEXT_DIM)
    z, _ = fresh(x, context=context)  # would re-initialise (and differ) if the flag were lost
    z_ref, _ = flow(x, context=context)
    assert torch.equal(z, z_ref)


def test_prepared_reverse_matches_eager_and_caches_drop() -> None:
    flow, x, context = _make("flow", torch.float64)
    z, _ = flow(x, context=context)
    x_eager, logdet_eager = flow.reverse(z, context=context)
    flow.prepare_for_inference()
    assert not flow.training
    x_fast, logdet_fast = flow.reverse(z, context=context)
    assert (x_fast - x_eager).abs().max() < 1e-12
    assert (logdet_fast - logdet_eager).abs().max() < 1e-12
    # New weights drop the caches: reverse() stays the exact inverse.
    other = Flow(DIM, CONTEXT_DIM, num_steps=2, hidden=HIDDEN).to(torch.float64)
    _perturb(other)
    flow.load_state_dict(other.state_dict())
    assert all(step._affine_inv is None for step in flow.steps)
    z, _ = flow(x, context=context)
    assert (flow.reverse(z, context=context)[0] - x).abs().max() < 1e-10
    flow.prepare_for_inference()
    flow.train()
    assert all(step._affine_inv is None and step.linear._weight_inv is None for step in flow.steps)


def test_deep_flow_round_trip_float32() -> None:
    flow = Flow(52, 96, num_steps=16, hidden=128)
    x = torch.rand(8, 52)
    context = torch.randn(8, 96)
    flow.train()
    flow(x, context=context)
    with torch.no_grad():
        for step in flow.steps:
            step.coupling.net[-1].weight.normal_(0.0, 0.02)
    flow.eval()
    with torch.no_grad():
        z, logdet_f = flow(x, context=context)
        x_back, logdet_r = flow.reverse(z, context=context)
        assert (x_back - x).abs().max() < 1e-4
        assert (logdet_f + logdet_r).abs().max() < 1e-3
        flow.prepare_for_inference()
        x_fast, _ = flow.reverse(z[:1], context=context[:1])
        assert (x_fast - x[:1]).abs().max() < 1e-4


class _Reverse(nn.Module):
    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow.reverse(z, context=context)


@pytest.mark.parametrize("prepared", [False, True])
def test_flow_reverse_traces(prepared: bool) -> None:
    flow, x, context = _make("flow", torch.float32)
    if prepared:
        flow.prepare_for_inference()
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.jit.trace; tracing still works and is the fastest CPU path.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.trace\w*` is deprecated", category=DeprecationWarning
        )
        traced = torch.jit.trace(_Reverse(flow), (x[:1], context[:1]))
    z, _ = flow(x, context=context)
    x_back, logdet = traced(z[1:2], context[1:2])
    assert (x_back - x[1:2]).abs().max() < 1e-5
    assert torch.allclose(logdet, flow.reverse(z[1:2], context=context[1:2])[1], atol=1e-5)


def test_flow_rejects_wrong_shapes() -> None:
    flow = Flow(DIM, CONTEXT_DIM, num_steps=2, hidden=HIDDEN)
    with pytest.raises(ValueError, match=rf"\(B, {DIM}\)"):
        flow(torch.randn(2, DIM + 1), context=torch.randn(2, CONTEXT_DIM))
    with pytest.raises(ValueError, match="context"):
        flow.reverse(torch.randn(2, DIM), context=torch.randn(3, CONTEXT_DIM))


def test_conditional_flow_overfits_a_small_batch() -> None:
    n = 32
    context = torch.randn(n, CONTEXT_DIM)
    x = context @ torch.randn(CONTEXT_DIM, DIM) + 0.05 * torch.randn(n, DIM)
    flow = Flow(DIM, CONTEXT_DIM, num_steps=4, hidden=32)
    prior = StandardNormal(DIM)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    flow.train()
    losses = []
    for _ in range(200):
        z, logdet = flow(x, context=context)
        loss = -(prior.log_prob(z) + logdet).mean() / DIM  # nats per dimension
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.0
    assert losses[-1] < 0.7 * losses[0]
    assert all(math.isfinite(v) for v in losses)


# --- distributions -------------------------------------------------------------------------------


def _scipy_component_log_pdfs(mixture: StudentTMixture, z: Tensor) -> np.ndarray:
    means = mixture.means.detach().double().numpy()
    scales = mixture.log_scales.detach().double().exp().numpy()
    return np.stack(
        [
            stats.multivariate_t(loc=means[k], shape=np.diag(scales[k] ** 2), df=mixture.nu).logpdf(
                z.double().numpy()
            )
            for k in range(mixture.num_components)
        ],
        axis=1,
    )


@pytest.mark.parametrize("nu", [50.0, 3.5])
def test_student_t_mixture_matches_scipy(nu: float) -> None:
    mixture = StudentTMixture(DIM, 8, nu=nu).double()
    with torch.no_grad():
        mixture.log_scales.normal_(0.0, 0.3)
    z = 1.5 * torch.randn(6, DIM, dtype=torch.float64)
    ref = _scipy_component_log_pdfs(mixture, z)
    labels = torch.tensor([0, 3, 7, 5, 1, 2])
    one_hot = nn.functional.one_hot(labels, 8).double()
    got = mixture.log_prob(z, one_hot).detach().numpy()
    np.testing.assert_allclose(got, ref[np.arange(6), labels.numpy()], rtol=0, atol=1e-10)
    np.testing.assert_allclose(mixture.log_prob_components(z).detach().numpy(), ref, rtol=0, atol=1e-10)
    soft = torch.zeros(6, 8, dtype=torch.float64)
    soft[:, 2] = torch.linspace(0.0, 1.0, 6)
    soft[:, 5] = 1.0 - soft[:, 2]
    soft[3] = torch.softmax(torch.randn(8, dtype=torch.float64), 0)  # all components
    got = mixture.log_prob(z, soft).detach().numpy()
    with np.errstate(divide="ignore"):
        expected = logsumexp(ref + np.log(soft.numpy()), axis=1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_student_t_mixture_gradients_are_finite_with_zero_weights() -> None:
    mixture = StudentTMixture(DIM, 8)
    z = torch.randn(4, DIM, requires_grad=True)
    weights = nn.functional.one_hot(torch.tensor([1, 1, 4, 6]), 8).float().requires_grad_()
    mixture.log_prob(z, weights).sum().backward()
    assert mixture.means.grad is not None
    for grad in (mixture.means.grad, mixture.log_scales.grad, z.grad, weights.grad):
        assert grad is not None and torch.isfinite(grad).all()
    used = mixture.means.grad.abs().sum(1) > 0
    assert used.tolist() == [k in (1, 4, 6) for k in range(8)]


def test_student_t_mixture_sampling() -> None:
    mixture = StudentTMixture(DIM, 8)
    weights = nn.functional.one_hot(torch.tensor([0, 5, 5]), 8).float()
    generator = torch.Generator().manual_seed(1)
    for sample in (mixture.sample, mixture.sample_blended):
        draws = sample(weights, 1.0, generator)
        assert draws.shape == (3, DIM) and torch.isfinite(draws).all()
        assert torch.equal(sample(weights, 0.0, generator), mixture.means[[0, 5, 5]])
    blend = torch.zeros(1, 8)
    blend[0, 2], blend[0, 3] = 0.25, 0.75
    mean = 0.25 * mixture.means[2] + 0.75 * mixture.means[3]
    assert torch.allclose(mixture.sample_blended(blend, 0.0, generator)[0], mean.detach())
    # Reparameterised: the centre (temperature 0) is differentiable in the means.
    mixture.sample_blended(blend, 0.0).sum().backward()
    assert mixture.means.grad is not None and mixture.means.grad[[2, 3]].abs().sum() > 0
    # Same generator state, same draws.
    a = mixture.sample_blended(weights, 1.0, torch.Generator().manual_seed(3))
    b = mixture.sample_blended(weights, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_student_t_samples_have_the_right_spread() -> None:
    nu = 5.0
    mixture = StudentTMixture(2, 1, nu=nu)
    with torch.no_grad():
        mixture.log_scales.fill_(math.log(2.0))
    weights = torch.ones(20000, 1)
    draws = mixture.sample(weights, 0.5, torch.Generator().manual_seed(0)) - mixture.means.detach()
    # Var of a t with nu dof is nu / (nu - 2), times (temperature * scale)^2 = 1.
    assert abs(draws.var().item() - nu / (nu - 2)) < 0.15
    assert abs(draws.mean().item()) < 0.05


def test_standard_normal() -> None:
    normal = StandardNormal(DIM)
    z = torch.randn(5, DIM, dtype=torch.float64)
    expected = stats.multivariate_normal(np.zeros(DIM), np.eye(DIM)).logpdf(z.numpy())
    np.testing.assert_allclose(normal.log_prob(z).numpy(), expected, atol=1e-10)
    generator = torch.Generator().manual_seed(0)
    draws = normal.sample(3, 0.7, generator)
    assert draws.shape == (3, DIM) and draws.dtype == torch.float32
    assert torch.equal(normal.sample(3, 0.0, generator), torch.zeros(3, DIM))


# --- context encoder -----------------------------------------------------------------------------


def test_context_encoder_shape_and_causality() -> None:
    encoder = ContextEncoder().eval()
    tokens = torch.randn(2, 11, 64)
    out = encoder(tokens)
    assert out.shape == (2, 11, 64) and torch.isfinite(out).all()
    changed = tokens.clone()
    changed[:, 7:] = torch.randn(2, 4, 64)
    out_changed = encoder(changed)
    assert torch.allclose(out_changed[:, :7], out[:, :7], atol=1e-6)
    assert not torch.allclose(out_changed[:, 7:], out[:, 7:])
    assert encoder(tokens[:, 5:]).shape == (2, 6, 64)
    with pytest.raises(ValueError, match="T <= 11"):
        encoder(torch.randn(1, 12, 64))


def test_context_encoder_traces() -> None:
    encoder = ContextEncoder().eval()
    tokens = torch.randn(1, 11, 64)
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.jit.trace; tracing still works and is the fastest CPU path.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.trace\w*` is deprecated", category=DeprecationWarning
        )
        traced = torch.jit.trace(encoder, tokens)
    other = torch.randn(1, 11, 64)
    assert torch.allclose(traced(other), encoder(other), atol=1e-6)


def test_context_encoder_gradient_reaches_inputs_and_weights() -> None:
    encoder = ContextEncoder(num_layers=1, dropout=0.1).train()
    tokens = torch.randn(2, 11, 64, requires_grad=True)
    (encoder(tokens)[:, -1] @ torch.randn(64)).sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.parameters())
