"""Tests for the discrete-ED chapter: lattice, Ising/RBM models, Gibbs samplers and experiment mechanics.

The Gibbs samplers are checked against exact distributions computed by enumerating every state
of a 3×3 Ising model (512 states) and of a tiny RBM; the exact RBM log Z against brute force.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from edrepro import losses, nets, samplers
from edrepro.book import runs
from edrepro.chapters import discrete

# ------------------------------------------------------------------ helpers


def all_spins(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)


def all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)


def exact_ising(coupling: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All states and their probabilities under p(s) ∝ exp(sᵀJs + bᵀs)."""
    s = all_spins(coupling.shape[0])
    logp = ((s @ coupling) * s).sum(1) + s @ bias
    return s, torch.softmax(logp, 0)


def ising_3x3(sigma: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    coupling = sigma * nets.lattice_adjacency(3, dtype=torch.float64)
    bias = torch.linspace(-0.4, 0.4, 9, dtype=torch.float64)  # breaks the ± symmetry: non-trivial marginals
    return coupling, bias


def tiny_rbm(n_visible: int = 5, n_hidden: int = 4, seed: int = 0) -> nets.RBM:
    g = torch.Generator().manual_seed(seed)
    rbm = nets.RBM(n_visible, n_hidden, init_std=1.0, generator=g).double()
    with torch.no_grad():
        rbm.visible_bias.copy_(torch.randn(n_visible, generator=g, dtype=torch.float64))
        rbm.hidden_bias.copy_(torch.randn(n_hidden, generator=g, dtype=torch.float64))
    return rbm


# ------------------------------------------------------------------ lattice and colouring


def test_lattice_adjacency_is_the_periodic_square_lattice():
    a = nets.lattice_adjacency(4)
    assert a.shape == (16, 16)
    assert torch.equal(a, a.T) and a.diagonal().abs().sum() == 0
    assert torch.equal(a.sum(1), torch.full((16,), 4.0))
    # site (0, 0) = 0: neighbours (1, 0) = 4, (3, 0) = 12, (0, 1) = 1, (0, 3) = 3 (wrap-around)
    assert a[0].nonzero().flatten().tolist() == [1, 3, 4, 12]
    assert nets.lattice_adjacency(3).sum() == 9 * 4
    for bad in (2, 0, 3.0, True):
        with pytest.raises(ValueError, match="side"):
            nets.lattice_adjacency(bad)


@pytest.mark.parametrize("side, n_colours", [(4, 2), (10, 2), (3, None), (5, None)])
def test_interaction_colouring_partitions_into_non_interacting_classes(side, n_colours):
    a = nets.lattice_adjacency(side)
    classes = samplers.interaction_colouring(a)
    flat = torch.cat(classes).sort().values
    assert torch.equal(flat, torch.arange(side * side))
    for c in classes:
        assert a[c][:, c].abs().sum() == 0
    if n_colours is not None:  # even side: the checkerboard
        assert len(classes) == n_colours
    assert len(samplers.interaction_colouring(torch.ones(4, 4) - torch.eye(4))) == 4  # dense: one site each


# ------------------------------------------------------------------ Ising model and Gibbs sampler


def test_ising_model_energy_convention_and_parametrisation():
    torch.manual_seed(0)
    model = nets.IsingModel(6, learn_bias=True)
    with torch.no_grad():
        model.weight.normal_()
        model.bias.normal_()
    j = model.coupling
    assert torch.allclose(j, j.T) and j.diagonal().abs().sum() == 0
    x = (torch.rand(8, 6) < 0.5).float()
    s = 2 * x - 1
    expected = -torch.einsum("bi,ij,bj->b", s, j, s) - s @ model.bias
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model.spin_energy(s), expected)
    # the energy difference of one flip is the Gibbs conditional's logit 4 Σ_j J_ij s_j + 2 b_i
    i = 2
    up, down = s.clone(), s.clone()
    up[:, i], down[:, i] = 1.0, -1.0
    logit = model.spin_energy(down) - model.spin_energy(up)
    torch.testing.assert_close(logit, 4 * (s @ j[:, i]) + 2 * model.bias[i])
    assert not nets.IsingModel(3).bias.requires_grad
    truth = 0.2 * nets.lattice_adjacency(3)
    torch.testing.assert_close(nets.IsingModel(9, init_coupling=truth).coupling, truth)
    with pytest.raises(ValueError, match="init_coupling"):
        nets.IsingModel(9, init_coupling=truth + torch.eye(9))
    with pytest.raises(ValueError, match="s must have shape"):
        model.spin_energy(torch.ones(2, 5))


@pytest.mark.parametrize("colour", [True, False])
def test_ising_gibbs_reproduces_exact_marginals_of_3x3_model(colour):
    coupling, bias = ising_3x3()
    states, p = exact_ising(coupling, bias)
    exact_mean = p @ states  # E[s_i]
    exact_corr = torch.einsum("k,ki,kj->ij", p, states, states)  # E[s_i s_j]
    g = torch.Generator().manual_seed(1)
    s0 = torch.where(torch.rand(6000, 9, generator=g, dtype=torch.float64) < 0.5, 1.0, -1.0)
    colouring = samplers.interaction_colouring(coupling) if colour else None
    s = samplers.ising_gibbs(coupling, s0, 200, bias=bias, colouring=colouring, generator=g)
    assert ((s == 1) | (s == -1)).all()
    # Monte-Carlo standard error ≤ 1/√6000 ≈ 0.013; 0.05 is about 4 standard errors
    assert (s.mean(0) - exact_mean).abs().max() < 0.05
    emp_corr = s.T @ s / s.shape[0]
    assert (emp_corr - exact_corr).abs().max() < 0.05
    # and the full distribution: total variation over the 512 states (histogram of 6000 draws)
    codes = ((s > 0).long() * (1 << torch.arange(8, -1, -1))).sum(1)
    emp = torch.bincount(codes, minlength=512).double() / s.shape[0]
    assert 0.5 * (emp - p).abs().sum() < 0.12  # the sampling noise alone gives TV ≈ 0.1


def test_ising_gibbs_dense_coupling_sequential_scan():
    g = torch.Generator().manual_seed(3)
    w = 0.3 * torch.randn(5, 5, generator=g, dtype=torch.float64)
    coupling = (w + w.T) / 2 * (1 - torch.eye(5, dtype=torch.float64))
    bias = 0.2 * torch.randn(5, generator=g, dtype=torch.float64)
    states, p = exact_ising(coupling, bias)
    s = samplers.ising_gibbs(coupling, torch.ones(8000, 5, dtype=torch.float64), 40, bias=bias, generator=g)
    codes = ((s > 0).long() * (1 << torch.arange(4, -1, -1))).sum(1)
    emp = torch.bincount(codes, minlength=32).double() / s.shape[0]
    assert 0.5 * (emp - p).abs().sum() < 0.04


def test_ising_gibbs_is_deterministic_and_traces():
    coupling, _ = ising_3x3()
    s0 = torch.ones(4, 9, dtype=torch.float64)
    a = samplers.ising_gibbs(coupling, s0, 5, generator=torch.Generator().manual_seed(0))
    b = samplers.ising_gibbs(coupling, s0, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.equal(samplers.ising_gibbs(coupling, s0, 0), s0)
    s, tr = samplers.ising_gibbs_trace(coupling, s0, 7, lambda s: s.mean(1), generator=torch.Generator().manual_seed(0))
    assert tr.shape == (7, 4) and torch.equal(tr[-1], s.mean(1))


def test_ising_gibbs_rejects_bad_input():
    coupling, _ = ising_3x3()
    s0 = torch.ones(2, 9, dtype=torch.float64)
    with pytest.raises(ValueError, match="symmetric"):
        samplers.ising_gibbs(coupling + torch.eye(9, dtype=torch.float64), s0, 1)
    asym = coupling.clone()
    asym[0, 1] += 1
    with pytest.raises(ValueError, match="symmetric"):
        samplers.ising_gibbs(asym, s0, 1)
    with pytest.raises(ValueError, match="spins"):
        samplers.ising_gibbs(coupling, torch.zeros(2, 9, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="interacting"):
        samplers.ising_gibbs(coupling, s0, 1, colouring=[torch.arange(9)])
    with pytest.raises(ValueError, match="partition"):
        samplers.ising_gibbs(coupling, s0, 1, colouring=[torch.arange(4)])
    with pytest.raises(ValueError, match="bias"):
        samplers.ising_gibbs(coupling, s0, 1, bias=torch.zeros(3))
    with pytest.raises(ValueError, match="n_sweeps"):
        samplers.ising_gibbs(coupling, s0, -1)


# ------------------------------------------------------------------ RBM


def test_rbm_exact_log_partition_matches_brute_force():
    rbm = tiny_rbm()
    v, h = all_binary(5), all_binary(4)
    vv = v.repeat_interleave(len(h), 0)
    hh = h.repeat(len(v), 1)
    with torch.no_grad():
        brute = torch.logsumexp(-rbm.joint_energy(vv, hh), 0)
        torch.testing.assert_close(rbm.log_partition(), brute)
        torch.testing.assert_close(rbm.log_partition(chunk_size=3), brute)  # chunks that do not divide 2^H
        # the free energy is −log Σ_h exp(−E(v, h))
        f = -torch.logsumexp(-rbm.joint_energy(vv, hh).view(len(v), len(h)), 1)
        torch.testing.assert_close(rbm.free_energy(v), f)
        torch.testing.assert_close(rbm.log_prob(v).exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    assert rbm(v).shape == (32,)


def test_rbm_log_partition_is_differentiable_and_guarded():
    rbm = tiny_rbm(3, 2)
    rbm.log_partition().backward()
    # ∂ log Z / ∂ b_v = E_model[v]
    v = all_binary(3)
    with torch.no_grad():
        expected = rbm.log_prob(v).exp() @ v
    torch.testing.assert_close(rbm.visible_bias.grad, expected)
    with pytest.raises(ValueError, match="H = 27"):
        nets.RBM(4, 27).log_partition()
    with pytest.raises(ValueError, match="visible_bias"):
        nets.RBM(4, 2, visible_bias=torch.zeros(3))
    with pytest.raises(ValueError, match="v must have shape"):
        nets.RBM(4, 2).free_energy(torch.zeros(2, 5))


def test_rbm_conditionals_are_the_joint_energy_differences():
    rbm = tiny_rbm()
    g = torch.Generator().manual_seed(0)
    v = (torch.rand(6, 5, generator=g) < 0.5).double()
    h = (torch.rand(6, 4, generator=g) < 0.5).double()
    with torch.no_grad():
        h1, h0 = h.clone(), h.clone()
        h1[:, 0], h0[:, 0] = 1.0, 0.0
        torch.testing.assert_close(rbm.hidden_probs(v)[:, 0], torch.sigmoid(rbm.joint_energy(v, h0) - rbm.joint_energy(v, h1)))
        v1, v0 = v.clone(), v.clone()
        v1[:, 2], v0[:, 2] = 1.0, 0.0
        torch.testing.assert_close(rbm.visible_probs(h)[:, 2], torch.sigmoid(rbm.joint_energy(v0, h) - rbm.joint_energy(v1, h)))


def test_rbm_block_gibbs_samples_the_exact_marginal():
    rbm = tiny_rbm(4, 3, seed=2)
    v_all = all_binary(4)
    with torch.no_grad():
        p = rbm.log_prob(v_all).exp()
    g = torch.Generator().manual_seed(0)
    v0 = torch.zeros(20000, 4, dtype=torch.float64)
    v, pv = samplers.rbm_gibbs(rbm, v0, 30, generator=g)
    assert pv.shape == v.shape and ((v == 0) | (v == 1)).all()
    codes = (v.long() * torch.tensor([8, 4, 2, 1])).sum(1)
    emp = torch.bincount(codes, minlength=16).double() / len(v)
    assert 0.5 * (emp - p).abs().sum() < 0.02
    a, _ = samplers.rbm_gibbs(rbm, v0[:5], 3, generator=torch.Generator().manual_seed(1))
    b, _ = samplers.rbm_gibbs(rbm, v0[:5], 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="0 and 1"):
        samplers.rbm_gibbs(rbm, v0[:5] + 0.5, 1)
    with pytest.raises(ValueError, match="RBM"):
        samplers.rbm_gibbs(torch.nn.Linear(4, 1), v0[:5], 1)


def test_bernoulli_logits_give_the_data_mean_model():
    mean = torch.tensor([0.0, 0.25, 0.5, 1.0])
    logits = nets.bernoulli_logits(mean)
    torch.testing.assert_close(torch.sigmoid(logits), torch.tensor([1e-3, 0.25, 0.5, 1 - 1e-3]))
    rbm = nets.RBM(4, 2, init_std=0.0, visible_bias=logits)
    x = (torch.rand(10, 4) < 0.5).float()
    x[:, 0], x[:, 3] = 0.0, 1.0
    # with W = 0 the RBM's log p is the Bernoulli model's (each hidden unit contributes log 2 to F and Z)
    with torch.no_grad():
        torch.testing.assert_close(-rbm.log_prob(x).mean().item(), discrete.bernoulli_nll(mean, x), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------ experiment mechanics


def test_autocorrelation_of_ar1_gives_its_integrated_time():
    rng = np.random.default_rng(0)
    phi, t, c = 0.8, 4000, 50
    x = np.zeros((t, c))
    for k in range(1, t):
        x[k] = phi * x[k - 1] + rng.standard_normal(c)
    rho = discrete.autocorrelation(x, max_lag=100)
    assert abs(rho[1] - phi) < 0.02 and rho[0] == 1.0
    assert abs(discrete.integrated_time(rho) - (1 + phi) / (1 - phi)) < 0.6  # exact: 9
    assert math.isinf(discrete.integrated_time(np.ones(10)))
    assert np.all(discrete.autocorrelation(np.ones((5, 2))) == 1.0)
    frozen = np.tile(np.array([1.0, -1.0, 1.0, -1.0]), (50, 1))  # chains that never change sign
    np.testing.assert_allclose(discrete.autocorrelation(frozen), 1.0)
    assert math.isinf(discrete.integrated_time(discrete.autocorrelation(frozen)))


def test_neg_log_rmse_binarise_and_nll():
    j = torch.zeros(4, 4)
    assert discrete.neg_log_rmse(j + 0.1, j) == pytest.approx(-math.log(0.1))
    assert math.isinf(discrete.neg_log_rmse(j, j))
    with pytest.raises(ValueError, match="shapes"):
        discrete.neg_log_rmse(j, torch.zeros(3, 3))
    images = torch.tensor([[[0, 127], [128, 255]]], dtype=torch.uint8)
    assert discrete.binarise(images).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="uint8"):
        discrete.binarise(images.float())
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert discrete.bernoulli_nll(torch.tensor([0.5, 0.5]), x) == pytest.approx(2 * math.log(2), rel=1e-6)
    rbm = tiny_rbm(2, 2).float()
    with torch.no_grad():
        assert discrete.rbm_nll(rbm, x) == pytest.approx(-rbm.log_prob(x).mean().item(), rel=1e-5)


def test_sample_ising_starts_and_mixing_summary():
    coupling = discrete.ising_coupling(4, 0.1)
    g = torch.Generator().manual_seed(0)
    aligned = discrete.sample_ising(coupling, 200, 60, start="aligned", generator=g)
    assert aligned.trace.shape == (60, 200, 2) and aligned.binary.shape == (200, 16)
    first = aligned.trace[0, :, 0]
    assert first.abs().min() < 1  # after one sweep the aligned start has already moved
    summary = discrete.mixing_summary(aligned, burn_in=20)
    assert 1 <= summary.tau_energy < 5 and 0 < summary.mean_abs_m < 1
    with pytest.raises(ValueError, match="start"):
        discrete.sample_ising(coupling, 10, 5, start="hot")
    with pytest.raises(ValueError, match="burn_in"):
        discrete.mixing_summary(aligned, burn_in=55)


@pytest.mark.parametrize("method", ["ed", "pcd"])
def test_ising_run_learns_and_is_deterministic(method, tmp_path):
    kw = dict(n_samples=400, burn_in=50, lr=0.02, batch_size=100, eval_every=50, n_chains=64, m_particles=8)
    spec = discrete.ising_spec(method, 3, 0.2, 150, **kw)
    run = runs.fetch(spec, root=tmp_path / "a", progress=False)
    nlr = run.curve("neg_log_rmse")
    assert run.step_curve == [0, 50, 100, 150] and nlr[-1] > nlr[0] + 0.3  # better than J = 0
    assert isinstance(discrete.ising_model(run), nets.IsingModel) and not run.cached
    assert discrete.neg_log_rmse(discrete.ising_model(run).coupling, discrete.ising_coupling(3, 0.2)) == nlr[-1]
    again = runs.fetch(spec, root=tmp_path / "a", progress=False)
    assert again.cached and again.curves == run.curves
    fresh = runs.fetch(spec, root=tmp_path / "b", progress=False)
    assert fresh.same_result(run)
    assert ("chains" in str(list(run.state()["model"]))) == (method == "pcd")
    with pytest.raises(ValueError, match="method"):
        discrete.ising_spec("cd", 3, 0.2, 10)
    with pytest.raises(ValueError, match="eps"):
        discrete.ising_spec(method, 3, 0.2, 10, eps=1.5)


def test_ising_data_depend_on_seed_and_sigma_only():
    a = discrete.ising_data(3, 0.2, 50, 20, 0)
    assert torch.equal(a.spins, discrete.ising_data.__wrapped__(3, 0.2, 50, 20, 0).spins)  # recomputed: the same
    assert not torch.equal(a.spins, discrete.ising_data(3, 0.2, 50, 20, 1).spins)
    assert not torch.equal(a.spins, discrete.ising_data(3, 0.3, 50, 20, 0).spins)


@pytest.mark.parametrize("method", ["cd", "pcd", "ed"])
def test_rbm_run_improves_on_tiny_binary_data(method, tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    # two prototypes with 5 % pixel noise: an RBM with 2 hidden units fits them much better than the mean
    protos = torch.tensor([[1.0] * 6 + [0.0] * 6, [0.0] * 6 + [1.0] * 6])
    x = protos[torch.randint(0, 2, (600,), generator=g)]
    x = (x - (torch.rand(x.shape, generator=g) < 0.05).float()).abs()
    monkeypatch.setattr(discrete, "mnist_binary", lambda split, threshold=0.5: x[:500] if split == "train" else x[500:])
    spec = discrete.rbm_spec(method, 2, 300, lr=0.05, batch_size=50, eps=0.1, m_particles=8, n_chains=50, init_std=0.1,
                             eval_every=100, eval_train=200)
    run = runs.fetch(spec, root=tmp_path, progress=False)
    nll = run.curve("test_nll")
    baseline = discrete.bernoulli_nll(x[:500].mean(0), x[500:])
    assert nll[0] == pytest.approx(baseline, abs=0.5)
    assert nll[-1] < baseline - 1.0
    assert discrete.rbm_nll(discrete.rbm_model(run), x[500:]) == pytest.approx(nll[-1], rel=1e-6)
    with pytest.raises(ValueError, match="n_hidden"):
        discrete.rbm_spec(method, 27, 10)


def test_bernoulli_ed_of_an_rbm_runs_on_the_free_energy():
    rbm = tiny_rbm(5, 3).float()
    x = (torch.rand(7, 5) < 0.5).float()
    loss = losses.bernoulli_energy_discrepancy(rbm, x, 0.2, 4, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and rbm.weight.grad is not None


# ------------------------------------------------------------------ page helpers


def _record(spec: runs.RunSpec, curves: dict, seconds: float = 2.0, conditions: dict | None = None) -> runs.RunRecord:
    n = len(next(iter(curves.values())))
    steps = [100 * k for k in range(n)]
    return runs.RunRecord(spec, "finished", {"step": steps, "seconds": [seconds * k / max(n - 1, 1) for k in range(n)], **curves},
                          {}, steps[-1], seconds, conditions=conditions or {})


def test_fetch_keeps_the_keys_of_the_specs(tmp_path):
    kw = dict(n_samples=100, burn_in=20, batch_size=50, eval_every=10, n_chains=16, m_particles=4)
    specs = {(0.2, m): discrete.ising_spec(m, 3, 0.2, 10, **kw) for m in discrete.ISING_METHODS}
    records = discrete.fetch(specs, root=tmp_path, progress=False, echo=None)
    assert list(records) == list(specs) and all(records[k].spec == specs[k] for k in specs)
    with pytest.raises(ValueError, match="specs"):
        discrete.fetch({})


def test_start_agreement_and_meeting_sweep_tell_equal_from_different_chains():
    g = torch.Generator().manual_seed(0)
    coupling = discrete.ising_coupling(4, 0.15)
    aligned = discrete.sample_ising(coupling, 400, 120, "aligned", g)
    random = discrete.sample_ising(coupling, 400, 120, "random", g)
    other = discrete.sample_ising(discrete.ising_coupling(4, 0.4), 400, 120, "random", g)
    same = discrete.start_agreement(aligned, random, 60)
    assert set(same) == {"energy", "abs_m"} and all(a.z < 4 and 0 < a.stderr < 0.05 for a in same.values())
    assert discrete.start_agreement(aligned, other, 60)["energy"].z > 50
    assert 1 <= discrete.meeting_sweep(aligned, random, "energy") < 60
    assert discrete.meeting_sweep(aligned, other, "energy") is None
    assert discrete.Agreement(0.0, 0.0).z == 0 and discrete.Agreement(0.1, math.inf).z == math.inf
    with pytest.raises(ValueError, match="quantity"):
        discrete.meeting_sweep(aligned, random, "m")
    with pytest.raises(ValueError, match="burn_in"):
        discrete.start_agreement(aligned, random, 115)


def test_burn_in_ratio_and_mixing_table():
    summary = discrete.MixingSummary(tau_m=math.inf, tau_abs_m=4.0, tau_energy=5.0, mean_abs_m=0.5, mean_energy=-1.0)
    assert discrete.burn_in_ratio(summary, 100) == 20.0
    assert discrete.burn_in_ratio(discrete.MixingSummary(1.0, math.inf, 1.0, 0.5, -1.0), 100) == 0.0
    g = torch.Generator().manual_seed(1)
    coupling = discrete.ising_coupling(3, 0.1)
    aligned = {0.1: discrete.sample_ising(coupling, 50, 40, "aligned", g)}
    table = discrete.mixing_table(aligned, {0.1: discrete.sample_ising(coupling, 50, 40, "random", g)}, 40)
    assert table.count("\n") == 2 and table.startswith("| σ | τ_m")
    with pytest.raises(ValueError, match="same"):
        discrete.mixing_table(aligned, {}, 40)


def test_expected_flips_is_the_mean_hamming_distance_of_a_negative():
    assert discrete.expected_flips(0.1, 100) == pytest.approx(18.0)
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(20_000, 10)
    y = (x + (torch.rand(x.shape, generator=g) < 0.3).float()) % 2
    neg = (y + (torch.rand(x.shape, generator=g) < 0.3).float()) % 2
    assert neg.sum(1).mean().item() == pytest.approx(discrete.expected_flips(0.3, 10), rel=0.02)
    with pytest.raises(ValueError, match="eps"):
        discrete.expected_flips(0.0, 10)


def test_largest_rise_and_method_labels():
    assert discrete.largest_rise([5.0, 3.0, 4.5, 2.0, 2.5]) == 1.5
    assert discrete.largest_rise([3.0, 2.0, 1.0]) == 0.0 and discrete.largest_rise([1.0]) == 0.0
    with pytest.raises(ValueError, match="values"):
        discrete.largest_rise([1.0, math.nan])
    assert discrete.method_label("cd", 3) == "CD-3" and discrete.method_label("ed") == "ED-Bern"
    with pytest.raises(ValueError, match="method"):
        discrete.method_label("sm")


def test_late_mean_averages_the_last_part_of_training():
    record = _record(discrete.ising_spec("ed", 3, 0.2, 10), {"neg_log_rmse": [0.0, 1.0, 2.0, 3.0, 5.0]})  # steps 0…400
    assert discrete.late_mean(record, "neg_log_rmse") == 4.0  # steps 300 and 400
    assert discrete.late_mean(record, "neg_log_rmse", 0.5) == pytest.approx(10.0 / 3.0)
    assert discrete.late_mean(record, "neg_log_rmse", 1) == 2.2
    with pytest.raises(ValueError, match="fraction"):
        discrete.late_mean(record, "neg_log_rmse", 0.0)
    with pytest.raises(ValueError, match="metric"):
        discrete.late_mean(record, "test_nll")


def test_ising_scores_and_table():
    records = {(s, m): _record(discrete.ising_spec(m, 5, s, 10), {"neg_log_rmse": [1.0, 3.0 + s + (m == "pcd")]})
               for s in (0.1, 0.2) for m in discrete.ISING_METHODS}
    assert discrete.ising_scores(records, "ed") == {0.1: 3.1, 0.2: 3.2}
    table = discrete.ising_table(records, 5)
    rows = table.splitlines()[2:]
    assert len(rows) == 2 and rows[0].startswith("| 0.10 | 3.10 | 4.10 | 3.22 | 5.10 | 4.80 | 4.80 | 3.91 |")
    with pytest.raises(ValueError, match="method"):
        discrete.ising_scores({k: v for k, v in records.items() if k[1] == "ed"}, "pcd")


def test_rbm_table_and_conditions_text():
    cond = {"device": "cpu", "cpu": "X", "threads": 1, "load_start": 0.5, "date": "2026-01-01 10:00"}
    records = {m: _record(discrete.rbm_spec(m, 4, 20), {"test_nll": [200.0, 180.0, 185.0, 170.0], "train_nll": [199.0, 170.0, 171.0, 165.0]},
                          conditions=cond) for m in discrete.RBM_METHODS}
    rows = discrete.rbm_table(records, 200.0, cd_steps=1).splitlines()[2:]
    assert rows[0] == "| CD-1 | 200.00 | 170.00 | 170.00 | 165.00 | 5.00 | 6.67 |" and rows[-1].startswith("| data-mean Bernoulli | 200.00 | — |")
    text = discrete.conditions_text(records)
    assert text.startswith("3 runs on cpu (X), torch threads 1, load average at their start 0.5") and "2026-01-01 10:00" in text
    with pytest.raises(ValueError, match="records"):
        discrete.conditions_text([])


def test_unused_pixel_weight_ratio():
    rbm = tiny_rbm(4, 2)
    with torch.no_grad():
        rbm.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    n, ratio = discrete.unused_pixel_weight_ratio(rbm, x)
    assert n == 1 and ratio == pytest.approx(2.0 / math.sqrt(2.0 / 3.0))
    assert math.isnan(discrete.unused_pixel_weight_ratio(rbm, torch.ones(2, 4))[1])
    with pytest.raises(ValueError, match="columns"):
        discrete.unused_pixel_weight_ratio(rbm, torch.ones(2, 3))


# ------------------------------------------------------------------ the page's parameters


def _page_defaults() -> dict:
    import ast

    import jupytext

    from .conftest import ROOT

    cells = [c for c in jupytext.read(ROOT / "notebooks" / "discrete_ed.md").cells if c.cell_type == "code"]
    k = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", ()))
    assert cells[k + 1].source == 'from edrepro.book import parameters\nparams = parameters.check_notebook("discrete_ed", globals())'
    tree = ast.parse(cells[k].source)
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


def test_page_parameters_match_the_schema_and_every_profile():
    from edrepro.book import parameters, pipeline

    from .conftest import ROOT

    defaults = _page_defaults()
    assert set(parameters.schema("discrete_ed")) == set(defaults)
    assert parameters.check_notebook("discrete_ed", defaults) == defaults
    assert pipeline.load_params(ROOT, "discrete_ed", "quick") == defaults
    for profile in pipeline.PROFILES:
        params = pipeline.load_params(ROOT, "discrete_ed", profile)
        parameters.check("discrete_ed", params, complete=True)
        assert {s.kind for s in discrete.page_specs(params)} == {"ising", "rbm"}


@pytest.mark.parametrize("key, value", [("rbm_m_particles", 0), ("m_particles", 0), ("sigmas", []), ("ising_eps", 1.0),
                                        ("n_hidden", 27), ("burn_in", 10), ("cpu_threads", -1), ("reuse_runs", "yes")])
def test_a_bad_page_parameter_is_rejected_naming_it(key, value):
    from edrepro.book import parameters

    with pytest.raises(parameters.ParameterError, match=rf"parameter {key} = .* of notebook 'discrete_ed'"):
        parameters.check_notebook("discrete_ed", {**_page_defaults(), key: value})


def _page_params(**changes):
    params = dict(seed=0, side=3, sigmas=[0.1, 0.3, 0.5], n_samples=100, burn_in=20, ising_steps=10, ising_lr=1e-3, ising_batch=50,
                  l1=0.01, ising_eps=0.1, m_particles=4, w=1.0, pcd_chains=16, pcd_sweeps=1, ising_eval_every=5,
                  ablation_eps=[0.03], ablation_sigmas=[0.3], n_hidden=4, rbm_steps=10, rbm_lr=1e-3, rbm_batch=10, rbm_eps=0.01,
                  rbm_m_particles=4, cd_steps=1, rbm_chains=10, rbm_eval_every=5)
    return {**params, **changes}


def test_keyed_records_sorts_a_flat_list_back_into_the_pages_maps():
    params = _page_params()
    ising, ablation, rbm = discrete.ising_specs(params), discrete.eps_ablation_specs(params), discrete.rbm_specs(params)
    flat = [_record(s, {"neg_log_rmse": [1.0, 2.0]}) for s in [*ising.values(), *ablation.values(), *rbm.values()]][::-1]
    got = discrete.keyed_records(flat, params)
    assert [set(g) for g in got] == [set(ising), set(ablation), set(rbm)]
    assert all(got[0][k].spec == s for k, s in ising.items()) and got[2]["ed"].spec == rbm["ed"]
    with pytest.raises(ValueError, match="ask for"):
        discrete.keyed_records(flat, _page_params(sigmas=[0.1]))


def _ising_runs(scores: dict, side: int = 3) -> dict:
    return {(s, m): _record(discrete.ising_spec(m, side, s, 10, n_samples=100, burn_in=20, batch_size=50, eval_every=5),
                            {"neg_log_rmse": [0.0, v, v]}) for (s, m), v in scores.items()}


def test_ising_claims_follow_the_scores_relative_to_zero_coupling():
    zero = {s: discrete.zero_coupling_score(3, s) for s in (0.1, 0.3, 0.5)}
    # the paper's pattern: ED ahead at σ = 0.1, behind at 0.3, neither far from J = 0 at 0.5
    scores = {(0.1, "ed"): zero[0.1] + 2.0, (0.1, "pcd"): zero[0.1] + 1.5, (0.3, "ed"): zero[0.3] + 0.5,
              (0.3, "pcd"): zero[0.3] + 1.0, (0.5, "ed"): zero[0.5] + 0.1, (0.5, "pcd"): zero[0.5] + 0.1}
    claims = discrete.ising_claims(_ising_runs(scores), 3, {(0.3, 0.03): zero[0.3] + 0.8, (0.3, 0.1): zero[0.3] + 0.5}, 0.1)
    assert len(claims) == 4 and all(c.holds for c in claims)
    assert discrete.learning_claim(_ising_runs(scores), 3).holds  # ED's gain 2.0 ≥ half of PCD's 1.5
    scores[0.5, "ed"] = zero[0.5] + 1.0  # a gain at σ = 0.5 above a quarter of the gain at σ = 0.1
    scores[0.1, "ed"] = zero[0.1] + 1.0  # now behind PCD at σ = 0.1
    claims = discrete.ising_claims(_ising_runs(scores), 3)
    assert len(claims) == 3 and [c.holds for c in claims] == [False, True, False]
    scores[0.1, "ed"] = discrete.zero_coupling_score(3, 0.1) + 0.7  # below half of PCD's gain of 1.5
    assert not discrete.learning_claim(_ising_runs(scores), 3).holds
    assert discrete.learning_claim(_ising_runs({k: v for k, v in scores.items() if k[0] > 0.2}), 3) is None


def test_rbm_claims_compare_rises_and_final_nlls():
    spec = {m: discrete.rbm_spec(m, 4, 10, eval_every=5) for m in discrete.RBM_METHODS}
    curves = {"ed": [200.0, 150.0, 140.0], "pcd": [200.0, 120.0, 160.0], "cd": [200.0, 150.0, 139.0]}
    records = {m: _record(spec[m], {"test_nll": curves[m]}) for m in curves}
    steady, ends = discrete.rbm_claims(records)
    assert steady.holds and "ED 0.0 nats, PCD 40.0 nats" in steady.measured
    assert not ends.holds  # 140 > 139 + 0 (CD never rose)
    records["cd"] = _record(spec["cd"], {"test_nll": [200.0, 130.0, 139.0]})
    assert discrete.rbm_claims(records)[1].holds  # 140 ≤ 139 + 9


def test_flip_scores_add_the_main_runs_at_the_main_flip_probability():
    ising = _ising_runs({(0.3, "ed"): 2.5, (0.3, "pcd"): 3.0, (0.1, "ed"): 4.0, (0.1, "pcd"): 3.5})
    spec = discrete.ising_spec("ed", 3, 0.3, 10, n_samples=100, burn_in=20, batch_size=50, eval_every=5, eps=0.01)
    scores = discrete.flip_scores({(0.3, 0.01): _record(spec, {"neg_log_rmse": [0.0, 1.0, 2.75]})}, ising, 0.1)
    assert scores == {(0.3, 0.01): 2.75, (0.3, 0.1): 2.5}  # σ = 0.1 has no side-experiment run
