"""ISO 22400-2 KPIs from time elements and quantities.

Time model (each level splits the one above it)::

    POT  = PBT + planned downtime
    PBT  = AUBT + ADOT (+ time with no state data)
    AUBT = AUPT + ADET
    AUPT = APT + ASUT

Edge rules: PBT = 0 gives availability 1 (the rule ISO 22400 tools follow, e.g. PTC
ThingWorx); every other division by zero gives ``None``, never NaN and never an exception.
Effectiveness above 1 means the ideal cycle time is too long: it is reported as computed, not
clamped, and flagged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Final

from shopfloor.core.errors import BadInput

__all__ = [
    "FLAG_EFFECTIVENESS_ABOVE_1",
    "FLAG_GOOD_AND_SCRAP_EXCEED_PRODUCED",
    "FLAG_NO_STATE_DATA",
    "FLAG_REWORK_EXCEEDS_GOOD",
    "KpiInputs",
    "Kpis",
    "ProductCount",
    "Quantities",
    "TimeElements",
    "compute_kpis",
]

NS_PER_S: Final = 1_000_000_000
FLAG_EFFECTIVENESS_ABOVE_1: Final = "effectiveness_above_1"
FLAG_GOOD_AND_SCRAP_EXCEED_PRODUCED: Final = "good_and_scrap_exceed_produced"
FLAG_REWORK_EXCEEDS_GOOD: Final = "rework_exceeds_good"
FLAG_NO_STATE_DATA: Final = "no_state_data"


@dataclass(frozen=True)
class TimeElements:
    """Durations in integer nanoseconds; the derived elements are properties."""

    pot_ns: int = 0
    planned_downtime_ns: int = 0
    apt_ns: int = 0
    asut_ns: int = 0
    adet_ns: int = 0
    adot_ns: int = 0
    unknown_ns: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise BadInput(f"{f.name} cannot be negative", f.name)
        if self.planned_downtime_ns > self.pot_ns:
            raise BadInput("planned downtime exceeds planned operation time", "planned_downtime_ns")

    @property
    def pbt_ns(self) -> int:
        return self.pot_ns - self.planned_downtime_ns

    @property
    def aupt_ns(self) -> int:
        return self.apt_ns + self.asut_ns

    @property
    def aubt_ns(self) -> int:
        return self.aupt_ns + self.adet_ns

    def __add__(self, other: TimeElements) -> TimeElements:
        return TimeElements(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class ProductCount:
    """Quantities of one product and its ideal cycle time (PRU, seconds per unit)."""

    product: str
    ideal_cycle_s: float
    produced: float = 0.0
    good: float = 0.0
    scrap: float = 0.0
    rework: float = 0.0


@dataclass(frozen=True)
class Quantities:
    """PQ, GQ, SQ, RQ and the ideal time for what was produced, sum(PRU_i * PQ_i) in seconds.

    Counting convention: ``good`` counts every part that ended good, including parts that
    passed after rework; ``rework`` counts the parts that went through rework. So the parts
    good at the first pass are ``good - rework`` and first-pass yield is (GQ - RQ) / PQ.
    """

    produced: float = 0.0
    good: float = 0.0
    scrap: float = 0.0
    rework: float = 0.0
    ideal_time_s: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) >= 0:  # also rejects NaN
                raise BadInput(f"{f.name} must be a number >= 0", f.name)

    @classmethod
    def from_products(cls, products: Iterable[ProductCount]) -> Quantities:
        total = cls()
        for p in products:
            if not p.ideal_cycle_s > 0:
                raise BadInput(
                    f"ideal cycle time of {p.product!r} must be > 0 seconds", "ideal_cycle_s"
                )
            total = total + cls(p.produced, p.good, p.scrap, p.rework, p.ideal_cycle_s * p.produced)
        return total

    @property
    def first_pass_good(self) -> float:
        # Never below zero, even when the counts disagree (flagged in compute_kpis).
        return max(self.good - self.rework, 0.0)

    def __add__(self, other: Quantities) -> Quantities:
        return Quantities(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class KpiInputs:
    """Everything the KPIs need; all of it sums, so roll-ups add inputs (see rollup.py).

    ``failures`` is FE; ``tbf_ns`` and ``ttr_ns`` are the sums of the times between failures
    (operating time) and of the times to repair within the period.
    """

    times: TimeElements = TimeElements()
    quantities: Quantities = Quantities()
    failures: int = 0
    tbf_ns: int = 0
    ttr_ns: int = 0

    def __post_init__(self) -> None:
        for name in ("failures", "tbf_ns", "ttr_ns"):
            if getattr(self, name) < 0:
                raise BadInput(f"{name} cannot be negative", name)

    def __add__(self, other: KpiInputs) -> KpiInputs:
        return KpiInputs(
            self.times + other.times,
            self.quantities + other.quantities,
            self.failures + other.failures,
            self.tbf_ns + other.tbf_ns,
            self.ttr_ns + other.ttr_ns,
        )


@dataclass(frozen=True)
class Kpis:
    """Ratios as fractions (0.85, not 85 %); MTBF and MTTR in seconds; None: undefined."""

    availability: float | None
    effectiveness: float | None
    quality_ratio: float | None
    oee: float | None
    nee: float | None
    technical_efficiency: float | None
    utilisation_efficiency: float | None
    allocation_efficiency: float | None
    setup_rate: float | None
    scrap_ratio: float | None
    rework_ratio: float | None
    first_pass_yield: float | None
    mtbf_s: float | None
    mttr_s: float | None
    flags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, float | list[str] | None]:
        out: dict[str, float | list[str] | None] = asdict(self)
        out["flags"] = list(self.flags)
        return out


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _product(*factors: float | None) -> float | None:
    result = 1.0
    for f in factors:
        if f is None:
            return None
        result *= f
    return result


def compute_kpis(inputs: KpiInputs) -> Kpis:
    """All KPIs of one period (shift, day, range) for one unit or a rolled-up group."""
    t, q = inputs.times, inputs.quantities
    pbt, apt = t.pbt_ns, t.apt_ns
    availability = 1.0 if pbt == 0 else apt / pbt
    effectiveness = _ratio(q.ideal_time_s * NS_PER_S, apt)
    quality = _ratio(q.good, q.produced)
    flags: list[str] = []
    if effectiveness is not None and effectiveness > 1:
        flags.append(FLAG_EFFECTIVENESS_ABOVE_1)
    if q.good + q.scrap > q.produced:
        flags.append(FLAG_GOOD_AND_SCRAP_EXCEED_PRODUCED)
    if q.rework > q.good:
        flags.append(FLAG_REWORK_EXCEEDS_GOOD)
    if t.unknown_ns:
        flags.append(FLAG_NO_STATE_DATA)
    return Kpis(
        availability=availability,
        effectiveness=effectiveness,
        quality_ratio=quality,
        oee=_product(availability, effectiveness, quality),
        nee=_product(_ratio(t.aupt_ns, pbt), effectiveness, quality),
        technical_efficiency=_ratio(apt, apt + t.adet_ns),
        utilisation_efficiency=_ratio(apt, t.aubt_ns),
        allocation_efficiency=_ratio(t.aubt_ns, pbt),
        setup_rate=_ratio(t.asut_ns, t.aupt_ns),
        scrap_ratio=_ratio(q.scrap, q.produced),
        rework_ratio=_ratio(q.rework, q.produced),
        first_pass_yield=_ratio(q.first_pass_good, q.produced),
        mtbf_s=_ratio(inputs.tbf_ns / NS_PER_S, inputs.failures),
        mttr_s=_ratio(inputs.ttr_ns / NS_PER_S, inputs.failures),
        flags=tuple(flags),
    )
