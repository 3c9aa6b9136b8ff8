"""Every claim and instrument check of the density-ablations, density-benchmark, ED-LEBM and discrete-ED
pages, computed by its function in the package, on an input where it holds and on a counterfactual
input on which it fails (or, where a bound cannot decide it, is undecided).

Records and arrays are built by hand: nothing here trains a model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edrepro import losses, metrics
from edrepro.book import runs
from edrepro.book.claims import Claim, InstrumentCheck
from edrepro.chapters import ablation, benchmark, density, discrete, lebm, lebm_eval, mnist_eval

TOL = metrics.EDGE_BAND_TOLERANCE


# ------------------------------------------------------------------ density_ablations


def _cell(w: float, m: int = 1, mse: float = 0.1, grid: float | None = None, edge: float = 0.0, diverged_at: int | None = None,
          losses_: list[float] | None = None, floor: float | None = None) -> runs.RunRecord:
    spec = density.spec("ed", n_steps=10, hparams={"t": 1.0, "m_particles": m, "w": w}, metrics=["mse", "mse_grid"])
    curves = {"step": [0, 10], "seconds": [0.0, 1.0], "mse": [3.0, mse], "mse_grid": [3.0, mse if grid is None else grid],
              "mass_outside": [0.0, 0.0], "edge_mass": [0.0, edge]}
    if floor is not None:
        curves["mse_grid_floor"] = [1.0, floor]
    series = {"loss": losses_ if losses_ is not None else [1.0, 0.5]}
    status = "diverged" if diverged_at is not None else "finished"
    return runs.RunRecord(spec, status, curves, series, 10, 1.0, diverged_at=diverged_at, nonfinite="loss" if diverged_at else None)


@pytest.mark.parametrize("metric", ["mse", "mse_grid"])
def test_stabilisation_claim_holds_only_when_w0_is_far_worse(metric):
    small = _cell(0.05, mse=0.1)
    assert ablation.stabilisation_claim(_cell(0.0, mse=0.5), small, metric, 2.0).holds is True
    assert ablation.stabilisation_claim(_cell(0.0, diverged_at=7), small, metric, 2.0).holds is True
    # counterfactuals: the methods swapped (w = 0 the better run), w = 0 only a little worse, the w > 0 run diverged
    assert ablation.stabilisation_claim(small, _cell(0.0, mse=0.5), metric, 2.0).holds is False
    assert ablation.stabilisation_claim(_cell(0.0, mse=0.15), small, metric, 2.0).holds is False
    assert ablation.stabilisation_claim(_cell(0.0, diverged_at=7), _cell(0.05, diverged_at=3), metric, 2.0).holds is False


def test_stabilisation_claim_lets_a_leaked_quadrature_mse_decide_only_through_its_floor():
    leaky = _cell(0.0, mse=0.5, edge=0.5)  # the quadrature did not hold this model's mass: its mse_grid is off either way
    claim = ablation.stabilisation_claim(leaky, _cell(0.05, mse=0.1), "mse_grid", 2.0)
    assert claim.holds is None and "w = 0 0.5 (no bound)" in claim.measured
    assert ablation.stabilisation_claim(leaky, _cell(0.05, mse=0.1), "mse", 2.0).holds is True  # the authors' estimator is no bound
    # the floor, a lower bound whatever log Z is: large enough, it shows w = 0 far worse; small, it decides nothing
    assert ablation.stabilisation_claim(_cell(0.0, mse=0.5, edge=0.5, floor=0.3), _cell(0.05, mse=0.1), "mse_grid", 2.0).holds is True
    assert ablation.stabilisation_claim(_cell(0.0, mse=0.5, edge=0.5, floor=0.1), _cell(0.05, mse=0.1), "mse_grid", 2.0).holds is None
    # the w > 0 run's floor already shows it no better than half of w = 0's error: the claim fails
    assert ablation.stabilisation_claim(_cell(0.0, mse=0.5), _cell(0.05, mse=0.1, edge=0.5, floor=0.3), "mse_grid", 2.0).holds is False
    with pytest.raises(ValueError, match="far_worse"):
        ablation.stabilisation_claim(leaky, _cell(0.05), "mse", 1.0)


def test_flatness_claim_fails_when_the_larger_w_is_not_flatter():
    flat = {(0.05, 1): 9.0, (0.05, 4): 8.0, (50.0, 1): 2.0, (50.0, 4): 1.5}
    claim = ablation.flatness_claim(flat, 0.05, 50.0, [1, 4])
    assert isinstance(claim, Claim) and claim.holds is True and "M = 4: 1.5 vs 8" in claim.measured
    swapped = {(0.05, m): flat[(50.0, m)] for m in (1, 4)} | {(50.0, m): flat[(0.05, m)] for m in (1, 4)}
    assert ablation.flatness_claim(swapped, 0.05, 50.0, [1, 4]).holds is False
    assert ablation.flatness_claim({**flat, (50.0, 4): 8.5}, 0.05, 50.0, [1, 4]).holds is False  # one M is enough to fail
    assert ablation.flatness_claim({**flat, (50.0, 1): math.inf}, 0.05, 50.0, [1, 4]).holds is False  # a non-finite energy


def test_the_ed_loss_is_bounded_by_log_w_over_m_and_one_huge_negative_does_not_unbound_it():
    # the page's corrected statement, on the loss itself: with w = 0 and M = 4, one negative with a huge energy
    # only removes its term (log of the mean of the other three), all four huge drive the loss down; w > 0 bounds it
    e_pos = torch.zeros(1)
    one_huge = torch.tensor([[1e6, 0.0, 0.0, 0.0]])
    all_huge = torch.full((1, 4), 1e6)
    assert float(losses._stabilised_ed(e_pos, one_huge, 0.0)) == pytest.approx(math.log(3 / 4))
    assert float(losses._stabilised_ed(e_pos, all_huge, 0.0)) == pytest.approx(-1e6 - math.log(4) + math.log(4), rel=1e-6)
    assert float(losses._stabilised_ed(e_pos, all_huge, 1.0)) == pytest.approx(ablation.ed_lower_bound(1.0, 4))
    assert float(losses._stabilised_ed(e_pos, torch.full((1, 1), 1e6), 0.0)) == pytest.approx(-1e6)  # M = 1: one suffices


def test_loss_bound_check_fails_on_a_loss_that_ignores_w():
    ok = [_cell(1.0, m=4, losses_=[0.3, ablation.ed_lower_bound(1.0, 4) + 1e-3]), _cell(0.0, m=1, losses_=[-50.0])]
    check = ablation.loss_bound_check(ok)
    assert isinstance(check, InstrumentCheck) and check.passes and "1 of 1 runs" in check.measured  # w = 0 runs are not checked
    broken = [_cell(1.0, m=4, losses_=[0.3, -3.0])]  # below log(1/4): a loss that ignored w
    assert not ablation.loss_bound_check(broken).passes
    assert not ablation.loss_bound_check([_cell(0.05, m=4, losses_=[math.nan])]).passes  # no finite loss logged
    assert ablation.lowest_loss(_cell(1.0, losses_=[2.0, math.nan, 1.0])) == 1.0
    with pytest.raises(ValueError, match="w > 0"):
        ablation.loss_bound_check([_cell(0.0)])


# ------------------------------------------------------------------ density_benchmark


def _run(method: str, dataset: str, nll: float, edge: float = 0.0, diverged: bool = False, outside: float = 0.01) -> runs.RunRecord:
    spec = density.spec(method, dataset, n_steps=10, metrics=["nll"], chapter="density_benchmark")
    curves = {"step": [0, 10], "seconds": [0.0, 1.0], "nll": [5.0, nll], "mass_outside": [0.1, outside], "edge_mass": [0.0, edge]}
    return runs.RunRecord(spec, "diverged" if diverged else "finished", curves, {}, 10, 1.0,
                          diverged_at=7 if diverged else None, nonfinite="loss" if diverged else None)


SCORES = {"ed": {"moons": 1.0, "rings": 2.0}, "sm": {"moons": 1.5, "rings": 2.5}, "cd": {"moons": 3.0, "rings": 3.0}}


def test_stability_claim_fails_on_a_diverged_run_or_a_non_finite_value():
    good = [_run("ed", "moons", 1.0), _run("cd", "moons", 2.0)]
    assert benchmark.stability_claim(good).holds is True
    assert benchmark.stability_claim([*good, _run("sm", "moons", 2.0, diverged=True)]).holds is False
    assert benchmark.stability_claim([*good, _run("sm", "moons", math.nan)]).holds is False


def test_top_k_claim_is_the_ranking_on_exact_scores_and_fails_with_the_methods_swapped():
    assert benchmark.rank_intervals(SCORES) == {m: (r, r) for m, r in benchmark.mean_ranks(SCORES).items()}
    assert benchmark.top_k_claim(SCORES, {}, "ed", 1).holds is True
    swapped = {"ed": SCORES["cd"], "sm": SCORES["sm"], "cd": SCORES["ed"]}  # ED's scores are now the worst
    assert benchmark.top_k_claim(swapped, {}, "ed", 2).holds is False
    assert benchmark.top_k_claim(swapped, {}, "ed", 3).holds is True


def test_top_k_claim_lets_a_lower_bound_decide_only_in_its_direction():
    # ED's own NLLs are lower bounds: its true NLL may be higher than SM's, so first place is undecided
    ed_lower = {("ed", "moons"): "lower", ("ed", "rings"): "lower"}
    claim = benchmark.top_k_claim(SCORES, ed_lower, "ed", 1)
    assert claim.holds is None and "may be ahead: sm, cd" in claim.measured
    # a lower bound of ED's that is already behind two methods decides against it
    behind = {"ed": {"moons": 4.0, "rings": 4.0}, "sm": SCORES["sm"], "cd": SCORES["cd"]}
    assert benchmark.top_k_claim(behind, ed_lower, "ed", 2).holds is False
    # the others' lower bounds above ED's exact values can only rise: ED stays first
    others_lower = {(m, d): "lower" for m in ("sm", "cd") for d in ("moons", "rings")}
    assert benchmark.top_k_claim(SCORES, others_lower, "ed", 1).holds is True
    # another method's lower bound below ED's exact value may or may not be below it
    sm_below = {"ed": SCORES["ed"], "sm": {"moons": 0.5, "rings": 1.5}, "cd": SCORES["cd"]}
    assert benchmark.top_k_claim(sm_below, {}, "ed", 1).holds is False
    assert benchmark.top_k_claim(sm_below, {("sm", "moons"): "lower", ("sm", "rings"): "lower"}, "ed", 1).holds is None


def test_nll_kinds_mark_the_runs_whose_quadrature_did_not_hold_the_mass():
    records = [_run("ed", "moons", 1.0), _run("sm", "moons", 0.5, edge=1.0), _run("cd", "moons", 2.0, edge=TOL / 2)]
    assert benchmark.nll_kinds(records) == {("ed", "moons"): "exact", ("sm", "moons"): "lower", ("cd", "moons"): "exact"}


def test_beaten_by_bounds_and_versus_reference_separate_sure_from_undecided():
    scores = {"ed": {"moons": 1.0}, "sm": {"moons": 0.5}, "cd": {"moons": 0.8}, "nce": {"moons": 2.0}}
    sure, maybe = benchmark.beaten_by_bounds(scores, {("sm", "moons"): "lower"}, "ed")["moons"]
    assert sure == [("cd", pytest.approx(0.2))] and maybe == ["sm"]
    assert benchmark.beaten_by_bounds({"ed": {"moons": math.inf}, "sm": {"moons": 9.0}}, {}, "ed")["moons"][0] == [("sm", math.inf)]
    not_below, undecided = benchmark.versus_reference(scores, {("sm", "moons"): "lower", ("nce", "moons"): "lower"}, {"moons": 0.9})["moons"]
    assert not_below == ["ed", "nce"] and undecided == ["sm"]  # nce's lower bound is already above the reference


def test_leaderboard_figure_draws_both_tables():
    import matplotlib

    matplotlib.use("Agg")
    outside = {m: {d: 0.01 for d in row} for m, row in SCORES.items()}
    fig = benchmark.leaderboard_figure(SCORES, outside, {"moons": 0.02, "rings": 0.03}, {("sm", "moons"): "lower"})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "≥1.50" in texts and "1.00" in texts and "2.0 %" in texts and len(fig.axes) == 2
    with pytest.raises(ValueError, match="texts and shade"):
        benchmark.grid_table(fig.axes[0], [["a"]], [[1.0, 2.0]], ["r"], ["c"])


# ------------------------------------------------------------------ edlebm_mnist


def test_reconstruction_claim_fails_for_a_model_that_ignores_the_image():
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.rand(200, 1, 28, 28, generator=g) * 2 - 1, torch.rand(50, 1, 28, 28, generator=g) * 2 - 1
    mean_mse = mnist_eval.mean_image_mse(train_x, test_x)
    close = (test_x + 0.1 * torch.randn(test_x.shape, generator=g)).clamp(-1, 1)
    assert lebm_eval.reconstruction_claim(mnist_eval.reconstruction_mse(test_x, close), mean_mse).holds is True
    ignores = train_x.mean(0, keepdim=True).expand_as(test_x)  # the same answer whatever the image
    assert lebm_eval.reconstruction_claim(mnist_eval.reconstruction_mse(test_x, ignores), mean_mse).holds is False


def test_prior_fid_claim_fails_for_a_prior_no_better_than_the_gaussian():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 8, generator=g, dtype=torch.float64)
    reference = torch.randn(2000, 8, generator=g, dtype=torch.float64)
    gaussian = torch.randn(2000, 8, generator=g, dtype=torch.float64) + 1.0  # the generator alone: far off
    prior = torch.randn(2000, 8, generator=g, dtype=torch.float64) + 0.1  # a prior that closes most of the gap
    fid = {k: mnist_eval.fid_from_features(v, reference) for k, v in (("real", real), ("gauss", gaussian), ("prior", prior))}
    assert lebm_eval.prior_fid_claim(fid["gauss"], fid["prior"], fid["real"]).holds is True
    assert lebm_eval.prior_fid_claim(fid["gauss"], fid["gauss"], fid["real"]).holds is False  # the prior is N(0, I) itself
    assert lebm_eval.prior_fid_claim(fid["gauss"], fid["gauss"] + 1, fid["real"]).holds is False  # the prior makes it worse
    assert lebm_eval.prior_fid_claim(fid["gauss"], math.inf, fid["real"]).holds is False  # a broken prior


class _Lookup(torch.nn.Module):
    """A 'classifier' that answers the labels it was given, image by image (in order)."""

    def __init__(self, labels: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.nn.functional.one_hot(labels, 10).float(), requires_grad=False)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.table[self.seen : self.seen + len(x)]
        self.seen += len(x)
        return out


def test_classifier_check_fails_on_shuffled_labels():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.zeros(500, 1, 28, 28), torch.randint(0, 10, (500,), generator=g)
    check = mnist_eval.classifier_check(mnist_eval.accuracy(_Lookup(labels), images, labels))
    assert isinstance(check, InstrumentCheck) and check.passes and check.measured == "100.00 %"
    shuffled = labels[torch.randperm(500, generator=g)]
    assert not mnist_eval.classifier_check(mnist_eval.accuracy(_Lookup(labels), images, shuffled)).passes
    with pytest.raises(ValueError, match="accuracy"):
        mnist_eval.classifier_check(98.0)


# ------------------------------------------------------------------ discrete_ed


def _ising_record(method: str, sigma: float, score: float, side: int = 3) -> runs.RunRecord:
    spec = discrete.ising_spec(method, side, sigma, 10, n_samples=100, burn_in=20, batch_size=50, eval_every=5)
    return runs.RunRecord(spec, "finished", {"step": [0, 5, 10], "seconds": [0.0, 1.0, 2.0], "neg_log_rmse": [0.0, score, score]}, {}, 10, 2.0)


def _ising(gains: dict, side: int = 3) -> dict:
    """Ising runs by (σ, method) whose score is J = 0's plus the given gain."""
    return {(s, m): _ising_record(m, s, discrete.zero_coupling_score(side, s) + g, side) for (s, m), g in gains.items()}


PAPER_PATTERN = {(0.1, "ed"): 2.0, (0.1, "pcd"): 1.5, (0.2, "ed"): 0.8, (0.2, "pcd"): 1.2, (0.3, "ed"): 0.5, (0.3, "pcd"): 1.0,
                 (0.5, "ed"): 0.1, (0.5, "pcd"): 0.1}


def _claim(claims: list[Claim], start: str) -> Claim:
    return next(c for c in claims if c.statement.startswith(start))


def test_each_ising_claim_fails_on_its_counterfactual():
    ablation_scores = lambda better: {(0.3, 0.03): discrete.zero_coupling_score(3, 0.3) + (0.8 if better else 0.2),
                                      (0.3, 0.1): discrete.zero_coupling_score(3, 0.3) + 0.5}
    claims = discrete.ising_claims(_ising(PAPER_PATTERN), 3, ablation_scores(True), 0.1)
    assert len(claims) == 4 and all(c.holds is True for c in claims)
    swapped = {(s, {"ed": "pcd", "pcd": "ed"}[m]): g for (s, m), g in PAPER_PATTERN.items()}  # the methods swapped
    claims = discrete.ising_claims(_ising(swapped), 3, ablation_scores(False), 0.1)
    assert _claim(claims, "As in the paper, ED-Bern scores at least as well").holds is False
    assert _claim(claims, "As in the paper, ED-Bern scores below").holds is False
    assert _claim(claims, "The flip probability matters").holds is False  # the smaller ε scores lower
    ordered_learnt = {**PAPER_PATTERN, (0.5, "pcd"): 1.0}  # PCD learns the size of the couplings in the ordered phase
    assert _claim(discrete.ising_claims(_ising(ordered_learnt), 3), "As in the paper, in the ordered phase").holds is False


def test_learning_claim_fails_when_ed_learns_too_little():
    assert discrete.learning_claim(_ising(PAPER_PATTERN), 3).holds is True  # σ = 0.1: 2.0 ≥ 0.75; σ = 0.2: 0.8 ≥ 0.6
    assert discrete.learning_claim(_ising({**PAPER_PATTERN, (0.2, "ed"): 0.1}), 3).holds is False
    assert discrete.learning_claim(_ising({**PAPER_PATTERN, (0.1, "pcd"): -0.2}), 3).holds is False  # PCD learnt nothing either


def _rbm(curves: dict) -> dict:
    spec = {m: discrete.rbm_spec(m, 4, 10, eval_every=5) for m in discrete.RBM_METHODS}
    return {m: runs.RunRecord(spec[m], "finished", {"step": [0, 5, 10], "seconds": [0.0, 1.0, 2.0], "test_nll": c}, {}, 10, 2.0)
            for m, c in curves.items()}


def test_each_rbm_claim_fails_on_its_counterfactual():
    curves = {"ed": [200.0, 150.0, 140.0], "pcd": [200.0, 120.0, 160.0], "cd": [200.0, 130.0, 139.0]}
    steady, ends = discrete.rbm_claims(_rbm(curves))
    assert steady.holds is True and ends.holds is True
    steady, _ = discrete.rbm_claims(_rbm({**curves, "ed": curves["pcd"], "pcd": curves["ed"]}))  # ED and PCD swapped
    assert steady.holds is False
    _, ends = discrete.rbm_claims(_rbm({**curves, "ed": [200.0, 150.0, 180.0]}))  # ED ends far above CD
    assert ends.holds is False


def _sample(trace: np.ndarray, start: str = "aligned") -> discrete.IsingSample:
    t = torch.as_tensor(trace, dtype=torch.float64)
    return discrete.IsingSample(torch.ones(t.shape[1], 9), t, start, 0.0)


def test_mixing_checks_fail_on_a_slow_chain_and_on_starts_that_disagree():
    burn_in, n = 400, 200
    sample = lambda: discrete.sample_ising(discrete.ising_coupling(3, 0.1), n, burn_in, "aligned", torch.Generator().manual_seed(0))
    random = discrete.sample_ising(discrete.ising_coupling(3, 0.1), n, burn_in, "random", torch.Generator().manual_seed(1))
    checks = discrete.mixing_checks({0.1: sample()}, {0.1: random}, burn_in)
    assert all(isinstance(c, InstrumentCheck) and c.passes for c in checks)
    # a chain whose statistics forget their value slowly (AR(1), ρ = 0.99: τ ≈ 200 sweeps) does not mix within the burn-in
    g = np.random.default_rng(0)
    ar = np.zeros((burn_in, n))
    for k in range(1, burn_in):
        ar[k] = 0.99 * ar[k - 1] + 0.1 * g.standard_normal(n)
    slow = _sample(np.stack([ar, ar - 1.0], axis=-1))
    assert not discrete.mixing_checks({0.1: slow}, {0.1: slow}, burn_in)[0].passes
    # starts that end at different equilibria: the random start's chains of another model
    other = discrete.sample_ising(discrete.ising_coupling(3, 0.5), n, burn_in, "random", torch.Generator().manual_seed(1))
    assert not discrete.mixing_checks({0.1: sample()}, {0.1: other}, burn_in)[1].passes


def test_w_share_and_coupling_errors():
    truth = discrete.ising_coupling(4, 0.3)
    spins = torch.ones(50, 16)  # fully ordered data: every flip raises the energy
    g = lambda: torch.Generator().manual_seed(0)
    assert discrete.w_share(truth, spins, 0.1, 8, 1.0, g()) > discrete.w_share(truth, spins, 0.01, 8, 1.0, g())
    assert discrete.w_share(truth * 0, spins, 0.1, 8, 1.0, g()) == pytest.approx(1 / 9)  # flat energy: w / (w + M)
    errors = discrete.coupling_errors(0.5 * truth, truth)
    assert errors == {"edge_mean": pytest.approx(0.15), "edge_rmse": pytest.approx(0.15), "off_rms": 0.0}
    with pytest.raises(ValueError, match="±1"):
        discrete.w_share(truth, torch.zeros(5, 16), 0.1, 8, 1.0)


# ------------------------------------------------------------------ the pages call the functions above


@pytest.mark.parametrize("name, functions", [
    ("density_ablations", ["ablation.stabilisation_claim", "ablation.flatness_claim", "ablation.loss_bound_check"]),
    ("density_benchmark", ["benchmark.stability_claim", "benchmark.top_k_claim", "benchmark.nll_kinds"]),
    ("edlebm_mnist", ["lebm_eval.demonstration_claims", "lebm_eval.ordering_claim", "mnist_eval.classifier_check"]),
    ("discrete_ed", ["discrete.learning_claim", "discrete.ising_claims", "discrete.rbm_claims", "discrete.mixing_checks"]),
])
def test_the_pages_assert_only_claims_computed_by_the_package(name, functions):
    import jupytext

    from .conftest import ROOT

    code = "\n".join(c.source for c in jupytext.read(ROOT / "notebooks" / f"{name}.md").cells if c.cell_type == "code")
    assert "Claim(" not in code and "InstrumentCheck(" not in code, f"{name} builds a claim inline"
    assert all(f in code for f in functions)


def test_a_heatmap_cell_says_when_its_quadrature_did_not_hold_the_mass():
    assert ablation.annotation(_cell(0.05, mse=0.1, grid=0.2), ["mse", "mse_grid"]) == "MSE 0.1\nMSE quad. 0.2"
    assert ablation.annotation(_cell(0.05, mse=0.1, grid=0.2, edge=1.0), ["mse", "mse_grid"]).endswith("(quadrature did not hold the mass)")
