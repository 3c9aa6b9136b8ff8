"""edrepro.density: runs are deterministic, cached and resumable; the summary helpers are exact."""

import math

import pytest
import torch

from edrepro import density, losses, nets, samplers, toy



TINY = dict(n_steps=30, eval_every=10, eval_samples=500, progress=False)


def _params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("method", list(density.METHODS))
def test_every_method_trains_and_is_deterministic(method):
    a = density.run(method, seed=3, cache_dir=None, **TINY)
    b = density.run(method, seed=3, cache_dir=None, **TINY)
    assert a.steps == [0, 10, 20, 30]
    assert len(a.seconds) == len(a.mse) == 4 and all(math.isfinite(v) for v in a.mse)
    assert a.seconds[0] == 0.0 and a.seconds == sorted(a.seconds)
    assert len(a.losses) == 30 and a.diverged_at is None and not a.cached
    assert a.mse == b.mse == a.values and a.final == a.final_mse == a.values[-1] and a.losses == b.losses
    assert _same(_params(a.ema_model), _params(b.ema_model))
    assert isinstance(a.energy(torch.zeros(4, 2)), torch.Tensor)


def test_seed_changes_the_run_and_init_is_shared_across_methods():
    a = density.run("ed", seed=0, cache_dir=None, **TINY)
    b = density.run("ed", seed=1, cache_dir=None, **TINY)
    assert a.losses != b.losses
    # Same seed → same initial network for every method; global RNG untouched.
    state = torch.get_rng_state()
    m_ed, m_sm = density.make_model("ed", 5), density.make_model("sm", 5)
    assert torch.equal(state, torch.get_rng_state())
    assert _same(_params(m_ed), _params(m_sm))
    assert not _same(_params(m_ed), _params(density.make_model("ed", 6)))


def test_evaluation_does_not_touch_the_training_randomness():
    a = density.run("cd", seed=2, cache_dir=None, **{**TINY, "eval_every": 5})
    b = density.run("cd", seed=2, cache_dir=None, **{**TINY, "eval_every": 15})
    assert a.losses == b.losses and _same(_params(a.model), _params(b.model))
    # the same (seed, step) evaluates on the same points: equal MSE at the shared steps
    assert a.mse[a.steps.index(15)] == b.mse[b.steps.index(15)]


def test_finished_run_is_loaded_from_the_cache(tmp_path):
    a = density.run("ed", seed=0, cache_dir=tmp_path, **TINY)
    assert not a.cached and a.path is not None and a.path.exists()
    assert a.path.parent == tmp_path / "25gaussians" and a.path.name.startswith("ed-")
    b = density.run("ed", seed=0, cache_dir=tmp_path, **TINY)
    assert set(a.timing) == {"threads", "device", "load_start", "load_end", "date"}
    assert b.cached and b.resumed_from == 30 and b.timing == a.timing
    assert b.mse == a.mse and b.seconds == a.seconds and b.steps_per_second == a.steps_per_second
    assert _same(_params(a.ema_model), _params(b.ema_model))
    fresh = density.run("ed", seed=0, cache_dir=tmp_path, fresh=True, **TINY)
    assert not fresh.cached and fresh.mse == a.mse and fresh.path == a.path
    # any change of the configuration is a different run
    c = density.run("ed", seed=0, cache_dir=tmp_path, hparams={"w": 0.5}, **TINY)
    assert not c.cached and c.path != a.path


@pytest.mark.parametrize("method", ["ed", "pcd"])
def test_interrupted_run_resumes_bitwise(tmp_path, monkeypatch, method):
    reference = density.run(method, seed=1, cache_dir=None, **TINY)
    real = density.metrics.mse_log_density
    calls = []

    def crash_at_step_30(energy, dataset, n, generator):
        calls.append(1)
        if len(calls) == 4:  # evaluations at steps 0, 10, 20, then 30
            raise KeyboardInterrupt
        return real(energy, dataset, n=n, generator=generator)

    monkeypatch.setattr(density.metrics, "mse_log_density", crash_at_step_30)
    with pytest.raises(KeyboardInterrupt):
        density.run(method, seed=1, cache_dir=tmp_path, checkpoint_every=20, **TINY)
    monkeypatch.setattr(density.metrics, "mse_log_density", real)
    resumed = density.run(method, seed=1, cache_dir=tmp_path, checkpoint_every=20, **TINY)
    assert resumed.resumed_from == 20 and not resumed.cached
    assert resumed.mse == reference.mse and resumed.losses == reference.losses
    assert _same(_params(resumed.model), _params(reference.model))
    assert _same(_params(resumed.ema_model), _params(reference.ema_model))


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


def test_first_reaching_and_reach():
    steps = [0, 100, 200, 300, 400]
    assert density.first_reaching(steps, [3.0, 0.2, 0.1, 0.5, 0.05], 0.1) == 200
    assert density.first_reaching(steps, [3.0, 0.2, 0.1, 0.5, 0.05], 0.1, sustained=True) == 400
    assert density.first_reaching(steps, [3.0, 0.2, 0.1, 0.09, 0.05], 0.1, sustained=True) == 200
    assert density.first_reaching(steps, [3.0, float("nan"), 0.2, 0.3, math.inf], 0.1) is None
    assert density.first_reaching(steps, [3.0, 0.2, 0.3, 0.4, 0.5], 0.1, sustained=True) is None
    assert density.first_reaching([], [], 0.1) is None
    r = density.run("ed", seed=0, cache_dir=None, **TINY)
    r.values = [5.0, 0.5, 0.08, 0.2]
    assert density.reach(r, 0.1) == (20, r.seconds[2])
    assert density.reach(r, 0.01) == (None, None)
    assert density.format_reach(None) == "never"
    assert density.format_reach(8000) == "8,000" and density.format_reach(52.26, "s", 1) == "52.3 s"


def test_summary_and_table():
    a = density.run("ed", seed=0, cache_dir=None, **TINY)
    b = density.run("ed", seed=1, cache_dir=None, **TINY)
    a.values, b.values = [5.0, 1.0, 0.05, 0.04], [5.0, 1.0, 0.5, 0.3]
    (row,) = density.summary({"ed": [a, b]}, threshold=0.1)
    assert row["metric"] == "mse" and row["final"] == [0.04, 0.3] and row["final_mean"] == pytest.approx(0.17)
    assert row["final_std"] == pytest.approx(math.sqrt(2) * 0.13)
    assert row["best"] == 0.04 and row["steps_to_threshold"] == [20, None]
    assert row["tail"] == pytest.approx(0.17)  # only step 30 lies in the last 20 % of 30 steps

    assert row["it_per_s"] == pytest.approx((a.steps_per_second + b.steps_per_second) / 2)
    table = density.summary_markdown([row], threshold=0.1)
    assert "Energy discrepancy" in table and "20 / never" in table and "MSE ≤ 0.1" in table
    xs, mean, lo, hi = density.curve_band([a, b])
    assert list(xs) == [0, 10, 20, 30] and mean[2] == pytest.approx(0.275) and lo[3] == 0.04 and hi[3] == 0.3
    xs, *_ = density.curve_band([a, b], x="seconds")
    assert xs[-1] == pytest.approx((a.seconds[-1] + b.seconds[-1]) / 2)
    a.steps, a.values = list(range(0, 110, 10)), [9.0] * 8 + [0.2, 5.0, 0.1]
    assert density.tail_median(a) == 0.2 and density.tail_median(a, 1) == 9.0  # median of steps 80–100, of all


def test_nll_metric_for_data_without_a_density():
    r = density.run("ed", dataset="pinwheel", metric="nll", nll_grid=50, cache_dir=None, **TINY)
    assert r.metric == "nll" and len(r.values) == 4 and all(math.isfinite(v) for v in r.values)
    with pytest.raises(ValueError, match="not 'mse'"):
        r.mse
    (row,) = density.summary({"ed": [r]})
    assert "final NLL" in density.summary_markdown([row])
    m = density.run("ed", seed=0, cache_dir=None, **TINY)
    with pytest.raises(ValueError, match="mixes metrics"):
        density.summary({"ed": [r, m]})


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="method must be one of"):
        density.run("mle", cache_dir=None, **TINY)
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['M'\]"):
        density.run("ed", hparams={"M": 4}, cache_dir=None, **TINY)
    with pytest.raises(ValueError, match="hparams\\['t'\\] must be a number"):
        density.method_hparams("ed", {"t": "1"})
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        density.make_loss("ed", t=-1.0)
    with pytest.raises(ValueError, match="no analytic log-density.*metric='nll'"):
        density.run("ed", dataset="pinwheel", cache_dir=None, **TINY)
    with pytest.raises(ValueError, match="name must be one of"):
        density.run("ed", dataset="nine_gaussians", cache_dir=None, **TINY)
    with pytest.raises(ValueError, match="seed must be an integer"):
        density.run("ed", seed=-1, cache_dir=None, **TINY)
    with pytest.raises(ValueError, match="eval_every must be an integer"):
        density.run("ed", cache_dir=None, **{**TINY, "eval_every": 0})
    with pytest.raises(ValueError, match="'nce' needs the dataset"):
        density.make_loss("nce")
    with pytest.raises(ValueError, match="PersistentChains"):
        density.make_loss("pcd")(nets.toy_energy_net(), torch.zeros(4, 2), None)
    with pytest.raises(ValueError, match="same length"):
        density.first_reaching([0, 1], [1.0], 0.1)
    with pytest.raises(ValueError, match="threshold must be a number"):
        density.first_reaching([0], [1.0], float("nan"))
    with pytest.raises(ValueError, match="metric must be one of"):
        density.run("ed", metric="kl", cache_dir=None, **TINY)
    with pytest.raises(ValueError, match="at least one RunResult"):
        density.curve_band([])
