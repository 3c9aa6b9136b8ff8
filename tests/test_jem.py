"""JEM: the energy of a classifier, JEM's SGLD sampler and replay buffer, the joint loss, the classifier
metrics, the chapter's runs, its parameter checks and its claims (each shown failing on a counterfactual)."""

import math

import pytest
import torch

from edrepro import classifier_metrics, jem, losses, toy
from edrepro.book import parameters, pipeline, runs
from edrepro.chapters import jem_page, jem_runs
from edrepro.samplers import ReplayBuffer


# ----------------------------------------------------------------------------- the energy of a classifier


def test_energy_of_a_linear_classifier_has_its_closed_form():
    # logits (a·x, −a·x): E(x) = −log(e^{a·x} + e^{−a·x}) = −log(2 cosh(a·x))
    linear = torch.nn.Linear(2, 2, bias=False).double()
    a = torch.tensor([0.7, -1.3], dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([a, -a]))
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = -torch.log(2 * torch.cosh(x @ a))
    torch.testing.assert_close(jem.energy_of(linear)(x), expected, rtol=1e-12, atol=1e-12)


def test_a_common_shift_of_the_logits_moves_the_energy_and_not_the_classifier():
    logits = torch.randn(20, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shift = torch.randn(20, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(torch.softmax(logits + shift, 1), torch.softmax(logits, 1))
    torch.testing.assert_close(jem.marginal_energy(logits + shift), jem.marginal_energy(logits) - shift[:, 0])


def test_marginal_energy_refuses_a_vector():
    with pytest.raises(ValueError, match="logits"):
        jem.marginal_energy(torch.zeros(5))


# ----------------------------------------------------------------------------- the sampler and the buffer


def quadratic(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x**2).sum(1)


def test_sgld_without_noise_is_gradient_descent_with_its_closed_form():
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # x ← x − α x: x_k = (1 − α)^k x_0
    torch.testing.assert_close(jem.sgld(quadratic, x0, 7, 0.2, 0.0), 0.8**7 * x0, rtol=1e-12, atol=1e-14)


def test_sgld_with_langevin_noise_has_the_ula_stationary_variance():
    # σ² = 2α on E = |x|²/2: x ← (1 − α) x + σ ξ has stationary variance σ² / (1 − (1 − α)²) = 1 / (1 − α/2)
    alpha = 0.2
    g = torch.Generator().manual_seed(3)
    x = jem.sgld(quadratic, torch.zeros(20_000, 1, dtype=torch.float64), 60, alpha, math.sqrt(2 * alpha), g)
    assert abs(float(x.var()) - 1 / (1 - alpha / 2)) < 0.05


def test_sgld_is_deterministic_given_the_generator():
    x0 = torch.zeros(4, 2)
    a = jem.sgld(quadratic, x0, 5, 0.1, 0.3, torch.Generator().manual_seed(7))
    b = jem.sgld(quadratic, x0, 5, 0.1, 0.3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sgld_names_the_step_at_which_its_chains_blow_up():
    with pytest.raises(FloatingPointError, match="step"):
        jem.sgld(lambda x: -torch.exp(x).sum(1), torch.full((2, 1), 5.0), 50, 10.0, 0.0)


@pytest.mark.parametrize("bad, match", [({"n_steps": 0}, "n_steps"), ({"step_size": 0.0}, "step_size"), ({"noise_std": -1.0}, "noise_std")])
def test_sgld_refuses_bad_arguments(bad, match):
    kwargs = {"n_steps": 2, "step_size": 0.1, "noise_std": 0.1, **bad}
    with pytest.raises(ValueError, match=match):
        jem.sgld(quadratic, torch.zeros(2, 2), **kwargs)


def constant_buffer(capacity: int) -> ReplayBuffer:
    # stored chains are 0, restarted ones 7: a restart is visible in every coordinate
    buffer = ReplayBuffer(capacity, lambda n, g: torch.zeros(n, 2))
    buffer.init_fn = lambda n, g: torch.full((n, 2), 7.0)
    return buffer


@pytest.mark.parametrize("p", [0.0, 0.05, 0.3, 1.0])
def test_replay_buffer_restarts_chains_at_the_reinitialisation_rate(p):
    buffer, n, rounds = constant_buffer(4000), 4000, 5
    g = torch.Generator().manual_seed(11)
    restarted = 0
    for _ in range(rounds):
        x, idx, mask = jem.draw_chains(buffer, n, p, g)
        assert torch.equal(x[mask], torch.full_like(x[mask], 7.0)) and torch.equal(x[~mask], torch.zeros_like(x[~mask]))
        restarted += int(mask.sum())
    total = n * rounds
    assert abs(restarted / total - p) <= 5 * math.sqrt(p * (1 - p) / total) + 1e-12  # binomial, 5 standard deviations


def test_draw_chains_refuses_a_probability_outside_the_unit_interval():
    with pytest.raises(ValueError, match="reinit_prob"):
        jem.draw_chains(constant_buffer(10), 4, 1.5)


def test_sgld_pcd_term_writes_the_chains_back_and_is_the_energy_gap():
    buffer = ReplayBuffer(16, lambda n, g: torch.randn(n, 2, generator=g), torch.Generator().manual_seed(0))
    before = buffer.data.clone()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    term = jem.sgld_pcd_term(quadratic, x, buffer, 3, 0.1, 0.1, 0.0, g)
    changed = (buffer.data != before).any(1)
    assert int(changed.sum()) == 8  # the 8 drawn chains moved and were written back, the others kept
    x_neg = buffer.data[changed]
    expected = quadratic(x).mean() - quadratic(x_neg).mean()
    torch.testing.assert_close(term, expected)


def test_joint_loss_is_the_cross_entropy_plus_the_weighted_generative_term():
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(jem.joint_loss(logits, labels, None), ce)
    torch.testing.assert_close(jem.joint_loss(logits, labels, torch.tensor(2.0), weight=0.5), ce + 1.0)
    with pytest.raises(ValueError, match="labels"):
        jem.joint_loss(logits, torch.tensor([0, 1, 2, 3, 1, 0]), None)


def test_ed_term_is_energy_discrepancy_of_the_classifier_energy():
    net = jem.toy_classifier(3, width=8)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    energy = jem.energy_of(net)
    a = jem.ed_term(energy, x, 0.5, 4, 1.0, torch.Generator().manual_seed(5))
    b = losses.energy_discrepancy(energy, x, 0.5, 4, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_small_conv_net_reads_flat_images():
    net = jem.SmallConvNet(4)
    assert net(jem.uniform_images(3, torch.Generator().manual_seed(0))).shape == (3, 10)
    with pytest.raises(ValueError, match="784"):
        net(torch.zeros(3, 1, 28, 28))


# ----------------------------------------------------------------------------- classifier metrics


def test_auroc_matches_the_pairwise_definition_with_ties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 6, (300,), generator=g).double(), torch.randint(0, 6, (200,), generator=g).double()
    pairwise = ((a[:, None] > b[None]).double() + 0.5 * (a[:, None] == b[None]).double()).mean()
    assert classifier_metrics.auroc(a, b) == pytest.approx(float(pairwise), abs=1e-12)
    assert classifier_metrics.auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert classifier_metrics.auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 0.0
    with pytest.raises(ValueError, match="scores_out"):
        classifier_metrics.auroc(torch.tensor([1.0]), torch.tensor([math.nan]))


def test_ece_is_zero_for_a_calibrated_classifier_and_known_for_an_overconfident_one():
    # 10 points at confidence 0.8 in one bin: 8 right → calibrated; all right → |1 − 0.8| = 0.2
    probs = torch.tensor([[0.8, 0.2]] * 10, dtype=torch.float64)
    calibrated = torch.tensor([0] * 8 + [1] * 2)
    assert classifier_metrics.expected_calibration_error(probs, calibrated, 10) == pytest.approx(0.0, abs=1e-12)
    assert classifier_metrics.expected_calibration_error(probs, torch.zeros(10, dtype=torch.long), 10) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="probs"):
        classifier_metrics.expected_calibration_error(torch.tensor([[0.5, 0.6]]), torch.tensor([0]))


# ----------------------------------------------------------------------------- labelled 2-D sets


@pytest.mark.parametrize("name", toy.LABELLED)
def test_labelled_sets_draw_the_same_points_as_the_unlabelled_ones(name):
    data = toy.get(name)
    x = data.sample(500, torch.Generator().manual_seed(0))
    x2, y = data.sample_labelled(500, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and y.min() >= 0 and y.max() < data.n_classes and len(y.unique()) == data.n_classes


def test_labels_of_the_25_gaussians_are_their_modes():
    x, y = toy.get("25gaussians").sample_labelled(2000, torch.Generator().manual_seed(0))
    centres = torch.cartesian_prod(*(torch.arange(-4.0, 5.0, 2.0),) * 2) / 1.414
    assert torch.equal(torch.cdist(x, centres).argmin(1), y)


def test_an_unlabelled_set_says_which_are_labelled():
    with pytest.raises(ValueError, match="no labels"):
        toy.get("rings").sample_labelled(5)


# ----------------------------------------------------------------------------- runs and parameters


def tiny_params(**changes):
    params = pipeline.effective_params(pipeline.find_root(), "jem", "smoke")
    return {**params, **changes}


def test_a_run_is_deterministic_and_a_diverging_sgld_run_is_recorded_as_diverged(tmp_path):
    params = tiny_params(toy_steps=15, sgld_steps=2)
    spec = jem_runs.run_spec("sgld", "moons", 0, params)
    a = jem_runs.train_spec(spec, None, "cpu", progress=False)
    b = jem_runs.train_spec(spec, None, "cpu", progress=False)
    assert a.series["loss"] == b.series["loss"] and a.diverged_at is None
    wild = jem_runs.run_spec("sgld", "moons", 0, {**params, "toy_sgld_step_size": 1e30})
    record = runs.fetch(wild, root=tmp_path, progress=False, echo=None)
    assert record.diverged and record.outcome_text().startswith(f"diverged at step {record.diverged_at:,}")


def test_page_specs_list_every_method_on_every_set():
    specs = jem_page.page_specs(tiny_params())
    assert {(s.method, s.dataset) for s in specs} == {(m, d) for m in jem_runs.METHODS for d in jem_runs.DATASETS}
    assert all(s.kind == "jem" for s in specs)


@pytest.mark.parametrize("override, parameter", [
    ({"sgld_steps": "0"}, "sgld_steps"), ({"buffer_size": "32"}, "buffer_size"), ({"reinit_prob": "1.5"}, "reinit_prob"),
    ({"reinit_prob": "-0.1"}, "reinit_prob"), ({"datasets": "[moons, cifar10]"}, "datasets"), ({"methods": "[ce, sgld]"}, "methods"),
    ({"mnist_n_train": "10"}, "mnist_n_train"),
])
def test_bad_page_parameters_are_refused_before_any_work(root, override, parameter):
    with pytest.raises((ValueError, parameters.ParameterError), match=parameter):
        pipeline.check_pages(root, ["jem"], "quick", override)


def test_jem_runs_refuse_an_unknown_data_set():
    with pytest.raises(ValueError, match="dataset"):
        jem_runs.run_spec("ed", "cifar10", 0, tiny_params())


# ----------------------------------------------------------------------------- claims and their counterfactuals


def row(method, dataset, **values):
    base = {"method": method, "dataset": dataset, "seed": 0, "diverged": False, "outcome": "finished",
            "accuracy": 0.95, "nll": 2.0, "auroc": {n: 0.999 for n in jem_page.OOD_NAMES}, "mass_outside_box": 0.0}
    return {**base, **values}


def good_rows():
    return [row("ce", "moons", nll=30.0, mass_outside_box=1.0), row("ed", "moons", nll=2.0),
            row("ce", "mnist", auroc={n: 0.9 for n in jem_page.OOD_NAMES}), row("ed", "mnist")]


def swapped(rows):
    return [{**r, "method": {"ce": "ed", "ed": "ce"}[r["method"]]} for r in rows]


def diverged(rows, method):
    return [{**r, "diverged": True, "outcome": "diverged at step 9 (loss)"} if r["method"] == method else r for r in rows]


def test_every_claim_holds_on_the_good_rows():
    rows = good_rows()
    claims = [jem_page.nll_claim(rows), jem_page.accuracy_claim(rows, 0.01, "2-D"), jem_page.accuracy_claim(rows, 0.02, "mnist"),
              jem_page.ood_claim(rows, "inverted digits"), jem_page.ood_floor_claim(rows, 0.99)]
    assert all(c.holds for c in claims)


def test_nll_claim_fails_when_the_methods_are_swapped_or_ed_diverged():
    assert not jem_page.nll_claim(swapped(good_rows())).holds
    assert not jem_page.nll_claim(diverged(good_rows(), "ed")).holds
    assert not jem_page.nll_claim(diverged(good_rows(), "ce")).holds  # a divergence never makes a claim hold


def test_accuracy_claim_fails_when_ed_loses_accuracy():
    rows = [{**r, "accuracy": 0.90} if r["method"] == "ed" else r for r in good_rows()]
    assert not jem_page.accuracy_claim(rows, 0.01, "2-D").holds
    assert not jem_page.accuracy_claim(rows, 0.02, "mnist").holds
    assert jem_page.accuracy_claim(rows, 0.06, "mnist").holds
    assert "within 1 point of" in jem_page.accuracy_claim(rows, 0.01, "2-D").statement


def test_ood_claims_fail_for_a_density_no_better_than_the_classifier():
    assert not jem_page.ood_claim(swapped(good_rows()), "inverted digits").holds
    assert not jem_page.ood_floor_claim(swapped(good_rows()), 0.99).holds
    assert not jem_page.ood_claim(diverged(good_rows(), "ed"), "inverted digits").holds
    with pytest.raises(ValueError, match="ood_name"):
        jem_page.ood_claim(good_rows(), "cifar10")


def test_the_toy_reading_is_computed_from_the_rows():
    rows = good_rows() + [row("sgld", "moons", diverged=True, outcome="diverged at step 9 (loss)")]
    text = jem_page.toy_reading(rows)
    assert "plain classifier leaves 1.000 of its mass" in text and "SGLD-trained JEM diverged on moons" in text


def test_paper_cost_scales_each_run_by_its_budget_and_its_passes_per_update():
    params = tiny_params()
    spec = jem_runs.run_spec("sgld", "moons", 0, params)
    record = runs.RunRecord(spec, "finished", {}, {}, steps=10, train_seconds=1.0)
    paper = {**params, "toy_steps": 100, "sgld_steps": 2 * params["sgld_steps"] + 1}
    assert jem_page.paper_cost([record], params, paper) == pytest.approx(10 * 2)  # 10× the updates, 2× the passes


def test_accuracy_gap_claim_fails_when_ed_and_sgld_are_swapped_or_sgld_diverged():
    rows = good_rows() + [row("sgld", "mnist", accuracy=0.85)]
    assert jem_page.accuracy_gap_claim(rows).holds
    ed_sgld_swapped = [{**r, "method": {"ed": "sgld", "sgld": "ed"}.get(r["method"], r["method"])} for r in rows]
    assert not jem_page.accuracy_gap_claim(ed_sgld_swapped).holds
    assert not jem_page.accuracy_gap_claim(diverged(rows, "sgld")).holds  # a divergence never makes a claim hold
    with pytest.raises(ValueError, match="sgld"):
        jem_page.accuracy_gap_claim(good_rows())
