import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from edrepro import nets
from edrepro.book.runs import Outcome
from edrepro.book.train import resolve_device, seed_everything, train

MU = torch.tensor([1.0, -2.0])


class Quadratic(nn.Module):
    """E(x) = ½|x − μ|² with learnable μ: the model family of N(μ, I)."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return 0.5 * ((x - self.mu) ** 2).sum(1)


def gaussian_sampler(n, generator=None):
    return MU + torch.randn(n, 2, generator=generator)


def sm_quadratic(model, x, generator):
    # Hyvärinen score matching, closed form for this family: ½|∇E|² − ΔE = ½|x − μ|² − d.
    return (0.5 * ((x - model.mu) ** 2).sum(1) - 2.0).mean()


def small_net():
    torch.manual_seed(0)
    return nets.MLP(2, [16, 16])


def noisy_loss(model, x, generator):
    # consumes the generator, so a resumed run must restore its state
    noise = torch.randn(x.shape, generator=generator)
    return (model(x + 0.1 * noise) ** 2).mean() - model(x).mean() * 0.1


# --------------------------------------------------------------------------- learning


def test_recovers_gaussian_mean_with_sampler():
    model = Quadratic()
    res = train(model, sm_quadratic, gaussian_sampler, 300, lr=0.05, generator=torch.Generator().manual_seed(0), progress=False)
    assert isinstance(res, Outcome) and len(res.losses) == 300 and res.diverged_at is None
    torch.testing.assert_close(model.mu.detach(), MU, atol=0.15, rtol=0)
    assert res.losses[-1] < res.losses[0]


def test_recovers_gaussian_mean_with_library_score_matching():
    losses = pytest.importorskip("edrepro.losses")
    model = Quadratic()
    loss = lambda m, x, g: losses.score_matching(m, x)
    train(model, loss, gaussian_sampler, 300, lr=0.05, generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(model.mu.detach(), MU, atol=0.15, rtol=0)


def test_fixed_tensor_full_batch_and_minibatches():
    data = gaussian_sampler(256, torch.Generator().manual_seed(2))
    seen = []

    def loss(m, x, g):
        seen.append(x)
        return sm_quadratic(m, x, g)

    model = Quadratic()
    train(model, loss, data, 200, lr=0.05, batch_size=None, progress=False)
    assert all(x is seen[0] for x in seen) and torch.equal(seen[0], data)
    # full-batch gradient descent on this loss converges to the sample mean exactly
    torch.testing.assert_close(model.mu.detach(), data.mean(0), atol=1e-4, rtol=0)
    seen.clear()
    train(Quadratic(), loss, data, 3, batch_size=32, generator=torch.Generator().manual_seed(0), progress=False)
    for x in seen:
        assert x.shape == (32, 2)
        rows = (x[:, None, :] == data[None]).all(-1)
        assert (rows.sum(1) >= 1).all() and len(torch.unique(rows.float().argmax(1))) == 32  # distinct data rows


# --------------------------------------------------------------------------- non-finite values


def nan_at(step_to_fail, kind="loss"):
    calls = {"n": 0}

    def loss(model, x, generator):
        calls["n"] += 1
        base = sm_quadratic(model, x, generator)
        if calls["n"] == step_to_fail:
            if kind == "loss":
                return base * float("nan")
            # finite loss, NaN gradient: d/dμ √|μ − μ| at 0 is ∞·0
            return base.detach() + torch.sqrt((model.mu - model.mu.detach()).abs().sum())
        return base

    return loss


def test_nan_loss_raises_naming_the_step():
    with pytest.raises(FloatingPointError, match="loss became nan at step 7"):
        train(Quadratic(), nan_at(7), gaussian_sampler, 20, progress=False)


def test_nan_gradient_raises_naming_the_quantity():
    with pytest.raises(FloatingPointError, match="grad norm became nan at step 3"):
        train(Quadratic(), nan_at(3, "grad"), gaussian_sampler, 20, progress=False)


def test_stop_records_divergence_and_keeps_last_finite_parameters():
    g = torch.Generator().manual_seed(5)
    ref = Quadratic()
    train(ref, sm_quadratic, gaussian_sampler, 6, lr=0.05, generator=g, progress=False)
    model = Quadratic()
    res = train(model, nan_at(7), gaussian_sampler, 20, lr=0.05, generator=torch.Generator().manual_seed(5),
                on_nonfinite="stop", progress=False)
    assert res.diverged_at == 7 and res.nonfinite == "loss"
    assert len(res.losses) == 7 and np.isnan(res.losses[-1]) and np.isfinite(res.losses[:6]).all()
    assert torch.equal(model.mu, ref.mu)
    res = train(Quadratic(), nan_at(2, "grad"), gaussian_sampler, 20, on_nonfinite="stop", progress=False)
    assert res.diverged_at == 2 and res.nonfinite == "grad_norm"


# --------------------------------------------------------------------------- checkpoint / resume


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_bitwise(tmp_path):
    common = dict(batch_size=64, ema_decay=0.9, eval_every=5, eval_fn=lambda m, s: {"e0": float(m(torch.zeros(1, 2)))},
                  progress=False)
    ref_model = small_net()
    ref = train(ref_model, noisy_loss, gaussian_sampler, 23, generator=torch.Generator().manual_seed(0), **common)

    path = tmp_path / "run.pt"
    calls = {"n": 0}

    def interrupted(model, x, g):
        calls["n"] += 1
        if calls["n"] == 13:
            raise Interrupt
        return noisy_loss(model, x, g)

    model = small_net()
    with pytest.raises(Interrupt):
        train(model, interrupted, gaussian_sampler, 23, generator=torch.Generator().manual_seed(0),
              checkpoint_path=path, checkpoint_every=5, **common)
    assert path.exists()
    # a new process would start from fresh objects and a generator in the wrong state
    model = small_net()
    res = train(model, noisy_loss, gaussian_sampler, 23, generator=torch.Generator().manual_seed(99),
                checkpoint_path=path, checkpoint_every=5, **common)
    assert res.resumed_from == 10
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(res.ema_model.parameters(), ref.ema_model.parameters()):
        assert torch.equal(a, b)
    assert res.losses == ref.losses
    assert res.curves["step"] == [0, 5, 10, 15, 20, 23]
    assert res.curves["e0"] == ref.curves["e0"]

    # a finished run returns at once without calling the loss
    def never(*args):
        raise AssertionError("loss_fn called on a finished run")

    again = train(small_net(), never, gaussian_sampler, 23, generator=torch.Generator(), checkpoint_path=path, **common)
    assert again.losses == ref.losses
    with pytest.raises(ValueError, match="n_steps"):
        train(small_net(), never, gaussian_sampler, 10, generator=torch.Generator(), checkpoint_path=path, **common)


# --------------------------------------------------------------------------- evaluation and timing


def test_evals_on_ema_model_exclude_eval_time():
    seen = []

    def slow_eval(m, step):
        seen.append(m)
        time.sleep(0.15)
        return {"mu0": m.mu[0].item()}

    res = train(Quadratic(), sm_quadratic, gaussian_sampler, 10, lr=0.05, ema_decay=0.5, eval_every=4,
                eval_fn=slow_eval, progress=False)
    assert res.curves["step"] == [0, 4, 8, 10]
    assert all(m is res.ema_model for m in seen) and res.ema_model is not res.model
    assert res.seconds < 0.15  # four sleeps of 0.15 s are not training time
    assert res.curves["seconds"][0] == 0.0 and res.curves["seconds"][-1] == res.seconds
    assert all(a <= b for a, b in zip(res.curves["seconds"], res.curves["seconds"][1:]))
    assert res.curves["mu0"][-1] == res.ema_model.mu[0].item()
    assert res.steps_per_second == pytest.approx(10 / res.seconds)
    only_final = train(Quadratic(), sm_quadratic, gaussian_sampler, 3, eval_fn=slow_eval, progress=False)
    assert only_final.curves["step"] == [3]


# --------------------------------------------------------------------------- seeding and devices


def test_seed_everything_is_deterministic():
    g1 = seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=g1))
    g2 = seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=g2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    assert torch.equal(a[3], torch.rand(3, generator=torch.Generator().manual_seed(123)))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_same_seed_gives_bitwise_identical_training():
    runs = []
    for _ in range(2):
        model = small_net()
        train(model, noisy_loss, gaussian_sampler, 15, generator=seed_everything(4), progress=False)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="cuda:0"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="'gpu'") as info:
        resolve_device("gpu")
    assert "auto" in str(info.value) and "cpu" in str(info.value)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"n_steps": 0}, "n_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"ema_decay": 2.0}, "ema_decay"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite"),
        ({"checkpoint_every": 5}, "checkpoint_path"),
        ({"eval_every": 5}, "eval_fn"),
        ({"data": "25gaussians"}, "data"),
        ({"data": torch.zeros(10)}, "data"),
        ({"data": lambda n, g: torch.zeros(n)}, "data batch"),
        ({"batch_size": None}, "batch_size"),
        ({"loss_fn": lambda m, x, g: m(x)}, "scalar"),
        ({"generator": 3}, "generator"),
    ],
)
def test_bad_arguments(kwargs, word):
    args = {"model": Quadratic(), "loss_fn": sm_quadratic, "data": gaussian_sampler, "n_steps": 5, "progress": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        train(**args)


def test_with_device_noise_is_the_identity_on_cpu_and_rejects_non_callables():
    from edrepro.book.train import with_device_noise

    def loss_fn(model, x, generator):
        return x.sum()

    assert with_device_noise(loss_fn, torch.device("cpu")) is loss_fn
    with pytest.raises(ValueError, match="loss_fn"):
        with_device_noise(None, torch.device("cpu"))


_TRAIN_IN_SUBPROCESS = """
import torch
from edrepro import losses, nets
from edrepro.book import train
torch.set_num_threads(1)
g = train.seed_everything(0)
net = nets.toy_energy_net(2)
x = torch.randn(256, 2, generator=g)
train.train(net, lambda m, b, gen: losses.energy_discrepancy(m, b, 1.0, 16, 1.0, gen), x, 30, batch_size=128,
            generator=g, progress=False)
print(train.retain_freed_memory(), *[v.item() for p in net.parameters() for v in p.flatten()[:50]])
"""


def _train_in_subprocess(env_extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env_extra
    out = subprocess.run([sys.executable, "-c", _TRAIN_IN_SUBPROCESS], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_freed_memory_changes_no_number_and_can_be_switched_off():
    ours = _train_in_subprocess({})
    under_dask = _train_in_subprocess({"MALLOC_TRIM_THRESHOLD_": "65536"})  # what a Dask nanny sets
    system = _train_in_subprocess({"EDREPRO_RETAIN_FREED_MEMORY": "0"})
    assert (ours[0], under_dask[0], system[0]) == ("True", "True", "False")
    assert ours[1:] == under_dask[1:] == system[1:]  # where buffers live, not one bit of the weights
