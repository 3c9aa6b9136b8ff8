"""The JEM chapter's training runs: one classifier trained as a plain classifier, as JEM with persistent
SGLD chains, or as JEM with energy discrepancy, on a labelled 2-D set or on MNIST.

A run of kind ``jem`` has ``method`` ∈ :data:`METHODS` and ``dataset`` ∈ :data:`DATASETS`; its budget is
the number of updates. Every update minimises :func:`edrepro.jem.joint_loss`: the cross-entropy of the
batch plus ``gen_weight`` times the method's generative term of p(x) ∝ exp(−E(x)), E = −logsumexp f.
The trainer is :func:`train_spec`; the page's code (scores, figures, claims) is
:mod:`edrepro.chapters.jem_page`, outside this module so that page edits leave the run keys alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .. import _checks, jem, toy
from ..book import runs
from ..book.train import resolve_device, seed_everything, train
from ..nets import WithChains
from ..samplers import ReplayBuffer, uniform_box

METHODS = ("ce", "sgld", "ed")
"""Cross-entropy only; JEM with persistent SGLD chains (Grathwohl et al. 2020); JEM with energy discrepancy."""
METHOD_NAMES = {"ce": "classifier (cross-entropy)", "sgld": "JEM, SGLD chains", "ed": "JEM, energy discrepancy"}
DATASETS = (*toy.LABELLED, "mnist")
TOY_BOX = 4.0
"""2-D chains start (and restart) uniform on [−4, 4]², the sets' plotting box."""
EVAL_POINTS = 2000
"""Held-out points (2-D: fresh draws; MNIST: the first test images) of the accuracy curve during training."""
_TEST_SEED_OFFSET = 1_000_003  # 2-D held-out points come from a generator seeded apart from training's


def method_hparams(method: str, params: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The hyperparameters of ``method``'s generative term from the page's parameters (``toy_``/``mnist_``
    step sizes and ED variances by domain)."""
    _checks.choice("method", method, METHODS)
    domain = "mnist" if dataset == "mnist" else "toy"
    if method == "ce":
        return {}
    if method == "ed":
        return {"t": params[f"{domain}_ed_t"], "m_particles": params["ed_m"], "w": params["ed_w"], "weight": params["gen_weight"]}
    return {"n_steps": params["sgld_steps"], "step_size": params[f"{domain}_sgld_step_size"], "noise_std": params[f"{domain}_sgld_noise"],
            "buffer_size": params["buffer_size"], "reinit_prob": params["reinit_prob"], "weight": params["gen_weight"]}


def run_spec(method: str, dataset: str, seed: int, params: Mapping[str, Any]) -> runs.RunSpec:
    """The run of ``method`` on ``dataset`` at ``seed`` under the page's parameters."""
    _checks.choice("dataset", dataset, DATASETS)
    if dataset == "mnist":
        settings = {"batch_size": params["mnist_batch_size"], "lr": params["mnist_lr"], "channels": params["mnist_channels"],
                    "n_train": params["mnist_n_train"], "eval_every": params["mnist_eval_every"]}
        budget = params["mnist_steps"]
    else:
        settings = {"batch_size": params["toy_batch_size"], "lr": params["toy_lr"], "width": params["toy_width"],
                    "eval_every": params["toy_eval_every"]}
        budget = params["toy_steps"]
    return runs.RunSpec("jem", method, dataset, seed, budget, method_hparams(method, params, dataset), settings, "jem", None)


def _network(spec: runs.RunSpec) -> nn.Module:
    if spec.dataset == "mnist":
        return jem.SmallConvNet(spec.settings["channels"])
    return jem.toy_classifier(toy.get(spec.dataset).n_classes, spec.settings["width"])


def chain_init(dataset: str) -> Callable[[int, torch.Generator | None], torch.Tensor]:
    """Where the persistent chains start and restart: uniform pixels in [−1, 1] (MNIST), uniform on [−4, 4]² (2-D)."""
    _checks.choice("dataset", dataset, DATASETS)
    if dataset == "mnist":
        return jem.uniform_images
    return lambda n, generator: uniform_box(n, 2, TOY_BOX, generator)


def build_model(spec: runs.RunSpec, generator: torch.Generator | None = None) -> nn.Module:
    """The run's network, seeded by the caller; for ``sgld`` wrapped with its replay buffer of chains
    (:class:`edrepro.nets.WithChains`, so the chains are checkpointed and saved with the weights)."""
    net = _network(spec)
    if spec.method != "sgld":
        return net
    return WithChains(net, chain_init(spec.dataset)(spec.hparams["buffer_size"], generator))


def load_model(record: runs.RunRecord) -> tuple[nn.Module, torch.Tensor | None]:
    """(the trained classifier in eval mode, its persistent chains or None) of a finished ``jem`` run."""
    if not isinstance(record, runs.RunRecord) or record.spec.kind != "jem":
        raise ValueError(f"record must be the RunRecord of a jem run, got {record!r:.80}")
    model = build_model(record.spec, torch.Generator().manual_seed(0))
    model.load_state_dict(record.state()["model"])
    if isinstance(model, WithChains):
        return model.inner.eval(), model.chains.clone()
    return model.eval(), None


def labelled_data(spec: runs.RunSpec) -> tuple[Callable | torch.Tensor, torch.Tensor, torch.Tensor]:
    """(training data for :func:`edrepro.book.train.train`, held-out x, held-out labels). Training rows are
    the inputs with their label appended as a last column: a sampler of fresh 2-D draws, or the MNIST
    subset (``n_train`` images drawn with the run's seed)."""
    if spec.dataset == "mnist":
        from ..data import mnist, to_signed_unit

        train_set, test_set = mnist("train"), mnist("test")
        order = torch.randperm(len(train_set.images), generator=torch.Generator().manual_seed(spec.seed))[: spec.settings["n_train"]]
        x = to_signed_unit(train_set.images[order]).flatten(1)
        rows = torch.cat([x, train_set.labels[order, None].to(x.dtype)], 1)
        return rows, to_signed_unit(test_set.images[:EVAL_POINTS]).flatten(1), test_set.labels[:EVAL_POINTS]
    data = toy.get(spec.dataset)

    def sampler(n: int, generator: torch.Generator | None) -> torch.Tensor:
        x, y = data.sample_labelled(n, generator)
        return torch.cat([x, y[:, None].to(x.dtype)], 1)

    x_test, y_test = data.sample_labelled(EVAL_POINTS, torch.Generator().manual_seed(spec.seed + _TEST_SEED_OFFSET))
    return sampler, x_test, y_test


def joint_loss_fn(spec: runs.RunSpec) -> Callable[[nn.Module, torch.Tensor, torch.Generator | None], torch.Tensor]:
    """``loss_fn(model, rows, generator)`` of the run: split the label column off, then
    :func:`edrepro.jem.joint_loss` with the method's generative term. Chains that become non-finite make the
    loss NaN, which the training loop records as the run's divergence."""
    hp = dict(spec.hparams)
    weight = hp.pop("weight", 0.0)
    init = chain_init(spec.dataset)

    def loss(model: nn.Module, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        x, y = rows[:, :-1], rows[:, -1].long()
        logits = model(x)
        generative = None
        if spec.method == "ed":
            generative = jem.ed_term(jem.energy_of(model), x, hp["t"], hp["m_particles"], hp["w"], generator)
        elif spec.method == "sgld":
            buffer = ReplayBuffer.view(model.chains, init)
            try:
                generative = jem.sgld_pcd_term(jem.energy_of(model), x, buffer, hp["n_steps"], hp["step_size"],
                                               hp["noise_std"], hp["reinit_prob"], generator)
            except FloatingPointError:
                return logits.sum() * math.nan
        return jem.joint_loss(logits, y, generative, weight)

    return loss


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).double().mean())


def train_spec(spec: runs.RunSpec, checkpoint: Any = None, device: torch.device | str = "cpu", progress: bool = True) -> runs.Outcome:
    """Train a ``jem`` run (the trainer :mod:`edrepro.book.runs` calls): Adam on the joint loss, the held-out
    accuracy every ``eval_every`` updates, a checkpoint every 100 updates; a non-finite loss stops the run
    and records the step."""
    device = resolve_device(device)
    generator = seed_everything(spec.seed)
    model = build_model(spec, generator).to(device)
    data, x_test, y_test = labelled_data(spec)
    x_test, y_test = x_test.to(device), y_test.to(device)
    return train(
        model, joint_loss_fn(spec), data, spec.budget, lr=spec.settings["lr"], batch_size=spec.settings["batch_size"],
        eval_every=spec.settings["eval_every"], eval_fn=lambda m, step: {"test_accuracy": _accuracy(m, x_test, y_test)},
        generator=generator, on_nonfinite="stop", checkpoint_path=checkpoint, checkpoint_every=100 if checkpoint is not None else None,
        progress=progress, desc=f"jem {spec.method} {spec.dataset} seed {spec.seed}",
    )
