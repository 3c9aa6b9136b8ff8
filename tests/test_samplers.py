"""Tests for edrepro.samplers: stationary laws on a correlated Gaussian, buffer semantics, validation."""

from __future__ import annotations

import pytest
import torch

from edrepro.samplers import ReplayBuffer, hmc, langevin, mala

# Target N(MU, SIGMA) with correlation 0.8: precision eigenvalues 1/1.8 and 1/0.2 = 5.
MU = torch.tensor([1.0, -1.0], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
PREC = torch.linalg.inv(SIGMA)
V_MIN = torch.tensor([1.0, -1.0], dtype=torch.float64) / 2**0.5  # eigenvector of SIGMA with variance 0.2
N_CHAINS = 4000


def gauss_energy(x: torch.Tensor) -> torch.Tensor:
    z = x - MU
    return 0.5 * ((z @ PREC) * z).sum(1)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T)


def start() -> torch.Tensor:
    return torch.zeros(N_CHAINS, 2, dtype=torch.float64)  # away from MU, so mixing is tested too


def ula_covariance(eps: float) -> torch.Tensor:
    """Exact stationary covariance of x ← x − εP(x−μ) + √(2ε)ξ: eigenvalues 1/(λ(1 − ελ/2))."""
    lam, vecs = torch.linalg.eigh(PREC)
    return vecs @ torch.diag(1 / (lam * (1 - eps * lam / 2))) @ vecs.T


def test_langevin_small_step_samples_gaussian():
    g = torch.Generator().manual_seed(0)
    x = langevin(gauss_energy, start(), n_steps=1000, step_size=0.01, generator=g)
    mean, cov = moments(x)
    # statistical SE with 4000 chains: ≈0.02 on means and covariance entries; ULA bias at ε=0.01 ≤ 2.5 %
    assert torch.allclose(mean, MU, atol=0.06)
    assert torch.allclose(cov, SIGMA, atol=0.08)
    assert torch.allclose(cov, ula_covariance(0.01), atol=0.06)


def test_mala_removes_the_discretisation_bias_of_ula():
    eps = 0.1  # ULA variance along V_MIN is 0.2/(1 − 0.25) = 0.267, the truth is 0.2
    g = torch.Generator().manual_seed(1)
    x_ula = langevin(gauss_energy, start(), n_steps=300, step_size=eps, generator=g)
    x_mala, acc = mala(gauss_energy, start(), n_steps=300, step_size=eps, generator=g)
    var_ula, var_mala = (x_ula @ V_MIN).var().item(), (x_mala @ V_MIN).var().item()
    # SE of these variances ≈ 0.27·√(2/4000) ≈ 0.006; tolerance 0.025 (≈ 4 SE) still separates 0.267 from 0.2
    assert abs(var_ula - V_MIN @ ula_covariance(eps) @ V_MIN) < 0.025
    assert abs(var_mala - 0.2) < 0.025
    mean, cov = moments(x_mala)
    assert torch.allclose(mean, MU, atol=0.06) and torch.allclose(cov, SIGMA, atol=0.08)
    assert 0.5 < acc < 1.0


def test_mala_acceptance_tends_to_one_for_small_steps():
    g = torch.Generator().manual_seed(2)
    x0 = MU + torch.randn(500, 2, generator=g, dtype=torch.float64)
    _, acc_small = mala(gauss_energy, x0, n_steps=20, step_size=1e-4, generator=g)
    _, acc_big = mala(gauss_energy, x0, n_steps=20, step_size=1.0, generator=g)
    assert acc_small > 0.99 and acc_big < 0.5


def test_hmc_samples_gaussian():
    g = torch.Generator().manual_seed(3)
    # ε = 0.5 is large enough (stability limit 2/√5 ≈ 0.89) that a wrong leapfrog shows up
    x, acc = hmc(gauss_energy, start(), n_steps=200, step_size=0.5, n_leapfrog=5, generator=g)
    mean, cov = moments(x)
    assert torch.allclose(mean, MU, atol=0.06)  # SE ≈ 0.02
    assert torch.allclose(cov, SIGMA, atol=0.08)
    assert abs((x @ V_MIN).var().item() - 0.2) < 0.025
    assert 0.8 < acc <= 1.0


def test_samplers_accept_trailing_singleton_and_float32():
    g = torch.Generator().manual_seed(4)
    energy = lambda x: 0.5 * (x**2).sum(1, keepdim=True)  # noqa: E731 - (B, 1) output
    x0 = torch.zeros(8, 3)
    assert langevin(energy, x0, 3, 0.1, generator=g).dtype == torch.float32
    assert mala(energy, x0, 3, 0.1, generator=g)[0].shape == (8, 3)
    assert hmc(energy, x0, 3, 0.1, n_leapfrog=2, generator=g)[0].shape == (8, 3)


def test_samplers_never_touch_parameter_grads():
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Softplus(), torch.nn.Linear(8, 1))
    energy = lambda x: net(x)[:, 0]  # noqa: E731
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(16, 2, generator=g)
    outs = [
        langevin(energy, x0, 5, 0.01, generator=g),
        mala(energy, x0, 5, 0.01, generator=g)[0],
        hmc(energy, x0, 5, 0.01, n_leapfrog=3, generator=g)[0],
    ]
    assert all(p.grad is None for p in net.parameters())
    assert all(not x.requires_grad for x in outs)
    assert not x0.requires_grad


@pytest.mark.parametrize("sampler", ["langevin", "mala", "hmc"])
def test_samplers_are_deterministic_given_a_seed(sampler):
    fn = {"langevin": langevin, "mala": lambda *a, **k: mala(*a, **k)[0], "hmc": lambda *a, **k: hmc(*a, **k)[0]}[sampler]
    x0 = torch.zeros(64, 2, dtype=torch.float64)
    runs = [fn(gauss_energy, x0, 20, 0.05, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_non_finite_state_raises_naming_the_step():
    energy = lambda x: -(x**4).sum(1)  # noqa: E731 - unbounded below: the chain explodes
    x0 = torch.full((4, 1), 3.0)
    with pytest.raises(FloatingPointError, match="step"):
        langevin(energy, x0, 100, 0.5)
    # with a Metropolis step a diverged proposal is rejected instead, so the state stays finite
    x, _ = mala(lambda x: 0.5 * (x**2).sum(1), x0, 5, 50.0)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x0=torch.zeros(5)), "x0"),
        (dict(x0=torch.tensor([[float("nan"), 0.0]])), "x0"),
        (dict(n_steps=0), "n_steps"),
        (dict(step_size=0.0), "step_size"),
        (dict(step_size=-1.0), "step_size"),
    ],
)
@pytest.mark.parametrize("sampler", [langevin, mala, hmc])
def test_samplers_validate_input(sampler, kwargs, match):
    args = dict(energy=gauss_energy, x0=torch.zeros(3, 2, dtype=torch.float64), n_steps=2, step_size=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        sampler(**args)


def test_hmc_validates_n_leapfrog():
    with pytest.raises(ValueError, match="n_leapfrog"):
        hmc(gauss_energy, torch.zeros(3, 2, dtype=torch.float64), 2, 0.1, n_leapfrog=0)


def test_energy_output_shape_is_checked():
    with pytest.raises(ValueError, match="energy"):
        langevin(lambda x: x, torch.zeros(3, 2), 2, 0.1)


def zeros_init(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.zeros(n, 2)


def test_replay_buffer_reinit_fraction_is_respected():
    buf = ReplayBuffer(100, zeros_init)
    buf.push(torch.full((100, 2), 7.0), torch.arange(100))
    g = torch.Generator().manual_seed(0)
    for frac, n in [(0.0, 40), (0.05, 40), (0.25, 80), (1.0, 10)]:
        x, idx = buf.sample(n, reinit_frac=frac, generator=g)
        fresh = (x == 0).all(1)
        assert fresh.sum().item() == round(frac * n)
        assert (x[~fresh] == 7.0).all()
        assert idx.unique().numel() == n  # distinct slots, so push is unambiguous


def test_replay_buffer_push_sample_round_trip():
    init = lambda n, gen: torch.randn(n, 2, generator=gen)  # noqa: E731
    g = torch.Generator().manual_seed(1)
    buf = ReplayBuffer(50, init, generator=g)
    assert len(buf) == 50 and buf.data.shape == (50, 2)
    x, idx = buf.sample(20, reinit_frac=0.0, generator=g)
    assert torch.equal(x, buf.data[idx])
    new = x + 100.0
    buf.push(new, idx)
    assert torch.equal(buf.data[idx], new)
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[idx] = False
    assert (buf.data[untouched].abs() < 100).all()
    # the sampled batch is a copy: editing it does not change the buffer
    x2, idx2 = buf.sample(5, reinit_frac=0.0, generator=g)
    x2 += 1.0
    assert not torch.equal(x2, buf.data[idx2])


def test_replay_buffer_validates_input():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, zeros_init)
    with pytest.raises(ValueError, match="init_fn"):
        ReplayBuffer(5, lambda n, g: torch.zeros(n + 1, 2))
    buf = ReplayBuffer(5, zeros_init)
    with pytest.raises(ValueError, match="n must"):
        buf.sample(6)
    with pytest.raises(ValueError, match="n must"):
        buf.sample(0)
    with pytest.raises(ValueError, match="reinit_frac"):
        buf.sample(2, reinit_frac=1.5)
    with pytest.raises(ValueError, match="idx"):
        buf.push(torch.zeros(2, 2), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="x "):
        buf.push(torch.zeros(2, 3), torch.tensor([0, 1]))
