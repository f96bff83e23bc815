"""NumPy reference of the C runtime's integer arithmetic (``klp.c``), bit for bit.

Batched over sequences: every function takes ``(N, ...)`` arrays of int64 holding the int8 /
int16 / int32 values the C code holds. The matrix-vector products are plain integer
products (``x @ W``): the C kernels' tables of partial sums give the same integers, since
no table entry or sum leaves int16 / int32 (checked by :func:`_i32` for the sums).
"""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.cruntime.model import IntModel, Layer

_I32 = (-(2**31), 2**31 - 1)


def _i32(v: np.ndarray, what: str) -> np.ndarray:
    """Checks that int32 arithmetic of the C code would hold ``v`` (no overflow)."""
    if v.size and (v.min() < _I32[0] or v.max() > _I32[1]):
        raise OverflowError(f"{what}: a value leaves int32 ({int(v.min())} .. {int(v.max())})")
    return v


def _lut(table: np.ndarray, pre: np.ndarray) -> np.ndarray:
    return table.astype(np.int64)[np.clip(pre, -256, 255) + 256]


def _mult(layer: Layer, mult: np.ndarray, g: int, cols: slice):
    """The multiplier(s) of gate g's columns: one per column, or the gate's one."""
    return mult[cols].astype(np.int64) if layer.mult_per_column else int(mult[g])


def _pre(layer: Layer, ax: np.ndarray, ah: np.ndarray, g: int) -> np.ndarray:
    """``(ax * mult_x + ah * mult_h + bias) >> shift`` on gate g's columns."""
    cols = slice(g * layer.units, (g + 1) * layer.units)
    px = _i32(ax[:, cols] * _mult(layer, layer.mult_x, g, cols), "ax * mult_x")
    ph = _i32(ah[:, cols] * _mult(layer, layer.mult_h, g, cols), "ah * mult_h")
    total = _i32(_i32(px + ph, "requant sum") + layer.bias[cols], "requant sum + bias")
    return total >> int(layer.shift[g])


def _matvec(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    return _i32(x @ values.astype(np.int64), "accumulator")


def rnn_step(model: IntModel, layer: Layer, x: np.ndarray, h: np.ndarray, c: np.ndarray | None):
    """One step of an RNN layer: returns ``(h', c')`` (c' None unless LSTM)."""
    sig, tanh = model.sigmoid, model.tanh
    ax = _matvec(x, layer.w.values)
    u = layer.units
    if layer.type == "gru_reset_before":
        ah = np.zeros_like(ax)
        ah[:, :2 * u] = _matvec(h, layer.u.values[:, :2 * u])
    else:
        ah = _matvec(h, layer.u.values)
    if layer.type == "simple_rnn":
        return _lut(tanh, _pre(layer, ax, ah, 0)), None
    if layer.type == "lstm":
        i, f = _lut(sig, _pre(layer, ax, ah, 0)), _lut(sig, _pre(layer, ax, ah, 1))
        g, o = _lut(tanh, _pre(layer, ax, ah, 2)), _lut(sig, _pre(layer, ax, ah, 3))
        c_new = np.clip((f * c + i * g * 16 + 128) >> 8, -32768, 32767)
        t = _lut(tanh, (c_new + 16) >> 5)
        return np.clip((o * t + 128) >> 8, -128, 127), c_new
    z, r = _lut(sig, _pre(layer, ax, ah, 0)), _lut(sig, _pre(layer, ax, ah, 1))
    cols = slice(2 * u, 3 * u)
    if layer.type == "gru":
        px = _i32(ax[:, cols] * _mult(layer, layer.mult_x, 2, cols) + layer.bias[cols], "candidate x") >> int(
            layer.shift[2])
        ph = _i32(ah[:, cols] * _mult(layer, layer.mult_h, 2, cols) + layer.bias_h, "candidate h") >> int(
            layer.shift[2])
        hh = _lut(tanh, px + ((r * ph + 128) >> 8))
    else:
        rh = np.clip((r * h + 128) >> 8, -128, 127)
        ah[:, cols] = _matvec(rh, layer.u.values[:, cols])
        hh = _lut(tanh, _pre(layer, ax, ah, 2))
    return np.clip((z * h + (256 - z) * hh + 128) >> 8, -128, 127), None


def dense(layer: Layer, x: np.ndarray) -> np.ndarray:
    """``clamp(((x W) * mult + bias) >> shift + zp)``, lower bound zp for ReLU."""
    acc = _matvec(x, layer.w.values)
    y = (_i32(_i32(acc * _mult(layer, layer.mult_x, 0, slice(None)), "dense product") + layer.bias, "dense sum")
         >> int(layer.shift[0])) + layer.out_zp
    return np.clip(y, layer.out_zp if layer.act == "relu" else -128, 127)


def init_state(model: IntModel, n: int) -> list:
    """Zero state: per RNN layer ``[h, c]`` (c None unless LSTM)."""
    return [[np.zeros((n, l.units), np.int64), np.zeros((n, l.units), np.int64) if l.type == "lstm" else None]
            for l in model.layers if l.is_rnn]


def step(model: IntModel, state: list, xq: np.ndarray, stop: int | None = None) -> np.ndarray:
    """One time step for a batch of int8 inputs ``xq`` (N, features); updates ``state`` in
    place and returns the output (or, with ``stop=k``, the input of layer k)."""
    inp = np.asarray(xq, dtype=np.int64)
    k = 0
    for k, layer in enumerate(model.layers):
        if stop is not None and k == stop:
            return inp
        if layer.is_rnn:
            st = state[k]
            st[0], st[1] = rnn_step(model, layer, inp, st[0], st[1])
            inp = st[0]
        else:
            inp = dense(layer, inp)
    return inp


def run(model: IntModel, xq: np.ndarray, stop: int | None = None) -> tuple[np.ndarray, list]:
    """Runs int8 sequences ``xq`` (N, T, features) from a zero state; returns the outputs of
    every step ``(N, T, outputs)`` (int64 holding int8) and the final state."""
    xq = np.asarray(xq)
    state = init_state(model, xq.shape[0])
    outs = [step(model, state, xq[:, t], stop) for t in range(xq.shape[1])]
    return np.stack(outs, 1), state


def predict(model: IntModel, x: np.ndarray) -> np.ndarray:
    """Float sequences -> the model's int8 outputs: the last step's (the whole sequence's when
    the last RNN returns sequences)."""
    out, _ = run(model, model.quantize_input(x))
    return out if model.head_every_step else out[:, -1]


def dequantize(model: IntModel, q: np.ndarray) -> np.ndarray:
    return (np.asarray(q, np.float64) - model.output_zp) * model.output_scale


def state_bytes(model: IntModel, state: list, total: int) -> np.ndarray:
    """The state memory the C code holds (N, total) as uint8: h int8, c int16 little-endian."""
    n = state[0][0].shape[0]
    out = np.zeros((n, total), np.uint8)
    rnns = [l for l in model.layers if l.is_rnn]
    for layer, (h, c) in zip(rnns, state):
        out[:, layer.state_h:layer.state_h + layer.units] = h.astype(np.int8).view(np.uint8)
        if c is not None:
            raw = c.astype("<i2").view(np.uint8).reshape(n, -1)
            out[:, layer.state_c:layer.state_c + 2 * layer.units] = raw
    return out
