"""Promotion: a pure decision over two evaluation reports and a policy.

The gates, each reported pass / fail / skip with its numbers:

- overall: a first model (no champion yet) must beat the trivial baseline (the training
  mean) by ``min_gain_over_baseline``; a later one must beat the champion on the same
  holdout by ``min_gain_over_champion`` (relative, on ``metric``);
- slices: against a champion, no slice (site, regime, RUL bucket) with at least
  ``min_slice_size`` windows may be worse than the champion's beyond the slice margin;
- latency, size: the challenger's single-window p50 latency and ONNX size within budget;
- parity: the challenger's ONNX scored like its torch model at training.

The challenger is promoted only if no gate fails.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pumpfleet.metrics import Metrics


class PromotionPolicy(BaseModel):
    """When a challenger replaces the champion. The defaults, and why:

    - ``min_gain_over_champion`` 2 %: every promotion ships a bundle to thousands of
      devices; a smaller gain is within the noise of a holdout of a few dozen pumps.
    - ``min_gain_over_baseline`` 5 %: a first model must have learned something.
    - ``slice_margin`` 10 % or ``slice_margin_abs`` (in the metric's units, hours for RMSE),
      whichever is larger: a better average may not hide a site, regime or RUL range made
      worse; the absolute floor keeps slices with small errors from failing on noise.
    - ``min_slice_size`` 50 windows: fewer is a few days of one pump (windows overlap),
      so reported but not gated.
    - ``max_latency_ms`` 5 ms p50 for one window on the evaluating host: today's models take
      tens of microseconds; the budget stops a model a Jetson could not run in real time.
    - ``max_size_bytes`` 5 MB: an over-the-air bundle to an offshore site over a 64 kbit/s
      satellite link then takes about ten minutes.
    - ``parity_tolerance`` 1e-5: the project's torch / ONNX parity rule.
    """

    model_config = ConfigDict(extra="forbid")

    metric: Literal["rmse", "mae", "phm08", "brier", "ece"] = "rmse"
    min_gain_over_baseline: float = Field(default=0.05, ge=0, lt=1)
    min_gain_over_champion: float = Field(default=0.02, ge=0, lt=1)
    slice_margin: float = Field(default=0.10, ge=0)
    slice_margin_abs: float = Field(default=1.0, ge=0)
    min_slice_size: int = Field(default=50, ge=1)
    max_latency_ms: float = Field(default=5.0, gt=0)
    max_size_bytes: int = Field(default=5_000_000, gt=0)
    parity_tolerance: float = Field(default=1e-5, gt=0)


class ModelReport(Metrics):
    """A model's evaluation: overall metrics, per slice, and what it costs to run."""

    version: str | None = None
    slices: dict[str, dict[str, Metrics]] = Field(default_factory=dict)
    latency_p50_ms: float | None = None
    size_bytes: int | None = None
    onnx_parity_max_abs: float | None = None
    # The model kind's own parity limit, where it has one (float32 trees: 1e-4); None:
    # the policy's.
    onnx_parity_atol: float | None = None


class Gate(BaseModel):
    name: str
    status: Literal["pass", "fail", "skip"]
    detail: str

    @property
    def line(self) -> str:
        return f"{self.status.upper():<4} {self.name}: {self.detail}"


class Decision(BaseModel):
    promote: bool
    reason: str
    gates: list[Gate]

    @property
    def reasons(self) -> list[str]:
        """Every gate as one line, e.g. ``FAIL slice site=s3: rmse 14.2 vs ...``."""
        return [g.line for g in self.gates]


def _gain(new: float, ref: float) -> float | None:
    """Relative improvement of ``new`` over ``ref`` (lower is better); None where ``ref``
    is about zero and a ratio would mean nothing."""
    if abs(ref) < 1e-3:
        return None
    return (ref - new) / abs(ref)


def _pct(x: float | None, sign: str = "") -> str:
    return "n/a" if x is None else format(x, f"{sign}.1%")


def _overall(
    ch: Metrics, ref: Metrics, who: str, need_gain: float, metric: str, strict: bool
) -> Gate:
    a, b = float(getattr(ch, metric)), float(getattr(ref, metric))
    need = b * (1.0 - need_gain)
    ok = a < need if strict else a <= need
    gain = _gain(a, b)
    verb = "beats" if ok else "does not beat"
    gt, lt = (">", "<") if strict else (">=", "<=")
    return Gate(
        name="overall",
        status="pass" if ok else "fail",
        detail=f"{metric} {a:.3f} {verb} {who} {b:.3f} (gain {_pct(gain)}, "
        f"needs {gt} {need_gain:.1%}: {metric} {lt} {need:.3f})",
    )


def _slices(ch: ModelReport, champ: ModelReport, policy: PromotionPolicy) -> list[Gate]:
    m = policy.metric
    gates = []
    for dim in sorted(ch.slices):
        for value in sorted(ch.slices[dim]):
            name = f"slice {dim}={value}"
            mine = ch.slices[dim][value]
            theirs = champ.slices.get(dim, {}).get(value)
            if theirs is None:
                gates.append(Gate(name=name, status="skip", detail="not in the champion's report"))
                continue
            if min(mine.n, theirs.n) < policy.min_slice_size:
                detail = f"n={min(mine.n, theirs.n)} < {policy.min_slice_size}: not gated"
                gates.append(Gate(name=name, status="skip", detail=detail))
                continue
            a, b = float(getattr(mine, m)), float(getattr(theirs, m))
            allowed = b + max(abs(b) * policy.slice_margin, policy.slice_margin_abs)
            ok = a <= allowed
            gain = _gain(a, b)
            detail = (
                f"{m} {a:.3f} vs champion {b:.3f} ({_pct(None if gain is None else -gain, '+')}; "
                f"allowed <= {allowed:.3f}, n={mine.n})"
            )
            gates.append(Gate(name=name, status="pass" if ok else "fail", detail=detail))
    return gates


def _budgets(ch: ModelReport, champ: ModelReport | None, policy: PromotionPolicy) -> list[Gate]:
    def was(value: float | int | None, fmt: str, unit: str = "") -> str:
        if champ is None or value is None:
            return ""
        return f" (champion {format(value, fmt)}{unit})"

    gates = []
    lat = ch.latency_p50_ms
    if lat is None:
        gates.append(Gate(name="latency", status="fail", detail="not measured"))
    else:
        ok = lat <= policy.max_latency_ms
        detail = (
            f"p50 {lat:.3f} ms {'<=' if ok else '>'} {policy.max_latency_ms:g} ms budget"
            + was(champ.latency_p50_ms if champ else None, ".3f", " ms")
        )
        gates.append(Gate(name="latency", status="pass" if ok else "fail", detail=detail))
    size = ch.size_bytes
    if size is None:
        gates.append(Gate(name="size", status="fail", detail="not measured"))
    else:
        ok = size <= policy.max_size_bytes
        detail = (
            f"ONNX {size:,} bytes {'<=' if ok else '>'} {policy.max_size_bytes:,} budget"
            + was(champ.size_bytes if champ else None, ",")
        )
        gates.append(Gate(name="size", status="pass" if ok else "fail", detail=detail))
    parity = ch.onnx_parity_max_abs
    if parity is None:
        detail = "no onnx_parity_max_abs recorded for this version at training"
        gates.append(Gate(name="parity", status="fail", detail=detail))
    else:
        limit = ch.onnx_parity_atol or policy.parity_tolerance
        ok = parity <= limit
        detail = f"max |torch - onnx| {parity:.1e} {'<=' if ok else '>'} {limit:.0e}"
        gates.append(Gate(name="parity", status="pass" if ok else "fail", detail=detail))
    return gates


def decide_promotion(
    challenger: ModelReport,
    champion: ModelReport | None,
    baseline: Metrics,
    policy: PromotionPolicy,
) -> Decision:
    """Whether ``challenger`` should become champion, with every gate's verdict.

    Without a champion (a first model) the overall gate is against ``baseline`` and slices
    are not gated: slices guard against regressions from what is serving.
    """
    if champion is None:
        context = "first model"
        gates = [
            _overall(
                challenger,
                baseline,
                "baseline",
                policy.min_gain_over_baseline,
                policy.metric,
                strict=False,
            ),
            Gate(name="slices", status="skip", detail="gated against a champion only"),
        ]
    else:
        context = "vs champion" + (f" v{champion.version}" if champion.version else "")
        gates = [
            _overall(
                challenger,
                champion,
                "champion",
                policy.min_gain_over_champion,
                policy.metric,
                strict=True,
            ),
            *_slices(challenger, champion, policy),
        ]
    gates += _budgets(challenger, champion, policy)
    failed = [g for g in gates if g.status == "fail"]
    if failed:
        reason = f"{context}: rejected: " + "; ".join(f"{g.name}: {g.detail}" for g in failed)
    else:
        reason = f"{context}: promoted: {gates[0].detail}"
    return Decision(promote=not failed, reason=reason, gates=gates)
