"""The simulated factory behind ``shopfloor demo``: behaviour of every machine, vectorised.

Each machine carries a little state (PackML-flavoured state code, product and setpoints,
counters, first-order thermal masses, a bearing-fault severity). :meth:`FactorySimulator.step`
advances all machines at once with numpy and renders one :class:`Frame` per machine the way a
PLC would report it: rounded, with sensor noise, and with NaN values and bad quality when the
poll fails. Nothing here loops over signals; the only Python loops are over rare events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from shopfloor.core.kinds import Classification, DataType
from shopfloor.core.quality import BAD

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]


@dataclass(frozen=True)
class SignalDef:
    name: str
    unit: str
    data_type: DataType
    description: str
    classification: Classification = Classification.GENERAL


@dataclass(frozen=True)
class MachineDef:
    line: str
    name: str
    kind: str
    device_type: str
    signals: tuple[SignalDef, ...]


@dataclass(frozen=True, eq=False)
class Frame:
    """One device's readings at one instant, in the order of its signal definitions."""

    device: str
    ts_ns: int
    names: tuple[str, ...]
    values: F64
    quality: U32


# --- machine states (ISA-88 / PackML flavoured) -------------------------------------------------
OFF, IDLE, RUNNING, BLOCKED, DOWN, CHANGEOVER = range(6)
STATE_NAMES: Final = ("off", "idle", "running", "blocked/starved", "down", "changeover")

# Mean dwell per state in seconds (exponential, after a minimum dwell) and where it goes next.
_DWELL_S: Final = np.array([30.0, 5.0, 45.0, 3.0, 12.0, 20.0]) * 60.0
_MIN_DWELL_S: Final = 30.0
_NEXT: Final = np.array(
    [  # off   idle  run   block down  chg
        [0.00, 1.00, 0.00, 0.00, 0.00, 0.00],  # off -> idle (switched on)
        [0.05, 0.00, 0.88, 0.00, 0.00, 0.07],  # idle
        [0.00, 0.15, 0.00, 0.50, 0.20, 0.15],  # running
        [0.00, 0.05, 0.95, 0.00, 0.00, 0.00],  # blocked/starved
        [0.00, 0.30, 0.70, 0.00, 0.00, 0.00],  # down (minor fault, cleared)
        [0.00, 0.30, 0.70, 0.00, 0.00, 0.00],  # changeover
    ]
)
_NEXT_CUM: Final = np.cumsum(_NEXT, axis=1)
_MINOR_FAULTS: Final = np.array([101, 102, 103, 104])  # jam, overload trip, sensor, safety stop
BEARING_FAILURE: Final = 201

# How hard motors, fans and the shaker work in each state (fraction of running).
_MOTOR_FRAC: Final = np.array([0.0, 0.2, 1.0, 0.25, 0.02, 0.1])
_VIB_FRAC: Final = np.array([0.02, 0.15, 1.0, 0.2, 0.03, 0.1])
_HYD_FRAC: Final = np.array([0.0, 0.25, 0.97, 0.25, 0.0, 0.25])

# --- rates -------------------------------------------------------------------------------------
_FAULT_ONSET_PER_S: Final = 2.5 / 20.0 / 86_400.0  # 2-3 new developing faults a day in 20 machines
_FAULT_START_SEV: Final = 0.02  # breakdown at 1.0, i.e. after ln(50) ~ 3.9 growth time constants
_FAULT_TAU_S: Final = (3_600.0, 3.0 * 3_600.0)
_FAULT_IDLE_GROWTH: Final = 0.15  # a bearing wears far slower when not under load
_MAINT_S: Final = (45.0 * 60.0, 150.0 * 60.0)
_POLL_FAIL_PER_S: Final = 1.5e-5  # ~1.3 failed-poll episodes per machine and day
_POLL_FAIL_S: Final = (2, 30)
_SPEED_CHANGE_PER_S: Final = 1.0 / (6.0 * 3_600.0)
_SPEEDS: Final = np.array([80.0, 85.0, 90.0, 95.0, 100.0, 100.0, 100.0])
_FAULT_RMS_GAIN: Final = np.array([[4.0], [3.5], [1.5]])  # x, y radial; z axial feels less
_FAULT_PEAK_GAIN: Final = np.array([[5.0], [4.0], [2.0]])  # impacts show in peaks first
VIBRATION_LIMIT: Final = 4.5  # mm/s RMS, ISO 10816-3 zone C/D boundary for medium machines
_FIRST_OFF_S: Final = 600.0  # parts right after a changeover are scrapped more often

# Thermal masses: one row per temperature, first-order lag with this time constant.
_T_ROWS: Final = (
    "motor_temp", "bearing_temp", "oil_temp", "coolant_temp", "zone1_temp", "zone2_temp",
    "zone3_temp", "exhaust_temp", "seal_temp", "cabinet_temp",
)  # fmt: skip
_T_TAU_S: Final = np.array([900, 600, 1800, 1200, 1500, 1800, 2100, 900, 180, 1200], dtype=float)
_T: Final = {name: i for i, name in enumerate(_T_ROWS)}


# --- machine kinds -----------------------------------------------------------------------------
class _Kind(NamedTuple):
    rated_kw: float  # electrical power while running at full speed
    vib_mm_s: float  # radial vibration velocity RMS of a healthy machine running
    peak_g: float  # acceleration peak of a healthy machine running
    power_frac: tuple[float, float, float, float, float, float]  # per state, of rated
    products: tuple[tuple[int, float, float], ...]  # (product code, ideal cycle s, recipe value)


KINDS: Final = {
    # recipe value: press pressure setpoint (bar), cnc spindle speed (rpm), robot weld current
    # (A), oven zone setpoint (°C), packer seal-jaw setpoint (°C)
    "press": _Kind(45, 2.2, 1.2, (0, .2, 1, .25, .05, .1), ((1101, 2.0, 180), (1102, 2.5, 210), (1103, 3.2, 240))),
    "cnc": _Kind(22, 1.2, 0.35, (0, .25, 1, .3, .1, .15), ((2101, 38, 12000), (2102, 52, 9000), (2103, 65, 8000), (2104, 80, 6000))),
    "robot": _Kind(8, 0.8, 0.25, (0, .3, 1, .35, .1, .2), ((3101, 24, 165), (3102, 30, 185), (3103, 36, 200))),
    "oven": _Kind(15, 0.9, 0.2, (0, .7, 1, .8, .6, .7), ((4101, 8, 180), (4102, 10, 200))),
    "packer": _Kind(7.5, 1.5, 0.4, (0, .2, 1, .25, .05, .1), ((5101, 1.8, 150), (5102, 2.2, 165), (5103, 2.6, 175))),
}  # fmt: skip
_PROCESS_ORDER: Final = tuple(KINDS)
_MIDDLE_CYCLE: Final = ("cnc", "robot", "oven", "cnc", "press", "cnc", "robot")


class _Render(NamedTuple):
    decimals: int
    noise_abs: float = 0.0
    noise_rel: float = 0.0
    lo: float = -math.inf


_G, _I, _C = Classification.GENERAL, Classification.IMPORTANT, Classification.CORE
_F, _N, _B = DataType.FLOAT, DataType.INT, DataType.BOOL
_R = _Render
_SIGNALS: Final[dict[str, tuple[str, DataType, str, Classification, _Render]]] = {
    "state": ("", _N, "Machine state: 0 off, 1 idle, 2 running, 3 blocked/starved, 4 down, 5 changeover", _I, _R(0)),
    "fault_code": ("", _N, "Active fault: 0 none, 101 jam, 102 overload trip, 103 sensor fault, 104 safety stop, 201 bearing failure", _G, _R(0)),
    "alarm_active": ("", _B, "1 while the machine is down on a fault", _I, _R(0)),
    "vibration_alarm": ("", _B, "1 while radial vibration RMS exceeds 4.5 mm/s (ISO 10816 zone D)", _G, _R(0)),
    "product_code": ("", _N, "Product (recipe) loaded; changes at a changeover", _I, _R(0)),
    "good_count": ("parts", _N, "Cumulative good parts (never resets)", _I, _R(0)),
    "scrap_count": ("parts", _N, "Cumulative scrapped parts (never resets)", _I, _R(0)),
    "total_count": ("parts", _N, "Cumulative parts made: good + scrap", _I, _R(0)),
    "ideal_cycle_time": ("s", _F, "Ideal cycle time of the loaded product at 100 % speed", _C, _R(2)),
    "cycle_time": ("s", _F, "Measured cycle time; holds the last value while not running", _G, _R(2)),
    "speed_setpoint": ("%", _F, "Speed setpoint, percent of rated speed", _G, _R(0)),
    "energy_total": ("kWh", _F, "Cumulative electrical energy (meter reading)", _G, _R(3)),
    "motor_current": ("A", _F, "Main drive current, RMS", _G, _R(2, 0.05, 0.01, 0.0)),
    "motor_temp": ("°C", _F, "Main motor winding temperature", _G, _R(2, 0.08)),
    "bearing_temp": ("°C", _F, "Drive-end bearing temperature", _G, _R(2, 0.08)),
    "ambient_temp": ("°C", _F, "Air temperature next to the machine", _G, _R(2, 0.05)),
    "vib_x_rms": ("mm/s", _F, "Vibration velocity RMS, radial X axis (drive-end bearing)", _G, _R(3, 0.004, 0.06, 0.0)),
    "vib_y_rms": ("mm/s", _F, "Vibration velocity RMS, radial Y axis (drive-end bearing)", _G, _R(3, 0.004, 0.06, 0.0)),
    "vib_z_rms": ("mm/s", _F, "Vibration velocity RMS, axial Z axis (drive-end bearing)", _G, _R(3, 0.004, 0.06, 0.0)),
    "vib_x_peak": ("g", _F, "Acceleration peak, radial X axis", _G, _R(3, 0.003, 0.12, 0.0)),
    "vib_y_peak": ("g", _F, "Acceleration peak, radial Y axis", _G, _R(3, 0.003, 0.12, 0.0)),
    "vib_z_peak": ("g", _F, "Acceleration peak, axial Z axis", _G, _R(3, 0.003, 0.12, 0.0)),
    # press
    "hydraulic_pressure": ("bar", _F, "Main cylinder hydraulic pressure", _G, _R(2, 0.3, 0.015, 0.0)),
    "pressure_setpoint": ("bar", _F, "Hydraulic pressure setpoint from the recipe", _C, _R(1)),
    "oil_temp": ("°C", _F, "Hydraulic oil tank temperature", _G, _R(2, 0.05)),
    "stroke_rate": ("strokes/min", _F, "Press strokes per minute", _G, _R(1, 0.1, 0.0, 0.0)),
    # cnc
    "spindle_speed": ("rpm", _F, "Spindle speed", _G, _R(0, 2.0, 0.002, 0.0)),
    "spindle_load": ("%", _F, "Spindle load, percent of rated torque", _G, _R(1, 0.5, 0.03, 0.0)),
    "coolant_temp": ("°C", _F, "Coolant temperature", _G, _R(2, 0.05)),
    "coolant_pressure": ("bar", _F, "Through-spindle coolant pressure", _G, _R(2, 0.15, 0.0, 0.0)),
    "tool_wear": ("%", _F, "Wear of the active tool; resets at a tool change", _G, _R(1)),
    # robot
    "weld_current": ("A", _F, "Welding current (zero between welds)", _G, _R(1, 1.5, 0.01, 0.0)),
    "cabinet_temp": ("°C", _F, "Controller cabinet temperature", _G, _R(2, 0.05)),
    "air_pressure": ("bar", _F, "Compressed-air supply pressure", _G, _R(2, 0.04, 0.0, 0.0)),
    # oven
    "zone1_temp": ("°C", _F, "Oven zone 1 temperature", _G, _R(2, 0.15)),
    "zone2_temp": ("°C", _F, "Oven zone 2 temperature", _G, _R(2, 0.15)),
    "zone3_temp": ("°C", _F, "Oven zone 3 temperature", _G, _R(2, 0.15)),
    "zone_setpoint": ("°C", _F, "Zone temperature setpoint from the recipe", _C, _R(1)),
    "exhaust_temp": ("°C", _F, "Exhaust air temperature", _G, _R(2, 0.2)),
    "gas_flow": ("m³/h", _F, "Burner natural-gas flow", _G, _R(2, 0.05, 0.03, 0.0)),
    # packer
    "seal_temp": ("°C", _F, "Seal-jaw temperature", _G, _R(2, 0.2)),
    "seal_setpoint": ("°C", _F, "Seal-jaw temperature setpoint from the recipe", _C, _R(1)),
    "film_tension": ("N", _F, "Packaging film web tension", _G, _R(2, 1.2, 0.0, 0.0)),
}  # fmt: skip
_COMMON: Final = tuple(list(_SIGNALS)[:22])  # every machine has these
_KIND_SIGNALS: Final = {
    "press": ("hydraulic_pressure", "pressure_setpoint", "oil_temp", "stroke_rate"),
    "cnc": ("spindle_speed", "spindle_load", "coolant_temp", "coolant_pressure", "tool_wear"),
    "robot": ("weld_current", "cabinet_temp", "air_pressure"),
    "oven": ("zone1_temp", "zone2_temp", "zone3_temp", "zone_setpoint", "exhaust_temp", "gas_flow"),
    "packer": ("seal_temp", "seal_setpoint", "film_tension", "air_pressure"),
}
# Channel rows: the temperatures first so that the thermal state is one block of the table.
_CHANNELS: Final = (*_T_ROWS, *(n for n in _SIGNALS if n not in _T_ROWS))
_CH: Final = {name: i for i, name in enumerate(_CHANNELS)}
_U_ROWS: Final = (
    8  # uniform draws per machine and step: exit, next, onset, poll, speed, cycle, weld, scrap
)
_VIB_RMS: Final = slice(_CH["vib_x_rms"], _CH["vib_z_rms"] + 1)
_VIB_PEAK: Final = slice(_CH["vib_x_peak"], _CH["vib_z_peak"] + 1)
_AMPS_PER_KW: Final = 1000.0 / (math.sqrt(3.0) * 400.0 * 0.85)  # 400 V three-phase, cos phi 0.85


def _signal_def(name: str) -> SignalDef:
    unit, dtype, description, classification, _ = _SIGNALS[name]
    return SignalDef(name, unit, dtype, description, classification)


def _kind_defs(kind: str) -> tuple[SignalDef, ...]:
    return tuple(_signal_def(n) for n in (*_COMMON, *_KIND_SIGNALS[kind]))


def _line_kinds(n: int) -> list[str]:
    """A plausible process order for a line of n machines: press first, packer last."""
    if n == 1:
        return ["cnc"]
    middle = sorted(
        (_MIDDLE_CYCLE[i % len(_MIDDLE_CYCLE)] for i in range(n - 2)), key=_PROCESS_ORDER.index
    )
    return ["press", *middle, "packer"]


class FactorySimulator:
    """A seeded, deterministic factory of ``machines`` machines on ``lines`` lines.

    State that only changes with an event (a state transition, a product or speed change) is
    turned into per-machine coefficients by :meth:`_refresh`, so that an ordinary step costs a
    few dozen numpy operations on arrays of one value per machine.
    """

    enterprise: Final = "Demo Manufacturing"
    site: Final = "Plant 1"
    area: Final = "Assembly"

    def __init__(
        self,
        seed: int = 0,
        lines: int = 3,
        machines: int = 20,
        start_ns: int | None = None,
        period_s: float = 1.0,
    ) -> None:
        if lines < 1 or machines < lines:
            raise ValueError(f"need at least one machine per line, got {machines} for {lines}")
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.period_s = float(period_s)
        self.period_ns = round(period_s * 1e9)
        if start_ns is None:
            start_ns = time.time_ns() // self.period_ns * self.period_ns
        self._now_ns = int(start_ns)
        self._rng = np.random.default_rng(seed)
        self._build_layout(lines, machines)
        self._build_parameters()
        self._build_render()
        self._init_state()

    # --- public ------------------------------------------------------------------------------
    @property
    def now_ns(self) -> int:
        """Simulation time of the latest frames (``start_ns`` before the first step)."""
        return self._now_ns

    def set_period(self, period_s: float) -> None:
        """Go on at another sampling period (e.g. a week of history at a minute, then 1 s);
        the next step advances by the new period."""
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.period_s = float(period_s)
        self.period_ns = round(period_s * 1e9)

    @property
    def fault_severity(self) -> F64:
        """Ground truth for condition monitoring: 0 healthy, rising to 1 at the breakdown."""
        return self._sev.copy()

    def machines(self) -> list[MachineDef]:
        return list(self._machines)

    def device_types(self) -> dict[str, tuple[SignalDef, ...]]:
        return {f"simulated-{kind}": _kind_defs(kind) for kind in KINDS}

    def signal_count(self) -> int:
        return len(self._gather)

    def step(self) -> list[Frame]:
        """Advance one period and return every machine's readings at the new time."""
        dt = self.period_s
        self._now_ns += self.period_ns
        u = self._rng.random((_U_ROWS, self._m))
        if self._advance_states(dt, u):
            self._refresh()
        if self._advance_faults(dt, u):
            self._refresh()
        self._advance_production(dt, u)
        self._advance_thermal()
        fail = self._advance_polls(dt, u)
        return self._frames(self._render(u), fail)

    def run_until(self, end_ns: int) -> Iterator[list[Frame]]:
        """Step while the next period still ends at or before ``end_ns`` (fast backfill)."""
        while self._now_ns + self.period_ns <= end_ns:
            yield self.step()

    # --- construction ------------------------------------------------------------------------
    def _build_layout(self, lines: int, machines: int) -> None:
        numbers = dict.fromkeys(KINDS, 0)
        defs: list[MachineDef] = []
        for li in range(lines):
            size = machines // lines + (1 if li < machines % lines else 0)
            for kind in _line_kinds(size):
                numbers[kind] += 1
                name = f"{kind}-{numbers[kind]:02d}"
                line = f"line-{li + 1}"
                defs.append(MachineDef(line, name, kind, f"simulated-{kind}", _kind_defs(kind)))
        self._machines = tuple(defs)
        self._m = len(defs)
        self._kind = np.array([_PROCESS_ORDER.index(d.kind) for d in defs])

    def _build_parameters(self) -> None:
        rng, m, k = self._rng, self._m, self._kind
        kinds = list(KINDS.values())
        jitter = rng.uniform(0.85, 1.15, (4, m))
        self._rated_kw = np.array([x.rated_kw for x in kinds])[k] * jitter[0]
        self._vib = np.array([x.vib_mm_s for x in kinds])[k] * jitter[1]
        self._peak = np.array([x.peak_g for x in kinds])[k] * jitter[2]
        self._motor_rise = 38.0 * jitter[3]
        self._power_frac = np.array([x.power_frac for x in kinds])  # (kinds, states)
        self._axis = rng.uniform([[1.0], [0.8], [0.45]], [[1.1], [1.0], [0.6]], (3, m))
        oven = k == _PROCESS_ORDER.index("oven")
        self._amb_offset = rng.normal(0.0, 0.6, m) + 4.0 * oven  # ovens warm their corner
        self._base_scrap = rng.uniform(0.004, 0.02, m)
        self._wear_rate = rng.uniform(0.08, 0.15, m) * (k == _PROCESS_ORDER.index("cnc"))
        n_prod = max(len(x.products) for x in kinds)
        table = np.zeros((len(kinds), n_prod, 3))
        for i, x in enumerate(kinds):
            table[i, : len(x.products)] = x.products
        self._products = table
        self._n_products = np.array([len(x.products) for x in kinds])
        dt = self.period_s
        self._p_exit = 1.0 - np.exp(-dt / _DWELL_S)
        self._p_onset = 1.0 - math.exp(-dt * _FAULT_ONSET_PER_S)
        self._p_poll_fail = 1.0 - math.exp(-dt * _POLL_FAIL_PER_S)
        self._p_speed = 1.0 - math.exp(-dt * _SPEED_CHANGE_PER_S)
        self._t_alpha = (1.0 - np.exp(-dt / _T_TAU_S))[:, None]

    def _build_render(self) -> None:
        """Per output value: where to gather it from, its noise, floor and rounding."""
        gather: list[int] = []
        machine_of: list[int] = []
        renders: list[_Render] = []
        self._slices: list[tuple[str, tuple[str, ...], int, int]] = []
        for i, d in enumerate(self._machines):
            start = len(gather)
            names = tuple(s.name for s in d.signals)
            for name in names:
                gather.append(_CH[name] * self._m + i)
                machine_of.append(i)
                renders.append(_SIGNALS[name][4])
            self._slices.append((d.name, names, start, len(gather)))
        self._gather = np.array(gather, dtype=np.intp)
        self._machine_of = np.array(machine_of, dtype=np.intp)
        r = np.array([(x.noise_abs, x.noise_rel, x.lo, 10.0**x.decimals) for x in renders]).T
        self._noise_abs, self._noise_rel, self._lo, self._scale = r
        self._chan = np.zeros((len(_CH), self._m))

    def _init_state(self) -> None:
        """Start mid-shift: mostly running, warm, with counters long past zero."""
        rng, m, ch = self._rng, self._m, self._chan
        # Views into the channel table: these rows are both state and output, updated in place.
        self._temps = ch[: len(_T_ROWS)]
        self._good, self._scrap = ch[_CH["good_count"]], ch[_CH["scrap_count"]]
        self._energy, self._cycle = ch[_CH["energy_total"]], ch[_CH["cycle_time"]]
        self._wear, self._speed_sp = ch[_CH["tool_wear"]], ch[_CH["speed_setpoint"]]
        self._state = rng.choice(6, size=m, p=[0.02, 0.05, 0.8, 0.05, 0.04, 0.04])
        self._t_state = rng.uniform(0.0, 600.0, m)
        self._since_chg = np.full(m, 1e9)
        self._fault = np.where(self._state == DOWN, rng.choice(_MINOR_FAULTS, m), 0)
        self._maint_left = np.zeros(m)
        has_fault = rng.random(m) < 0.1  # so that a fresh demo shows a developing fault soon
        self._sev = np.where(has_fault, rng.uniform(0.03, 0.3, m), 0.0)
        self._faulty = bool(has_fault.any())
        self._fault_tau = rng.uniform(*_FAULT_TAU_S, m)
        self._prod = rng.integers(0, self._n_products[self._kind])
        self._speed_sp[:] = rng.choice(_SPEEDS, m)
        self._progress = rng.random(m)
        self._good[:] = rng.integers(20_000, 900_000, m)
        self._scrap[:] = np.round(self._good * rng.uniform(0.005, 0.02, m))
        self._energy[:] = rng.uniform(1e4, 3e5, m)
        self._wear[:] = rng.uniform(0.0, 90.0, m) * (self._wear_rate > 0)
        self._poll_left = np.zeros(m, dtype=np.int64)
        self._refresh()
        self._cycle[:] = self._ideal * 100.0 / self._speed_sp
        self._temps[:] = self._t_amb * self._ambient() + self._t_const
        self._temps[:2] += self._t_sev * self._sev

    # --- events ------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Recompute what changes only with a state, product or speed change."""
        ch, c, s = self._chan, _CH, self._state
        run = (s == RUNNING).astype(float)
        on = (s != OFF).astype(float)
        code, ideal, recipe = self._products[self._kind, self._prod].T
        speed = self._speed_sp / 100.0
        load = 1.0 + run * (0.4 * speed - 0.4)  # 0.6 + 0.4 * speed when running, else 1
        mot = _MOTOR_FRAC[s] * (1.0 + run * (0.3 * speed - 0.3))
        vib = _VIB_FRAC[s] * load
        self._running, self._run, self._on, self._ideal = s == RUNNING, run, on, ideal
        self._p_exit_m = self._p_exit[s]
        self._rate = run * speed / ideal * self.period_s  # parts per step without a fault
        self._kw_base = self._rated_kw * self._power_frac[self._kind, s] * load
        self._vib_base = self._vib * vib * self._axis
        self._peak_base = self._peak * vib * self._axis
        self._spindle_base = run * (30.0 + 10.0 * speed)
        self._weld_base = run * recipe
        self._gas_base = on * 6.0 + run * 4.0
        self._setpoint = recipe
        self._refresh_thermal(mot, on, recipe)
        ch[c["state"]] = s
        ch[c["fault_code"]] = self._fault
        ch[c["alarm_active"]] = s == DOWN
        ch[c["product_code"]] = code
        ch[c["ideal_cycle_time"]] = ideal
        for name in ("pressure_setpoint", "zone_setpoint", "seal_setpoint"):
            ch[c[name]] = recipe
        ch[c["hydraulic_pressure"]] = _HYD_FRAC[s] * recipe
        ch[c["spindle_speed"]] = run * recipe * speed
        ch[c["coolant_pressure"]] = run * 22.0
        ch[c["air_pressure"]] = 6.3 - 0.35 * run  # the valves draw air while running
        ch[c["film_tension"]] = 42.0 * run + 6.0 * on

    def _refresh_thermal(self, mot: F64, on: F64, setpoint: F64) -> None:
        """Targets as ``amb_coef * ambient + const (+ sev_coef * severity for two rows)``."""
        t, m = _T, self._m
        amb = np.ones((len(_T_ROWS), m))
        const = np.zeros((len(_T_ROWS), m))
        const[t["motor_temp"]] = self._motor_rise * mot
        const[t["bearing_temp"]] = 16.0 * mot
        const[t["oil_temp"]] = 25.0 * mot
        amb[t["coolant_temp"]] = 0.3  # chilled coolant follows the room only partly
        const[t["coolant_temp"]] = 0.7 * 18.0 + 7.0 * mot
        for name, offset in (("zone1_temp", -3.0), ("zone2_temp", 0.0), ("zone3_temp", 2.0)):
            amb[t[name]] = 1.0 - on
            const[t[name]] = on * (setpoint + offset)
        amb[t["exhaust_temp"]] = 1.0 - 0.55 * on
        const[t["exhaust_temp"]] = 0.55 * on * setpoint
        amb[t["seal_temp"]] = 1.0 - on
        const[t["seal_temp"]] = on * setpoint
        const[t["cabinet_temp"]] = 6.0 + 6.0 * mot
        self._t_amb, self._t_const = amb, const
        # a failing bearing heats itself (strongly) and loads the motor (slightly)
        self._t_sev = np.stack([0.15 * self._motor_rise * mot, 40.0 * mot])

    def _enter(self, idx: I64, new: I64) -> None:
        rng = self._rng
        self._state[idx] = new
        self._t_state[idx] = 0.0
        self._fault[idx] = np.where(new == DOWN, rng.choice(_MINOR_FAULTS, len(idx)), 0)
        chg = idx[new == CHANGEOVER]
        if len(chg):  # a new product: new recipe, often a new speed, and (cnc) a fresh tool
            n = self._n_products[self._kind[chg]]
            self._prod[chg] = (self._prod[chg] + rng.integers(1, np.maximum(n, 2))) % n
            self._speed_sp[chg] = rng.choice(_SPEEDS, len(chg))
            self._since_chg[chg] = 0.0
            self._wear[chg[rng.random(len(chg)) < 0.5]] = 0.0

    # --- one step ----------------------------------------------------------------------------
    def _advance_states(self, dt: float, u: F64) -> bool:
        """Markov chain over the machine states; returns whether anything changed."""
        self._t_state += dt
        self._since_chg += dt
        maint = self._maint_left > 0
        leave = (u[0] < self._p_exit_m) & (self._t_state >= _MIN_DWELL_S) & ~maint
        changed = False
        if leave.any():
            idx = np.flatnonzero(leave)
            nxt = (_NEXT_CUM[self._state[idx]] <= u[1, idx, None]).sum(axis=1)
            self._enter(idx, np.minimum(nxt, len(STATE_NAMES) - 1))
            changed = True
        if maint.any():
            self._maint_left -= dt * maint
            repaired = maint & (self._maint_left <= 0)
            if repaired.any():  # new bearing fitted: healthy again, handed back idle
                self._sev[repaired] = 0.0
                self._faulty = bool(self._sev.any())
                self._enter(np.flatnonzero(repaired), np.full(int(repaired.sum()), IDLE))
                changed = True
        change = u[4] < self._p_speed
        if change.any():  # the operator turns the speed up or down
            change &= self._state != CHANGEOVER
            self._speed_sp[change] = self._rng.choice(_SPEEDS, int(change.sum()))
            changed = True
        return changed

    def _advance_faults(self, dt: float, u: F64) -> bool:
        """Bearing faults start at random, grow exponentially, end in a breakdown."""
        sev = self._sev
        onset = u[2] < self._p_onset
        if onset.any():
            onset &= (sev == 0) & (self._maint_left <= 0) & (self._state != OFF)
            sev[onset] = _FAULT_START_SEV
            self._fault_tau[onset] = self._rng.uniform(*_FAULT_TAU_S, int(onset.sum()))
            self._faulty = bool(sev.any())
        if not self._faulty:
            return False
        growth = (_FAULT_IDLE_GROWTH + (1.0 - _FAULT_IDLE_GROWTH) * self._run) / self._fault_tau
        np.minimum(sev * np.exp(dt * growth), 1.0, out=sev)
        broke = (sev >= 1.0) & (self._maint_left <= 0)
        if not broke.any():
            return False
        self._state[broke] = DOWN
        self._t_state[broke] = 0.0
        self._fault[broke] = BEARING_FAILURE
        self._maint_left[broke] = self._rng.uniform(*_MAINT_S, int(broke.sum()))
        return True

    def _advance_production(self, dt: float, u: F64) -> None:
        sev = self._sev
        self._step_rate = rate = self._rate * (1.0 - 0.08 * sev) if self._faulty else self._rate
        self._kw = self._kw_base * (1.0 + 0.1 * sev) if self._faulty else self._kw_base
        self._energy += self._kw * (dt / 3600.0)
        self._progress += rate
        made = np.floor(self._progress)
        self._progress -= made
        # measured cycle time, +-3 % (uniform); holds the last value while not running
        np.divide(dt * (0.948 + 0.104 * u[5]), rate, out=self._cycle, where=self._running)
        if not made.any():
            return
        p = self._base_scrap + 0.15 * sev
        # a hot machine (motor above 65 °C) and a blunt tool (wear above 80 %) make more scrap
        p += np.minimum(np.maximum(self._temps[_T["motor_temp"]] - 65.0, 0.0), 10.0) * 0.004
        p += np.maximum(self._wear - 80.0, 0.0) * 0.0025
        p += 0.08 * (self._since_chg < _FIRST_OFF_S)  # first-off parts after a changeover
        if made.max() <= 1:
            scrap = (u[7] < p) * made
        else:
            scrap = self._rng.binomial(made.astype(np.int64), np.minimum(p, 1.0)).astype(float)
        self._good += made - scrap
        self._scrap += scrap
        self._wear += made * self._wear_rate
        self._wear[self._wear >= 100.0] = 0.0  # automatic tool change

    def _ambient(self) -> F64:
        hours = (self._now_ns % 86_400_000_000_000) / 3.6e12
        daily = 21.0 + 3.5 * math.sin(2.0 * math.pi * (hours - 9.0) / 24.0)  # warmest at 15:00
        out: F64 = self._amb_offset + daily
        return out

    def _advance_thermal(self) -> None:
        amb = self._ambient()
        self._chan[_CH["ambient_temp"]] = amb
        target = self._t_amb * amb + self._t_const
        if self._faulty:
            target[:2] += self._t_sev * self._sev
        self._temps += (target - self._temps) * self._t_alpha

    def _advance_polls(self, dt: float, u: F64) -> npt.NDArray[np.bool_]:
        """Communication losses of a few seconds: the whole poll of a machine fails."""
        self._poll_left -= 1
        start = u[3] < self._p_poll_fail
        if start.any():
            start &= self._poll_left <= 0
            secs = self._rng.integers(_POLL_FAIL_S[0], _POLL_FAIL_S[1] + 1, int(start.sum()))
            self._poll_left[start] = np.ceil(secs / dt).astype(np.int64)
        fail: npt.NDArray[np.bool_] = self._poll_left > 0
        return fail

    def _render(self, u: F64) -> F64:
        """Fill the per-step channels, then gather, add noise and round per signal."""
        ch, c, sev = self._chan, _CH, self._sev
        if self._faulty:
            np.multiply(self._vib_base, 1.0 + _FAULT_RMS_GAIN * sev, out=ch[_VIB_RMS])
            np.multiply(self._peak_base, 1.0 + _FAULT_PEAK_GAIN * np.sqrt(sev), out=ch[_VIB_PEAK])
        else:
            ch[_VIB_RMS] = self._vib_base
            ch[_VIB_PEAK] = self._peak_base
        ch[c["vibration_alarm"]] = (
            np.maximum(ch[c["vib_x_rms"]], ch[c["vib_y_rms"]]) > VIBRATION_LIMIT
        )
        np.add(self._good, self._scrap, out=ch[c["total_count"]])
        np.multiply(self._kw, _AMPS_PER_KW, out=ch[c["motor_current"]])
        np.multiply(self._step_rate, 60.0 / self.period_s, out=ch[c["stroke_rate"]])
        ch[c["spindle_load"]] = self._spindle_base + self._run * (0.25 * self._wear + 15.0 * sev)
        ch[c["weld_current"]] = (u[6] < 0.65) * self._weld_base  # welds ~65 % of the cycle
        lag = np.maximum(self._setpoint - self._temps[_T["zone1_temp"]], 0.0)
        ch[c["gas_flow"]] = self._gas_base + 0.8 * self._on * lag  # the burner's P controller

        z = self._rng.standard_normal(len(self._gather))
        vals = ch.take(self._gather)
        vals *= 1.0 + self._noise_rel * z
        vals += self._noise_abs * z
        np.maximum(vals, self._lo, out=vals)
        vals *= self._scale
        np.rint(vals, out=vals)
        vals /= self._scale
        return vals

    def _frames(self, vals: F64, fail: npt.NDArray[np.bool_]) -> list[Frame]:
        quality = np.zeros(len(vals), dtype=np.uint32)
        if fail.any():
            bad = fail[self._machine_of]
            vals[bad] = np.nan
            quality[bad] = BAD
        ts = self._now_ns
        return [Frame(d, ts, n, vals[a:b], quality[a:b]) for d, n, a, b in self._slices]
