"""edrepro.chapters.density: runs are deterministic, cached and resumable; the summary helpers are exact."""

import functools
import math

import pytest
import torch

from edrepro import losses, nets, samplers, toy
from edrepro.chapters import density



TINY = dict(n_steps=30, eval_every=10, eval_samples=500, progress=False)


@pytest.fixture
def run(tmp_path):
    """density.run with a private cache folder."""
    return functools.partial(density.run, root=tmp_path)


def _params(model):
    state = model if isinstance(model, dict) else model.state_dict()
    return [p.detach().clone() for p in state.values()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("method", list(density.METHODS))
def test_every_method_trains_and_is_deterministic(method, tmp_path):
    a = density.run(method, seed=3, root=tmp_path / "a", **TINY)
    b = density.run(method, seed=3, root=tmp_path / "b", **TINY)
    assert a.step_curve == [0, 10, 20, 30]
    assert len(a.seconds_curve) == len(a.curve("mse")) == 4 and all(math.isfinite(v) for v in a.curve("mse"))
    assert a.seconds_curve[0] == 0.0 and a.seconds_curve == sorted(a.seconds_curve)
    assert len(a.losses) == 30 and a.status == "finished" and not a.cached
    assert a.curve("mse") == b.curve("mse") and a.final("mse") == a.curve("mse")[-1] and a.losses == b.losses
    assert _same(_params(density.energy(a)), _params(density.energy(b))) and a.same_result(b)
    assert isinstance(density.energy(a)(torch.zeros(4, 2)), torch.Tensor)


def test_seed_changes_the_run_and_init_is_shared_across_methods(run):
    a = run("ed", seed=0, **TINY)
    b = run("ed", seed=1, **TINY)
    assert a.losses != b.losses
    # Same seed → same initial network for every method; global RNG untouched.
    state = torch.get_rng_state()
    m_ed, m_sm = density.make_model("ed", 5), density.make_model("sm", 5)
    assert torch.equal(state, torch.get_rng_state())
    assert _same(_params(m_ed), _params(m_sm))
    assert not _same(_params(m_ed), _params(density.make_model("ed", 6)))


def test_evaluation_does_not_touch_the_training_randomness(run):
    a = run("cd", seed=2, **{**TINY, "eval_every": 5})
    b = run("cd", seed=2, **{**TINY, "eval_every": 15})
    assert a.losses == b.losses and _same(_params(a.state()["model"]), _params(b.state()["model"]))
    # the same (seed, step) evaluates on the same points: equal MSE at the shared steps
    assert a.curve("mse")[a.step_curve.index(15)] == b.curve("mse")[b.step_curve.index(15)]


def test_finished_run_is_loaded_from_the_cache(tmp_path, run):
    a = run("ed", seed=0, **TINY)
    assert not a.cached and a.folder is not None and (a.folder / "record.json").exists()
    assert a.folder.parent == tmp_path / "density" and a.folder.name.startswith("ed-25gaussians-seed0-")
    assert not (a.folder / "checkpoint.pt").exists()  # a finished run keeps its record and weights only
    b = run("ed", seed=0, **TINY)
    assert {"threads", "device", "load_start", "load_end", "date", "cpu", "torch"} <= set(a.conditions)
    assert b.cached and b.conditions == a.conditions and b.same_result(a)
    assert b.seconds_curve == a.seconds_curve and b.steps_per_second == a.steps_per_second
    fresh = run("ed", seed=0, fresh=True, **TINY)
    assert not fresh.cached and fresh.same_result(a) and fresh.folder == a.folder
    # any change of the configuration is a different run
    c = run("ed", seed=0, hparams={"w": 0.5}, **TINY)
    assert not c.cached and c.folder != a.folder


@pytest.mark.parametrize("method", ["ed", "pcd"])
def test_interrupted_run_resumes_bitwise(tmp_path, monkeypatch, method):
    reference = density.run(method, seed=1, root=tmp_path / "ref", **TINY)
    real = density.metrics.mse_log_density
    calls = []

    def crash_at_step_30(energy, dataset, n, generator):
        calls.append(1)
        if len(calls) == 4:  # evaluations at steps 0, 10, 20, then 30
            raise KeyboardInterrupt
        return real(energy, dataset, n=n, generator=generator)

    monkeypatch.setattr(density.metrics, "mse_log_density", crash_at_step_30)
    with pytest.raises(KeyboardInterrupt):
        density.run(method, seed=1, root=tmp_path, checkpoint_every=20, **TINY)
    spec = density.spec(method, seed=1, checkpoint_every=20, **{k: v for k, v in TINY.items() if k != "progress"})
    assert density.runs.done(spec, tmp_path) is None  # recorded as interrupted, not done
    monkeypatch.setattr(density.metrics, "mse_log_density", real)
    resumed = density.run(method, seed=1, root=tmp_path, checkpoint_every=20, **TINY)
    assert resumed.resumed_from == 20 and not resumed.cached
    assert resumed.same_result(reference)


def test_a_diverging_run_records_its_step_and_quantity(run, monkeypatch):
    real = density.make_loss

    def nan_at_step_12(method, dataset=None, **hp):
        loss = real(method, dataset, **hp)
        calls = []

        def wrapped(model, x, g):
            calls.append(1)
            value = loss(model, x, g)
            return value * float("nan") if len(calls) == 12 else value

        return wrapped

    monkeypatch.setattr(density, "make_loss", nan_at_step_12)
    r = run("ed", seed=0, **TINY)
    assert r.status == "diverged" and r.diverged and r.diverged_at == 12 and r.nonfinite == "loss"
    assert r.outcome_text() == "diverged at step 12 (loss)" and len(r.losses) == 12
    assert r.step_curve == [0, 10]  # evaluations stop with the run
    again = run("ed", seed=0, **TINY)
    assert again.cached and again.diverged_at == 12  # a diverged run is a result, not retrained


def test_make_loss_is_the_core_loss():
    x = toy.get("25gaussians").sample(64, torch.Generator().manual_seed(0))
    model = nets.toy_energy_net()
    got = density.make_loss("ed", t=0.5, m_particles=3, w=0.0)(model, x, torch.Generator().manual_seed(7))
    want = losses.energy_discrepancy(model, x, t=0.5, m_particles=3, w=0.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(got, want)
    got = density.make_loss("cd")(model, x, torch.Generator().manual_seed(7))
    want = losses.contrastive_divergence(model, x, 10, 0.005, 0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(got, want)
    assert torch.equal(density.make_loss("sm")(model, x, None), losses.score_matching(model, x))


def test_cd_default_is_the_authors_langevin_update():
    # The authors' update x <- x + 0.5*0.01*grad(log p) + sqrt(0.01)*xi is samplers.langevin with eps = 0.005.
    energy = nets.toy_energy_net()
    x0 = toy.get("25gaussians").sample(16, torch.Generator().manual_seed(0))
    ours = samplers.langevin(energy, x0, 1, density.METHODS["cd"]["step_size"], torch.Generator().manual_seed(1))
    xr = x0.clone().requires_grad_(True)
    (grad_log_p,) = torch.autograd.grad(-energy(xr).sum(), xr)
    xi = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    theirs = x0 + 0.5 * 0.01 * grad_log_p + math.sqrt(0.01) * xi
    assert torch.allclose(ours, theirs, atol=1e-6)


def _fake(curve, steps=(0, 10, 20, 30), seconds=None, seed=0):
    """A RunRecord with a given MSE curve (for the summary helpers)."""
    seconds = list(seconds or [0.0, 1.0, 2.0, 3.0][: len(steps)])
    spec = density.spec("ed", seed=seed, n_steps=steps[-1] or 1, eval_every=10)
    return density.runs.RunRecord(spec, "finished", {"step": list(steps), "seconds": seconds, "mse": list(curve)}, {}, steps[-1], seconds[-1])


def test_first_reaching_and_reach():
    steps = [0, 100, 200, 300, 400]
    assert density.first_reaching(steps, [3.0, 0.2, 0.1, 0.5, 0.05], 0.1) == 200
    assert density.first_reaching(steps, [3.0, 0.2, 0.1, 0.5, 0.05], 0.1, sustained=True) == 400
    assert density.first_reaching(steps, [3.0, 0.2, 0.1, 0.09, 0.05], 0.1, sustained=True) == 200
    assert density.first_reaching(steps, [3.0, float("nan"), 0.2, 0.3, math.inf], 0.1) is None
    assert density.first_reaching(steps, [3.0, 0.2, 0.3, 0.4, 0.5], 0.1, sustained=True) is None
    assert density.first_reaching([], [], 0.1) is None
    r = _fake([5.0, 0.5, 0.08, 0.2])
    assert density.reach(r, 0.1) == (20, 2.0)
    assert density.reach(r, 0.01) == (None, None)
    assert density.format_reach(None) == "never"
    assert density.format_reach(8000) == "8,000" and density.format_reach(52.26, "s", 1) == "52.3 s"


def test_summary_and_table():
    a = _fake([5.0, 1.0, 0.05, 0.04], seconds=[0.0, 1.0, 2.0, 3.0])
    b = _fake([5.0, 1.0, 0.5, 0.3], seconds=[0.0, 2.0, 4.0, 6.0], seed=1)
    (row,) = density.summary({"ed": [a, b]}, threshold=0.1)
    assert row["metric"] == "mse" and row["final"] == [0.04, 0.3] and row["final_mean"] == pytest.approx(0.17)
    assert row["final_std"] == pytest.approx(math.sqrt(2) * 0.13)
    assert row["best"] == 0.04 and row["steps_to_threshold"] == [20, None] and row["seeds"] == [0, 1]
    assert row["tail"] == pytest.approx(0.17)  # only step 30 lies in the last 20 % of 30 steps
    assert row["it_per_s"] == pytest.approx((10 + 5) / 2) and row["outcome"] == ["finished", "finished"]
    table = density.summary_markdown([row], threshold=0.1)
    assert "Energy discrepancy" in table and "20 / never" in table and "MSE ≤ 0.1" in table
    xs, mean, lo, hi = density.curve_band([a, b])
    assert list(xs) == [0, 10, 20, 30] and mean[2] == pytest.approx(0.275) and lo[3] == 0.04 and hi[3] == 0.3
    xs, *_ = density.curve_band([a, b], x="seconds")
    assert xs[-1] == pytest.approx(4.5)
    c = _fake([9.0] * 8 + [0.2, 5.0, 0.1], steps=list(range(0, 110, 10)), seconds=[float(i) for i in range(11)])
    assert density.tail_median(c) == 0.2 and density.tail_median(c, fraction=1) == 9.0  # median of steps 80–100, of all


def test_nll_metric_for_data_without_a_density(run):
    r = run("ed", dataset="pinwheel", metrics=["nll"], grid=50, **TINY)
    assert list(r.curves) == ["step", "seconds", "nll", "mass_outside", "edge_mass"] and all(math.isfinite(v) for v in r.curve("nll"))
    with pytest.raises(ValueError, match="metric must be one of \\['nll', 'mass_outside'"):
        r.curve("mse")
    (row,) = density.summary({"ed": [r]}, metric="nll")
    assert "final NLL" in density.summary_markdown([row])


def test_bad_input_is_named(run):
    with pytest.raises(ValueError, match="method must be one of"):
        density.spec("mle")
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['M'\]"):
        density.spec("ed", hparams={"M": 4})
    with pytest.raises(ValueError, match="hparams\\['t'\\] must be a number"):
        density.method_hparams("ed", {"t": "1"})
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        density.make_loss("ed", t=-1.0)(nets.toy_energy_net(), torch.zeros(4, 2), None)
    with pytest.raises(ValueError, match="no analytic log-density.*metric 'nll'"):
        density.spec("ed", dataset="pinwheel")
    with pytest.raises(ValueError, match="dataset must be the name of a 2-D data set"):
        density.spec("ed", dataset="nine_gaussians")
    with pytest.raises(ValueError, match="seed must be an integer"):
        density.spec("ed", seed=-1)
    with pytest.raises(ValueError, match="eval_every must be an integer"):
        density.spec("ed", eval_every=0)
    with pytest.raises(ValueError, match="'nce' needs the dataset"):
        density.make_loss("nce")
    with pytest.raises(ValueError, match="persistent chains"):
        density.make_loss("pcd")(nets.toy_energy_net(), torch.zeros(4, 2), None)
    with pytest.raises(ValueError, match="same length"):
        density.first_reaching([0, 1], [1.0], 0.1)
    with pytest.raises(ValueError, match="threshold must be a number"):
        density.first_reaching([0], [1.0], float("nan"))
    with pytest.raises(ValueError, match="metric must be one of"):
        density.spec("ed", metrics=["kl"])
    with pytest.raises(ValueError, match="at least one RunRecord"):
        density.curve_band([])
    with pytest.raises(ValueError, match="record must be the RunRecord of a 2-D density run"):
        density.energy("not a record")


# ----------------------------------------------------------------------------- page helpers


def _rec(method, seed, mse, grid=None, steps=(0, 10, 20, 30), status="finished", diverged_at=None, conditions=None, edge=None):
    """A RunRecord of ``method`` with given curves of both estimators (for the page helpers); ``edge``: the
    quadrature's ``edge_mass`` per evaluation (default 0: the region holds the mass, every value exact)."""
    spec = density.spec(method, seed=seed, n_steps=steps[-1], eval_every=10, metrics=["mse", "mse_grid"])
    curves = {"step": list(steps), "seconds": [float(s) / 10 for s in steps], "mse": list(mse), "mse_grid": list(grid or mse),
              "mass_outside": [0.0] * len(steps), "edge_mass": list(edge or [0.0] * len(steps))}
    return density.runs.RunRecord(spec, status, curves, {}, steps[-1], steps[-1] / 10, diverged_at=diverged_at,
                                  nonfinite="loss" if diverged_at else None, conditions=conditions or {})


PAGE = dict(seed=2, n_seeds=2, dataset="25gaussians", n_steps=20, batch_size=16, lr=1e-3, ema_decay=0.999, eval_every=10,
            eval_samples=100, ed_t=1.0, ed_m=4, ed_w=1.0, cd_steps=3, cd_step_size=0.005, cd_reg=0.3)


def test_page_specs_record_both_estimators():
    specs = density.page_specs(PAGE)
    assert [(s.method, s.seed) for s in specs] == [("ed", 2), ("ed", 3), ("sm", 2), ("sm", 3), ("cd", 2), ("cd", 3)]
    assert all(s.settings["metrics"] == ["mse", "mse_grid"] for s in specs)
    assert specs[0].hparams == {"t": 1.0, "m_particles": 4, "w": 1.0} and specs[4].hparams["n_steps"] == 3
    grouped = density.by_method([_rec(s.method, s.seed, [1.0, 0.5, 0.2, 0.1]) for s in specs])
    assert list(grouped) == ["ed", "sm", "cd"] and [r.spec.seed for r in grouped["cd"]] == [2, 3]
    with pytest.raises(ValueError, match="records must hold RunRecords"):
        density.by_method(["x"])


def test_first_to_reach_compares_steps_seed_by_seed():
    ed = [_rec("ed", 0, [3, 0.5, 0.08, 0.05]), _rec("ed", 1, [3, 0.5, 0.3, 0.2])]
    sm = [_rec("sm", 0, [3, 2, 2, 2]), _rec("sm", 1, [3, 2, 2, 2])]
    cd = [_rec("cd", 0, [3, 0.5, 0.09, 0.5]), _rec("cd", 1, [3, 0.05, 0.5, 0.5])]
    # seed 0: ED and CD both first reach at step 20 (a tie is not "earlier"); seed 1: ED never does
    assert density.first_to_reach({"ed": ed, "sm": sm}, 0.1) == [True, False]
    assert density.first_to_reach({"ed": ed, "sm": sm, "cd": cd}, 0.1) == [False, False]
    assert density.first_to_reach({"ed": ed, "cd": cd}, 0.1, leader="cd") == [False, True]
    assert density.reach_text(ed, 0.1) == "seed 0: 20 it (2 s); seed 1: never"
    with pytest.raises(ValueError, match="leader must be one of"):
        density.first_to_reach({"sm": sm}, 0.1)
    with pytest.raises(ValueError, match="same number of seeds"):
        density.first_to_reach({"ed": ed, "sm": sm[:1]}, 0.1)


def test_final_values_and_text_never_show_a_diverged_number():
    ok, bad = _rec("ed", 0, [3, 1, 0.5, 0.1234]), _rec("ed", 1, [3, 1, 0.5, 1e30], status="diverged", diverged_at=25)
    nan = _rec("ed", 2, [3, 1, 0.5, float("nan")])
    assert density.final_values([ok, bad, nan]) == [0.1234, math.inf, math.inf]
    assert density.final_text(ok) == "0.123" and density.final_text(bad) == "diverged at step 25 (loss)"
    ok.curves["edge_mass"] = [0.0, 0.0, 0.0, 0.5]
    assert density.final_text(ok, "mse_grid") == "0.123 (region too small: not a bound)" and density.final_text(ok, "mse") == "0.123"
    assert density.final_bounds([ok, bad], "mse_grid") == ["unknown", "exact"] and density.final_bounds([ok], "mse") == ["exact"]
    assert density.final_mean_text([ok], "mse_grid") == "0.123 (region too small on 1 of 1 seed(s): not a bound)"


def test_comparison_claims_hold_only_when_ed_wins_on_every_seed():
    ed = [_rec("ed", 0, [3, 0.5, 0.08, 0.05], grid=[30, 5, 0.2, 0.09]), _rec("ed", 1, [3, 0.4, 0.09, 0.06])]
    sm = [_rec("sm", 0, [3, 2, 2, 2]), _rec("sm", 1, [3, 2, 2, 2])]
    cd = [_rec("cd", 0, [3, 1, 0.5, 0.5]), _rec("cd", 1, [3, 1, 0.5, 0.04])]
    claims = density.comparison_claims({"ed": ed, "sm": sm}, 0.1, "mse")
    assert len(claims) == 3 and all(c.holds for c in claims)
    assert claims[0].statement == "ED's final MSE is below SM's on every seed"
    grid = density.comparison_claims({"ed": ed, "sm": sm}, 0.1, "mse_grid")
    assert all(c.holds for c in grid) and "MSE (quadrature) ≤ 0.1" in grid[1].statement
    assert grid[1].measured.startswith("seed 0: 30 it")
    with_cd = density.comparison_claims({"ed": ed, "sm": sm, "cd": cd}, 0.1, "mse")
    assert [c.holds for c in with_cd] == [True, False, True, True]  # CD's last value on seed 1 is below ED's
    diverged_sm = [_rec("sm", 0, [3, 2, 2, 1e-9], status="diverged", diverged_at=25), sm[1]]
    # a diverged run never makes a claim hold, whichever side it is on (tests/test_trust.py trains one)
    assert [c.holds for c in density.comparison_claims({"ed": ed, "sm": diverged_sm}, 0.1)] == [False, True, False]
    with pytest.raises(ValueError, match="metric must be one of"):
        density.comparison_claims({"ed": ed, "sm": sm}, 0.1, "kl")
    with pytest.raises(ValueError, match="leader 'ed' and at least one other"):
        density.comparison_claims({"ed": ed}, 0.1)


def test_final_quadrature_mse_claim_against_sm_fails_when_sm_is_below_on_one_seed():
    ed = [_rec("ed", 0, [3, 0.5, 0.08, 0.05]), _rec("ed", 1, [3, 0.4, 0.09, 0.06])]
    sm = [_rec("sm", 0, [3, 2, 2, 2]), _rec("sm", 1, [3, 2, 2, 2])]
    claim = density.comparison_claims({"ed": ed, "sm": sm}, 0.1, "mse_grid")[0]
    assert claim.statement == "ED's final MSE (quadrature) is below SM's on every seed" and claim.holds is True
    # SM's exact (unflagged) quadrature MSE below ED's on seed 1; its importance-sampling MSE stays above
    sm_wins_one = [sm[0], _rec("sm", 1, [3, 2, 2, 2], grid=[3, 2, 2, 0.01])]
    assert density.comparison_claims({"ed": ed, "sm": sm_wins_one}, 0.1, "mse_grid")[0].holds is False
    assert density.comparison_claims({"ed": ed, "sm": sm_wins_one}, 0.1, "mse")[0].holds is True


def test_reach_claim_fails_for_a_finished_run_that_never_gets_under_the_threshold():
    sm = [_rec("sm", 0, [3, 2, 2, 2]), _rec("sm", 1, [3, 2, 2, 2])]
    reaches = [_rec("ed", 0, [3, 0.5, 0.08, 0.05]), _rec("ed", 1, [3, 0.4, 0.09, 0.06])]
    short = [reaches[0], _rec("ed", 1, [3, 0.4, 0.2, 0.15])]  # finished, finite, never ≤ 0.1 on seed 1
    for metric in ("mse", "mse_grid"):
        assert density.comparison_claims({"ed": reaches, "sm": sm}, 0.1, metric)[1].holds is True
        claim = density.comparison_claims({"ed": short, "sm": sm}, 0.1, metric)[1]
        assert "reaches" in claim.statement and claim.holds is False and "seed 1: never" in claim.measured

def test_conditions_in_words():
    c = {"threads": 1, "cores": 2, "cpu": "Xeon", "device": "cpu", "date": "2026-01-01 10:00", "load_start": 0.5, "load_end": 1.25}
    a = _rec("ed", 0, [1, 1, 1, 1], conditions=c)
    b = _rec("ed", 1, [1, 1, 1, 1], conditions={**c, "load_start": 3.0, "load_end": 2.0, "date": "2026-01-01 11:00"})
    assert density.conditions_text(a) == "1 thread(s), load 0.5 → 1.2, 2 cores, Xeon, cpu, 2026-01-01 10:00"
    assert density.conditions_text(_rec("ed", 0, [1, 1, 1, 1])) == "conditions not recorded"
    assert density.conditions_summary([a, b]) == "1 thread(s), load 0.5 to 3.0, 2 cores, Xeon, cpu, 2026-01-01 10:00 to 2026-01-01 11:00"
    with pytest.raises(ValueError, match="record must be a RunRecord"):
        density.conditions_text(None)
    with pytest.raises(ValueError, match="non-empty sequence"):
        density.conditions_summary([])


def _page_defaults(name):
    import ast

    import jupytext

    from .conftest import ROOT

    cells = [c for c in jupytext.read(ROOT / "notebooks" / f"{name}.md").cells if c.cell_type == "code"]
    k = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", ()))
    tree = ast.parse(cells[k].source)
    return cells, k, {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}


def test_density_estimation_parameters_are_checked_first():
    from edrepro.book import parameters, pipeline

    from .conftest import ROOT

    cells, k, defaults = _page_defaults("density_estimation")
    assert set(parameters.schema("density_estimation")) == set(defaults)
    assert cells[k + 1].source == 'from edrepro.book import parameters\nparams = parameters.check_notebook("density_estimation", globals())'
    assert parameters.check_notebook("density_estimation", defaults) == defaults
    for profile in pipeline.PROFILES:
        parameters.check("density_estimation", pipeline.load_params(ROOT, "density_estimation", profile))
    for key, value in (("n_seeds", 0), ("workers", 0), ("dataset", "pinwheel"), ("threshold", 0.0), ("cpu_threads", -1), ("ed_m", 0)):
        with pytest.raises(parameters.ParameterError, match=key):
            parameters.check_notebook("density_estimation", {**defaults, key: value})


def test_plot_error_bands_draws_the_mean_and_the_range_over_seeds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {"ed": [_fake([1.0, 0.5, 0.1, 0.05], seed=0), _fake([3.0, 1.5, 0.3, 0.15], seed=1)], "sm": [_fake([2.0, 2.0, 2.0, 2.0])]}
    fig, ax = plt.subplots()
    density.plot_error_bands(ax, results, "mse", "steps", threshold=0.1)
    lines = {l.get_label(): l for l in ax.get_lines()}
    assert list(lines["Energy discrepancy"].get_ydata()) == pytest.approx([2.0, 1.0, 0.2, 0.1])
    assert len(ax.collections) == 1  # one band: only ED has several seeds
    assert lines["threshold 0.1"].get_ydata()[0] == 0.1 and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="metric"):
        density.plot_error_bands(ax, results, "accuracy")
    plt.close(fig)


# ----------------------------------------------------------------------------- bounds are bounds


def _nll_rec(method, seed, nll, edge):
    spec = density.spec(method, seed=seed, n_steps=30, eval_every=10, metrics=["nll"])
    curves = {"step": [0, 10, 20, 30], "seconds": [0.0, 1.0, 2.0, 3.0], "nll": list(nll), "mass_outside": [0.0] * 4, "edge_mass": list(edge)}
    return density.runs.RunRecord(spec, "finished", curves, {}, 30, 3.0)


HELD, LEAKS = [0.0] * 4, [0.0, 0.0, 1.0, 1.0]  # edge_mass per evaluation: region holds the mass / not from step 20


def test_value_bound_marks_flagged_quadrature_values():
    r = _rec("cd", 0, [3, 1, 0.5, 0.4], grid=[3, 1, 0.05, 0.04], edge=[0.0, 0.0, 0.002, 1.0])
    assert [density.value_bound(r, "mse_grid", i) for i in range(4)] == ["exact", "exact", "unknown", "unknown"]
    assert density.value_bound(r, "mse") == "exact"  # the authors' estimator is taken as it is
    n = _nll_rec("cd", 0, [3, 2, 1, 1], LEAKS)
    assert density.value_bound(n, "nll") == "lower" and density.final_text(n, "nll") == "≥ 1 (region too small: a lower bound)"
    del r.curves["edge_mass"]
    assert density.value_bound(r, "mse_grid", 0) == "unknown"  # nothing says the region held the mass


def test_a_comparison_decided_by_a_flagged_value_becomes_undecided():
    ed = [_rec("ed", 0, [3, 1, 0.2, 0.05])]
    # CD's quadrature MSE is larger than ED's, but flagged: no bound in either direction, so it decides nothing
    cd = [_rec("cd", 0, [3, 1, 0.5, 0.5], grid=[3, 1, 0.5, 0.5], edge=LEAKS)]
    grid = density.comparison_claims({"ed": ed, "cd": cd}, 0.1, "mse_grid")
    assert grid[0].holds is None and "not a bound" in grid[0].measured
    assert density.comparison_claims({"ed": ed, "cd": [_rec("cd", 0, [3, 1, 0.5, 0.5])]}, 0.1, "mse_grid")[0].holds is True
    # a flagged NLL is a lower bound: a flagged CD above ED's exact value shows ED below; below ED's, it shows nothing
    ed_nll = [_nll_rec("ed", 0, [3, 2, 1.0, 0.9], HELD)]
    assert density.comparison_claims({"ed": ed_nll, "cd": [_nll_rec("cd", 0, [3, 2, 2, 2.0], LEAKS)]}, 9, "nll")[0].holds is True
    assert density.comparison_claims({"ed": ed_nll, "cd": [_nll_rec("cd", 0, [3, 2, 0.5, 0.5], LEAKS)]}, 9, "nll")[0].holds is None
    # ... and a flagged leader's lower bound above the other's exact value shows the leader is not below it
    assert density.comparison_claims({"ed": [_nll_rec("ed", 0, [3, 2, 2, 2.0], LEAKS)], "cd": ed_nll}, 9, "nll")[0].holds is False


def test_reaching_the_threshold_on_flagged_values_is_undecided():
    # ED's quadrature MSE is under the threshold only at flagged evaluations: not shown, not excluded
    ed = [_rec("ed", 0, [3, 1, 0.05, 0.05], grid=[3, 1, 0.05, 0.05], edge=LEAKS)]
    sm = [_rec("sm", 0, [3, 2, 2, 2])]
    assert density.reach(ed[0], 0.1, "mse_grid") == (None, None) and density.may_reach(ed[0], 0.1, "mse_grid") == 20
    assert density.reach(ed[0], 0.1, "mse") == (20, 2.0) == (density.may_reach(ed[0], 0.1, "mse"), 2.0)
    claims = density.comparison_claims({"ed": ed, "sm": sm}, 0.1, "mse_grid")
    assert [c.holds for c in claims] == [None, None, None]
    assert "not shown (possibly from 20 it: region too small)" in claims[1].measured
    # another method flagged before the leader's exact reach may have been first: undecided
    ed_ok = [_rec("ed", 0, [3, 1, 0.05, 0.05])]
    early = [_rec("cd", 0, [3, 0.9, 0.9, 0.9], grid=[3, 0.9, 0.9, 0.9], edge=[0.0, 1.0, 0.0, 0.0])]
    assert density.first_to_reach({"ed": ed_ok, "cd": early}, 0.1, "mse_grid") == [None]
    assert density.first_to_reach({"ed": ed_ok, "cd": early}, 0.1, "mse") == [True]
    # a method shown to reach at or before the leader's earliest possible step decides it: False
    sure = [_rec("cd", 0, [3, 0.05, 0.9, 0.9])]
    assert density.first_to_reach({"ed": ed, "cd": sure}, 0.1, "mse_grid") == [False]
    # step 0, the initial network every method shares, flagged for all: it does not decide the order
    ed0, sm0 = [_rec("ed", 0, [3, 1, 0.05, 0.05], edge=[1.0, 0, 0, 0])], [_rec("sm", 0, [3, 2, 2, 2], edge=[1.0, 0, 0, 0])]
    assert density.first_to_reach({"ed": ed0, "sm": sm0}, 0.1, "mse_grid") == [True]
    assert [c.holds for c in density.comparison_claims({"ed": ed0, "sm": sm0}, 0.1, "mse_grid")] == [True, True, True]
    # a flagged NLL (lower bound) above the threshold excludes reaching there
    n = _nll_rec("ed", 0, [3, 2, 1.5, 0.5], LEAKS)
    assert density.may_reach(n, 1.0, "nll") == 30 and density.reach(n, 1.0, "nll") == (None, None)


def test_a_diverged_run_never_makes_a_bound_claim_hold():
    ed = [_rec("ed", 0, [3, 1, 0.05, 0.05], status="diverged", diverged_at=25)]
    cd = [_rec("cd", 0, [3, 1, 0.5, 0.5], edge=LEAKS)]
    for metric in ("mse", "mse_grid"):
        assert all(c.holds is False for c in density.comparison_claims({"ed": ed, "cd": cd}, 0.1, metric))


def test_estimator_checks_pass_on_known_answers_and_fail_swapped():
    data, g = toy.get("25gaussians"), lambda: torch.Generator().manual_seed(0)
    far = torch.tensor([10.0, 10.0])

    def leaky(x):  # half the mass on N((10, 10), 0.25 I), far outside the box
        bump = -((x - far) ** 2).sum(1) / 0.5 - math.log(2 * math.pi * 0.25)
        return -torch.logaddexp(data.log_prob(x), bump) + math.log(2)

    truth = density.evaluate(lambda x: -data.log_prob(x) + 3.0, "25gaussians", ["mse", "mse_grid"], 500, generator=g())
    leak = density.evaluate(leaky, "25gaussians", ["mse", "mse_grid"], 500, generator=g())
    checks = density.estimator_checks(truth, leak)
    assert [c.passes for c in checks] == [True, True, True]
    assert not all(c.passes for c in density.estimator_checks(leak, truth))  # swapped energies
    # an estimator that could not see the leak (the quadrature given the importance-sampling value) fails
    assert density.estimator_checks(truth, {**leak, "mse_grid": leak["mse"]})[1].passes is False
    with pytest.raises(ValueError, match="truth must be"):
        density.estimator_checks({"mse": 0.0}, leak)


def test_a_flagged_quadrature_mse_compares_through_its_floor():
    from edrepro.book import runs as runs_module

    def record(method, mse_grid, floor, edge):
        spec = density.spec(method, n_steps=10, eval_every=10, eval_samples=100)
        curves = {"step": [0, 10], "seconds": [0.0, 1.0], "mse": [1.0, 0.5], "mse_grid": [1.0, mse_grid],
                  "mse_grid_floor": [1.0, floor], "edge_mass": [0.0, edge], "mass_outside": [0.0, 0.0]}
        return runs_module.RunRecord(spec=spec, status="finished", curves=curves, series={}, steps=10, train_seconds=1.0)

    ed = record("ed", 0.05, 0.04, 0.0)
    cd_far = record("cd", 0.01, 3.0, 1.0)   # flagged; its floor 3.0 shows it is worse than ED's 0.05
    cd_close = record("cd", 0.01, 0.02, 1.0)  # flagged; its floor 0.02 cannot show ED is better
    decided = density.comparison_claims({"ed": [ed], "cd": [cd_far]}, threshold=0.1, metric="mse_grid")[0]
    open_ = density.comparison_claims({"ed": [ed], "cd": [cd_close]}, threshold=0.1, metric="mse_grid")[0]
    assert decided.holds is True and open_.holds is None
    assert "whatever log Z is" in density.final_text(cd_far, "mse_grid")
