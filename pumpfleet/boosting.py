"""The gradient-boosted model kind (``gbm``): LightGBM on engineered window features.

:class:`BoostedTrees` is a torch module like every other kind, so the trainable, the
checkpoints, the registry's weights file and the parity check take it unchanged: its
``forward`` maps standardised windows ``[N, W, C]`` to ``[N, 2]`` (RUL as a fraction of
the cap, failure probability) by computing :class:`pumpfleet.window_stats.WindowStats` and
asking the boosters; its state dict carries the boosters as LightGBM's model text (extra
state). Exported, the same statistics run as ONNX operators in front of the trees
(converted by onnxmltools), so Serve and the device score raw windows exactly as for the
networks.

Parity with ONNX: onnxruntime's tree operators hold thresholds as float32 where LightGBM
compares in float64, so a float32 feature between the two takes the other branch (one run
on C-MAPSS differed by 1.6e-2). The trained trees' thresholds are therefore moved down to
the nearest float32 (:func:`float32_thresholds`), which decides every float32 feature as
before; what is left is the float32 sum of the leaves and a feature one float32 step from
a threshold after torch and onnxruntime reduce it in another order. :data:`PARITY_ATOL`
bounds that.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pumpfleet.window_stats import WindowStats, stat_names

if TYPE_CHECKING:
    from pumpfleet.features import FeatureSpec
    from pumpfleet.models import ModelConfig
    from pumpfleet.training import Arrays, EpochCallback, TrainConfig

log = logging.getLogger(__name__)

# Largest |torch - onnxruntime| accepted on outputs in [0, 1] (a RUL of 125 cycles: 0.01
# cycles). Float32 leaf sums differ by ~1e-7; a branch flip moves one tree's leaf.
PARITY_ATOL = 1e-4
EARLY_STOP_ROUNDS = 100  # rounds without a better validation RMSE before stopping
OPSET = 17


class BoostedTrees(nn.Module):
    """``members`` RUL boosters and as many failure boosters, averaged. With
    ``cfg.lookback``, a second group of as many boosters reads the statistics of the
    window's last ``lookback`` steps only; each group's RUL is clipped to [0, 1] and the
    two groups averaged (as their two ONNX graphs are)."""

    parity_atol = PARITY_ATOL

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.cfg = cfg
        self.rul_models: list[str] = []
        self.failure_models: list[str] = []
        self._boosters: tuple[list[Any], list[Any]] | None = None

    @property
    def multiscale(self) -> bool:
        return self.cfg.stats == "multiscale"

    @property
    def lookbacks(self) -> list[int | None]:
        """The steps each group of boosters reads (None: the whole window)."""
        return [None, self.cfg.lookback] if self.cfg.lookback else [None]

    def stats(self, window: int) -> list[WindowStats]:
        """Each group's statistics module for windows of ``window`` steps."""
        return [WindowStats(window, self.multiscale, lb) for lb in self.lookbacks]

    # --- state: the boosters' text, so torch.save / load_state_dict carry them --------

    def get_extra_state(self) -> dict[str, Any]:
        return {"rul": list(self.rul_models), "failure": list(self.failure_models)}

    def set_extra_state(self, state: Any) -> None:
        self.rul_models = list(state["rul"])
        self.failure_models = list(state["failure"])
        self._boosters = None

    def boosters(self) -> tuple[list[Any], list[Any]]:
        import lightgbm as lgb

        if self._boosters is None:
            if not self.rul_models:
                raise ValueError("the gbm model has no trees: train it or load its state")
            self._boosters = (
                [lgb.Booster(model_str=s) for s in self.rul_models],
                [lgb.Booster(model_str=s) for s in self.failure_models],
            )
        return self._boosters

    # --- scoring ------------------------------------------------------------------------

    def features(self, x: torch.Tensor) -> np.ndarray:
        """The groups' window features side by side ``[N, F]``."""
        with torch.no_grad():
            x = x.float()
            return torch.cat([s(x) for s in self.stats(int(x.shape[1]))], dim=1).numpy()

    def _groups(self, f: np.ndarray) -> list[tuple[np.ndarray, slice]]:
        """Each group's feature columns of ``f`` and the slice of its boosters."""
        rul_b, _ = self.boosters()
        per = len(rul_b) // len(self.lookbacks)
        out, start = [], 0
        for g in range(len(self.lookbacks)):
            width = rul_b[g * per].num_feature()
            out.append((f[:, start : start + width], slice(g * per, (g + 1) * per)))
            start += width
        return out

    def predict_features(self, f: np.ndarray) -> np.ndarray:
        """Outputs ``[N, 2]`` of window features ``f`` (float32, as the ONNX graph sees)."""
        rul_b, fail_b = self.boosters()
        f64 = np.asarray(f, dtype=np.float32).astype(np.float64)
        ruls, fails = [], []
        for cols, members in self._groups(f64):
            ruls.append(np.clip(np.mean([b.predict(cols) for b in rul_b[members]], axis=0), 0, 1))
            fails.append(np.mean([b.predict(cols) for b in fail_b[members]], axis=0))
        rul, fail = np.mean(ruls, axis=0), np.mean(fails, axis=0)
        return np.stack([rul, fail], axis=1).astype(np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.predict_features(self.features(x)))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self(x), eps=1e-7)

    def size_bytes(self) -> int:
        """Bytes of the boosters' model text (the ONNX is of the same order)."""
        return sum(len(s) for s in (*self.rul_models, *self.failure_models))

    def parameter_count(self) -> int:
        """Split thresholds and leaf values over all trees."""
        return sum(
            sum(t["num_leaves"] * 2 - 1 for t in b.dump_model()["tree_info"])
            for group in self.boosters()
            for b in group
        )

    def export_onnx(self, window: int) -> bytes:
        """The ONNX graph: window statistics, the trees, the members' mean."""
        from pumpfleet.boosting_onnx import boosted_onnx, mean_of_graphs

        rul_b, fail_b = self.boosters()
        per = len(rul_b) // len(self.lookbacks)
        graphs = [
            boosted_onnx(
                window,
                self.n_channels,
                rul_b[g * per : (g + 1) * per],
                fail_b[g * per : (g + 1) * per],
                OPSET,
                self.multiscale,
                lookback,
            )
            for g, lookback in enumerate(self.lookbacks)
        ]
        return graphs[0] if len(graphs) == 1 else mean_of_graphs(graphs)


class Blended(nn.Module):
    """A network and boosted trees that read the same windows; the outputs are their mean.
    The training loop trains the network (``net``) with the trees fitted first
    (:func:`fit_trees`); exported, both graphs run side by side in one ONNX."""

    parity_atol = PARITY_ATOL

    def __init__(self, net: nn.Module, trees: BoostedTrees) -> None:
        super().__init__()
        self.net = net
        self.trees = trees

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) + self.trees(x)) / 2

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self(x), eps=1e-7)

    def size_bytes(self) -> int:
        return self.trees.size_bytes() + sum(
            p.numel() * p.element_size() for p in self.net.parameters()
        )

    def parameter_count(self) -> int:
        return self.trees.parameter_count() + sum(p.numel() for p in self.net.parameters())

    def export_onnx(self, window: int) -> bytes:
        from pumpfleet.boosting_onnx import mean_of_graphs
        from pumpfleet.onnx_io import to_onnx

        net = to_onnx(self.net, window, self.trees.n_channels)
        return mean_of_graphs([net, self.trees.export_onnx(window)])


def fit_trees(
    model: Blended, train: Arrays, val: Arrays, spec: FeatureSpec, cfg: TrainConfig
) -> None:
    """Fit a blend's trees on the windows its network trains on (before the network)."""
    trees_cfg = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"kind": "gbm", "members": 1, "blend_gbm": False})
        }
    )
    trees, _ = fit_boosted(train, val, spec, trees_cfg)
    model.trees.load_state_dict(trees.state_dict())


def float32_thresholds(model_str: str) -> str:
    """A LightGBM model text whose split thresholds are float32 values (each the largest
    float32 at or below the trained one): ``x <= t`` is unchanged for every float32 ``x``,
    and a converter that casts thresholds to float32 casts them exactly."""
    import lightgbm as lgb

    lines = []
    for line in model_str.splitlines():
        if line.startswith("tree_sizes="):
            continue  # byte offsets of the trees: the text below changes length
        if line.startswith("threshold="):
            t = np.array(line.removeprefix("threshold=").split(), dtype=np.float64)
            t32 = t.astype(np.float32)
            t32 = np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32)
            line = "threshold=" + " ".join(repr(float(v)) for v in t32)
        lines.append(line)
    return str(lgb.Booster(model_str="\n".join(lines) + "\n").model_to_string())


def _window_features(
    x: np.ndarray, multiscale: bool, batch: int = 8192, model: BoostedTrees | None = None
) -> np.ndarray:
    """Features of windows ``x`` ``[N, W, C]``: ``model``'s groups' (or the whole window's)."""
    if len(x) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    stats = model.stats(x.shape[1]) if model is not None else [WindowStats(x.shape[1], multiscale)]
    with torch.no_grad():
        return np.concatenate(
            [
                torch.cat([s(torch.from_numpy(x[i : i + batch])) for s in stats], dim=1).numpy()
                for i in range(0, len(x), batch)
            ]
        )


def fit_boosted(
    train: Arrays,
    val: Arrays,
    spec: FeatureSpec,
    cfg: TrainConfig,
    on_epoch: EpochCallback | None = None,
    resume: dict[str, Any] | None = None,
) -> tuple[BoostedTrees, dict[str, float | None]]:
    """Train ``cfg.model.members`` boosters for the RUL fraction (L2, early stopping on
    the validation windows' RMSE) and as many for the failure label; reported once, as
    epoch ``cfg.epochs``, with the same figures as the networks' epochs."""
    import lightgbm as lgb

    from pumpfleet.training import evaluate

    model = BoostedTrees(spec.n_channels, cfg.model)
    if resume is not None:  # a finished booster's checkpoint: nothing is left to train
        model.load_state_dict(resume["model"])
        return model, evaluate(model, val, spec)
    threads = max(1, torch.get_num_threads())
    f_train = _window_features(train.x, model.multiscale, model=model)
    f_val = _window_features(val.x, model.multiscale, model=model)
    n_groups = len(model.lookbacks)
    edges = np.cumsum(
        [0]
        + [
            len(stat_names(s.window, s.multiscale)) * spec.n_channels
            for s in model.stats(train.x.shape[1])
        ]
    )
    y_train = (train.rul / spec.rul_cap_hours).astype(np.float64)
    y_val = (val.rul / spec.rul_cap_hours).astype(np.float64)
    patience = cfg.patience or EARLY_STOP_ROUNDS
    rounds: list[int] = []
    for g, m in ((g, m) for g in range(n_groups) for m in range(cfg.model.members)):
        g_train, g_val = (f[:, edges[g] : edges[g + 1]] for f in (f_train, f_val))
        params = {
            "learning_rate": cfg.model.tree_lr,
            "num_leaves": cfg.model.leaves,
            "min_data_in_leaf": cfg.model.min_leaf,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "num_threads": threads,
            "seed": cfg.seed + 7919 * (m + g * cfg.model.members),
            "deterministic": True,
            "verbose": -1,
        }
        d_train = lgb.Dataset(g_train, y_train, free_raw_data=False)
        d_val = lgb.Dataset(g_val, y_val, reference=d_train)
        rul = lgb.train(
            {**params, "objective": "l2", "metric": "l2"},
            d_train,
            cfg.model.trees,
            valid_sets=[d_val],
            callbacks=[lgb.early_stopping(patience, verbose=False)],
        )
        best = rul.best_iteration or cfg.model.trees
        rounds.append(best)
        model.rul_models.append(float32_thresholds(rul.model_to_string(num_iteration=best)))
        fail = lgb.train(
            {**params, "objective": "binary"},
            lgb.Dataset(g_train, train.failure.astype(np.float64)),
            max(1, min(best, cfg.model.trees)),
        )
        model.failure_models.append(float32_thresholds(fail.model_to_string()))
    model.set_extra_state(model.get_extra_state())
    report = evaluate(model, val, spec)
    report["train_loss"] = float(
        np.mean((model.predict_features(f_train)[:, 0] - y_train) ** 2)
        if len(f_train)
        else math.nan
    )
    report["best_epoch"] = float(cfg.epochs)
    report["trees"] = float(np.mean(rounds))
    log.info("gbm: %s rounds per member, val RMSE %s", rounds, report.get("rmse"))
    if on_epoch is not None:
        state = {"epoch": cfg.epochs, "model": model.state_dict()}
        on_epoch(cfg.epochs, report, model, state)
    return model, report
