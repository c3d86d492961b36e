"""Many windows explained in one scoring call (pumpfleet/explain.py, ``occlusion_many``)
give exactly the attributions of one call per window, as the occlusion code built them
before it batched: with a scorer whose answer is known and with an ONNX CNN in
onnxruntime."""

from __future__ import annotations

import numpy as np

from pumpfleet.explain import Attribution, Scorer, occlusion, occlusion_many, rul_scorer
from pumpfleet.features import FeatureSpec, Regimes, window_features


def spec(window: int = 9) -> FeatureSpec:
    return FeatureSpec(
        pump_class="esp", channels=["motor_temp", "flow", "vibration"], window=window,
        stride=1, interval_seconds=3600, rul_cap_hours=100.0, horizon_hours=24.0,
        mean=[80.0, 1000.0, 2.0], std=[10.0, 100.0, 0.5],
        regimes=Regimes(settings=["speed"], center=[[0.8], [1.0]], scale=[0.1],
                        mean=[[70.0, 900.0, 1.5], [90.0, 1100.0, 2.5]],
                        std=[[5.0, 50.0, 0.2], [8.0, 80.0, 0.4]], rows=[10, 10]),
    )  # fmt: skip


def nonlinear(s: FeatureSpec) -> Scorer:
    """Risk and RUL from every channel and step, unevenly (no two variants alike)."""
    weights = np.random.default_rng(7).normal(0, 1, (s.window, s.n_channels))

    def score(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = window_features(raw, s).astype(np.float64)[..., : s.n_channels]
        heat = np.tanh(z * weights).sum(axis=(1, 2)) / 3
        risk = 1 / (1 + np.exp(-heat))
        return 100 * (1 - risk) + z[:, -1, 0], risk

    return score


def before(score: Scorer, raw: np.ndarray, s: FeatureSpec, blocks: int = 4) -> Attribution:
    """Occlusion as it was built before it batched: each variant copied and stacked."""
    w, c = s.window, s.n_channels
    block = max(1, -(-w // blocks))
    spans = [(a, min(a + block, w)) for a in range(0, w, block)]
    variants = [raw]
    for j in range(c):
        x = raw.copy()
        x[:, j] = np.nan
        variants.append(x)
    for a, b in spans:
        for j in range(c):
            x = raw.copy()
            x[a:b, j] = np.nan
            variants.append(x)
    rul, risk = score(np.stack(variants))
    return Attribution(
        rul_hours=float(rul[0]),
        failure_probability=float(risk[0]),
        channels=list(s.channels),
        risk_by_channel=risk[0] - risk[1 : 1 + c],
        rul_by_channel=rul[0] - rul[1 : 1 + c],
        risk_by_time=risk[0] - risk[1 + c :].reshape(len(spans), c),
        block=block,
    )


def windows(s: FeatureSpec, n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.concatenate(
        [rng.normal([80, 1000, 2], [10, 100, 0.5], (n, s.window, 3)),
         rng.choice([0.8, 1.0], (n, s.window, 1))], axis=-1,
    )  # fmt: skip
    raw[0, 2, 1] = np.nan  # a missing reading already
    return raw


def same(a: Attribution, b: Attribution) -> None:
    assert (a.rul_hours, a.failure_probability) == (b.rul_hours, b.failure_probability)
    assert (a.channels, a.block) == (b.channels, b.block)
    for x, y in [(a.risk_by_channel, b.risk_by_channel), (a.rul_by_channel, b.rul_by_channel),
                 (a.risk_by_time, b.risk_by_time)]:  # fmt: skip
        assert x.shape == y.shape and np.array_equal(x, y)


def test_one_call_for_many_windows_gives_each_window_its_own_attributions() -> None:
    s = spec()
    raw = windows(s, 7)
    calls: list[int] = []
    score = nonlinear(s)

    def counted(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(x))
        return score(x)

    variants = 1 + 3 + 3 * 3  # itself, each channel, each of 3 blocks of 3 steps x channel
    got = occlusion_many(counted, raw, s, blocks=4)
    assert calls == [7 * variants]  # one call
    assert len(got) == 7 and got[0].block == 3 and got[0].risk_by_time.shape == (3, 3)
    for i in range(7):
        same(got[i], before(score, raw[i], s, blocks=4))
        same(got[i], occlusion(score, raw[i], s, blocks=4))
    calls.clear()
    chunked = occlusion_many(counted, raw, s, blocks=4, per_call=3)
    assert calls == [3 * variants, 3 * variants, variants]
    for a, b in zip(chunked, got, strict=True):
        same(a, b)
    assert occlusion_many(counted, raw[:0], s) == [] and calls[-1] == variants


def test_an_onnx_cnn_explains_a_batch_as_it_explains_each_window() -> None:
    import torch

    from pumpfleet import runtime
    from pumpfleet.models import ModelConfig, build_model
    from pumpfleet.onnx_io import to_onnx

    s = spec(window=12)
    torch.manual_seed(0)
    model = build_model(s.n_channels, ModelConfig()).eval()
    run = runtime.onnx_runner(to_onnx(model, s.window, s.n_channels), threads=1)
    raw = windows(s, 16)
    got = occlusion_many(rul_scorer(run, s), raw, s)
    for i in range(16):
        same(got[i], before(rul_scorer(run, s), raw[i], s))
