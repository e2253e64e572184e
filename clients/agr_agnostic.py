"""What the AGR-agnostic attacks MinMax and MinSum share: the perturbation and the search for γ.

Paper: Shejwalkar and Houmansadr, 2021, "Manipulating the Byzantine: Optimizing Model Poisoning
Attacks and Defenses for Federated Learning" (NDSS), §IV (AGR-agnostic attacks, eqs. 2-3) and
Algorithm 1. With ∇_1 .. ∇_r the reference updates (the round's benign updates when the
attackers are omniscient; their own honest updates when colluding, the paper's "unknown benign
gradients" variant):

1. μ = (1/r) Σ_i ∇_i and a perturbation direction ∇p (``minmax-perturbation``): the inverse unit
   vector −μ/‖μ‖ (``unit-vector``), the inverse sign −sign(μ) (``sign``) or the inverse standard
   deviation −σ (``std``, σ the coordinate-wise standard deviation of the ∇_i with r − 1 in the
   denominator, as in the authors' code; zero for a single update).
2. The malicious update m(γ) = μ + γ ∇p, with γ the largest value for which the attack's
   constraint holds (MinMax, :mod:`clients.attacks.minmax`: the largest distance of m to a ∇_i is at
   most the largest distance between two ∇_i; MinSum, :mod:`clients.attacks.minsum`: the sum of
   squared distances of m to the ∇_i is at most the largest such sum of one ∇_i).
3. Every attacker of the round sends the same m(γ); γ is recorded as ``gamma``.

**The search for γ.** Algorithm 1 (and the authors' code) starts at γ_init = 10 and moves by
steps halved every iteration until they are below τ = 1e-5; the steps sum to γ_init, so it can
never return more than 2γ_init = 20 however far the constraint holds. Blades' maintainer (its
issue 73) called the authors' optimisation of γ problematic after a user found ALIE stronger than
MinMax, contrary to the paper; Blades' own rewrite returns the last midpoint it tried, which may
violate the constraint, and searches [0, 5] only. Here the search rests on what makes it exact:
both constraints are convex in γ and hold at γ = 0 (‖μ − ∇_i‖ ≤ mean_j ‖∇_j − ∇_i‖, and the mean
minimises the sum of squared distances), so the γ ≥ 0 that satisfy one form an interval [0, γ*].
:func:`largest_feasible` keeps a bracket [low, high] with the constraint holding at low and failing
at high: high starts at γ_init and doubles while the constraint holds (γ_init is a starting point,
not a cap), then the bracket is bisected until high − low ≤ τ, and low is returned. So the
constraint holds at the returned γ and fails at γ + τ. A zero direction (μ = 0 for the unit
vector, identical updates for the standard deviation) cannot move m: γ = 0.

The squared distances ‖m(γ) − ∇_i‖² = ‖μ − ∇_i‖² + 2γ⟨μ − ∇_i, ∇p⟩ + γ²‖∇p‖² are expanded once
(O(r·d)), so each step of the search costs O(r); everything is float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from clients.adversary import AdversaryView, Forged
from fl_poison.core.settings import Setting, choice

UNIT_VECTOR, SIGN, STD = "unit-vector", "sign", "std"
GAMMA_INIT = 10.0  # the paper's γ_init (Algorithm 1 and the authors' code)
GAMMA_TOLERANCE = 1e-5  # the paper's τ
# Doubling γ from γ_init this many times reaches ~1e300: a constraint still holding there means a
# direction whose squared norm underflows, which the search refuses rather than loop on.
MAX_DOUBLINGS = 1000

MINMAX_PERTURBATION = Setting(
    "minmax-perturbation",
    UNIT_VECTOR,
    "Perturbation of minmax and minsum: unit-vector (-mean/|mean|), sign (-sign(mean)) or std (-coordinate std).",
    choice(UNIT_VECTOR, SIGN, STD),
)


class Constraint(Protocol):
    """What MinMax and MinSum differ by: how the malicious update's distances are bounded."""

    def limit(self, pairwise: torch.Tensor) -> float:
        """The bound, from the ``(r, r)`` squared distances between the reference updates.

        Parameters
        ----------
        pairwise : torch.Tensor
            Squared Euclidean distances between the reference updates (float64, zero diagonal).
        """
        ...

    def measure(self, squared: torch.Tensor) -> float:
        """What must stay within :meth:`limit`, from the ``(r,)`` squared distances of m to the references.

        Parameters
        ----------
        squared : torch.Tensor
            ``‖m − ∇_i‖²`` for every reference update ``∇_i`` (float64).
        """
        ...


def perturbation(reference: torch.Tensor, kind: str) -> torch.Tensor:
    """The perturbation direction ∇p of the reference updates (float64, zero when undefined).

    Parameters
    ----------
    reference : torch.Tensor
        ``(r, d)`` reference updates, r ≥ 1.
    kind : str
        ``unit-vector`` (−μ/‖μ‖), ``sign`` (−sign μ) or ``std`` (−σ, r − 1 in the denominator).
    """
    rows = reference.to(torch.float64)
    mean = rows.mean(dim=0)
    if kind == UNIT_VECTOR:
        norm = torch.linalg.vector_norm(mean)
        return -mean / norm if norm > 0 else torch.zeros_like(mean)
    if kind == SIGN:
        return -torch.sign(mean)
    if kind == STD:
        if len(rows) < 2:
            return torch.zeros_like(mean)
        return -rows.std(dim=0, correction=1)
    raise ValueError(f"perturbation {kind!r}; allowed: {UNIT_VECTOR}, {SIGN}, {STD}")


def largest_feasible(feasible: Callable[[float], bool], initial: float, tolerance: float) -> float:
    """The largest γ ≥ 0 at which ``feasible`` holds, within ``tolerance`` (see the module docstring).

    ``feasible`` must hold at 0 and on an interval [0, γ*] only. The result γ satisfies
    ``feasible(γ)`` and γ* < γ + tolerance.

    Parameters
    ----------
    feasible : Callable[[float], bool]
        Whether the constraint holds at γ.
    initial : float
        Where the bracket's upper end starts (γ_init > 0); it doubles while the constraint holds.
    tolerance : float
        The bracket width at which the bisection stops (τ > 0).

    Raises
    ------
    ArithmeticError
        When the constraint still holds after :data:`MAX_DOUBLINGS` doublings (an unbounded one).
    """
    low, high = 0.0, initial
    doublings = 0
    while feasible(high):
        low, high = high, 2.0 * high
        doublings += 1
        if doublings > MAX_DOUBLINGS or not math.isfinite(high):
            raise ArithmeticError(f"the constraint still holds at gamma = {low:g}: it is not bounded")
    while high - low > tolerance:
        middle = (low + high) / 2.0
        if feasible(middle):
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class Geometry:
    """The reference updates as the search needs them.

    ``‖μ + γ∇p − ∇_i‖² = offsets_i + 2γ cross_i + γ² length`` for every reference update ∇_i.

    Parameters
    ----------
    mean : torch.Tensor
        μ, ``(d,)``.
    direction : torch.Tensor
        ∇p, ``(d,)``.
    pairwise : torch.Tensor
        ``(r, r)`` squared distances between the reference updates.
    offsets : torch.Tensor
        ``(r,)``: ‖μ − ∇_i‖².
    cross : torch.Tensor
        ``(r,)``: ⟨μ − ∇_i, ∇p⟩.
    length : float
        ‖∇p‖².
    """

    mean: torch.Tensor
    direction: torch.Tensor
    pairwise: torch.Tensor
    offsets: torch.Tensor
    cross: torch.Tensor
    length: float

    @classmethod
    def of(cls, reference: torch.Tensor, kind: str) -> Geometry:
        """The geometry of ``reference`` (``(r, d)``, r ≥ 1) with the perturbation ``kind``.

        Parameters
        ----------
        reference : torch.Tensor
            The reference updates.
        kind : str
            The perturbation (see :func:`perturbation`).
        """
        rows = reference.to(torch.float64)
        mean = rows.mean(dim=0)
        direction = perturbation(rows, kind)
        centred = mean - rows  # μ − ∇_i; the Gram matrix of the centred rows gives the distances
        gram = centred @ centred.T
        offsets = gram.diagonal().clone()
        pairwise = (offsets[:, None] + offsets[None, :] - 2.0 * gram).clamp_min(0.0)
        pairwise.fill_diagonal_(0.0)
        return cls(
            mean=mean,
            direction=direction,
            pairwise=pairwise,
            offsets=offsets,
            cross=centred @ direction,
            length=float(direction @ direction),
        )

    def squared_distances(self, gamma: float) -> torch.Tensor:
        """``‖μ + γ∇p − ∇_i‖²`` for every reference update (clamped at 0 against rounding).

        Parameters
        ----------
        gamma : float
            The scale of the perturbation.
        """
        return (self.offsets + 2.0 * gamma * self.cross + gamma * gamma * self.length).clamp_min(0.0)


def optimal_gamma(geometry: Geometry, constraint: Constraint, initial: float, tolerance: float) -> float:
    """The largest γ (within ``tolerance``) at which ``constraint`` holds; 0 for a zero direction.

    Parameters
    ----------
    geometry : Geometry
        The reference updates, their mean and the perturbation.
    constraint : Constraint
        MinMax's or MinSum's.
    initial : float
        γ_init.
    tolerance : float
        τ.
    """
    if geometry.length == 0.0:
        return 0.0
    limit = constraint.limit(geometry.pairwise)
    return largest_feasible(
        lambda gamma: constraint.measure(geometry.squared_distances(gamma)) <= limit, initial, tolerance
    )


@dataclass(frozen=True)
class AgrAgnosticAttack:
    """MinMax or MinSum: every attacker sends μ + γ∇p with the largest γ its constraint allows.

    Parameters
    ----------
    constraint : Constraint
        MinMax's or MinSum's.
    kind : str
        The perturbation (``minmax-perturbation``).
    initial : float
        γ_init of the search (:data:`GAMMA_INIT`).
    tolerance : float
        τ of the search (:data:`GAMMA_TOLERANCE`).
    """

    constraint: Constraint
    kind: str
    initial: float = GAMMA_INIT
    tolerance: float = GAMMA_TOLERANCE

    def forge(self, view: AdversaryView) -> Forged:
        """The same malicious update for every attacker, and ``gamma`` (see :class:`~clients.adversary.Adversary`).

        Without any reference update (an omniscient round without benign clients) the attackers
        send their honest updates and γ is recorded as 0.
        """
        reference = view.reference_updates()
        if len(reference) == 0:
            return Forged(view.own.to(torch.float64).clone(), {"gamma": 0.0})
        geometry = Geometry.of(reference, self.kind)
        gamma = optimal_gamma(geometry, self.constraint, self.initial, self.tolerance)
        malicious = geometry.mean + gamma * geometry.direction
        return Forged(malicious.unsqueeze(0).repeat(view.num_attackers, 1), {"gamma": gamma})
