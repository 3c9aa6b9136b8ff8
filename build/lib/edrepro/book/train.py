"""Seeding, device choice and the one training loop shared by the 1-D and 2-D chapters."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # plain text bars: notebooks here run without ipywidgets

from .. import _checks
from . import runs
from .hardware import RETAIN_FREED_MEMORY_ENV, resolve_device, retain_freed_memory  # noqa: F401  (part of train's API)
from ..nets import EMA

LossFn = Callable[[nn.Module, torch.Tensor, "torch.Generator | None"], torch.Tensor]
Sampler = Callable[[int, "torch.Generator | None"], torch.Tensor]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (all devices) with ``seed``; return a CPU generator seeded with it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def with_device_noise(loss_fn: LossFn, device: torch.device) -> LossFn:
    """Wrap ``loss_fn`` so that, on an accelerator, its noise comes from a device generator.

    :func:`train` keeps one CPU generator (its state is checkpointed); a loss drawing noise on a
    GPU needs a generator on that device. The wrapper reseeds a device generator every step from
    the CPU generator, so every random number still derives from the checkpointed state. On the
    CPU the loss is returned unchanged.
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    device = torch.device(device)
    if device.type == "cpu":
        return loss_fn
    device_generator = torch.Generator(device=device)

    def wrapped(model: nn.Module, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        device_generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return loss_fn(model, x, device_generator)

    return wrapped


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    if generator is not None:
        return {"generator": generator.get_state()}
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(generator: torch.Generator | None, state: dict[str, Any]) -> None:
    if generator is not None:
        if "generator" not in state:
            raise ValueError("the checkpoint was written without a generator but train() was given one")
        generator.set_state(state["generator"])
        return
    if "torch" not in state:
        raise ValueError("the checkpoint was written with a generator but train() was given generator=None")
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _batcher(data: Sampler | torch.Tensor, batch_size: int | None, device: torch.device) -> Callable:
    """A function generator → next training batch on ``device``."""
    if callable(data) and not isinstance(data, torch.Tensor):
        if batch_size is None:
            raise ValueError("batch_size must be an integer >= 1 when data is a sampler, got None")

        def fresh(generator: torch.Generator | None) -> torch.Tensor:
            return data(batch_size, generator).to(device)

        return fresh
    _checks.batch("data", data)
    fixed = data.to(device)
    n = fixed.shape[0]
    if batch_size is None or batch_size >= n:
        return lambda generator: fixed

    def minibatch(generator: torch.Generator | None) -> torch.Tensor:
        # A batch without repeats, drawn independently at every step.
        gen_device = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randperm(n, generator=generator, device=gen_device)[:batch_size]
        return fixed[idx.to(device)]

    return minibatch


@dataclass
class _LoopState:
    """What a checkpoint of :func:`train` holds besides the modules: progress and history."""

    step: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    diverged_at: int | None = None
    nonfinite: str | None = None


def _check_train_args(model, loss_fn, data, n_steps, batch_size, ema_decay, eval_every, eval_fn, generator, on_nonfinite, checkpoint_every, checkpoint_path) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable (model, x, generator) -> scalar, got {type(loss_fn).__name__}")
    if not (callable(data) or isinstance(data, torch.Tensor)):
        raise ValueError(f"data must be a sampler (n, generator) -> (n, d) or a (N, d) tensor, got {type(data).__name__}")
    _checks.positive_int("n_steps", n_steps)
    if batch_size is not None:
        _checks.positive_int("batch_size", batch_size)
    if ema_decay is not None:
        _checks.unit_interval("ema_decay", ema_decay)
    if eval_every is not None:
        _checks.positive_int("eval_every", eval_every)
        if eval_fn is None:
            raise ValueError(f"eval_every={eval_every} needs an eval_fn, got eval_fn=None")
    if eval_fn is not None and not callable(eval_fn):
        raise ValueError(f"eval_fn must be a callable (model, step) -> dict, got {type(eval_fn).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    _checks.choice("on_nonfinite", on_nonfinite, ("raise", "stop"))
    if checkpoint_every is not None:
        _checks.positive_int("checkpoint_every", checkpoint_every)
        if checkpoint_path is None:
            raise ValueError(f"checkpoint_every={checkpoint_every} needs a checkpoint_path, got None")


def _restore(path, n_steps, model, optimizer, ema, generator) -> _LoopState:
    """The loop state of the checkpoint at ``path`` loaded into the modules (a fresh state if there is none)."""
    ckpt = runs.load_checkpoint(path) if path is not None else None
    if ckpt is None:
        return _LoopState()
    if ckpt["step"] > n_steps:
        raise ValueError(f"n_steps={n_steps} is smaller than the {ckpt['step']} steps already in checkpoint {str(path)!r}")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None:
        if ckpt["ema"] is None:
            raise ValueError(f"checkpoint {str(path)!r} was written without EMA but ema_decay was given")
        ema.load_state_dict(ckpt["ema"])
    _set_rng_state(generator, ckpt["rng"])
    return _LoopState(**ckpt["loop"])


def _checkpoint(path, state: _LoopState, model, optimizer, ema, generator) -> None:
    if path is not None:
        runs.save_atomic(path, {
            "step": state.step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "rng": _rng_state(generator),
            "loop": dataclasses.asdict(state),
        })


def _gradient_step(model, loss_fn, optimizer, ema, params, x, generator, first: bool) -> tuple[float, float]:
    """One update: loss, backward, the loss and total gradient norm (one host sync); the optimizer
    and EMA step only when both are finite. Returns (loss, grad norm)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, generator)
    if first and not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    gnorm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else loss.new_zeros(())
    loss_value, gnorm_value = torch.stack([loss.detach().reshape(()), gnorm.to(loss.dtype)]).tolist()
    if math.isfinite(loss_value) and math.isfinite(gnorm_value):
        optimizer.step()
        if ema is not None:
            ema.update(model)
    return loss_value, gnorm_value


def _curves(evals: list[dict[str, float]]) -> dict[str, list[float]]:
    names = list(evals[0]) if evals else ["step", "seconds"]
    return {k: [e[k] for e in evals] for k in names}


def _loop(state: _LoopState, n_steps: int, step: Callable, evaluate: Callable, save: Callable,
          checkpoint_every: int | None, on_nonfinite: str, progress: bool, desc: str) -> None:
    """Steps ``state.step + 1 … n_steps`` of :func:`train`: time each update, record its loss and gradient
    norm, stop (or raise) on a non-finite one, evaluate and checkpoint on schedule, announce a long budget."""
    start, seconds_before = state.step, state.seconds
    with tqdm(total=n_steps, initial=state.step, desc=desc, disable=not progress, leave=False) as bar:
        while state.step < n_steps:
            state.step += 1
            t0 = time.perf_counter()
            loss_value, gnorm_value = step(state.step == start + 1)
            state.seconds += time.perf_counter() - t0
            state.losses.append(loss_value)
            state.grad_norms.append(gnorm_value)
            bad = "loss" if not math.isfinite(loss_value) else "grad_norm" if not math.isfinite(gnorm_value) else None
            if bad is not None:
                if on_nonfinite == "raise":
                    raise FloatingPointError(f"{bad.replace('_', ' ')} became {loss_value if bad == 'loss' else gnorm_value} at step {state.step}")
                state.diverged_at, state.nonfinite = state.step, bad
                return
            bar.update(1)
            if progress and (state.step % 25 == 0 or state.step == n_steps):
                bar.set_postfix_str(f"loss={loss_value:.4g}", refresh=False)
            if state.step == start + 50:
                announce_estimate(desc, 50, state.seconds - seconds_before, n_steps - start)
            evaluate()
            if checkpoint_every is not None and state.step % checkpoint_every == 0 and state.step < n_steps:
                save()


def announce_estimate(desc: str, done: int, seconds: float, total: int, threshold: float = 60.0) -> None:
    """Print (to stderr) the estimated training time of a budget, when it exceeds ``threshold`` seconds:
    a budget that would take hours is announced after its first iterations, not discovered at the end."""
    if done <= 0 or seconds <= 0:
        return
    estimate = seconds / done * total
    if estimate > threshold:
        hours, rest = divmod(estimate, 3600)
        text = f"{hours:.0f} h {rest / 60:.0f} min" if hours else f"{estimate / 60:.1f} min"
        print(f"{desc}: {total:,} steps at {done / seconds:.0f} steps/s need about {text} of training", file=sys.stderr, flush=True)


def train(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sampler | torch.Tensor,
    n_steps: int,
    *,
    lr: float = 1e-3,
    batch_size: int | None = 128,
    optimizer: torch.optim.Optimizer | None = None,
    ema_decay: float | None = None,
    eval_every: int | None = None,
    eval_fn: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    generator: torch.Generator | None = None,
    on_nonfinite: str = "raise",
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    desc: str = "train",
) -> runs.Outcome:
    """Minimise ``loss_fn`` over ``n_steps`` gradient steps; the loop of every toy chapter.

    Step s = 1 … n_steps: draw a batch x (``data(batch_size, generator)`` for a sampler — a fresh
    batch each step, as the authors — or rows of the fixed tensor ``data``: all of them when
    ``batch_size`` is None or ≥ len(data), else ``batch_size`` rows without repeats), compute
    ``loss = loss_fn(model, x, generator)``, back-propagate, check that the loss and the total
    gradient norm are finite, take an optimizer step (Adam(lr) unless ``optimizer`` is given) and
    update the EMA (θ̄ ← d·θ̄ + (1 − d)·θ) if ``ema_decay`` is set.

    Evaluation: ``eval_fn(eval_model, step)`` runs at step 0 and every step divisible by
    ``eval_every``, and at the final step (only there if ``eval_every`` is None); ``eval_model`` is
    the EMA model when EMA is on. Its time and checkpointing are excluded from the training seconds.

    Non-finite loss or gradient norm at step s: ``on_nonfinite="raise"`` raises FloatingPointError
    ("loss became nan at step s"); ``"stop"`` skips that update, stops, and records ``diverged_at = s``
    and ``nonfinite`` ("loss" or "grad_norm").

    Checkpointing (:func:`edrepro.book.runs.save_atomic`): with ``checkpoint_path`` the modules, random
    state and history are saved every ``checkpoint_every`` steps (if given) and at the end; if the
    file exists when ``train`` starts the run resumes from it, bitwise identically to an
    uninterrupted run (a finished or diverged run returns at once).

    Returns a :class:`edrepro.book.runs.Outcome`: ``curves`` (``step``, ``seconds`` and each metric),
    ``series`` (``loss``, ``grad_norm`` per step) and ``models`` (``model``, and ``ema``).
    """
    _check_train_args(model, loss_fn, data, n_steps, batch_size, ema_decay, eval_every, eval_fn, generator, on_nonfinite, checkpoint_every, checkpoint_path)
    retain_freed_memory()
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=_checks.positive("lr", lr))
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    next_batch = _batcher(data, batch_size, _device_of(model))
    ema = EMA(model, ema_decay) if ema_decay is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    state = _restore(checkpoint_path, n_steps, model, optimizer, ema, generator)
    resumed_from = state.step

    def evaluate() -> None:
        if eval_fn is not None and (state.step == n_steps or (eval_every is not None and state.step % eval_every == 0)):
            metrics = eval_fn(ema.model if ema is not None else model, state.step)
            if not isinstance(metrics, Mapping):
                raise ValueError(f"eval_fn must return a dict of metrics, got {type(metrics).__name__}")
            state.evals.append({"step": state.step, "seconds": state.seconds, **{k: float(v) for k, v in metrics.items()}})

    def step(first: bool) -> tuple[float, float]:
        x = next_batch(generator)
        if first:
            _checks.batch("data batch", x, finite=False)
        return _gradient_step(model, loss_fn, optimizer, ema, params, x, generator, first)

    def save() -> None:
        _checkpoint(checkpoint_path, state, model, optimizer, ema, generator)

    if state.diverged_at is None and state.step < n_steps:
        if state.step == 0:
            evaluate()
        _loop(state, n_steps, step, evaluate, save, checkpoint_every, on_nonfinite, progress, desc)
        save()
    models = {"model": model, **({"ema": ema.model} if ema is not None else {})}
    return runs.Outcome(
        curves=_curves(state.evals), series={"loss": state.losses, "grad_norm": state.grad_norms},
        steps=len(state.losses), seconds=state.seconds, models=models,
        diverged_at=state.diverged_at, nonfinite=state.nonfinite, resumed_from=resumed_from,
    )
