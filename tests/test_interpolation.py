"""The interpolation chapter: exact ED by quadrature against closed forms, its claims and their
counterfactuals, the page's parameters, and the staging that lets pages include the package's source."""

import ast
import dataclasses
import math
import re

import jupytext
import pytest
import torch

from edrepro import mixture
from edrepro.book import parameters, pipeline
from edrepro.chapters import interpolation

from .conftest import ROOT

D = torch.float64
MODELS = torch.tensor([0.05, 0.5, 0.9], dtype=D)
TS = interpolation.log_ts(-4, 4, 1)  # 1e-4, 1e-3, ..., 1e4


@pytest.fixture(scope="module")
def limits():
    """Figure 1's family, well specified: data weight 0.2, three model weights."""
    return interpolation.interpolation_curves(TS, MODELS, rho_true=0.2, points_per_sd=8)


@pytest.fixture(scope="module")
def path():
    """A wrong model: data components of scale 1.5, the model's of scale 1, on the weight grid."""
    return interpolation.interpolation_curves(TS, mixture.rho_grid(), rho_true=0.2, data_std=1.5, points_per_sd=8)


# --- the quadrature -------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1e-5, 1e-2, 1.0, 30.0, 1e4])
def test_smoothing_a_gaussian_gives_the_gaussian_with_variance_added(t):
    y = torch.linspace(-30, 30, 241, dtype=D)
    std = 1.3
    got = interpolation.log_gaussian_smoothing(lambda v: interpolation._log_normal(v, 2.0, std), t, y,
                                               min(math.sqrt(t), std) / 8, (2.0 - 20 * std, 2.0 + 20 * std))
    exact = interpolation._log_normal(y, 2.0, math.sqrt(std**2 + t))
    near = (y - 2.0).abs() <= 10 * math.sqrt(std**2 + t)
    assert torch.allclose(got[near], exact[near], rtol=0, atol=1e-11)


def test_smoothing_rejects_a_grid_that_does_not_resolve_the_kernel():
    with pytest.raises(ValueError, match="must resolve the kernel"):
        interpolation.log_gaussian_smoothing(lambda v: -0.5 * v**2, 1e-2, torch.zeros(3, dtype=D), 0.06, (-10.0, 10.0))


def test_diffused_data_integrate_to_one_and_instruments_pass(limits):
    assert (limits.mass - 1).abs().max() < 1e-13
    assert limits.potential_error.max() < 1e-11
    assert all(c.passes for c in interpolation.instrument_checks(limits))


def test_instrument_check_fails_when_the_mass_is_off(limits):
    broken = dataclasses.replace(limits, mass=limits.mass * (1 + 1e-9))
    assert not interpolation.instrument_checks(broken)[0].passes


def test_instrument_check_fails_when_the_components_are_smoothed_with_the_wrong_variance(monkeypatch):
    """Each component smoothed with variance 2t: still a density (the mass check passes), but not N(m, σ² + t)."""
    smooth = interpolation.log_gaussian_smoothing
    monkeypatch.setattr(interpolation, "log_gaussian_smoothing", lambda log_f, t, *rest: smooth(log_f, 2 * t, *rest))
    wrong = interpolation.interpolation_curves([1e-2, 1.0], MODELS, rho_true=0.2, points_per_sd=8)
    assert [c.passes for c in interpolation.instrument_checks(wrong)] == [True, False]


# --- closed forms ---------------------------------------------------------------------------


def _gaussian_kl(var_p: float, var_q: float) -> float:
    """KL(N(m, var_p) ‖ N(m, var_q))."""
    return 0.5 * (var_p / var_q - 1 - math.log(var_p / var_q))


def test_two_gaussians_match_their_closed_forms():
    """Means (0, 0) make both mixtures single Gaussians: p = N(0, 1.5²), q = N(0, 1). KL, the Fisher
    divergence ½ σ_p² (1/σ_q² − 1/σ_p²)², ΔED_t = KL(p‖q) − KL(p_t‖q_t) and ED_t(p, −log p) =
    H(p) − H(p_t) are all closed forms."""
    sp, sq = 1.5, 1.0
    ts = [1e-4, 0.3, 5.0, 1e3]
    c = interpolation.interpolation_curves(ts, torch.tensor([0.5], dtype=D), rho_true=0.5, means=(0.0, 0.0),
                                           model_std=sq, data_std=sp, points_per_sd=8)
    kl = _gaussian_kl(sp**2, sq**2)
    fisher = 0.5 * sp**2 * (1 / sq**2 - 1 / sp**2) ** 2
    assert float(c.kl[0]) == pytest.approx(kl, rel=1e-12)
    assert float(c.fisher[0]) == pytest.approx(fisher, rel=1e-12)
    for k, t in enumerate(ts):
        excess = kl - _gaussian_kl(sp**2 + t, sq**2 + t)
        assert float(c.excess[k, 0]) == pytest.approx(excess, rel=1e-9, abs=1e-15)
        assert float(c.ed_at_data[k]) == pytest.approx(0.5 * math.log(sp**2 / (sp**2 + t)), rel=1e-12, abs=1e-15)


def test_ed_difference_is_the_kl_difference_and_the_definition(limits):
    """ΔED from pointwise differences equals ED − ED(p) from the definition, and KL − KL_t."""
    assert torch.allclose(limits.excess, limits.ed - limits.ed_at_data[:, None], rtol=0, atol=1e-13)
    assert torch.allclose(limits.excess, limits.kl - limits.kl_diffused, rtol=0, atol=1e-15)
    assert (limits.excess > 0).all() and (limits.excess < limits.kl).all()
    assert (limits.excess.diff(dim=0) > 0).all()  # grows with t


def test_fisher_divergence_agrees_with_the_myopia_quadrature():
    """Two independent quadratures of ½ E_p (s_ρ − s_ρ*)² (mixture.fisher_population on 200 001 points).
    The integrand lives in the gap between the modes, where the responsibilities switch with slope
    10: the trapezoidal rule's error falls like exp(−2·points_per_sd), 1e-5 at 8 points, nil at 20."""
    reference = mixture.fisher_population(MODELS, rho_true=0.2)
    for n, rtol in ((8, 3e-5), (20, 1e-12)):
        c = interpolation.interpolation_curves(TS[:2], MODELS, rho_true=0.2, points_per_sd=n)
        assert torch.allclose(c.fisher, reference, rtol=rtol, atol=0), n


def test_log_ts_spans_the_decades():
    ts = interpolation.log_ts(-4, 4, 4)
    assert len(ts) == 33 and ts[0] == pytest.approx(1e-4) and ts[-1] == pytest.approx(1e4)
    assert all(b / a == pytest.approx(10**0.25) for a, b in zip(ts, ts[1:]))
    with pytest.raises(ValueError):
        interpolation.log_ts(2, 1, 4)


# --- claims and their counterfactuals -------------------------------------------------------


def test_the_claims_hold_on_the_exact_curves(limits, path):
    assert interpolation.small_t_claim(limits).holds is True
    assert interpolation.large_t_claim(limits).holds is True
    assert interpolation.minimiser_path_claim(path).holds is True
    small = limits.small_t_ratio()[0]
    assert ((small - 1).abs() < 2e-3).all()  # ΔED/(tF) at t = 1e-4: 1 + a t with a ≈ 5.5


def test_small_t_claim_holds_on_a_dense_grid_at_the_smallest_times():
    """At t = 1e-5, ΔED ≈ 2e-12 carries rounding of a few 1e-6 relative: the slope is measured a decade
    apart, where the first-order term is ten times larger, not between neighbouring times."""
    dense = interpolation.interpolation_curves(interpolation.log_ts(-5, -3, 16), MODELS, rho_true=0.2, points_per_sd=8)
    assert interpolation.small_t_claim(dense).holds is True


def test_small_t_claim_fails_with_a_kernel_of_the_wrong_variance():
    """The contrastive potential smoothed with variance 2t while y has variance t: not ED."""
    wrong = interpolation.interpolation_curves(TS, MODELS, rho_true=0.2, points_per_sd=8, kernel_factor=2.0)
    assert interpolation.small_t_claim(wrong).holds is False


def test_small_t_claim_fails_for_the_fisher_divergence_without_its_half(limits):
    no_half = dataclasses.replace(limits, fisher=2 * limits.fisher)
    assert interpolation.small_t_claim(no_half).holds is False


def test_small_t_claim_fails_when_the_smallest_t_is_not_small():
    late = interpolation.interpolation_curves(interpolation.log_ts(-1, 4, 2), MODELS, rho_true=0.2, points_per_sd=8)
    assert interpolation.small_t_claim(late).holds is False


def test_large_t_claim_fails_against_the_reverse_kl_divergence(limits):
    x = interpolation.uniform_grid(-20.0, 20.0, 0.01)
    fam = ((-5.0, 5.0), 1.0)
    log_p = mixture._log_p(*mixture._log_components(x, fam), torch.tensor([0.2], dtype=D))[0]
    log_q = mixture._log_p(*mixture._log_components(x, fam), MODELS)
    reverse = (log_q.exp() * (log_q - log_p)).sum(dim=1) * interpolation._spacing(x)
    assert not torch.allclose(reverse, limits.kl, rtol=0.05)
    assert interpolation.large_t_claim(dataclasses.replace(limits, kl=reverse)).holds is False


def test_large_t_claim_fails_when_the_largest_t_is_not_large():
    early = interpolation.interpolation_curves(interpolation.log_ts(-4, 1, 2), MODELS, rho_true=0.2, points_per_sd=8)
    assert interpolation.large_t_claim(early).holds is False


def test_path_claim_fails_with_score_matching_and_likelihood_swapped(path):
    swapped = dataclasses.replace(path, fisher=path.kl, kl=path.fisher)
    assert interpolation.minimiser_path_claim(swapped).holds is False


def test_path_claim_fails_on_a_path_that_overshoots_and_turns_back(path):
    excess = path.excess.clone()
    excess[len(TS) // 2] = (path.rhos - 0.5) ** 2  # a minimiser far past the likelihood's, then back
    assert interpolation.minimiser_path_claim(dataclasses.replace(path, excess=excess)).holds is False


def test_path_claim_is_undecided_when_the_model_fits():
    fits = interpolation.interpolation_curves(TS[:3] + TS[-3:], mixture.rho_grid(), rho_true=0.2, points_per_sd=8)
    assert interpolation.minimiser_path_claim(fits).holds is None


def test_ratios_refuse_a_model_equal_to_the_data():
    c = interpolation.interpolation_curves(TS[:2], torch.tensor([0.2, 0.5], dtype=D), rho_true=0.2, points_per_sd=8)
    with pytest.raises(ValueError, match=r"not positive at rho = \[0.2\]"):
        c.small_t_ratio()


# --- the page's parameters ------------------------------------------------------------------

NAME = "interpolation"
CHECK_CELL = f'from edrepro.book import parameters\nparams = parameters.check_notebook("{NAME}", globals())'


def _code_cells():
    return [c for c in jupytext.read(ROOT / "notebooks" / f"{NAME}.md").cells if c.cell_type == "code"]


def _defaults() -> dict:
    cell = next(c for c in _code_cells() if "parameters" in c.metadata.get("tags", ()))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body if isinstance(n, ast.Assign)}


def test_schema_names_exactly_the_parameters_cell_and_the_check_follows_it():
    assert set(parameters.schema(NAME)) == set(_defaults())
    cells = _code_cells()
    k = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", ()))
    assert cells[k + 1].source == CHECK_CELL


def test_defaults_and_every_profile_are_allowed():
    assert parameters.check_notebook(NAME, _defaults()) == _defaults()
    for profile in pipeline.PROFILES:
        parameters.check(NAME, pipeline.load_params(ROOT, NAME, profile))
    assert NAME in pipeline.notebook_names(ROOT)


@pytest.mark.parametrize("key, value", [
    ("log10_t_min", -2.0), ("log10_t_min", -6.0), ("log10_t_max", 2.0), ("log10_t_max", 7.0), ("points_per_sd", 4), ("rho_models", []),
    ("rho_models", [0.5, 0.5]), ("rho_true", 1.0), ("data_std", 0.0), ("limit_tolerance", 1.0), ("shape_ts", [0.0]),
])
def test_a_bad_value_is_rejected_naming_the_parameter(key, value):
    with pytest.raises(parameters.ParameterError, match=rf"parameter {key} = .* of notebook '{NAME}'"):
        parameters.check_notebook(NAME, {**_defaults(), key: value})


def test_code_cells_are_short():
    long = [c.source.splitlines()[0] for c in _code_cells() if len(c.source.splitlines()) > 15 and "mystnb" not in c.source]
    figures = [c for c in _code_cells() if "mystnb" in c.metadata or "mystnb" in c.source]
    assert not long and all(len(c.source.splitlines()) <= 15 for c in figures)


# --- pages include the package's source -----------------------------------------------------


def test_every_literalinclude_of_a_page_resolves_in_the_checkout_and_in_the_staged_book(tmp_path):
    includes = {(src.stem, m) for src in (ROOT / "notebooks").glob("*.md")
                for m in re.findall(r"^```\{literalinclude\}\s+(\S+)", src.read_text(), flags=re.M)}
    assert ("intro", "../edrepro/losses.py") in includes
    for _, path in includes:
        assert (ROOT / "notebooks" / path).is_file(), path
    # a one-page book staged from a throwaway root: the same relative paths resolve from src/
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    (root / "book" / "_toc.yml").write_text("format: jb-book\nroot: toy\n")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "toy.md").write_text("# Toy\n")
    (root / "edrepro").mkdir()
    (root / "edrepro" / "losses.py").write_text("def energy_discrepancy():\n    pass\n")
    executed = pipeline.executed_path(root, "toy", "smoke")
    executed.parent.mkdir(parents=True)
    executed.write_text("{}")
    src = pipeline.stage_book(root, "smoke", tmp_path / "build")
    assert (src / "toy.ipynb").is_file() and (src / "../edrepro/losses.py").resolve().is_file()
