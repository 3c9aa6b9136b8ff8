"""Tests for edrepro.speed: the restated references equal our losses, timing bookkeeping, validation.

No assertion here depends on how fast anything runs; the speed limits are in benchmarks/loss_speed.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from edrepro import losses, nets, speed

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
]


@pytest.mark.parametrize("fn, args, kwargs, match", BAD, ids=[f"{f.__name__}-{m.strip()}-{i}" for i, (f, _, _, m) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
