"""Fitting the per-core-class cost parameters on published latencies, and validating them.

The model (`jaxcompress.edge._costmodel`) is priced in int8 with, per core class ``c``, one
efficiency ``eff_c`` (fraction of the class's int8 peak reached by conv layers; linear layers reach
``eff_c / r_c`` with ``r_c`` the class's ``linear_mac_cost_ratio``, an instruction count in
``core_classes.json``, not fitted), and shared by every class: the per-output-element cost ``a``
(MAC equivalents), the flash read factor ``k_f`` (multiplying each board's datasheet flash cost
``(wait states + 1) / read bytes`` cycles per weight byte streamed from flash) and one time factor
per non-reference inference engine ``e_k``. With ``C`` classes and ``K`` engines that is
``C + 2 + (K - 1)`` parameters, fitted by least squares on the log of the latency::

    min_theta  sum_rows (log t_model(row; theta) - log t_measured(row))^2
               + ridge^2 * |log theta - log theta_prior|^2

(the small ridge keeps a parameter the remaining data cannot see at its prior in a
leave-one-model-out fold). The fit is deterministic: a fixed start (the prior), SciPy's
trust-region least squares, no randomness.

Example:
  >>> fit = fit_cost_model(rows, graphs, profiles, reference_engine="X")   # doctest: +SKIP
  >>> fit.params["cortex-m4f"]                                            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from jaxcompress._core import JaxCompressValueError
from jaxcompress.edge._costmodel import CostParams, class_efficiency, core_classes
from jaxcompress.edge._graph import EdgeGraph
from jaxcompress.edge._profiles import DeviceProfile

__all__ = ["Measurement", "CostFit", "fit_cost_model", "leave_one_model_out", "PRIOR"]

PRIOR = {"cycles_per_mac": 2.0, "out_overhead_macs": 10.0, "flash_stream": 1.0, "engine": 1.0}


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One published latency: ``board`` (a profile name), ``model``, ``engine``, seconds."""

    board: str
    model: str
    engine: str
    latency_s: float


@dataclasses.dataclass(frozen=True)
class CostFit:
    """A fitted cost model.

    Attributes:
      classes: the fitted core classes.
      engines: every engine (the reference first, factor 1.0).
      efficiency: ``{class: int8 efficiency}`` (fraction of the class's int8 peak).
      cycles_per_mac: ``{class: int8 cycles per MAC}`` (``2 / (int8_ops_per_cycle * eff)``).
      out_overhead_macs: shared per-output cost (MAC equivalents).
      flash_stream_factor: shared multiplier of each board's datasheet flash read cost
        (``(wait states + 1) / read bytes`` cycles per streamed weight byte).
      engine_factor: ``{engine: time factor}``.
      n_parameters: number of fitted parameters.
      cost: the solver's final cost (half the sum of squared residuals).
      linear_ratio: whether linear layers run at the class efficiency divided by the class's
        ``linear_mac_cost_ratio`` (True, the model) or at the conv efficiency (an ablation).
    """

    classes: tuple[str, ...]
    engines: tuple[str, ...]
    efficiency: dict
    cycles_per_mac: dict
    out_overhead_macs: float
    flash_stream_factor: float
    engine_factor: dict
    n_parameters: int
    cost: float
    linear_ratio: bool = True

    def params(self, core_class: str, engine: str | None = None) -> CostParams:
        """The `CostParams` of `core_class` for `engine` (default: the reference engine)."""
        eng = engine or self.engines[0]
        eff = class_efficiency(core_class, self.efficiency[core_class])
        if not self.linear_ratio:
            eff["linear"] = eff["conv"]
        return CostParams(
            efficiency=eff,
            out_overhead_macs=self.out_overhead_macs,
            flash_stream_factor=self.flash_stream_factor,
            engine=eng,
            engine_factor=self.engine_factor[eng],
            dtype="int8",
        )


def _predict(graph: EdgeGraph, profile: DeviceProfile, params: CostParams) -> float:
    from jaxcompress.edge._roofline import project

    return project(graph, profile, params=params).total_s


def fit_cost_model(
    rows: Sequence[Measurement],
    graphs: Mapping[str, EdgeGraph],
    profiles: Mapping[str, DeviceProfile],
    *,
    reference_engine: str,
    ridge: float = 0.05,
    linear_ratio: bool = True,
) -> CostFit:
    """Fits the per-class efficiencies, the shared costs and the engine factors on `rows`.

    Args:
      rows: the measurements (seconds, > 0).
      graphs: ``{model: EdgeGraph}`` for every model in `rows`.
      profiles: ``{board: DeviceProfile}`` (with ``core_class`` and ``clock_hz``) for every board.
      reference_engine: the engine whose factor is fixed to 1.
      ridge: weight of the pull towards `PRIOR` (log space).
      linear_ratio: False prices linear layers at the conv efficiency (an ablation).

    Returns:
      A `CostFit`.

    Raises:
      JaxCompressValueError: empty rows, a row naming an unknown model/board, a board without a
        core class or clock, a non-positive latency.
    """
    from scipy.optimize import least_squares

    rows = list(rows)
    if not rows:
        raise JaxCompressValueError("rows is empty: nothing to fit")
    for r in rows:
        if r.model not in graphs:
            raise JaxCompressValueError(f"measurement of unknown model {r.model!r}")
        if r.board not in profiles:
            raise JaxCompressValueError(f"measurement on unknown board {r.board!r}")
        p = profiles[r.board]
        if p.core_class is None or p.clock_hz is None:
            raise JaxCompressValueError(f"board {r.board!r} needs a core_class and a clock_hz")
        if not r.latency_s > 0:
            raise JaxCompressValueError(f"latency {r.latency_s!r} of {r} must be > 0")
    classes = tuple(sorted({profiles[r.board].core_class for r in rows}))
    others = sorted({r.engine for r in rows} - {reference_engine})
    engines = (reference_engine, *others)
    names = (
        [f"cpm:{c}" for c in classes]
        + ["out_overhead_macs", "flash_stream"]
        + [f"engine:{e}" for e in others]
    )
    prior = np.log(
        [PRIOR["cycles_per_mac"]] * len(classes)
        + [PRIOR["out_overhead_macs"], PRIOR["flash_stream"]]
        + [PRIOR["engine"]] * len(others)
    )
    ops8 = {c: core_classes()[c]["int8_ops_per_cycle"] for c in classes}

    def unpack(theta) -> CostFit:
        v = np.exp(theta)
        cpm = {c: float(v[i]) for i, c in enumerate(classes)}
        k = len(classes)
        factors = {reference_engine: 1.0}
        factors.update({e: float(v[k + 2 + j]) for j, e in enumerate(others)})
        return CostFit(
            classes=classes,
            engines=engines,
            efficiency={c: 2.0 / (ops8[c] * cpm[c]) for c in classes},
            cycles_per_mac=cpm,
            out_overhead_macs=float(v[k]),
            flash_stream_factor=float(v[k + 1]),
            engine_factor=factors,
            n_parameters=len(names),
            cost=0.0,
            linear_ratio=linear_ratio,
        )

    target = np.log([r.latency_s for r in rows])

    def residuals(theta):
        fit = unpack(theta)
        pred = [
            _predict(
                graphs[r.model],
                profiles[r.board],
                fit.params(profiles[r.board].core_class, r.engine),
            )
            for r in rows
        ]
        return np.concatenate([np.log(pred) - target, ridge * (theta - prior)])

    sol = least_squares(residuals, prior.copy(), method="trf", x_scale=1.0)
    return dataclasses.replace(unpack(sol.x), cost=float(sol.cost))


def leave_one_model_out(
    rows: Sequence[Measurement],
    graphs: Mapping[str, EdgeGraph],
    profiles: Mapping[str, DeviceProfile],
    *,
    reference_engine: str,
    ridge: float = 0.05,
    linear_ratio: bool = True,
) -> list[dict]:
    """Leave-one-model-out validation: for each model, fit on the others and project it.

    Returns:
      One dict per (board, model): ``board``, ``model``, ``core_class``, ``engines``,
      ``measured_median_s`` / ``projected_median_s`` (medians over the board's submitters, each
      projection for that submitter's engine), ``error_median`` (relative), and the same for the
      fastest submitter (``measured_fastest_s``, ``projected_fastest_s``, ``error_fastest``), and
      ``projected_reference_s`` (the reference engine).
    """
    rows = list(rows)
    out = []
    for model in sorted({r.model for r in rows}):
        fit = fit_cost_model(
            [r for r in rows if r.model != model],
            graphs,
            profiles,
            reference_engine=reference_engine,
            ridge=ridge,
            linear_ratio=linear_ratio,
        )
        for board in sorted({r.board for r in rows if r.model == model}):
            cell = [r for r in rows if r.model == model and r.board == board]
            cc = profiles[board].core_class
            proj = []
            for r in cell:
                eng = r.engine if r.engine in fit.engine_factor else reference_engine
                proj.append(_predict(graphs[model], profiles[board], fit.params(cc, eng)))
            meas = [r.latency_s for r in cell]
            m_med, p_med = statistics.median(meas), statistics.median(proj)
            m_min, p_min = min(meas), min(proj)
            out.append(
                {
                    "board": board,
                    "model": model,
                    "core_class": cc,
                    "engines": [r.engine for r in cell],
                    "measured_median_s": m_med,
                    "projected_median_s": p_med,
                    "error_median": (p_med - m_med) / m_med,
                    "measured_fastest_s": m_min,
                    "projected_fastest_s": p_min,
                    "error_fastest": (p_min - m_min) / m_min,
                    "projected_reference_s": _predict(
                        graphs[model], profiles[board], fit.params(cc, reference_engine)
                    ),
                }
            )
    return out
