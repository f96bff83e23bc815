"""What analysis makes of a model: a chain of stages, the rounded weights and the states.

``Plan`` is the exporter's view of the model from analysis on: every later step (twin
functions, converter routes, flatbuffer rewrites, verification) reads it instead of the
Keras model. Each ``Stage`` is one layer and the handler that owns it (``handlers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_lowprec.export.errors import UnsupportedLayerError


@dataclass
class WeightInfo:
    """One rounded weight of the model, as the exporter must encode it."""

    layer: str
    name: str
    value: np.ndarray  # float32, the deterministic rounded weight (or the float weight)
    method: str | None  # quantizer.method, None for a full-precision weight
    encoding: str  # see ``encodings``: "ternary", "binary", "shift", "linear" or "int8"
    scale: float | None  # the exact int8 scale (None: the converter's plain int8)
    levels: np.ndarray | None = None
    gates: int = 1  # gate matrices side by side along the last axis (LSTM 4, GRU 3)
    # float32 per-column scales s (``channel_scale=True``): ``value`` is ``levels * s`` by
    # column, and the int8 scale of column j is ``|s_j| * scale``.
    channel_scale: np.ndarray | None = None

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.name}"


@dataclass
class Stage:
    """One layer of the chain. ``kind`` is its handler's kind (``"rnn"``, ``"dense"``,
    ``"affine"``, ``"layernorm"``, ``"apply"``, ``"identity"``); ``params`` holds what the
    handler read from the layer at analysis (rounded weights, affine factors...)."""

    kind: str
    layer: Any
    name: str
    handler: Any = None
    per_step: bool = True  # acts on each time step separately (possible in stream mode)
    params: dict = field(default_factory=dict)
    units: int = 0
    n_states: int = 0
    return_sequences: bool = False


@dataclass
class Plan:
    stages: list[Stage]
    timesteps: int | None
    features: int
    weights: list[WeightInfo] = field(default_factory=list)
    state_names: list[str] = field(default_factory=list)
    state_sizes: list[int] = field(default_factory=list)
    # Masking on the model input (stream mode only): its mask_value and the report line.
    mask_value: float | None = None
    masking: str | None = None

    @property
    def recurrent(self) -> list[Stage]:
        return [s for s in self.stages if s.kind == "rnn"]


def check_streamable(plan: Plan) -> None:
    """Raises ``UnsupportedLayerError`` unless the plan can run one time step per invoke."""
    seq = True  # whether the tensor between stages still has a time axis
    for stage in plan.stages:
        if stage.kind == "rnn":
            if not seq:
                raise UnsupportedLayerError(
                    f"layer '{stage.name}': stream mode needs every RNN before it to return sequences.")
            seq = stage.return_sequences
        elif not stage.per_step and seq:
            raise UnsupportedLayerError(
                f"layer '{stage.name}' ({type(stage.layer).__name__}) mixes time steps and cannot run one "
                "step per invoke; use mode='sequence'.")
    if not plan.recurrent:
        raise UnsupportedLayerError("stream mode needs at least one recurrent layer.")


def streamable(plan: Plan) -> bool:
    try:
        check_streamable(plan)
    except UnsupportedLayerError:
        return False
    return True


def ends_with_sequence(plan: Plan) -> bool:
    """Whether the model's output keeps the time axis (its last RNN returns sequences)."""
    seq = True
    for stage in plan.recurrent:
        seq = stage.return_sequences
    return seq


def real_frames(x, mask_value: float | None) -> list[np.ndarray]:
    """Each sequence of ``x`` (N, T, F) without its masked frames (all features equal to
    ``mask_value``, as ``keras.layers.Masking`` decides): what stream firmware feeds.
    ``mask_value=None``: the sequences as they are."""
    if mask_value is None:
        return [np.asarray(seq) for seq in x]
    return [np.asarray(seq)[np.any(np.asarray(seq) != np.float32(mask_value), axis=-1)] for seq in x]


def last_real_index(x: np.ndarray, mask_value: float) -> np.ndarray:
    """Index of the last unmasked frame of each sequence of ``x`` (N, T, F) (-1: none)."""
    real = np.any(x != np.float32(mask_value), axis=-1)
    T = x.shape[1]
    return np.where(real.any(axis=1), T - 1 - np.argmax(real[:, ::-1], axis=1), -1)
