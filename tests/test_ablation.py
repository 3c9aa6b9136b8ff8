import math

import pytest
import torch

from edrepro.book import runs
from edrepro.chapters import ablation, density


def test_variance_std_conversion():
    assert ablation.variance_of_std(0.05) == pytest.approx(0.0025)
    assert ablation.variance_of_std(50) == pytest.approx(2500)
    assert ablation.std_of_variance(2500) == pytest.approx(50)
    assert ablation.std_of_variance(ablation.variance_of_std(0.3)) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        ablation.variance_of_std(0)
    with pytest.raises(ValueError):
        ablation.std_of_variance(-1)


def test_grid_layout_is_the_authors():
    rows, cells = ablation.ablation_grid([0.0025, 2500], [0, 0.05, 50], [1, 32, 512])
    assert len(rows) == 5 and len(cells) == 15
    assert rows[0] == "t = 0.0025 (std 0.05), w = 1"
    assert rows[2] == "t = 1 (std 1), w = 0"
    assert [c.m for c in cells[:3]] == [1, 32, 512]
    assert [(c.t, c.w) for c in cells[::3]] == [(0.0025, 1), (2500, 1), (1, 0), (1, 0.05), (1, 50)]
    assert cells[4].hparams == {"t": 2500, "m_particles": 32, "w": 1.0}
    assert all(c.row == rows[i // 3] for i, c in enumerate(cells))


@pytest.mark.parametrize(
    "args",
    [([0], [1], [1]), ([1], [-1], [1]), ([1], [1], [0]), ([1], [1], []), ([1], [1], [2, 2]), ([1], [1.0], [1]), ([], [], [1])],
)
def test_grid_rejects_bad_input(args):
    # ([1], [1.0], [1]) repeats the row (t = 1, w = 1)
    with pytest.raises(ValueError):
        ablation.ablation_grid(*args)


def _fake(final_mse, diverged_at=None, m=4, seconds=1.0, final_grid=None, grid_curve=None):
    spec = density.spec("ed", n_steps=10, hparams={"m_particles": m}, metrics=["mse", "mse_grid"])
    status = "diverged" if diverged_at is not None else "finished"
    grid = grid_curve or [30.0, final_mse if final_grid is None else final_grid]
    curves = {"step": [0, 10], "seconds": [0.0, seconds], "mse": [3.0, final_mse], "mse_grid": grid}
    return runs.RunRecord(spec, status, curves, {}, 10, seconds, diverged_at=diverged_at, nonfinite="loss" if diverged_at else None)


def test_annotation_and_effective_mse():
    assert ablation.annotation(_fake(0.1234)) == "MSE 0.123"
    assert ablation.annotation(_fake(0.1234, final_grid=0.2), ["mse", "mse_grid"]) == "MSE 0.123\nMSE quad. 0.2"
    assert ablation.effective_mse(_fake(0.1234)) == pytest.approx(0.1234)
    assert ablation.effective_mse(_fake(0.1234, final_grid=0.5), "mse_grid") == 0.5
    diverged = _fake(3.0, diverged_at=1234)
    assert ablation.annotation(diverged, ["mse", "mse_grid"]) == "diverged at step 1,234 (loss)"
    assert ablation.effective_mse(diverged) == ablation.effective_mse(diverged, "mse_grid") == math.inf
    assert ablation.effective_mse(_fake(float("nan"))) == math.inf
    assert ablation.annotation(_fake(float("inf"))) == "MSE not finite"
    with pytest.raises(ValueError, match="metric must be one of"):
        ablation.effective_mse(_fake(0.1), "nll")


def test_clearly_better_and_finite_throughout():
    a, b, bad = _fake(0.1), _fake(0.2), _fake(0.05, diverged_at=5)
    assert ablation.clearly_better(a, b) and not ablation.clearly_better(b, a)
    assert not ablation.clearly_better(_fake(0.19), b)  # within the 10 % margin
    assert ablation.clearly_better(b, bad) and not ablation.clearly_better(bad, b)  # a diverged run is never better
    assert ablation.clearly_better(_fake(0.3, final_grid=0.1), _fake(0.2, final_grid=0.2), "mse_grid")
    assert ablation.finite_throughout(a) and not ablation.finite_throughout(bad)
    assert not ablation.finite_throughout(_fake(0.1, grid_curve=[float("inf"), 0.1]))
    assert ablation.finite_throughout(_fake(0.1, grid_curve=[float("inf"), 0.1]), ["mse"])
    with pytest.raises(ValueError, match="margin must lie"):
        ablation.clearly_better(a, b, margin=1.5)


def test_evaluations_and_the_cost_fit():
    # the authors' grid: 5 rows x 50 001 iterations x batch 128 x (2 + 33 + 513) evaluations
    assert ablation.evaluations([1, 32, 512], 50_001, 128, 5) == 5 * 50_001 * 128 * 548
    assert ablation.evaluations([4], 10, 2) == 100
    # seconds per iteration = 0.002 + 0.001 (M + 1), measured on 10 iterations
    records = [_fake(0.1, m=m, seconds=10 * (0.002 + 0.001 * (m + 1))) for m in (1, 4, 16)]
    a, b = ablation.cost_fit(records)
    assert a == pytest.approx(0.002) and b == pytest.approx(0.001)
    assert ablation.predicted_seconds((a, b), [1, 32], 100, 2) == pytest.approx(2 * 100 * (0.004 + 0.035))
    with pytest.raises(ValueError, match="at least two different numbers of negatives"):
        ablation.cost_fit(records[:1])
    with pytest.raises(ValueError, match="M must be"):
        ablation.evaluations([0], 10, 2)
    with pytest.raises(ValueError, match="n_steps must be"):
        ablation.predicted_seconds((a, b), [1], 0)


def test_require_w_rows_names_the_parameter():
    assert ablation.require_w_rows([0.0, 0.05, 50.0]) == (0.0, 0.05, 50.0)
    assert ablation.require_w_rows([1.0, 0, 0.1, 4]) == (0.0, 0.1, 4.0)
    for bad in ([0.05, 50.0], [0.0, 1.0], []):
        with pytest.raises(ValueError, match="w_values must contain 0 and at least two values > 0"):
            ablation.require_w_rows(bad)


def test_mse_table_orders_rows_and_columns():
    rows, cells = ablation.ablation_grid([2.0], [0.5], [1, 4])
    results = {c: _fake(10 * i + c.m) for i, c in enumerate(cells)}
    assert ablation.mse_table(results, rows, [1, 4]) == [[1, 14], [21, 34]]
    with pytest.raises(KeyError):
        ablation.mse_table(results, rows, [1, 8])


PARAMS = dict(seed=0, dataset="25gaussians", n_steps=4, batch_size=16, lr=1e-3, ema_decay=0.999, eval_every=2, eval_samples=100,
              t_values=[1.0], w_values=[], m_values=[1, 2], w_for_t=1.0, t_for_w=1.0)


def test_page_specs_are_one_ed_run_per_cell(tmp_path):
    rows, cells = ablation.page_cells(PARAMS)
    specs = ablation.page_specs(PARAMS)
    assert len(specs) == len(cells) == 2 and [s.hparams["m_particles"] for s in specs] == [1, 2]
    assert all(s.method == "ed" and s.chapter == "density_ablations" and s.budget == 4 for s in specs)
    assert all(s.settings["metrics"] == ["mse", "mse_grid"] for s in specs)
    first = runs.fetch_all(specs, root=tmp_path, progress=False)
    again = runs.fetch_all(specs, root=tmp_path, progress=False)
    assert not any(r.cached for r in first) and all(r.cached for r in again)
    assert all(a.same_result(b) for a, b in zip(first, again))
    assert first[0].losses != first[1].losses  # M changes the run
    assert all(ablation.finite_throughout(r) for r in first)
    assert ablation.flatness(first[0]) == ablation.energy_range(density.energy(first[0]), (-3.0, 3.0), 60) > 0


def test_energy_range_and_cell_density():
    quad = lambda x: 0.5 * (x**2).sum(dim=1)
    # max of |x|^2/2 on the cell centres of [-3, 3]^2 (n = 60) minus its min
    h = 6 / 60
    corner = 3 - h / 2
    assert ablation.energy_range(quad, (-3, 3), 60) == pytest.approx(corner**2 - (h / 2) ** 2, rel=1e-5)
    assert ablation.energy_range(lambda x: quad(x) + 100.0, (-3, 3), 60) == pytest.approx(ablation.energy_range(quad, (-3, 3), 60))
    assert ablation.energy_range(lambda x: quad(x) * float("nan"), (-3, 3), 10) == math.inf
    p = ablation.cell_density(_fake(0.1), n=20, energy=quad)
    assert p.shape == (20, 20) and p.sum() == pytest.approx(1.0, abs=1e-6)
    assert ablation.cell_density(_fake(0.1), n=20, energy=lambda x: quad(x) * float("nan")) is None


def test_density_ablations_parameters_are_checked_first():
    import ast

    import jupytext

    from edrepro.book import parameters, pipeline

    from .conftest import ROOT

    cells = [c for c in jupytext.read(ROOT / "notebooks" / "density_ablations.md").cells if c.cell_type == "code"]
    k = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", ()))
    defaults = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cells[k].source).body if isinstance(n, ast.Assign)}
    assert set(parameters.schema("density_ablations")) == set(defaults)
    assert cells[k + 1].source == 'from edrepro.book import parameters\nparams = parameters.check_notebook("density_ablations", globals())'
    assert parameters.check_notebook("density_ablations", defaults) == defaults
    for profile in pipeline.PROFILES:
        parameters.check("density_ablations", pipeline.load_params(ROOT, "density_ablations", profile))
    for key, value in (("m_values", [4]), ("w_values", [0.0, 1.0]), ("t_values", []), ("far_worse", 1.0), ("workers", 0)):
        with pytest.raises(parameters.ParameterError, match=key):
            parameters.check_notebook("density_ablations", {**defaults, key: value})
