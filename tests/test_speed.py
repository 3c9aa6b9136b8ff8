"""Tests for edrepro.chapters.speed: the restated references equal our losses, timing bookkeeping, validation.

No assertion here depends on how fast anything runs; the speed limits are in benchmarks/loss_speed.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from edrepro import losses, nets
from edrepro.chapters import speed

D64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def net64(d: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return nets.MLP(d, (16, 16)).to(D64)


X = torch.randn(12, 2, generator=gen(0), dtype=D64)


def param_grads(loss: torch.Tensor, net: torch.nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(net.parameters()), allow_unused=True, materialize_grads=True))


@pytest.mark.parametrize("m, w", [(4, 1.0), (1, 0.0), (3, 0.2)])
def test_reference_ed_is_ours_plus_log_m(m, w):
    net = net64()
    ours = losses.energy_discrepancy(net, X, 0.5, m, w, generator=gen(1))
    ref = speed.reference_energy_discrepancy(net, X, 0.5, m, w, generator=gen(1))
    assert torch.allclose(ref - math.log(m), ours, rtol=1e-12, atol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-14) for a, b in zip(param_grads(ref, net), param_grads(ours, net)))


@pytest.mark.parametrize("d", [1, 2, 5])
def test_reference_sm_equals_ours(d):
    net = net64(d)
    x = torch.randn(7, d, generator=gen(d), dtype=D64)
    ours, ref = losses.score_matching(net, x), speed.reference_score_matching(net, x)
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(param_grads(ref, net), param_grads(ours, net)))


def test_reference_cd_equals_ours_with_the_same_draws():
    net = net64()
    ours = losses.contrastive_divergence(net, X, n_steps=4, step_size=0.01, reg=0.3, generator=gen(2))
    ref = speed.reference_contrastive_divergence(net, X, n_steps=4, step_size=0.01, reg=0.3, generator=gen(2))
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(param_grads(ref, net), param_grads(ours, net)))


def test_compared_losses_pair_ours_with_the_reference():
    net = net64()
    for method in speed.COMPARED:
        ours, ref = speed.compared_losses(method)
        a, b = ours(net, X, gen(3)), ref(net, X, gen(3))
        offset = math.log(speed.ED_SETTINGS["m_particles"]) if method == "ed" else 0.0
        assert torch.allclose(a + offset, b, rtol=1e-10), method


def test_training_losses_cover_every_loss_and_give_finite_scalars():
    x = X.float()
    fns = speed.training_losses(x)
    assert tuple(fns) == speed.LOSSES
    net = nets.toy_energy_net(2)
    for name, fn in fns.items():
        value = fn(net, x, gen(4))
        assert value.shape == () and torch.isfinite(value), name


def test_step_times_pairs_repeats_trains_copies_and_restores_threads():
    net = net64()
    before = [p.detach().clone() for p in net.parameters()]
    threads = torch.get_num_threads()
    fns = {"ed": lambda m, x, g: losses.energy_discrepancy(m, x, 1.0, generator=g), "sm": lambda m, x, g: losses.score_matching(m, x)}
    ms = speed.step_times(net, fns, X, repeats=3, steps=2, warmup=1, threads=threads + 1, clock="cpu")
    assert set(ms) == {"ed", "sm"} and all(len(v) == 3 and all(t > 0 for t in v) for v in ms.values())
    assert torch.get_num_threads() == threads
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # every loss trained its own copy


def test_speed_ratio_is_the_paired_reference_over_ours():
    r = speed.speed_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])
    assert r == speed.Ratio(2.0, 2.0, 3.0, 3)


def test_compare_and_iterations_per_second_report_every_entry():
    ratio, ms = speed.compare("sm", batch_size=8, repeats=2, steps=1, warmup=0)
    assert isinstance(ratio, speed.Ratio) and ratio.repeats == 2 and ratio.low <= ratio.median <= ratio.high
    assert set(ms) == {"ours", "reference"}
    its = speed.iterations_per_second(batch_size=8, repeats=1, steps=1, warmup=0)
    assert tuple(its) == speed.LOSSES and all(v > 0 for v in its.values())


def test_describe_machine():
    m = speed.describe_machine()
    assert set(m) == {"cpu", "cores", "threads", "torch", "load_1min"}
    assert isinstance(m["cpu"], str) and m["cpu"] and m["threads"] == torch.get_num_threads()
    assert m["torch"] == torch.__version__


def _record(method, seed, steps, seconds, mse, status="finished"):
    from edrepro.book import runs
    from edrepro.chapters import density

    spec = density.spec(method, seed=seed, n_steps=steps[-1])
    curves = {"step": list(steps), "seconds": list(seconds), "mse": list(mse)}
    conditions = {"threads": 1, "load_start": 0.5, "load_end": 1.5}
    return runs.RunRecord(spec, status, curves, {}, steps[-1], seconds[-1], conditions=conditions)


ED = lambda m, x, g: losses.energy_discrepancy(m, x, 1.0, generator=g)  # noqa: E731
BAD = [
    (speed.reference_energy_discrepancy, (net64(), X), dict(t=0.0), "t "),
    (speed.reference_energy_discrepancy, (net64(), X), dict(m_particles=0), "m_particles"),
    (speed.reference_energy_discrepancy, (net64(), X), dict(w=-1.0), "w "),
    (speed.reference_score_matching, (net64(), torch.zeros(3)), {}, "x "),
    (speed.reference_contrastive_divergence, (net64(), X), dict(n_steps=0), "n_steps"),
    (speed.reference_contrastive_divergence, (net64(), X), dict(step_size=0.0), "step_size"),
    (speed.reference_contrastive_divergence, (net64(), X), dict(reg=-1.0), "reg"),
    (speed.compared_losses, ("nce",), {}, "method"),
    (speed.training_losses, (torch.zeros(2, 2, 2),), {}, "x "),
    (speed.step_times, ("net", {"ed": ED}, X), {}, "net"),
    (speed.step_times, (net64(), {}, X), {}, "loss_fns"),
    (speed.step_times, (net64(), {"ed": ED}, X[0]), {}, "x "),
    (speed.step_times, (net64(), {"ed": ED}, X), dict(repeats=0), "repeats"),
    (speed.step_times, (net64(), {"ed": ED}, X), dict(steps=0), "steps"),
    (speed.step_times, (net64(), {"ed": ED}, X), dict(warmup=-1), "warmup"),
    (speed.step_times, (net64(), {"ed": ED}, X), dict(lr=0.0), "lr"),
    (speed.step_times, (net64(), {"ed": ED}, X), dict(threads=0), "threads"),
    (speed.step_times, (net64(), {"ed": ED}, X), dict(clock="sundial"), "clock"),
    (speed.speed_ratio, ([], [1.0]), {}, "reference_ms"),
    (speed.speed_ratio, ([1.0], [0.0]), {}, "ours_ms"),
    (speed.speed_ratio, ([1.0, 2.0], [1.0]), {}, "pair up"),
    (speed.compare, ("nce",), {}, "method"),
    (speed.compare, ("ed",), dict(batch_size=0), "batch_size"),
    (speed.compare, ("ed",), dict(dim=0), "dim"),
    (speed.iterations_per_second, (["ed", "mle"],), {}, "names"),
    (speed.iterations_per_second, ("ed",), {}, "names"),
    (speed.forward_backward_loss, (torch.zeros(3),), {}, "points"),
    (speed.loss_timings, (), dict(dim=0), "dim"),
    (speed.loss_timings, (), dict(batch_size=0), "batch_size"),
    (speed.loss_timings, (), dict(device="gpu"), "device"),
    (speed.loss_timings, (), dict(names=["ed", "mle"]), "names"),
    (speed.loss_timings, (), dict(names="ed"), "names"),
    (speed.loss_table, ({},), {}, "ms "),
    (speed.loss_table, ({"bare": [1.0]},), {}, "no loss"),
    (speed.loss_table, ({"ed": [1.0], "authors_ed": [1.0, 2.0]},), {}, "pair up"),
    (speed.bound_ratio, ({"ed": [1.0]},), {}, "authors_ed"),
    (speed.draw_times, (X, 0), {}, "m_particles"),
    (speed.draw_times, (X, 2), dict(repeats=0), "repeats"),
    (speed.ed_scaling, ([],), {}, "m_values"),
    (speed.ed_scaling, ([2, 2],), {}, "distinct"),
    (speed.ed_scaling, ([1, 2], [0]), {}, "dims"),
    (speed.ed_scaling, ([1, 2], "2"), {}, "dims"),
    (speed.ed_scaling, ([1, 2], [2]), dict(batch_size=0), "batch_size"),
    (speed.affine_fit, ([1, 1], [1.0, 2.0]), {}, "distinct"),
    (speed.affine_fit, ([1, 2], [1.0]), {}, "same length"),
    (speed.affine_fit, ("12", [1.0, 2.0]), {}, "xs"),
    (speed.affine_fit, ([1, 2], [1.0, 0.0]), dict(relative=True), "ys"),
    (speed.page_specs, ({"profile": "fast"},), {}, "profile"),
    (speed.page_specs, ({},), {}, "profile"),
    (speed.time_to_threshold, ([],), {}, "records"),
    (speed.time_to_threshold, (["run"],), {}, "records"),
    (speed.time_to_threshold, ([_record("ed", 0, [0, 1], [0.0, 1.0], [1.0, 0.1])], 0.0), {}, "threshold"),
    (speed.time_to_threshold, ([_record("ed", 0, [0, 1], [0.0, 1.0], [1.0, 0.1])], 0.1, "kl"), {}, "metric"),
    (speed.reach_markdown, ([], 0.1), {}, "rows"),
]


@pytest.mark.parametrize("fn, args, kwargs, match", BAD, ids=[f"{f.__name__}-{m.strip().replace(' ', '_')}-{i}" for i, (f, _, _, m) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


# ---------------------------------------------------------------- the performance chapter's helpers


def test_forward_backward_loss_backpropagates_through_the_network_on_its_points_with_zero_gradient():
    net = net64()
    points = torch.randn(9, 2, generator=gen(5), dtype=D64, requires_grad=True)
    fn = speed.forward_backward_loss(points)
    value = fn(net, X, gen(6))
    assert value.item() == 0.0 and torch.equal(value, fn(net, X[:3], None))
    grads = param_grads(value, net)
    assert len(grads) == len(list(net.parameters())) and all(torch.count_nonzero(g) == 0 for g in grads)
    assert value.grad_fn is not None  # a graph through the network: backward runs in full


def test_timed_losses_are_every_loss_the_authors_three_and_the_bare_step():
    x = X.float()
    fns = speed.timed_losses(x)
    assert list(fns) == [*speed.LOSSES, *(speed.AUTHORS_PREFIX + m for m in speed.COMPARED), speed.BARE]
    net, seen = nets.toy_energy_net(2), []
    net.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    fns[speed.BARE](net, x, None)
    assert seen == [(x.shape[0] * (speed.ED_SETTINGS["m_particles"] + 1), 2)]  # the B(M+1) points of an ED step


def test_loss_timings_time_every_entry_in_paired_repeats():
    ms = speed.loss_timings(batch_size=8, repeats=2, steps=1, warmup=0, clock="cpu")
    assert list(ms) == list(speed.timed_losses(X.float()))
    assert all(len(v) == 2 and all(t > 0 for t in v) for v in ms.values())
    some = speed.loss_timings(batch_size=8, repeats=1, steps=1, warmup=0, clock="cpu", names=["authors_ed", "bare"])
    assert list(some) == ["authors_ed", "bare"]


MS = {"ed": [1.0, 2.0, 4.0], "authors_ed": [1.5, 2.0, 6.0], "sm": [2.0, 2.0, 2.0], "authors_sm": [4.0, 5.0, 6.0],
      "nce": [0.5, 1.0, 2.0], "bare": [1.0, 1.0, 4.0]}


def test_loss_table_gives_iterations_per_second_and_paired_speed_ups():
    rows = speed.loss_table(MS)
    assert [r["loss"] for r in rows] == ["ed", "sm", "nce"]  # the order of speed.LOSSES; others ignored
    ed, sm, nce = rows
    assert ed["ms"] == 2.0 and ed["per_second"] == 500.0 and ed["per_second_range"] == (250.0, 1000.0)
    assert ed["authors_per_second"] == 500.0 and ed["speed_up"] == speed.Ratio(1.5, 1.0, 1.5, 3)
    assert sm["speed_up"] == speed.Ratio(2.5, 2.0, 3.0, 3)
    assert nce["authors_per_second"] is None and nce["speed_up"] is None


def test_bound_ratio_is_the_authors_ed_over_the_bare_step():
    assert speed.bound_ratio(MS) == speed.Ratio(1.5, 1.5, 2.0, 3)


def test_loss_markdown_has_a_row_per_loss_and_the_bare_step():
    text = speed.loss_markdown(MS, {"ed": "Energy discrepancy"})
    lines = text.splitlines()
    assert len(lines) == 2 + 3 + 1
    assert lines[2] == "| Energy discrepancy | 500 [250, 1000] | 500 | 1.50× [1.00, 1.50] |"
    assert lines[4].startswith("| nce | 1000 [500, 2000] | — | — |") and "bare step" in lines[5]


def test_ed_scaling_times_every_m_and_d_against_the_bare_step():
    rows = speed.ed_scaling([1, 3], [2, 5], batch_size=8, repeats=2, steps=1, warmup=0, clock="cpu")
    assert [(r["dim"], r["m_particles"], r["points"]) for r in rows] == [(2, 1, 16), (2, 3, 32), (5, 1, 16), (5, 3, 32)]
    assert rows[0]["parameters"] == nets.count_parameters(nets.toy_energy_net(2))
    for r in rows:
        assert r["ed_ms"] > 0 and r["bare_ms"] > 0 and r["draws_ms"] > 0 and r["overhead"].repeats == 2


def test_draw_times_per_repeat():
    times = speed.draw_times(X.float(), 3, repeats=4, steps=2, clock="cpu")
    assert len(times) == 4 and all(t > 0 for t in times)


def test_affine_fit_recovers_a_line_and_its_r2():
    a, b, r2 = speed.affine_fit([1, 2, 4], [3.0, 5.0, 9.0])
    assert (a, b) == pytest.approx((1.0, 2.0)) and r2 == pytest.approx(1.0)
    assert speed.affine_fit([1, 2, 3], [1.0, 3.0, 2.0])[2] == pytest.approx(0.25)
    assert speed.affine_fit([1, 2], [2.0, 2.0]) == pytest.approx((2.0, 0.0, 1.0))
    assert speed.affine_fit([1, 2, 4], [3.0, 5.0, 9.0], relative=True) == pytest.approx((1.0, 2.0, 1.0))
    # relative weights: the small times decide the intercept, the outlier at x = 4 matters less
    plain, weighted = speed.affine_fit([1, 2, 3, 4], [2.0, 3.0, 4.0, 8.0]), speed.affine_fit([1, 2, 3, 4], [2.0, 3.0, 4.0, 8.0], relative=True)
    assert abs(weighted[0] - 1.0) < abs(plain[0] - 1.0)


def test_page_specs_are_the_density_estimation_pages_runs(root):
    from edrepro.book import pipeline
    from edrepro.chapters import density

    expected = density.page_specs(pipeline.effective_params(root, "density_estimation", "smoke"))
    assert speed.page_specs({"profile": "smoke"}) == expected


def test_time_to_threshold_per_method_and_seed():
    records = [
        _record("ed", 0, [0, 10, 20], [0.0, 1.0, 2.0], [1.0, 0.05, 0.04]),
        _record("ed", 1, [0, 10, 20], [0.0, 1.5, 3.0], [1.0, 0.5, 0.08]),
        _record("sm", 0, [0, 10, 20], [0.0, 2.0, 4.0], [1.0, 0.9, 0.8]),
    ]
    ed, sm = speed.time_to_threshold(records, 0.1)
    assert ed["method"] == "ed" and ed["seeds"] == [0, 1] and ed["steps"] == [10, 20] and ed["seconds"] == [1.0, 3.0]
    assert ed["reached"] == 2 and ed["median_steps"] == 15 and ed["median_seconds"] == 2.0
    assert ed["ms_per_step"] == pytest.approx(125.0) and ed["conditions"] == {"threads": [1], "load": (0.5, 1.5)}
    assert sm["steps"] == [None] and sm["reached"] == 0 and sm["median_steps"] is None and sm["outcomes"] == ["finished"]
    text = speed.reach_markdown([ed, sm], 0.1, {"ed": "ED"})
    assert "| ED | 0 / 1 | 10 / 20 | 1 / 3 | 15 | 2 | 2 of 2 | 125.00 | finished | 1 thread(s), load 0.5–1.5 |" in text
    assert "| sm | 0 | never | never | — | — | 0 of 1 |" in text


# ---------------------------------------------------------------- the performance page's parameters


def _page_cells():
    import jupytext

    from .conftest import ROOT

    return [c for c in jupytext.read(ROOT / "notebooks" / "performance.md").cells if c.cell_type == "code"]


def _page_defaults() -> dict:
    import ast

    cell = next(c for c in _page_cells() if "parameters" in c.metadata.get("tags", ()))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body if isinstance(n, ast.Assign)}


def test_the_page_schema_names_exactly_its_parameters_and_allows_every_profile(root):
    from edrepro.book import parameters, pipeline

    cells = _page_cells()
    k = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", ()))
    assert cells[k + 1].source == 'from edrepro.book import parameters\nparams = parameters.check_notebook("performance", globals())'
    assert set(parameters.schema("performance")) == set(_page_defaults())
    assert parameters.check_notebook("performance", _page_defaults()) == _page_defaults()
    for profile in pipeline.PROFILES:
        values = pipeline.load_params(root, "performance", profile)
        parameters.check("performance", values)
        assert values["profile"] == profile  # the page reads the density runs of its own profile


@pytest.mark.parametrize("key, value", [("profile", "fast"), ("clock", "sundial"), ("repeats", 1), ("m_values", [4]),
                                        ("dims", [0]), ("batch_size", 1), ("threshold", 0.0), ("cpu_threads", -1)])
def test_a_bad_page_parameter_is_rejected_naming_it(key, value):
    from edrepro.book import parameters

    with pytest.raises(parameters.ParameterError, match=rf"parameter {key} = .* of notebook 'performance'"):
        parameters.check_notebook("performance", {**_page_defaults(), key: value})


# --- the page's claims: each holds on its factual timings and fails on a counterfactual ---------------


def _ms(**scale):
    """Paired per-repeat milliseconds: authors' SM 2× ours, ED 1.1× the bare step, unless ``scale`` changes one."""
    base = {"sm": [1.0, 1.1, 0.9], "authors_sm": [2.0, 2.2, 1.8], "ed": [1.1, 1.2, 1.0], "bare": [1.0, 1.1, 0.9]}
    return {k: [v * scale.get(k, 1.0) for v in vs] for k, vs in base.items()}


def test_sm_speed_up_claim_fails_with_the_timings_swapped():
    ms = _ms()
    assert speed.sm_speed_up_claim(ms).holds is True and "2.00×" in speed.sm_speed_up_claim(ms).measured
    swapped = {**ms, "sm": ms["authors_sm"], "authors_sm": ms["sm"]}
    assert speed.sm_speed_up_claim(swapped).holds is False
    assert speed.sm_speed_up_claim(ms, target=2.5).holds is False
    with pytest.raises(ValueError, match="authors_sm"):
        speed.sm_speed_up_claim({"sm": [1.0]})


def test_ed_overhead_claim_fails_for_an_ed_step_far_dearer_than_the_bare_step():
    assert speed.ed_overhead_claim(_ms()).holds is True
    assert speed.ed_overhead_claim(_ms(ed=2.0)).holds is False
    assert [c.holds for c in speed.page_claims(_ms())] == [True, True]
    assert [c.holds for c in speed.page_claims(_ms(sm=3.0, ed=3.0))] == [False, False]
