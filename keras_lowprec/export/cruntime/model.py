"""The integer model the C runtime runs: layers, weights as integer codes, fixed-point
requantization constants, activation tables, memory layout.

Fixed-point formats (shared with ``klp.c`` and ``reference.py``):

* activations between layers: int8 with a scale and zero point; the hidden state of every
  RNN layer is Q7 (scale 1/128, zero point 0: h is in (-1, 1));
* a gate's pre-activation: int32 in Q5 for sigmoid gates, Q6 for tanh ones, clamped to the
  512-entry tables (sigmoid on [-8, 8) -> Q8 in 0..255, tanh on [-4, 4) -> Q7);
* LSTM cell state: int16 Q11 (range [-16, 16));
* requantization of output column j of gate g:
  ``(ax[j] * mult_x[g] + ah[j] * mult_h[g] + bias[j]) >> shift[g]`` with int32 products; the
  input zero point (``- zp * colsum(W) * mult_x``), the real bias and the rounding half
  ``2^(shift-1)`` are folded into ``bias``. Layers with channel scales (``channel_scale=True``)
  have one multiplier per output column instead (``mult_x[j]``, ``mult_h[j]``;
  ``mult_per_column``): the scale ``s_j`` costs nothing beyond the multiply every output has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from keras_lowprec.export.cruntime import packing as P

LUT_HALF = 256  # tables cover pre-activations -256 .. 255 in their Q format
SIGMOID_FRAC = 5  # Q5: [-8, 8)
TANH_FRAC = 6  # Q6: [-4, 4)
CELL_FRAC = 11  # LSTM cell state Q11
H_SCALE = 1.0 / 128.0  # hidden state Q7
BUDGET = 2**28  # bound of each of the four int32 terms of a requantization (sum < 2^30)

LAYER_TYPES = ("simple_rnn", "lstm", "gru", "gru_reset_before", "dense")
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3, "dense": 1}
# Table of each gate: LSTM i f c o, GRU z r h.
GATE_ACT = {"simple_rnn": "t", "lstm": "ssts", "gru": "sst", "gru_reset_before": "sst", "dense": "-"}


@dataclass
class Matrix:
    """Integer weight codes ``values`` (rows = inputs, cols = outputs), how they are packed,
    and ``scales``: the real value of code 1 per output column (equal within a gate's block
    of columns unless the layer has channel scales)."""

    values: np.ndarray
    packing: str
    scales: np.ndarray
    block: int = 1

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def cols(self) -> int:
        return int(self.values.shape[1])

    @property
    def stride(self) -> int:
        return P.stride(self.packing, self.rows)

    @property
    def codes(self) -> bytes:
        return P.pack(self.values, self.packing)

    @property
    def table_bytes(self) -> int:
        return 2 * P.TABLE_ENTRIES[self.packing] * min(self.block, self.stride)

    def set_block(self, table_budget: int) -> None:
        """Groups per table block: as many as ``table_budget`` bytes of tables hold (>= 1);
        for trit4 a multiple of 3 unless one block holds the whole column (see packing)."""
        per_group = 2 * P.TABLE_ENTRIES[self.packing]
        self.block = self.stride if per_group == 0 else max(1, min(self.stride, table_budget // per_group))
        if self.packing == "trit4" and self.block < self.stride:
            self.block = max(3, self.block - self.block % 3)


@dataclass
class Layer:
    """One layer of the integer model (see the module docstring for the arithmetic)."""

    name: str
    type: str
    inputs: int
    units: int
    w: Matrix
    u: Matrix | None
    bias: np.ndarray
    mult_x: np.ndarray
    mult_h: np.ndarray
    shift: np.ndarray
    bias_h: np.ndarray | None = None
    mult_per_column: bool = False  # mult_x / mult_h hold one entry per output column, not per gate
    act: str = "linear"
    out_scale: float = H_SCALE
    out_zp: int = 0
    state_h: int = 0
    state_c: int = 0

    @property
    def is_rnn(self) -> bool:
        return self.type != "dense"


@dataclass
class IntModel:
    """The whole integer model: what ``to_c`` writes and ``reference`` runs."""

    layers: list[Layer]
    input_scale: float
    input_zp: int
    sigmoid: np.ndarray = field(default_factory=lambda: sigmoid_table())
    tanh: np.ndarray = field(default_factory=lambda: tanh_table())
    head_every_step: bool = False  # the last RNN returns sequences: the head's output is per step
    dropped: list[str] = field(default_factory=list)  # layers left out (identity, final softmax)

    @property
    def input_size(self) -> int:
        return self.layers[0].inputs

    @property
    def output_size(self) -> int:
        last = self.layers[-1]
        return last.w.cols if last.type == "dense" else last.units

    @property
    def output_scale(self) -> float:
        return self.layers[-1].out_scale

    @property
    def output_zp(self) -> int:
        return self.layers[-1].out_zp

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float inputs -> the int8 codes the runtime takes (round half to even, saturate)."""
        q = np.round(np.asarray(x, dtype=np.float64) / self.input_scale) + self.input_zp
        return np.clip(q, -128, 127).astype(np.int8)


def sigmoid_table() -> np.ndarray:
    """uint8 Q8 sigmoid of the Q5 inputs -256 .. 255."""
    k = np.arange(-LUT_HALF, LUT_HALF, dtype=np.float64)
    return np.clip(np.round(256.0 / (1.0 + np.exp(-k / 2**SIGMOID_FRAC))), 0, 255).astype(np.uint8)


def tanh_table() -> np.ndarray:
    """int8 Q7 tanh of the Q6 inputs -256 .. 255."""
    k = np.arange(-LUT_HALF, LUT_HALF, dtype=np.float64)
    return np.clip(np.round(128.0 * np.tanh(k / 2**TANH_FRAC)), -128, 127).astype(np.int8)


def fixed_point(terms: list[tuple[float, float]]) -> int:
    """Largest shift S in 1..30 such that every ``|real multiplier| * bound * 2^S`` stays
    within ``BUDGET`` (so each int32 product and the folded bias stay below 2^28)."""
    worst = max((abs(r) * b for r, b in terms), default=0.0)
    if worst <= 0:
        return 30
    s = int(np.floor(np.log2(BUDGET / worst)))
    return int(min(30, max(1, s)))


def layout(model: IntModel) -> dict[str, int]:
    """State offsets (set on the layers) and the scratch memory layout, in bytes (4-aligned)."""
    def up4(n):
        return (n + 3) // 4 * 4

    off = 0
    for layer in model.layers:
        if layer.is_rnn:
            layer.state_h, off = off, off + up4(layer.units)
            if layer.type == "lstm":
                layer.state_c, off = off, off + up4(2 * layer.units)
    mats = [m for l in model.layers for m in (l.w, l.u) if m is not None]
    acc_x = 4 * max(l.w.cols for l in model.layers)
    acc_h = 4 * max([l.u.cols for l in model.layers if l.u is not None] + [1])
    table = up4(max(m.table_bytes for m in mats))
    buf = up4(max([l.units for l in model.layers if l.type == "gru_reset_before"]
                  + [l.w.cols for l in model.layers if l.type == "dense"] + [4]))
    return {"state_bytes": off, "acc_h_offset": acc_x, "table_offset": acc_x + acc_h,
            "buf_offset": acc_x + acc_h + table, "buf_bytes": buf,
            "scratch_bytes": acc_x + acc_h + table + 2 * buf,
            "acc_bytes": acc_x + acc_h, "table_bytes": table}
