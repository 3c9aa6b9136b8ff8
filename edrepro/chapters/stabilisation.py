r"""Figure 2 (w-stabilisation): a tiny energy trained with each w, and what theory predicts.

The experiment: data from N(0, 1), whose energy is x²/2 up to a constant; the 13-parameter
network :func:`edrepro.nets.tiny_silu_net`; the stabilised energy-discrepancy loss
:func:`edrepro.losses.energy_discrepancy` with one value of w per run.

- :func:`train_for_ws` — one training run per w, all from the same initial network and the same
  stream of perturbations, so that the runs differ only in w.
- :func:`learned_energy` — a trained energy on a grid, shifted to minimum 0, and its distance to x²/2.
- :func:`quadratic_study` — the same loss in the one-parameter family E_a(x) = a·x²/2, whose
  optimum a*(w) is computed to any precision: it predicts how steep the learned energy is for
  each w (a* = 1 for w = 1) and shows that for w = 0 the loss is unbounded below.
- :func:`page_claims` — the chapter's claims (:func:`optimum_claim`, :func:`steepness_claim`,
  :func:`best_w_claim`, :func:`worst_w_claim`), each a :class:`edrepro.book.claims.Claim` that the tests
  make fail on a counterfactual input (data of another variance, runs that ignore w, swapped w).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .. import _checks, losses, nets
from ..book import runs, train

_DTYPE = torch.float64


def train_for_ws(
    data: torch.Tensor,
    ws: Sequence[float],
    t: float,
    m_particles: int,
    lr: float,
    n_steps: int,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[float, runs.Outcome]:
    """Train :func:`~edrepro.nets.tiny_silu_net` on ``data`` with the stabilised ED loss, once per w in ``ws``.

    Every run reseeds with ``seed + 1`` (a stream apart from one seeded with ``seed``, e.g. the
    data's), so all runs start from the same network and draw the same perturbations; each uses
    Adam(``lr``) for ``n_steps`` full-batch steps. A non-finite loss stops a run and is recorded
    in its outcome (``diverged_at``, ``nonfinite``) instead of raising. Returns {w: outcome}.
    """
    data = _checks.batch("data", data, dim=1)
    if isinstance(ws, (str, bytes)) or not isinstance(ws, Sequence) or len(ws) == 0:
        raise ValueError(f"ws must be a non-empty sequence of constants w >= 0, got {ws!r}")
    ws = [_checks.non_negative(f"ws[{i}]", w) for i, w in enumerate(ws)]
    if len(set(ws)) != len(ws):
        raise ValueError(f"ws must not repeat a value, got {ws!r}")
    t = _checks.positive("t", t)
    m = _checks.positive_int("m_particles", m_particles)
    n_steps = _checks.positive_int("n_steps", n_steps)
    device = train.resolve_device(device)
    outcomes = {}
    for w in ws:
        generator = train.seed_everything(seed + 1)
        model = nets.tiny_silu_net().to(device)

        def ed_loss(model, x, gen, w=w):
            return losses.energy_discrepancy(model, x, t=t, m_particles=m, w=w, generator=gen)

        outcomes[w] = train.train(
            model, train.with_device_noise(ed_loss, device), data, n_steps, lr=lr, batch_size=None,
            generator=generator, on_nonfinite="stop", progress=progress, desc=f"w = {w:g}",
        )
    return outcomes


@dataclass(frozen=True)
class LearnedEnergy:
    """A trained 1-D energy on a grid, compared with the true energy x²/2.

    ``xs``: the grid; ``energy``: E(xs) − min E(xs) (energies are defined up to a constant);
    ``rmse``: root-mean-square of (shifted E − x²/2) over the grid points with |x| ≤ ``inner``;
    ``at_inner``: the shifted energy at −inner and +inner (the true value is inner²/2).
    """

    xs: torch.Tensor
    energy: torch.Tensor
    rmse: float
    at_inner: tuple[float, float]
    inner: float

    @property
    def mean_at_inner(self) -> float:
        """Mean of the shifted energy at ±inner."""
        return 0.5 * (self.at_inner[0] + self.at_inner[1])

    @property
    def argmin(self) -> float:
        """Where on the grid the energy is smallest."""
        return float(self.xs[int(torch.argmin(self.energy))])


def learned_energy(
    model: torch.nn.Module, lo: float = -3.0, hi: float = 3.0, n: int = 601, inner: float = 2.0
) -> LearnedEnergy:
    """Evaluate ``model`` (an energy of 1-D points) on ``n`` points of [lo, hi]; see :class:`LearnedEnergy`."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n = _checks.positive_int("n", n, minimum=2)
    inner = _checks.positive("inner", inner)
    if not lo < -inner and inner < hi:
        raise ValueError(f"the grid [lo, hi] must contain [-inner, inner] inside it, got lo={lo!r}, hi={hi!r}, inner={inner!r}")
    device = next(model.parameters()).device
    xs = torch.linspace(lo, hi, n)
    points = torch.cat([xs, torch.tensor([-inner, inner])]).unsqueeze(1).to(device)
    with torch.no_grad():
        e = model(points).reshape(-1).double().cpu()
    if not torch.isfinite(e).all():
        raise ValueError("the model's energy is not finite on the grid")
    e = e - e[:n].min()
    window = xs.abs() <= inner
    rmse = float(((e[:n] - 0.5 * xs.double() ** 2)[window] ** 2).mean().sqrt())
    return LearnedEnergy(xs=xs, energy=e[:n], rmse=rmse, at_inner=(float(e[n]), float(e[n + 1])), inner=inner)


@dataclass(frozen=True)
class QuadraticStudy:
    r"""The stabilised ED loss in the family E_a(x) = a·x²/2, a > 0, for one draw of data and perturbations.

    ``d[i, j]`` = E_1(xᵢ) − E_1(x'ᵢⱼ) = (xᵢ² − x'ᵢⱼ²)/2, so E_a(xᵢ) − E_a(x'ᵢⱼ) = a·d[i, j] and

        L(a) = (1/N) Σᵢ log( w/M + (1/M) Σⱼ exp(a·d[i, j]) ),

    a log-sum-exp of functions linear in a: convex in a. With the data drawn from N(0, 1) the
    true energy is a = 1.
    """

    d: torch.Tensor

    @property
    def m_particles(self) -> int:
        return self.d.shape[1]

    def _logits(self, a: torch.Tensor, w: float) -> torch.Tensor:
        logits = a.reshape(-1, 1, 1) * self.d  # (A, N, M)
        if w > 0:
            logits = torch.cat([logits, logits.new_full((*logits.shape[:2], 1), math.log(w))], dim=2)
        return logits

    def loss(self, a: torch.Tensor | float, w: float) -> torch.Tensor:
        """L(a) at each a (a tensor of values > 0, or one float); shape of ``a``, float64."""
        a, w = self._a(a), _checks.non_negative("w", w)
        out = torch.logsumexp(self._logits(a.reshape(-1), w), dim=2).mean(dim=1) - math.log(self.m_particles)
        return out.reshape(a.shape)

    def _point_slopes(self, a: torch.Tensor, w: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-point first and second derivatives of the terms of L at each a: two (A, N) tensors.

        With softmax weights πᵢⱼ ∝ exp(a·d[i, j]) over the M negatives and w (whose d is 0), the
        first derivative is Σⱼ πᵢⱼ d[i, j] and the second the variance Σⱼ πᵢⱼ d[i, j]² − (Σⱼ πᵢⱼ d[i, j])².
        """
        weights = torch.softmax(self._logits(a.reshape(-1), w), dim=2)[:, :, : self.m_particles]
        first = (weights * self.d).sum(dim=2)
        return first, (weights * self.d**2).sum(dim=2) - first**2

    def slope(self, a: torch.Tensor | float, w: float) -> torch.Tensor:
        """L'(a) = (1/N) Σᵢ Σⱼ d[i, j]·exp(a·d[i, j]) / (w + Σₖ exp(a·d[i, k])) at each a."""
        a, w = self._a(a), _checks.non_negative("w", w)
        return self._point_slopes(a, w)[0].mean(dim=1).reshape(a.shape)

    def optimum_stderr(self, w: float, a: float | None = None) -> float:
        """Monte Carlo standard error of :meth:`optimum` (at ``a``, by default the optimum itself).

        a* minimises a mean of N independent terms, so its standard error is the sandwich
        sd(ℓᵢ'(a*)) / (√N · L''(a*)); ∞ when the optimum is infinite.
        """
        w = _checks.non_negative("w", w)
        a = self.optimum(w) if a is None else a
        if math.isinf(a):
            return math.inf
        first, second = self._point_slopes(self._a(a), w)
        return float(first.std() / math.sqrt(first.shape[1]) / second.mean())

    def asymptotic_slope(self, w: float) -> float:
        """lim L(a)/a as a → ∞: (1/N) Σᵢ maxⱼ d[i, j], with each max floored at 0 when w > 0.

        Negative means the loss decreases without bound as the energy steepens: the estimate
        rewards a runaway. With w > 0 it is ≥ 0, and L ≥ log(w/M) for every a.
        """
        w = _checks.non_negative("w", w)
        top = self.d.max(dim=1).values
        return float((top.clamp(min=0.0) if w > 0 else top).mean())

    def optimum(self, w: float, tol: float = 1e-10) -> float:
        """The minimiser a*(w) of L over a > 0 (∞ when the loss is unbounded below).

        L is convex, so a* is the root of L': bracketed by doubling from a = 1, then found by
        Newton steps on L' that fall back to bisection when a step leaves the bracket.
        """
        w = _checks.non_negative("w", w)
        tol = _checks.positive("tol", tol)
        if w == 0 and self.asymptotic_slope(w) < 0:
            return math.inf
        lo, hi = 0.0, 1.0
        while float(self.slope(hi, w)) < 0:
            lo, hi = hi, 2 * hi
            if hi > 1e6:
                return math.inf
        a = hi
        for _ in range(200):
            first, second = (v.mean() for v in self._point_slopes(self._a(a), w))
            first, second = float(first), float(second)
            if first < 0:
                lo = a
            else:
                hi = a
            if second > 0 and abs(first / second) <= tol * max(1.0, a):
                return a - first / second
            step = a - first / second if second > 0 else math.nan
            a = step if lo < step < hi else 0.5 * (lo + hi)
            if hi - lo <= tol * max(1.0, hi):
                break
        return a

    @staticmethod
    def _a(a: torch.Tensor | float) -> torch.Tensor:
        a = torch.as_tensor(a, dtype=_DTYPE)
        if not torch.isfinite(a).all() or not (a > 0).all():
            raise ValueError(f"a must hold finite values > 0, got {a!r}")
        return a


def quadratic_study(
    n: int, t: float, m_particles: int, generator: torch.Generator | None = None
) -> QuadraticStudy:
    """Draw x ~ N(0, 1) (n points), then y = x + √t·ξ and x'ⱼ = y + √t·ξ'ⱼ in the order of
    :func:`edrepro.losses.energy_discrepancy`, in float64; see :class:`QuadraticStudy`."""
    n = _checks.positive_int("n", n)
    t = _checks.positive("t", t)
    m = _checks.positive_int("m_particles", m_particles)
    s = math.sqrt(t)
    x = torch.randn((n, 1), generator=generator, dtype=_DTYPE)
    y = x + s * torch.randn((n, 1), generator=generator, dtype=_DTYPE)
    neg = y + s * torch.randn((n, m, 1), generator=generator, dtype=_DTYPE)[:, :, 0]
    return QuadraticStudy(d=0.5 * (x**2 - neg**2))


# ------------------------------------------------------------------------------------------
# The claims of the w-stabilisation chapter (notebooks/w_stabilisation.md)
# ------------------------------------------------------------------------------------------


def _claim(statement: str, measured: str, holds: bool):
    from ..book.claims import Claim

    return Claim(statement, measured, bool(holds))


def _energies(energies: Mapping[float, LearnedEnergy]) -> dict[float, LearnedEnergy]:
    if not isinstance(energies, Mapping) or not energies or not all(isinstance(e, LearnedEnergy) for e in energies.values()):
        raise ValueError("energies must map each w to its LearnedEnergy (stabilisation.learned_energy)")
    return {_checks.non_negative("w", w): e for w, e in energies.items()}


def optimum_claim(theory: QuadraticStudy, n_se: float = 4.0):
    """Claim: in the one-parameter family E_a = a·x²/2 the stabilised loss with w = 1 has its optimum at
    the true energy, a* = 1, within ``n_se`` Monte Carlo standard errors (:meth:`QuadraticStudy.optimum_stderr`).
    ``theory`` must hold draws of data from N(0, 1); data of another variance (truth a ≠ 1) make it fail."""
    n_se = _checks.positive("n_se", n_se)
    a = theory.optimum(1.0)
    se = theory.optimum_stderr(1.0, a)
    z = (a - 1.0) / se if math.isfinite(se) and se > 0 else math.inf
    return _claim(f"the one-parameter optimum for w = 1 is the true energy, a* = 1, within {n_se:g} Monte Carlo standard errors",
                  f"{a:.4f} ± {se:.4f} ({z:+.2f} s.e.)", abs(z) <= n_se)


def steepness_claim(energies: Mapping[float, LearnedEnergy], optimum: Mapping[float, float] | None = None):
    """Claim: over the stabilised runs (w > 0) the learned energy at ±inner (mean of E(−inner) and
    E(inner) after the shift) decreases strictly as w grows, as the one-parameter optimum 2a*(w) does
    (``optimum``: {w: a*(w)}, shown beside). w = 0 is left out: its run may have run away, and then its
    energy at ±inner is large whatever w does. Fails for runs that do not depend on w, or with the w swapped."""
    energies = _energies(energies)
    ws = sorted(w for w in energies if w > 0)
    if len(ws) < 2:
        raise ValueError(f"steepness_claim needs at least two runs with w > 0, got w = {sorted(energies)}")
    mid = [energies[w].mean_at_inner for w in ws]
    inner = energies[ws[0]].inner
    measured = " > ".join(f"{v:.3g}" for v in mid)
    if optimum is not None:
        measured += " (predicted " + " > ".join(f"{2 * optimum[w]:.3g}" for w in ws) + ")"
    return _claim(f"the energy at ±{inner:g} decreases as w grows over the stabilised w {{{', '.join(f'{w:g}' for w in ws)}}}, as 2a*(w) does",
                  measured, all(a > b for a, b in zip(mid, mid[1:])))


def _rmse_text(energies: Mapping[float, LearnedEnergy]) -> str:
    return ", ".join(f"w = {w:g}: {e.rmse:.3g}" for w, e in energies.items())


def best_w_claim(energies: Mapping[float, LearnedEnergy], w_best: float = 1.0):
    """Claim: the run with w = ``w_best`` recovers x²/2 best: its RMSE on [−inner, inner] is strictly
    the smallest of all runs. Fails with the runs' w swapped, or for runs that do not depend on w (a tie)."""
    energies = _energies(energies)
    if w_best not in energies or len(energies) < 2:
        raise ValueError(f"energies must hold w = {w_best:g} and at least one other w, got {sorted(energies)}")
    mine = energies[w_best].rmse
    return _claim(f"w = {w_best:g} recovers x^2/2 best: the smallest RMSE on [-{energies[w_best].inner:g}, {energies[w_best].inner:g}] of all w",
                  _rmse_text(energies), all(mine < e.rmse for w, e in energies.items() if w != w_best))


def worst_w_claim(energies: Mapping[float, LearnedEnergy]):
    """Claim: the unstabilised run (w = 0) fails worst: its RMSE on [−inner, inner] is strictly the
    largest of all runs. Fails with the runs' w swapped, or for runs that do not depend on w (a tie)."""
    energies = _energies(energies)
    if 0.0 not in energies or len(energies) < 2:
        raise ValueError(f"energies must hold w = 0 and at least one other w, got {sorted(energies)}")
    mine = energies[0.0].rmse
    return _claim(f"w = 0 fails worst: the largest RMSE on [-{energies[0.0].inner:g}, {energies[0.0].inner:g}] of all w",
                  _rmse_text(energies), all(mine > e.rmse for w, e in energies.items() if w != 0.0))


def page_claims(theory: QuadraticStudy, energies: Mapping[float, LearnedEnergy], optimum: Mapping[float, float] | None = None,
                n_se: float = 4.0) -> list:
    """The page's claims: :func:`optimum_claim`; and, where the runs allow them, :func:`steepness_claim`
    (two or more w > 0), :func:`best_w_claim` (w = 1 and another w) and :func:`worst_w_claim` (w = 0 and another w)."""
    energies = _energies(energies)
    claims = [optimum_claim(theory, n_se)]
    if sum(w > 0 for w in energies) >= 2:
        claims.append(steepness_claim(energies, optimum))
    if 1.0 in energies and len(energies) > 1:
        claims.append(best_w_claim(energies))
    if 0.0 in energies and len(energies) > 1:
        claims.append(worst_w_claim(energies))
    return claims
