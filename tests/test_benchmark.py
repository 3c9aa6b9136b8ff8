"""edrepro.chapters.benchmark: runs are deterministic, cached and resumable; the leaderboard maths is exact."""

import math

import numpy as np
import pytest
import torch

from edrepro.book import runs
from edrepro.chapters import benchmark, density




TINY = dict(n_steps=20, eval_every=10, eval_samples=300, grid=40)
PARAMS = dict(seed=1, n_steps=20, batch_size=32, lr=1e-3, ema_decay=0.99, eval_every=10, eval_samples=300, nll_grid=40)


def test_constants():
    assert len(benchmark.DATASETS) == 8 and len(set(benchmark.DATASETS)) == 8
    assert set(benchmark.METHODS) == {"ed", "sm", "ssm", "dsm", "cd", "pcd", "nce"}


def test_page_specs_cover_every_pair_with_nll_everywhere_and_mse_where_exact():
    specs = benchmark.page_specs({**PARAMS, "methods": ["ed", "nce"], "datasets": ["25gaussians", "checkerboard", "moons"]})
    assert [(s.method, s.dataset) for s in specs] == [(m, d) for d in ["25gaussians", "checkerboard", "moons"] for m in ["ed", "nce"]]
    exact = ["nll", "mse", "mse_grid"]
    assert {s.dataset: s.settings["metrics"] for s in specs} == {"25gaussians": exact, "checkerboard": exact, "moons": ["nll"]}
    assert all(s.kind == "density" and s.chapter == "density_benchmark" and s.settings["ema_decay"] == 0.99 for s in specs)


@pytest.mark.parametrize("dataset", ["25gaussians", "moons"])
def test_run_records_its_metrics(dataset, tmp_path):
    r = density.run("ed", dataset, seed=1, metrics=benchmark.run_metrics(dataset), root=tmp_path, progress=False, **TINY)
    recorded = benchmark.run_metrics(dataset)
    floors = {density.FLOORS[m] for m in recorded if m in density.FLOORS}  # a quadrature MSE comes with its floor
    assert r.step_curve == [0, 10, 20] and set(r.curves) == {"step", "seconds", "mass_outside", "edge_mass", *recorded, *floors}
    assert all(math.isfinite(v) for name in benchmark.run_metrics(dataset) for v in r.curve(name))
    assert r.seconds_curve[0] == 0.0 and r.status == "finished" and not r.cached


def test_evaluation_is_the_same_for_every_method(tmp_path):
    # Same seed → same initial network and same held-out points: the step-0 scores coincide.
    a = density.run("ed", "rings", seed=2, metrics=["nll", "mse"], root=tmp_path, progress=False, **TINY)
    b = density.run("nce", "rings", seed=2, metrics=["nll", "mse"], root=tmp_path, progress=False, **TINY)
    assert a.curve("nll")[0] == b.curve("nll")[0] and a.curve("mse")[0] == b.curve("mse")[0]


def test_grid_nll_of_the_true_density_is_its_entropy():
    # The exact energy of 8gaussians: its grid NLL equals the Monte-Carlo NLL (−mean log p) closely.
    from edrepro import toy

    data = toy.get("8gaussians")
    out = density.evaluate(lambda x: -data.log_prob(x), "8gaussians", ["nll", "mse"], 4000, 300, torch.Generator().manual_seed(0))
    x = data.sample(4000, torch.Generator().manual_seed(0))
    assert out["nll"] == pytest.approx(float(-data.log_prob(x).double().mean()), abs=5e-3)
    assert out["mse"] < 1e-6


def test_ranks_with_ties_and_nonfinite():
    scores = {
        "a": {"x": 1.0, "y": 3.0},
        "b": {"x": 2.0, "y": 3.0},
        "c": {"x": math.nan, "y": 1.0},
        "d": {"x": math.inf, "y": 0.5},
    }
    r = benchmark.ranks(scores)
    assert r["a"]["x"] == 1 and r["b"]["x"] == 2
    assert r["c"]["x"] == r["d"]["x"] == 3.5  # both non-finite: last, tied
    assert r["d"]["y"] == 1 and r["c"]["y"] == 2 and r["a"]["y"] == r["b"]["y"] == 3.5
    for d in ("x", "y"):  # ranks of n methods always sum to n(n+1)/2
        assert sum(r[m][d] for m in scores) == 10
    mr = benchmark.mean_ranks(scores)
    assert mr == {"a": 2.25, "b": 2.75, "c": 2.75, "d": 2.25}
    assert benchmark.best(scores) == {"x": ["a"], "y": ["d"]}
    rows = benchmark.leaderboard(scores)
    assert [row["method"] for row in rows] == ["a", "d", "b", "c"]  # ties keep the given order


def test_leaderboard_markdown_bolds_the_best_per_column():
    scores = {"ed": {"s1": 2.0, "s2": 1.0}, "sm": {"s1": 1.5, "s2": 1.0}, "cd": {"s1": math.inf, "s2": 4.0}}
    text = benchmark.leaderboard_markdown(scores, labels={"ed": "ED"}, digits=1)
    lines = text.splitlines()
    assert lines[0] == "| method | s1 | s2 | mean rank |"
    assert lines[2] == "| ED | 2.0 | **1.0** | 1.75 |"
    assert lines[3] == "| sm | **1.5** | **1.0** | 1.25 |"
    assert lines[4] == "| cd | inf | 4.0 | 3.00 |"
    assert benchmark.leaderboard_markdown(scores, sort=True).splitlines()[2].startswith("| sm |")
    marked = benchmark.leaderboard_markdown(scores, digits=1, marks={("sm", "s1"): "≥", ("cd", "s2"): "≥"}).splitlines()
    assert marked[3] == "| sm | **≥1.5** | **1.0** | 1.25 |" and marked[4] == "| cd | inf | ≥4.0 | 3.00 |"


def _fake(method, dataset, nll, seconds, mse=None):
    curves = {"step": [0, 10, 20], "seconds": seconds, "nll": nll, **({"mse": mse} if mse else {})}
    spec = density.spec(method, dataset, metrics=["nll", "mse"] if mse else ["nll"])
    return runs.RunRecord(spec, "finished", curves, {}, 20, seconds[-1])


def test_mean_curve_and_score_table():
    a = _fake("ed", "25gaussians", [4.0, 3.0, 2.0], [0.0, 1.0, 2.0], [1.0, 0.5, 0.1])
    b = _fake("ed", "moons", [6.0, 5.0, 4.0], [0.0, 3.0, 4.0])
    s, v = benchmark.mean_curve([a, b])
    np.testing.assert_allclose(s, [0.0, 2.0, 3.0])
    np.testing.assert_allclose(v, [5.0, 4.0, 3.0])
    c = _fake("ed", "rings", [40.0, 50.0, 90.0], [0.0, 2.0, 3.0])
    np.testing.assert_allclose(benchmark.mean_curve([a, b, c], statistic="median")[1], [6.0, 5.0, 4.0])
    with pytest.raises(ValueError, match="statistic"):
        benchmark.mean_curve([a, b], statistic="max")
    with pytest.raises(ValueError, match="missing"):
        benchmark.mean_curve([a, b], metric="mse")
    table = benchmark.score_table({("ed", "s1"): [a], ("ed", "s2"): [b]})
    assert table == {"ed": {"s1": 2.0, "s2": 4.0}}
    assert benchmark.score_table({("ed", "s1"): [a], ("ed", "s2"): [b]}, metric="mse") == {"ed": {"s1": 0.1}}


@pytest.mark.parametrize(
    "scores,match",
    [
        ({}, "non-empty"),
        ({"a": {}}, "non-empty"),
        ({"a": {"x": 1.0}, "b": {"y": 1.0}}, "same data sets"),
        ({"a": {"x": "1"}}, "number"),
        ({"a": {"x": True}}, "number"),
    ],
)
def test_bad_score_tables(scores, match):
    with pytest.raises(ValueError, match=match):
        benchmark.ranks(scores)


def test_data_histogram():
    h = benchmark.data_histogram("checkerboard", 4000, 8, torch.Generator().manual_seed(0))
    assert h.shape == (8, 8) and h.sum() == pytest.approx(1.0)
    # Checkerboard cells of width 2 on [-4, 4]: with 8 bins each cell covers 2x2 bins; rows run along x2.
    assert h[0, 0] > 0 and h[0, 2] == 0 and h[2, 0] == 0 and h[1, 1] > 0
    with pytest.raises(ValueError, match="dataset"):
        benchmark.data_histogram("nope")


def _record(method, dataset, nll, outside, edge, status="finished", seconds=(0.0, 1.0, 2.0), conditions=None):
    curves = {"step": [0, 10, 20], "seconds": list(seconds), "nll": nll, "mass_outside": outside, "edge_mass": edge}
    spec = density.spec(method, dataset, metrics=["nll"], n_steps=20)
    diverged = dict(diverged_at=15, nonfinite="loss") if status == "diverged" else {}
    return runs.RunRecord(spec, status, curves, {}, 20, seconds[-1], conditions=conditions or {}, **diverged)


def test_by_pair_and_score_table_of_the_quadrature_quantities():
    a = _record("ed", "moons", [5.0, 4.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.0, 1e-5])
    b = _record("pcd", "moons", [5.0, 4.5, 4.0], [0.1, 0.5, 0.6], [0.0, 1e-4, 1e-2])
    c = _record("cd", "moons", [5.0, 4.5, 3.5], [0.1, 0.1, 0.1], [0.0, 0.0, 0.0], status="diverged")
    pairs = benchmark.by_pair([a, b, c])
    assert list(pairs) == [("ed", "moons"), ("pcd", "moons"), ("cd", "moons")] and pairs["ed", "moons"] == [a]
    assert benchmark.score_table(pairs, "mass_outside") == {"ed": {"moons": 0.3}, "pcd": {"moons": 0.6}, "cd": {"moons": math.inf}}
    assert benchmark.score_table(pairs, "nll")["cd"]["moons"] == math.inf  # a diverged run ranks last
    assert benchmark.score_table(pairs, "mse") == {}
    with pytest.raises(ValueError, match="metric"):
        benchmark.score_table(pairs, "loss")
    with pytest.raises(ValueError, match="RunRecord"):
        benchmark.by_pair([a, "b"])
    with pytest.raises(ValueError, match="non-empty"):
        benchmark.by_pair([])


def test_edge_warnings_name_the_runs_whose_region_leaks():
    good = _record("ed", "moons", [5.0, 4.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.0, 1e-5])
    early = _record("ed", "rings", [5.0, 4.0, 3.0], [0.9, 0.2, 0.3], [0.2, 0.0, 1e-5])
    leaky = _record("pcd", "moons", [5.0, 4.5, 4.0], [0.1, 0.5, 0.6], [0.0, 2e-3, 1e-2])
    assert benchmark.edge_warnings([good]) == [] and benchmark.leaked([good]) == set()
    assert benchmark.leaked([good, early, leaky]) == {("pcd", "moons")}
    warning, note10 = benchmark.edge_warnings([good, leaky])
    assert warning.startswith("warning: pcd-moons") and "0.01 of the mass" in warning and "step 20" in warning
    assert note10.startswith("note: at step 10") and "1 of 2 runs" in note10 and "pcd-moons" in note10
    lines = benchmark.edge_warnings([good, early, leaky], tolerance=0.005)  # step 10 of pcd is below this tolerance
    assert len(lines) == 2 and lines[0].startswith("warning: pcd-moons") and lines[1].startswith("note: at step 0 ")
    assert "ed-rings" in lines[1] and "1 of 3 runs" in lines[1]
    with pytest.raises(ValueError, match="tolerance"):
        benchmark.edge_warnings([good], tolerance=0.0)


def test_beaten_by_lists_the_better_methods_with_their_margins():
    scores = {"ed": {"a": 2.0, "b": 1.0, "c": math.inf}, "sm": {"a": 1.5, "b": 1.2, "c": 3.0}, "cd": {"a": 1.0, "b": math.nan, "c": 4.0}}
    out = benchmark.beaten_by(scores, "ed")
    assert out["a"] == [("cd", 1.0), ("sm", 0.5)]
    assert out["b"] == []  # NaN never beats
    assert out["c"] == [("sm", math.inf), ("cd", math.inf)]
    with pytest.raises(ValueError, match="method"):
        benchmark.beaten_by(scores, "nce")


def test_box_only_nll_is_lower_by_minus_log_of_the_mass_inside():
    nll = {"ed": {"a": 3.0, "b": 4.0}, "pcd": {"a": 3.5, "b": 4.5}}
    out = {"ed": {"a": 0.0, "b": 0.1}, "pcd": {"a": 0.5, "b": 0.75}}
    box = benchmark.box_only_nll(nll, out)
    assert box["ed"]["a"] == 3.0 and box["pcd"]["a"] == pytest.approx(3.5 - math.log(2))
    assert box["pcd"]["b"] == pytest.approx(4.5 - math.log(4))
    assert benchmark.mean_ranks(nll) == {"ed": 1.0, "pcd": 2.0} and benchmark.mean_ranks(box)["pcd"] == 1.0  # flattered past ED
    assert math.isnan(benchmark.box_only_nll(nll, {"ed": {"a": 0.0, "b": 1.0}, "pcd": {"a": 0.5, "b": 0.5}})["ed"]["b"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benchmark.box_only_nll(nll, {"ed": {"a": 0.0, "b": 1.5}, "pcd": {"a": 0.5, "b": 0.5}})
    lines = benchmark.box_only_markdown(nll, out, {"ed": "ED"}).splitlines()
    assert lines[2] == "| ED | 1.00 | 2.00 | 0.105 nats (b) |" and lines[3] == "| pcd | 2.00 | 1.00 | 1.386 nats (b) |"
    all_out = benchmark.box_only_markdown(nll, {"ed": {"a": 1.0, "b": 1.0}, "pcd": out["pcd"]}).splitlines()
    assert all_out[2] == "| ed | 1.00 | 2.00 | — |"  # nothing left to compare: no flattery to report
    with pytest.raises(ValueError, match="same methods"):
        benchmark.box_only_nll(nll, {"ed": {"a": 0.0, "b": 0.0}})


def test_region_quadrature_matches_the_box_only_normaliser_inside_the_box():
    # The identity behind box_only_nll, on a real energy with mass outside the box.
    energy = benchmark.gaussian_fit_energy("swissroll")
    x = torch.zeros(1, 2)
    q = density.metrics.region_log_normaliser(energy, (-4.0, 4.0), n_box=64)
    log_z_box = density.metrics.grid_log_normaliser(energy, (-4.0, 4.0), 64)
    assert 0.001 < q.mass_outside_box < 0.5
    assert density.metrics.grid_nll(energy, x, (-4.0, 4.0), 64) == pytest.approx(
        density.metrics.region_nll(energy, x, n_box=64).nll + math.log1p(-q.mass_outside_box), abs=1e-9)
    assert log_z_box < q.log_z


def test_gaussian_fit_energy_scores_its_closed_form_cross_entropy():
    # For the moment-matched Gaussian, E_p[-log N(x; mu, Sigma)] = 1/2 log det(2 pi e Sigma).
    energy = benchmark.gaussian_fit_energy("8gaussians", n=20_000)
    out = benchmark.score_energy(energy, "8gaussians", seed=0, step=0, n=20_000, grid=64)
    x = density.toy.get("8gaussians").sample(20_000, torch.Generator().manual_seed(12345)).double()
    expected = 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * np.cov(x.numpy().T)))
    assert out["nll"] == pytest.approx(expected, abs=0.02)
    assert out["edge_mass"] < 1e-9 and 0 < out["mass_outside"] < 0.2
    assert set(out) == {"nll", "mse", "mse_grid", "mse_grid_floor", "mass_outside", "edge_mass"}
    with pytest.raises(ValueError, match="dataset"):
        benchmark.gaussian_fit_energy("nope")


def test_runs_record_mass_beyond_the_region_and_mark_an_unnormalisable_model_a_bound():
    # The reviewer's models, scored as a run's evaluation is: ½·p₂₅ + ½·N((40, 40), I) gets its true NLL
    # and MSE (the region grows to hold it); an energy that stops rising beyond |x| = 20 records
    # edge_mass 1, so every check of edge_mass marks its finite NLL as a lower bound.
    data = density.toy.get("25gaussians")
    far = torch.tensor([40.0, 40.0], dtype=torch.float64)
    far_log = lambda x: -((x.double() - far) ** 2).sum(1) / 2 - math.log(2 * math.pi)
    mixture = lambda x: math.log(2) - torch.logaddexp(data.log_prob(x).double(), far_log(x))
    out = benchmark.score_energy(mixture, "25gaussians", seed=0, step=0, n=2000, grid=64)
    true = benchmark.score_energy(lambda x: -data.log_prob(x).double(), "25gaussians", seed=0, step=0, n=2000, grid=64)
    assert out["nll"] == pytest.approx(true["nll"] + math.log(2), abs=2e-3)  # H(p) + log 2 on the same points
    assert out["mse_grid"] == pytest.approx(math.log(2) ** 2, abs=2e-3) and out["mse"] < 1e-9  # the authors' MSE is blind to it
    assert out["mass_outside"] == pytest.approx(0.5, abs=1e-3) and out["edge_mass"] < 1e-9
    clipped = lambda x: -data.log_prob(x.double() * torch.clamp(20.0 / x.double().norm(dim=1, keepdim=True), max=1.0)).double()
    flat_tail = benchmark.score_energy(clipped, "25gaussians", seed=0, step=0, n=2000, grid=64)
    assert math.isfinite(flat_tail["nll"]) and flat_tail["edge_mass"] == 1.0 > density.metrics.EDGE_BAND_TOLERANCE


def test_constant_energy_is_flat_over_the_region():
    layout = benchmark.quadrature_layout("checkerboard", 64)
    assert layout["region"] == (-16.0, 16.0) and layout["h_box"] == 0.125 and layout["edge_band_from"] == 14.0
    assert layout["n_points"] == 64**2 + layout["n_region"] ** 2 - (8 / layout["h_region"]) ** 2
    out = benchmark.score_energy(benchmark.constant_energy, "checkerboard", seed=0, step=0, n=500, grid=64)
    assert out["nll"] == pytest.approx(math.log(32.0**2))
    assert out["mse"] == pytest.approx(0.0, abs=1e-20)  # the authors' estimator: flat over the squares is perfect
    assert out["mse_grid"] == pytest.approx(math.log(32.0) ** 2)  # the quadrature one: (NLL - log 32)^2
    assert out["mass_outside"] == pytest.approx(1 - 64 / 1024) and out["edge_mass"] > 0.1
    with pytest.raises(ValueError, match="grid"):
        benchmark.quadrature_layout("checkerboard", 4)


def test_score_energy_reproduces_a_runs_final_evaluation(tmp_path):
    r = density.run("ed", "rings", seed=3, metrics=benchmark.run_metrics("rings"), root=tmp_path, progress=False, **TINY)
    out = benchmark.score_energy(density.energy(r), "rings", 3, r.step_curve[-1], TINY["eval_samples"], TINY["grid"])
    assert {k: out[k] for k in r.curves if k not in ("step", "seconds")} == {k: r.final(k) for k in r.curves if k not in ("step", "seconds")}


def test_schema_grid_bound_resolves_the_exact_densities():
    # The smallest nll_grid the page accepts normalises every exact density to within 1e-3 (rings: std 0.08).
    from edrepro import toy
    from edrepro.book import parameters

    n = parameters.schema("density_benchmark")["nll_grid"]["min"]
    for name in ("25gaussians", "8gaussians", "rings", "checkerboard"):
        data = toy.get(name)
        energy = lambda x, d=data: (-d.log_prob(x.double())).clamp(max=1e3)  # finite off the checkerboard's squares
        assert abs(density.metrics.region_log_normaliser(energy, data.bounds, n_box=n).log_z) < 1e-3, name


def test_throughput_and_conditions():
    cond = {"device": "cpu", "cpu": "X", "cores": 2, "threads": 1, "torch": "2", "date": "2026-01-01 10:00", "load_start": 1.0, "load_end": 3.5}
    a = _record("ed", "moons", [5.0, 4.0, 3.0], [0.1] * 3, [0.0] * 3, seconds=(0.0, 1.0, 2.0), conditions=cond)
    b = _record("ed", "rings", [5.0, 4.0, 3.0], [0.1] * 3, [0.0] * 3, seconds=(0.0, 2.0, 4.0), conditions={**cond, "load_start": 0.5})
    c = _record("sm", "moons", [5.0, 4.0, 3.0], [0.1] * 3, [0.0] * 3, seconds=(0.0, 4.0, 10.0), conditions=cond)
    pairs = benchmark.by_pair([a, b, c])
    assert benchmark.speeds(pairs) == {"ed": [10.0, 5.0], "sm": [2.0]}
    for r, cpu in zip((a, b, c), (3.0, 5.0, 2.0)):
        r.cpu_seconds = cpu
    assert benchmark.cpu_table(pairs) == {"ed": {"moons": 3.0, "rings": 5.0}, "sm": {"moons": 2.0}}
    lines = benchmark.throughput_markdown(pairs, {"ed": "ED"}).splitlines()
    assert lines[2] == "| sm | 2 | 2–2 | 10 | 2.0 |" and lines[3] == "| ED | 8 | 5–10 | 6 | 4.0 |"  # cheapest CPU first
    text = benchmark.conditions_text([a, b, c])
    assert text.startswith("3 runs on cpu (X, 2 cores), torch 2 with 1 thread(s)") and "0.5–3.5" in text and "2026-01-01 10:00" in text
    assert "not recorded" in benchmark.conditions_text([_record("ed", "moons", [1.0] * 3, [0.0] * 3, [0.0] * 3)])


def test_heatmap_gallery_has_a_data_row_and_a_row_per_method(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    recs = [density.run(m, "moons", seed=1, metrics=["nll"], root=tmp_path, progress=False, **TINY) for m in ("ed", "nce")]
    fig = benchmark.heatmap_gallery(benchmark.by_pair(recs), ["ed", "nce"], ["moons"], {"ed": "Energy discrepancy"}, n=12)
    axes = fig.axes
    assert len(axes) == 3 and axes[0].get_title() == "moons" and axes[1].get_title().startswith("NLL ")
    assert axes[1].get_ylabel() == "Energy\ndiscrepancy"
    with pytest.raises(ValueError, match="missing"):
        benchmark.heatmap_gallery(benchmark.by_pair(recs), ["ed", "sm"], ["moons"])
