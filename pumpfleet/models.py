"""Small PyTorch models over feature windows, sized for an edge device.

Every model maps ``[B, W, C]`` standardised windows to ``[B, 2]``: the remaining useful
life as a fraction of the cap, and the probability of failure within the horizon.
``raw(x)`` gives the two pre-activations (the training loss works on them).

- ``cnn``: two plain convolutions (the first model; registered versions load as such).
- ``tcn``: a temporal convolutional network, dilated causal convolutions in residual
  blocks (Bai, Kolter & Koltun 2018), read at the window's last step.
- ``gru``: a stacked GRU, read at the window's last step.
- ``transformer``: a small transformer encoder (pre-norm self-attention blocks over the
  window's steps with learned positions), read at the last step and the mean.
- ``gbm``: gradient-boosted trees (LightGBM) on engineered window features
  (:mod:`pumpfleet.window_stats`), computed inside the model, so that it reads the same
  standardised windows as every other kind (:mod:`pumpfleet.boosting`).

``blend_gbm`` averages a network kind with a gbm trained on the same windows.

``members > 1`` makes any kind an ensemble: that many independently initialised copies,
each trained on its own loss, whose outputs are averaged (less variance from one
initialisation; the size grows by the same factor). A ``gbm`` ensemble is that many
boosters with their own seeds for bagging and feature sampling.

All export to ONNX (opset 17) with a dynamic batch dimension: the torch kinds with torch's
legacy exporter, ``gbm`` with onnxmltools (:func:`pumpfleet.onnx_io.to_onnx`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, model_validator
from torch import nn

KINDS = ("cnn", "tcn", "gru", "transformer", "gbm")
NEURAL_KINDS = tuple(k for k in KINDS if k != "gbm")  # trained by the torch loop
# Blocks (tcn, transformer) or stacked recurrent layers (gru) where the config leaves
# ``layers`` unset; gbm has no layers.
DEFAULT_LAYERS = {"cnn": 2, "tcn": 3, "gru": 1, "transformer": 2, "gbm": 1}
# Longest window a transformer's learned positions cover.
MAX_STEPS = 512
# What "well under 1 MB of weights" means for an edge device.
MAX_BYTES = 1_000_000


class ModelConfig(BaseModel):
    kind: str = Field(default="cnn", pattern=f"^({'|'.join(KINDS)})$")
    hidden: int = Field(default=32, ge=4, le=512)
    kernel: int = Field(default=5, ge=1, le=31)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    # Residual blocks (tcn; dilations 1, 2, 4, ...) or stacked GRU layers; None: the
    # kind's default. The cnn has its fixed two layers.
    layers: int | None = Field(default=None, ge=1, le=8)
    # Copies averaged into one model (see the module's docstring); 1: a single model.
    members: int = Field(default=1, ge=1, le=16)
    # transformer: attention heads (``hidden`` must divide by it).
    heads: int = Field(default=4, ge=1, le=16)
    # gbm: leaves per tree, the most boosting rounds (early stopping on the validation
    # windows picks fewer) and the fewest training windows in a leaf.
    leaves: int = Field(default=15, ge=2, le=255)
    trees: int = Field(default=1500, ge=1, le=20_000)
    min_leaf: int = Field(default=50, ge=1)
    # The boosters' learning rate (shrinkage); the search's ``lr`` is the networks'.
    tree_lr: float = Field(default=0.03, gt=0, le=1)
    # gbm: the window statistics the trees read: "window" (over the whole window and its
    # last steps) or "multiscale" (also recent means, slopes and exponentially weighted
    # means; :mod:`pumpfleet.window_stats`).
    stats: Literal["window", "multiscale"] = "window"
    # gbm: 0, or as many boosters again reading only the last ``lookback`` steps of the
    # window, averaged with the whole-window ones: two window lengths in one model.
    lookback: int = Field(default=0, ge=0, le=10_000)
    # A network kind averaged with a gbm trained on the same windows (their errors
    # differ: trees read summaries, the network the sequence).
    blend_gbm: bool = False

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.kind == "transformer" and self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.kind == "gbm" and self.blend_gbm:
            raise ValueError("blend_gbm blends a network kind with a gbm; kind is gbm already")
        return self

    @property
    def n_layers(self) -> int:
        return self.layers if self.layers is not None else DEFAULT_LAYERS[self.kind]


class _TwoOutputs(nn.Module):
    """``forward`` = sigmoid of both pre-activations of ``raw``."""

    def raw(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.raw(x))


class TemporalCNN(_TwoOutputs):
    """Two 1-D convolutions over time, pooled, with a RUL head and a failure head."""

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.body = nn.Sequential(
            nn.Conv1d(n_channels, h, cfg.kernel, padding=cfg.kernel // 2),
            nn.ReLU(),
            nn.Conv1d(h, h, 3, padding=1),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * h, 2)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Logits / pre-activations ``[B, 2]`` (used by the training loss)."""
        z = self.body(x.transpose(1, 2))
        pooled = torch.cat([z.mean(dim=2), z[:, :, -1]], dim=1)
        return self.head(self.dropout(pooled))


class _CausalConv(nn.Module):
    """A 1-D convolution that sees only the present and the past: padded on the left."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, (self.pad, 0)))


class _TCNBlock(nn.Module):
    """Two causal dilated convolutions with ReLU and dropout, plus a residual path."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _CausalConv(c_in, c_out, kernel, dilation),
            nn.ReLU(),
            nn.Dropout(dropout),
            _CausalConv(c_out, c_out, kernel, dilation),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.net(x) + self.skip(x))


class TCN(_TwoOutputs):
    """Dilated causal residual blocks (dilation doubling per block); the head reads the
    last step, which sees ``1 + 2 (kernel - 1) (2^blocks - 1)`` steps, and the mean over
    the window."""

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.blocks = nn.Sequential(
            *(
                _TCNBlock(n_channels if i == 0 else h, h, cfg.kernel, 2**i, cfg.dropout)
                for i in range(cfg.n_layers)
            )
        )
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 2))

    @staticmethod
    def receptive_field(cfg: ModelConfig) -> int:
        return 1 + 2 * (cfg.kernel - 1) * (2**cfg.n_layers - 1)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        z = self.blocks(x.transpose(1, 2))
        return self.head(torch.cat([z[:, :, -1], z.mean(dim=2)], dim=1))


class GRUNet(_TwoOutputs):
    """A stacked GRU over the window; the head reads the last step's hidden state."""

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.gru = nn.GRU(
            n_channels,
            h,
            num_layers=cfg.n_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        # No initial state is passed: the exporter then makes a zero state sized by the
        # input, so the ONNX batch dimension stays dynamic.
        out, _ = self.gru(x)
        return self.head(self.dropout(out[:, -1]))


class _AttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention and a feed-forward layer, each residual. Written
    out (not ``nn.TransformerEncoderLayer``) so that training, export and the ONNX graph
    run the same plain operations."""

    def __init__(self, h: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.proj = nn.Linear(h, h)
        self.norm2 = nn.LayerNorm(h)
        self.ff = nn.Sequential(nn.Linear(h, 2 * h), nn.GELU(), nn.Linear(2 * h, h))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, w, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        split = (b, w, self.heads, h // self.heads)
        q, k, v = (t.reshape(split).transpose(1, 2) for t in (q, k, v))  # [B, H, W, d]
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(h // self.heads), dim=-1)
        y = (self.dropout(att) @ v).transpose(1, 2).reshape(b, w, h)
        x = x + self.dropout(self.proj(y))
        return x + self.dropout(self.ff(self.norm2(x)))


class TransformerNet(_TwoOutputs):
    """A linear embedding of each step plus a learned position, ``layers`` attention
    blocks, and a head on the last step and the mean over the window."""

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.embed = nn.Linear(n_channels, h)
        self.position = nn.Parameter(torch.zeros(1, MAX_STEPS, h))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(
            *(_AttentionBlock(h, cfg.heads, cfg.dropout) for _ in range(cfg.n_layers))
        )
        self.norm = nn.LayerNorm(h)
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 2))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[1]
        # Positions count back from the window's last step, so the newest reading always
        # has the same embedding whatever the window.
        z = self.embed(x) + self.position[:, MAX_STEPS - w :]
        z = self.norm(self.blocks(z))
        return self.head(torch.cat([z[:, -1], z.mean(dim=1)], dim=1))


class Ensemble(_TwoOutputs):
    """Members of one kind, each with its own pre-activations (``member_raw``, which the
    training loss works on member by member); the outputs are the members' mean."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def member_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[M, B, 2]`` of every member."""
        return torch.stack([m.raw(x) for m in self.members])  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.member_raw(x)).mean(dim=0)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activations whose sigmoid is ``forward``."""
        return torch.logit(self(x), eps=1e-7)


def build_model(n_channels: int, cfg: ModelConfig) -> nn.Module:
    """The model of ``cfg.kind`` for windows of ``n_channels`` channels (a ``gbm`` is
    untrained until :func:`pumpfleet.boosting.fit_boosted` or its state fills it)."""
    if cfg.kind == "gbm" or cfg.blend_gbm:
        from pumpfleet.boosting import Blended, BoostedTrees

        if cfg.blend_gbm:
            net = build_model(n_channels, cfg.model_copy(update={"blend_gbm": False}))
            trees = cfg.model_copy(update={"kind": "gbm", "members": 1, "blend_gbm": False})
            return Blended(net, BoostedTrees(n_channels, trees))
        return BoostedTrees(n_channels, cfg)
    if cfg.members > 1:
        single = cfg.model_copy(update={"members": 1})
        return Ensemble([build_model(n_channels, single) for _ in range(cfg.members)])
    if cfg.kind == "tcn":
        return TCN(n_channels, cfg)
    if cfg.kind == "gru":
        return GRUNet(n_channels, cfg)
    if cfg.kind == "transformer":
        return TransformerNet(n_channels, cfg)
    return TemporalCNN(n_channels, cfg)


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of the weights (a booster's: of its trees, :meth:`BoostedTrees.size_bytes`)."""
    own = getattr(model, "size_bytes", None)
    if callable(own):
        return int(own())
    return sum(p.numel() * p.element_size() for p in model.parameters())


def describe(model: nn.Module) -> dict[str, Any]:
    counted = getattr(model, "parameter_count", None)
    return {
        "class": type(model).__name__,
        "parameters": int(counted())
        if callable(counted)
        else sum(p.numel() for p in model.parameters()),
        "bytes": model_size_bytes(model),
    }
