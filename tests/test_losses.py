"""Tests for edrepro.losses: closed forms, expectations, small trainings, determinism, validation."""

from __future__ import annotations

import math

import pytest
import torch

from edrepro import losses
from edrepro.losses import (
    bernoulli_energy_discrepancy,
    contrastive_divergence,
    denoising_score_matching,
    energy_discrepancy,
    fit_gaussian_noise,
    noise_contrastive_estimation,
    score_matching,
    sliced_score_matching,
)
from edrepro.samplers import ReplayBuffer, langevin

D64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def const_energy(x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), 3.0, dtype=x.dtype)


class Quadratic(torch.nn.Module):
    """E(x) = ½ (x − μ)ᵀ diag(exp(−log_var)) (x − μ), learnable μ and log-variance."""

    def __init__(self, d: int = 1) -> None:
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(d))
        self.log_var = torch.nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.mu) ** 2 / self.log_var.exp()).sum(1)


def spd_matrix(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen(seed), dtype=D64)
    return a @ a.T / d + 0.5 * torch.eye(d, dtype=D64)


def quad_energy(a: torch.Tensor):
    return lambda x: 0.5 * ((x @ a) * x).sum(1)


def exact_sm_quadratic(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((x @ a) ** 2).sum(1).mean() - torch.trace(a)


# ---------------------------------------------------------------- energy discrepancy


@pytest.mark.parametrize("w, m", [(0.0, 1), (0.0, 4), (1.0, 1), (1.0, 4), (0.1, 32), (4.0, 7)])
def test_ed_constant_energy_is_log_w_plus_m_over_m(w, m):
    x = torch.randn(10, 3, generator=gen(0), dtype=D64)
    loss = energy_discrepancy(const_energy, x, t=0.7, m_particles=m, w=w, generator=gen(1))
    assert loss.shape == ()
    assert abs(loss.item() - math.log((w + m) / m)) < 1e-12


def test_ed_linear_energy_pins_variance_convention():
    # E(x) = a·x, w = 0: E(x) − E(x'_j) = a·(√t ξ + √t ξ'_j); as M → ∞ the inner mean tends to
    # exp(a·√t ξ + t|a|²/2), so the loss tends to E[a·√t ξ] + t|a|²/2 = t|a|²/2 = 0.25 here.
    # Were t a standard deviation the value would be t²|a|²/2 = 0.125.
    a = torch.tensor([0.6, -0.8], dtype=D64)
    x = torch.randn(20000, 2, generator=gen(0), dtype=D64)
    loss = energy_discrepancy(lambda z: z @ a, x, t=0.5, m_particles=256, w=0.0, generator=gen(1))
    # SE of the batch mean ≈ √(t|a|²/B) = 0.005; finite-M (Jensen) bias ≈ −(e^{0.5}−1)/(2M) ≈ −0.001
    assert abs(loss.item() - 0.25) < 0.02


def test_ed_matches_formula_with_shared_perturbation():
    # Rebuild the negatives from the same random stream: ξ_i (B, d) first, then ξ'_ij (B, M, d).
    x = torch.randn(6, 2, generator=gen(0), dtype=D64)
    energy = lambda z: (z**2).sum(1) + torch.sin(3 * z[:, 0])  # noqa: E731
    t, m, w = 0.3, 5, 0.7
    loss = energy_discrepancy(energy, x, t, m, w, generator=gen(42))
    g = gen(42)
    y = x + math.sqrt(t) * torch.randn(6, 2, generator=g, dtype=D64)
    neg = y[:, None] + math.sqrt(t) * torch.randn(6, m, 2, generator=g, dtype=D64)
    diff = energy(x)[:, None] - energy(neg.reshape(-1, 2)).view(6, m)
    expected = torch.log(w / m + diff.exp().mean(1)).mean()
    assert torch.allclose(loss, expected, rtol=1e-12, atol=1e-12)


def test_ed_evaluates_all_energies_in_one_call():
    calls = []

    def energy(z):
        calls.append(z.shape[0])
        return (z**2).sum(1)

    x = torch.randn(7, 3, generator=gen(0))
    energy_discrepancy(energy, x, 1.0, m_particles=4, generator=gen(1))
    bernoulli_energy_discrepancy(energy, (x > 0).float(), 0.1, m_particles=5, generator=gen(1))
    assert calls == [7 * 5, 7 * 6]


def test_ed_trains_quadratic_to_mean_and_variance():
    torch.manual_seed(0)  # Adam itself is deterministic; this only guards parameter init
    x = 1.5 + 0.7 * torch.randn(2000, 1, generator=gen(0))
    model = Quadratic(1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    g = gen(1)
    for _ in range(300):
        opt.zero_grad()
        energy_discrepancy(model, x, t=1.0, m_particles=16, w=1.0, generator=g).backward()
        opt.step()
    # within 5 % of the sample mean / variance (the maximum-likelihood fit)
    assert abs(model.mu.item() / x.mean().item() - 1) < 0.05
    assert abs(model.log_var.exp().item() / x.var().item() - 1) < 0.05


def mixture_log_density(x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """log of ρ·N(x; −5, 1) + (1 − ρ)·N(x; 5, 1) for x of shape (B, 1)."""
    z = x[:, 0]
    parts = torch.stack([torch.log(rho) - 0.5 * (z + 5) ** 2, torch.log1p(-rho) - 0.5 * (z - 5) ** 2], 1)
    return torch.logsumexp(parts, 1) - 0.5 * math.log(2 * math.pi)


def test_ed_mixture_weight_gradient_follows_mle_for_large_t():
    g = gen(0)
    comp = torch.rand(4096, generator=g) < 0.2
    data = (torch.where(comp, -5.0, 5.0) + torch.randn(4096, generator=g))[:, None]

    def grads(rho_value: float, t: float) -> tuple[float, float]:
        rho = torch.tensor(rho_value, requires_grad=True)
        ed = energy_discrepancy(lambda z: -mixture_log_density(z, rho), data, t, 16, 1.0, generator=gen(1))
        (g_ed,) = torch.autograd.grad(ed, rho)
        (g_ml,) = torch.autograd.grad(-mixture_log_density(data, rho).mean(), rho)
        return g_ed.item(), g_ml.item()

    for rho in (0.05, 0.1, 0.35, 0.5, 0.8):  # the truth is ρ = 0.2
        g_ed, g_ml = grads(rho, t=32.0)
        assert g_ed * g_ml > 0, (rho, g_ed, g_ml)
        # nearsightedness (paper Fig. 1): with t = 2 the noise rarely bridges the modes
        assert abs(grads(rho, t=2.0)[0]) < 0.1 * abs(g_ed)


# ---------------------------------------------------------------- Bernoulli ED


@pytest.mark.parametrize("w, m", [(0.0, 3), (1.0, 32), (0.5, 8)])
def test_bernoulli_ed_constant_energy(w, m):
    x = (torch.rand(9, 5, generator=gen(0)) < 0.5).to(D64)
    loss = bernoulli_energy_discrepancy(const_energy, x, 0.1, m, w, generator=gen(1))
    assert abs(loss.item() - math.log((w + m) / m)) < 1e-12


def test_bernoulli_ed_factorised_closed_form():
    # E(x) = −θ·x, w = 0, M → ∞: the inner mean tends to Π_k e^{−θ_k x_k}((1−ε)e^{θ_k y_k} + ε e^{θ_k(1−y_k)}),
    # and y_k = x_k with probability 1 − ε, which gives the expectation below.
    theta, eps = torch.tensor([0.5, -1.0, 1.5], dtype=D64), 0.2
    x = (torch.rand(8000, 3, generator=gen(0), dtype=D64) < 0.5).to(D64)
    same = torch.log((1 - eps) * torch.exp(theta * x) + eps * torch.exp(theta * (1 - x)))
    flip = torch.log((1 - eps) * torch.exp(theta * (1 - x)) + eps * torch.exp(theta * x))
    expected = (-theta * x + (1 - eps) * same + eps * flip).sum(1).mean()
    loss = bernoulli_energy_discrepancy(lambda z: -(z * theta).sum(1), x, eps, 256, 0.0, generator=gen(1))
    assert abs(loss.item() - expected.item()) < 0.02  # SE ≈ 0.005 over y; finite-M bias < 0.002


def test_bernoulli_ed_flip_probability_and_binary_negatives():
    seen = []

    def energy(z):
        seen.append(z)
        return z.sum(1)

    x = (torch.rand(400, 10, generator=gen(0)) < 0.5).float()
    bernoulli_energy_discrepancy(energy, x, 0.1, m_particles=8, generator=gen(1))
    neg = seen[0][400:].view(400, 8, 10)
    assert ((neg == 0) | (neg == 1)).all()
    # two independent flips with probability ε: x' ≠ x with probability 2ε(1 − ε) = 0.18
    rate = (neg != x[:, None]).float().mean().item()
    assert abs(rate - 0.18) < 0.01  # 32 000 coordinates: SE ≈ 0.002 (correlated through y: ~0.005)


def test_bernoulli_ed_trains_factorised_model_to_marginals():
    p = torch.tensor([0.1, 0.3, 0.5, 0.8])
    x = (torch.rand(2000, 4, generator=gen(0)) < p).float()
    theta = torch.zeros(4, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    g = gen(1)
    for _ in range(400):
        opt.zero_grad()
        bernoulli_energy_discrepancy(lambda z: -(z * theta).sum(1), x, 0.1, 8, 1.0, generator=g).backward()
        opt.step()
    assert torch.allclose(torch.sigmoid(theta.detach()), x.mean(0), atol=0.03)


# ---------------------------------------------------------------- score matching


def test_exact_sm_matches_quadratic_closed_form():
    a = spd_matrix(3, 0)
    x = torch.randn(50, 3, generator=gen(1), dtype=D64)
    assert torch.allclose(score_matching(quad_energy(a), x), exact_sm_quadratic(a, x), rtol=1e-10)


def test_exact_sm_matches_per_sample_hessian_and_is_differentiable():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Softplus(), torch.nn.Linear(16, 1)).to(D64)
    energy = lambda z: net(z)[:, 0]  # noqa: E731
    x = torch.randn(5, 3, generator=gen(1), dtype=D64)
    loss = score_matching(energy, x)
    ref = []
    for xi in x:
        grad = torch.autograd.functional.jacobian(lambda v: energy(v[None])[0], xi, create_graph=True)
        hess = torch.autograd.functional.hessian(lambda v: energy(v[None])[0], xi, create_graph=True)
        ref.append(0.5 * (grad**2).sum() - torch.trace(hess))
    ref = torch.stack(ref).mean()
    assert torch.allclose(loss, ref, rtol=1e-10)
    params = list(net.parameters())[:-1]  # the output bias shifts E by a constant: no x-derivative sees it
    g_loss = torch.autograd.grad(loss, params)
    g_ref = torch.autograd.grad(ref, params)
    assert all(torch.allclose(a, b, rtol=1e-8, atol=1e-12) for a, b in zip(g_loss, g_ref))
    assert g_loss[0].abs().sum() > 0  # the Hessian-trace path carries a gradient to the first layer


def test_dsm_equals_exact_sm_plus_offset_in_expectation():
    a = spd_matrix(2, 2)
    x = torch.randn(400000, 2, generator=gen(3), dtype=D64) @ torch.tensor([[1.0, 0.0], [0.5, 0.8]], dtype=D64)
    sigma = 0.3
    dsm = denoising_score_matching(quad_energy(a), x, sigma, generator=gen(4)).item()
    sm = exact_sm_quadratic(a, x).item()
    offset = 2 / (2 * sigma**2)
    smoothing = 0.5 * sigma**2 * torch.trace(a @ a).item()  # the O(σ²) term: SM of the σ-smoothed data
    # per-sample std of the DSM integrand ≈ √(d/2)/σ² ≈ 11 → SE ≈ 0.018; tolerance 0.06
    assert abs(dsm - offset - sm - smoothing) < 0.06
    assert abs(dsm - offset - sm) < 0.06 + smoothing


def test_sliced_sm_equals_exact_sm_in_expectation():
    a = spd_matrix(3, 5)
    x = torch.randn(50000, 3, generator=gen(6), dtype=D64)
    ssm = sliced_score_matching(quad_energy(a), x, n_projections=4, generator=gen(7)).item()
    sm = exact_sm_quadratic(a, x).item()
    assert abs(ssm - sm) < 0.03  # per-sample std ≈ 3, 200 000 (x, v) pairs → SE ≈ 0.007


# ---------------------------------------------------------------- contrastive divergence


def test_cd_equals_energy_gap_with_langevin_negatives():
    model = Quadratic(2)
    x = torch.randn(32, 2, generator=gen(0)) + 2.0
    loss = contrastive_divergence(model, x, n_steps=5, step_size=0.05, reg=0.3, generator=gen(1))
    assert all(p.grad is None for p in model.parameters())  # the sampler left .grad alone
    x_neg = langevin(model, x, 5, 0.05, generator=gen(1))
    e_pos, e_neg = model(x), model(x_neg)
    expected = e_pos.mean() - e_neg.mean() + 0.3 * (e_pos**2 + e_neg**2).mean()
    assert torch.allclose(loss, expected, rtol=1e-6)
    # data sits at +2, model at 0: descending the CD loss must move μ towards the data
    loss.backward()
    assert (model.mu.grad < 0).all()


def test_persistent_cd_uses_and_updates_the_buffer():
    model = Quadratic(2)
    buf = ReplayBuffer(64, lambda n, g: torch.full((n, 2), 10.0))
    x = torch.zeros(16, 2)
    before = buf.data.clone()
    loss = contrastive_divergence(model, x, n_steps=1, step_size=1e-6, buffer=buf, reinit_frac=0.0, generator=gen(0))
    changed = (buf.data != before).any(1)
    assert changed.sum().item() == 16  # exactly the sampled slots were written back
    # negatives started at 10 (the buffer), not at the data: E(x⁻) ≈ ½·2·10² = 100
    assert abs(loss.item() - (0.0 - 100.0)) < 0.1


# ---------------------------------------------------------------- NCE


def test_nce_value_when_model_equals_noise():
    # p_m = p_n gives G = −log ν for every sample: loss = log(1 + ν) + ν·log((1 + ν)/ν), whatever the samples.
    mean = torch.tensor([0.5, -1.0], dtype=D64)
    cov = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=D64)
    prec = torch.linalg.inv(cov)
    energy = lambda z: 0.5 * (((z - mean) @ prec) * (z - mean)).sum(1)  # noqa: E731
    log_z = 0.5 * torch.logdet(2 * math.pi * cov)
    x = torch.randn(20, 2, generator=gen(0), dtype=D64) * 3
    for nu in (1, 3):
        loss = noise_contrastive_estimation(energy, x, log_z, mean, cov, noise_ratio=nu, generator=gen(1))
        assert abs(loss.item() - (math.log(1 + nu) + nu * math.log((1 + nu) / nu))) < 1e-10


def test_nce_learns_gaussian_and_its_normaliser():
    x = 1.5 + 0.7 * torch.randn(2000, 1, generator=gen(0))
    mean, cov = fit_gaussian_noise(x)
    model = Quadratic(1)
    log_z = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([*model.parameters(), log_z], lr=0.05)
    g = gen(1)
    for _ in range(300):
        opt.zero_grad()
        noise_contrastive_estimation(model, x, log_z, mean, cov, noise_ratio=4, generator=g).backward()
        opt.step()
    var = model.log_var.exp().item()
    assert abs(model.mu.item() / x.mean().item() - 1) < 0.05
    assert abs(var / x.var().item() - 1) < 0.1
    assert abs(log_z.item() - 0.5 * math.log(2 * math.pi * var)) < 0.05  # NCE self-normalises


def test_fit_gaussian_noise_is_inflated_sample_moments():
    x = torch.randn(500, 3, generator=gen(0), dtype=D64) @ spd_matrix(3, 1)
    mean, cov = fit_gaussian_noise(x)
    centred = x - x.mean(0)
    assert torch.allclose(mean, x.mean(0))
    assert torch.allclose(cov, 1.2 * centred.T @ centred / 499 + 1e-6 * torch.eye(3, dtype=D64))
    assert torch.linalg.cholesky_ex(fit_gaussian_noise(torch.zeros(4, 2))[1])[1] == 0  # still PD


# ---------------------------------------------------------------- determinism and validation

X = torch.randn(16, 2, generator=gen(0))
XB = (X > 0).float()
MEAN, COV = fit_gaussian_noise(X)
ALL_LOSSES = {
    "ed": lambda g: energy_discrepancy(Quadratic(2), X, 1.0, generator=g),
    "bernoulli_ed": lambda g: bernoulli_energy_discrepancy(Quadratic(2), XB, 0.1, generator=g),
    "dsm": lambda g: denoising_score_matching(Quadratic(2), X, 0.1, generator=g),
    "ssm": lambda g: sliced_score_matching(Quadratic(2), X, 2, generator=g),
    "cd": lambda g: contrastive_divergence(Quadratic(2), X, 3, 0.1, reg=0.3, generator=g),
    "pcd": lambda g: contrastive_divergence(
        Quadratic(2), X, 3, 0.1, buffer=ReplayBuffer(32, lambda n, gg: torch.randn(n, 2, generator=gg), generator=g),
        reinit_frac=0.25, generator=g,
    ),
    "nce": lambda g: noise_contrastive_estimation(Quadratic(2), X, 0.5, MEAN, COV, 2, generator=g),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_losses_are_bitwise_deterministic_given_a_seed(name):
    a, b, c = (ALL_LOSSES[name](gen(s)) for s in (3, 3, 4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_exact_sm_is_deterministic():
    assert torch.equal(score_matching(Quadratic(2), X), score_matching(Quadratic(2), X))


Q = Quadratic(2)
BAD = [
    (energy_discrepancy, (Q, X), dict(t=0.0), "t "),
    (energy_discrepancy, (Q, X), dict(t=-1.0), "t "),
    (energy_discrepancy, (Q, X), dict(t=1.0, m_particles=0), "m_particles"),
    (energy_discrepancy, (Q, X), dict(t=1.0, w=-0.1), "w "),
    (energy_discrepancy, (Q, torch.zeros(3)), dict(t=1.0), "x "),
    (energy_discrepancy, (Q, torch.tensor([[0.0, float("inf")]])), dict(t=1.0), "x "),
    (energy_discrepancy, (lambda z: z, X), dict(t=1.0), "energy"),
    (bernoulli_energy_discrepancy, (Q, XB), dict(eps=0.0), "eps"),
    (bernoulli_energy_discrepancy, (Q, XB), dict(eps=1.0), "eps"),
    (bernoulli_energy_discrepancy, (Q, XB), dict(eps=0.1, m_particles=0), "m_particles"),
    (bernoulli_energy_discrepancy, (Q, XB), dict(eps=0.1, w=-1.0), "w "),
    (bernoulli_energy_discrepancy, (Q, X), dict(eps=0.1), "x "),
    (score_matching, (Q, torch.zeros(2, 2, 2)), {}, "x "),
    (denoising_score_matching, (Q, X), dict(sigma=0.0), "sigma"),
    (sliced_score_matching, (Q, X), dict(n_projections=0), "n_projections"),
    (contrastive_divergence, (Q, X), dict(n_steps=0), "n_steps"),
    (contrastive_divergence, (Q, X), dict(step_size=-0.1), "step_size"),
    (contrastive_divergence, (Q, X), dict(reg=-1.0), "reg"),
    (contrastive_divergence, (Q, X), dict(reinit_frac=2.0), "reinit_frac"),
    (contrastive_divergence, (Q, X), dict(buffer="buffer"), "buffer"),
    (noise_contrastive_estimation, (Q, X, 0.0, MEAN, COV), dict(noise_ratio=0), "noise_ratio"),
    (noise_contrastive_estimation, (Q, X, 0.0, MEAN[:1], COV), {}, "noise_mean"),
    (noise_contrastive_estimation, (Q, X, 0.0, MEAN, -COV), {}, "noise_cov"),
    (noise_contrastive_estimation, (Q, X, torch.zeros(2), MEAN, COV), {}, "log_normaliser"),
    (fit_gaussian_noise, (X[:1],), {}, "x "),
    (fit_gaussian_noise, (X,), dict(inflation=0.0), "inflation"),
]


@pytest.mark.parametrize("fn, args, kwargs, match", BAD, ids=[f"{f.__name__}-{m.strip()}-{i}" for i, (f, _, _, m) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


def test_module_exports_contract_names():
    for name in ("energy_discrepancy", "bernoulli_energy_discrepancy", "score_matching", "denoising_score_matching",
                 "sliced_score_matching", "contrastive_divergence", "noise_contrastive_estimation", "fit_gaussian_noise"):
        assert callable(getattr(losses, name))


# ---------------------------------------------------------------- exact SM: both Hessian-trace paths, and the ED pin

from edrepro.nets import MLP, toy_energy_net  # noqa: E402


def per_sample_sm(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """½|∇E|² − tr ∇²E row by row, with the full d × d Hessian of each sample: independent of losses."""
    e = lambda z: net(z[None]).reshape(())  # noqa: E731
    jac, hess = torch.autograd.functional.jacobian, torch.autograd.functional.hessian
    return torch.stack([0.5 * (jac(e, z, create_graph=True) ** 2).sum() - torch.trace(hess(e, z, create_graph=True)) for z in x]).mean()


@pytest.mark.parametrize("activation", ["softplus", "silu", "elu", "leaky_relu", "relu"])
@pytest.mark.parametrize("d", [1, 2, 3, 5, 20])
def test_exact_sm_equals_per_sample_hessian_trace_on_both_paths(d, activation):
    torch.manual_seed(d)
    net = MLP(d, (12, 12), activation=activation).to(D64)
    x = torch.randn(6, d, generator=gen(d), dtype=D64)
    ref = per_sample_sm(net, x)
    fast = score_matching(net, x)  # an nets.MLP: forward Laplacian
    generic = score_matching(lambda z: net(z), x)  # any callable: d Hessian-vector products
    assert losses._mlp_layers(net, x) is not None and losses._mlp_layers(lambda z: net(z), x) is None
    params = list(net.parameters())
    grads = [torch.autograd.grad(v, params, allow_unused=True, materialize_grads=True) for v in (ref, fast, generic)]
    for value, g in zip((fast, generic), grads[1:]):
        assert torch.allclose(value, ref, rtol=1e-10, atol=1e-12)
        assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(g, grads[0]))
    if activation != "relu":  # ReLU nets: zero Laplacian and first-layer bias unseen a.e., on every path
        assert grads[1][0].abs().sum() > 0


def test_exact_sm_fast_path_float32_and_edge_networks():
    torch.manual_seed(0)
    net = toy_energy_net(2)
    x = torch.randn(64, 2, generator=gen(0))
    assert torch.allclose(score_matching(net, x), score_matching(lambda z: net(z), x), rtol=1e-4, atol=1e-5)
    linear = MLP(3, ()).to(D64)  # no hidden layer: E = wᵀx + b, loss ½|w|²
    xl = torch.randn(5, 3, generator=gen(1), dtype=D64)
    assert torch.allclose(score_matching(linear, xl), 0.5 * (linear.net[0].weight ** 2).sum())

    class Shifted(MLP):  # a subclass with its own forward is not its layers: the generic path
        def forward(self, z):
            return super().forward(z) + (z**3).sum(1)

    shifted = Shifted(2, (8,)).to(D64)
    assert losses._mlp_layers(shifted, xl[:, :2]) is None
    assert torch.allclose(score_matching(shifted, xl[:, :2]), per_sample_sm(shifted, xl[:, :2]), rtol=1e-10)
    with pytest.raises(ValueError, match="x must have shape"):  # the MLP's own width check still applies
        score_matching(net, torch.zeros(4, 3))


def straightforward_ed(energy, x, t, m, w, generator):
    """The ED estimator as written in the paper, one batched energy call, draws ξ (n, d) then ξ' (n, M, d)."""
    n, d = x.shape
    y = x + math.sqrt(t) * torch.randn((n, d), generator=generator, dtype=x.dtype)
    neg = y[:, None, :] + math.sqrt(t) * torch.randn((n, m, d), generator=generator, dtype=x.dtype)
    e = energy(torch.cat([x, neg.reshape(n * m, d)]))
    logits = e[:n, None] - e[n:].view(n, m)
    if w > 0:
        logits = torch.cat([logits, torch.full((n, 1), math.log(w), dtype=x.dtype)], dim=1)
    return (torch.logsumexp(logits, dim=1) - math.log(m)).mean()


@pytest.mark.parametrize("m, w", [(4, 1.0), (1, 0.0), (7, 0.3)])
def test_ed_is_bitwise_the_straightforward_estimator(m, w):
    # Cached results of the book depend on ED's exact numbers: pin value and parameter gradients bitwise.
    torch.manual_seed(0)
    net = toy_energy_net(2)
    x = torch.randn(128, 2, generator=gen(0))
    loss = energy_discrepancy(net, x, t=1.0, m_particles=m, w=w, generator=gen(5))
    ref = straightforward_ed(net, x, 1.0, m, w, gen(5))
    assert torch.equal(loss, ref)
    g_loss = torch.autograd.grad(loss, list(net.parameters()))
    g_ref = torch.autograd.grad(ref, list(net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(g_loss, g_ref))


def test_gaussian_negatives_share_the_first_step_and_have_variance_two_t():
    x = torch.zeros(20_000, 2, dtype=torch.float64)
    t = 0.3
    neg = losses.gaussian_negatives(x, t, 3, torch.Generator().manual_seed(0))
    assert neg.shape == (20_000, 3, 2)
    # x' − x = √t(ξ + ξ'_j): variance 2t; two negatives of one point share ξ: covariance t
    assert neg.var(dim=0).mean().item() == pytest.approx(2 * t, rel=0.03)
    assert (neg[:, 0] * neg[:, 1]).mean().item() == pytest.approx(t, rel=0.05)
    again = losses.gaussian_negatives(x, t, 3, torch.Generator().manual_seed(0))
    assert torch.equal(neg, again)
    with pytest.raises(ValueError, match="m_particles"):
        losses.gaussian_negatives(x, t, 0)
    with pytest.raises(ValueError, match="t"):
        losses.gaussian_negatives(x, -1.0, 2)
