"""From a Keras model to the integer model of the C runtime (``model.IntModel``).

The model is read by the exporter's own analysis (``analysis.analyze``, stream mode), so the
weights are exactly the layers' deterministic rounded weights and the gate math is Keras's.
Supported chain: identity layers (dropout / noise, input Masking), one or more SimpleRNN /
GRU / LSTM layers (each but the last returning sequences), then Dense layers; a final
softmax (Dense activation, Activation or Softmax layer) is dropped: it does not change the
argmax, and the runtime outputs the int8 logits.
"""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.cruntime import model as M
from keras_lowprec.export.cruntime import reference
from keras_lowprec.export.errors import ExportError, UnsupportedLayerError

SUPPORTED = ("identity layers (Dropout, GaussianNoise, ...; Masking on the input), QuantSimpleRNN / QuantGRU / "
             "QuantLSTM and presets (tanh activation, sigmoid recurrent activation) and Keras SimpleRNN / GRU / "
             "LSTM, then QuantDense / Dense layers (linear or relu; softmax on the last one is dropped) and a "
             "final Softmax / Activation('softmax')")


def _act_name(fn) -> str:
    from keras_lowprec.export.handlers.base import activation_name

    return str(activation_name(fn))


def matrix(info, gates: int, ternary_packing: str) -> M.Matrix:
    """Integer codes and per-column scales of one rounded weight (``plan.WeightInfo``).

    Levels with one magnitude (ternary, binary, pow2-ternary): codes -1, 0, 1 times it, packed
    as trits. Power-of-two levels (exponential, ``encoding == "shift"``): signed powers
    2^0 .. 2^6 times the smallest magnitude (4-bit shift codes). Other exact levels (integer
    multiples of a step): int8 codes. Channel scales ``s_j`` multiply column j's scale by
    ``|s_j|`` (the sign goes into the codes). Float weights: int8, symmetric, one scale per gate."""
    v = np.asarray(info.value, np.float64)
    if info.levels is not None:
        levels = np.asarray(info.levels, np.float64)
        mags = np.unique(np.abs(levels[levels != 0]))
        unit = mags.min()
        s = np.ones(v.shape[1]) if info.channel_scale is None else np.asarray(info.channel_scale, np.float64)
        col = unit * np.where(s == 0, 1.0, np.abs(s))
        codes = np.rint(v / col).astype(np.int64)
        want = np.asarray(info.value, np.float32)
        back = codes.astype(np.float32) * (np.float32(unit) * np.where(s == 0, 1, np.abs(s)).astype(np.float32))
        if not np.array_equal(back, want) or np.abs(codes).max(initial=0) > 127:
            raise ExportError(f"layer '{info.layer}' weight '{info.name}': rounded values are not integer "
                              f"multiples (at most 127) of {unit!r}" + (" times the channel scales."
                                                                        if info.channel_scale is not None else "."))
        packing = ternary_packing if len(mags) == 1 else ("shift4" if info.encoding == "shift" else "int8")
        return M.Matrix(codes, packing, col)
    cols = v.shape[1] // gates
    scales = np.array([max(np.abs(v[:, g * cols:(g + 1) * cols]).max(), 1e-30) / 127.0 for g in range(gates)])
    codes = np.concatenate([np.rint(v[:, g * cols:(g + 1) * cols] / scales[g]) for g in range(gates)], 1)
    return M.Matrix(np.clip(codes, -127, 127).astype(np.int64), "int8", np.repeat(scales, cols))


def _gate_requant(w, u, g, units, in_scale, in_zp, frac, bx, bh=None):
    """``(mult_x, mult_h, shift, bias_int, bias_h_int)`` of gate g (see model.py): the
    multipliers one per column of the gate, the shift one for the gate (its worst column)."""
    cols = slice(g * units, (g + 1) * units)
    wg, ug = w.values[:, cols], u.values[:, cols]
    rx, rh = in_scale * w.scales[cols] * 2.0**frac, M.H_SCALE * u.scales[cols] * 2.0**frac
    colsum = wg.sum(0)
    bx = bx * 2.0**frac
    bh = None if bh is None else bh * 2.0**frac
    s = M.fixed_point([(1.0, np.max(rx * 128 * np.abs(wg).sum(0))), (1.0, np.max(rh * 128 * np.abs(ug).sum(0))),
                       (1.0, np.max(rx * abs(in_zp) * np.abs(colsum))), (1.0, np.abs(bx).max()),
                       (1.0, 0.0 if bh is None else np.abs(bh).max())])
    mx, mh = np.round(rx * 2**s).astype(np.int64), np.round(rh * 2**s).astype(np.int64)
    half = 1 << (s - 1)
    bias = np.round(bx * 2.0**s).astype(np.int64) - in_zp * colsum * mx + half
    bias_h = None if bh is None else np.round(bh * 2.0**s).astype(np.int64) + half
    return mx, mh, s, bias, bias_h


def _multipliers(per_gate: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """The layer's multipliers: one per gate where every column of a gate has the same one
    (no channel scales), else one per column; and whether they are per column."""
    if all(np.all(m == m[0]) for m in per_gate):
        return np.array([int(m[0]) for m in per_gate], np.int64), False
    return np.concatenate(per_gate).astype(np.int64), True


def rnn_layer(stage, infos, in_scale: float, in_zp: int, ternary_packing: str) -> M.Layer:
    """The integer layer of one RNN stage, its input quantized with (in_scale, in_zp)."""
    from keras_lowprec.export.handlers.base import base_name

    layer, cell = stage.layer, stage.layer.cell
    base = base_name(layer)
    act = _act_name(cell.activation)
    rec = _act_name(getattr(cell, "recurrent_activation", "sigmoid"))
    if act != "tanh" or rec != "sigmoid":
        raise UnsupportedLayerError(
            f"layer '{layer.name}' ({type(layer).__name__}): activation={act!r}, recurrent_activation={rec!r}; "
            "the C runtime supports activation='tanh' and recurrent_activation='sigmoid' (its two tables).")
    typ = {"SimpleRNN": "simple_rnn", "LSTM": "lstm"}.get(base)
    if base == "GRU":
        typ = "gru" if getattr(cell, "reset_after", True) else "gru_reset_before"
    gates, units = M.GATES[typ], int(cell.units)
    w = matrix(infos["kernel"], gates, ternary_packing)
    u = matrix(infos["recurrent_kernel"], gates, ternary_packing)
    b = np.zeros((2, gates * units)) if "bias" not in infos else np.asarray(infos["bias"].value, np.float64)
    b_in, b_rec = (b[0], b[1]) if b.ndim == 2 else (b, np.zeros_like(b))
    out = {k: [] for k in ("mx", "mh", "s", "bias")}
    bias_h = None
    for g in range(gates):
        cols = slice(g * units, (g + 1) * units)
        frac = M.SIGMOID_FRAC if M.GATE_ACT[typ][g] == "s" else M.TANH_FRAC
        candidate = typ == "gru" and g == 2  # x and h parts requantized apart (r multiplies h's)
        bx = b_in[cols] if candidate else b_in[cols] + b_rec[cols]
        mx, mh, s, bias, bh = _gate_requant(w, u, g, units, in_scale, in_zp, frac, bx,
                                            b_rec[cols] if candidate else None)
        for k, v in zip(("mx", "mh", "s", "bias"), (mx, mh, s, bias)):
            out[k].append(v)
        bias_h = bh if candidate else bias_h
    (mult_x, x_cols), (mult_h, h_cols) = _multipliers(out["mx"]), _multipliers(out["mh"])
    if x_cols != h_cols:  # one indexing for both: the per-gate ones repeated per column
        mult_x, mult_h = np.concatenate(out["mx"]), np.concatenate(out["mh"])
    return M.Layer(layer.name, typ, w.rows, units, w, u, np.concatenate(out["bias"]), mult_x, mult_h,
                   np.array(out["s"], np.int64), bias_h=bias_h, mult_per_column=x_cols or h_cols)


def calibrate(values: np.ndarray) -> tuple[float, int]:
    """Asymmetric int8 ``(scale, zero_point)`` covering the values' range and 0."""
    lo, hi = min(0.0, float(np.min(values))), max(0.0, float(np.max(values)))
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    return scale, int(np.clip(np.round(-128 - lo / scale), -128, 127))


def dense_layer(stage, infos, in_scale, in_zp, x_in: np.ndarray, act: str, ternary_packing: str) -> M.Layer:
    """The integer Dense; its output scale calibrated on ``x_in`` (the int8 inputs it gets)."""
    w = matrix(infos["kernel"], 1, ternary_packing)
    b = np.asarray(infos["bias"].value, np.float64) if "bias" in infos else np.zeros(w.cols)
    colsum = w.values.sum(0)
    real = in_scale * w.scales * (x_in.astype(np.int64) @ w.values - in_zp * colsum) + b
    if act == "relu":
        real = np.maximum(real, 0.0)
    out_scale, out_zp = calibrate(real)
    r = in_scale * w.scales / out_scale
    bo = b / out_scale
    s = M.fixed_point([(1.0, np.max(r * 128 * np.abs(w.values).sum(0))), (1.0, np.max(r * abs(in_zp) * np.abs(colsum))),
                       (1.0, np.abs(bo).max()), (1.0, 128.0)])
    m, per_column = _multipliers([np.round(r * 2**s).astype(np.int64)])
    bias = np.round(bo * 2.0**s).astype(np.int64) - in_zp * colsum * (m if per_column else m[0]) + (1 << (s - 1))
    return M.Layer(stage.name, "dense", w.rows, w.cols, w, None, bias, m, np.array([0]),
                   np.array([s]), act=act, out_scale=out_scale, out_zp=out_zp, mult_per_column=per_column)


def _softmax_stage(stage) -> bool:
    """An Activation('softmax') / Softmax layer (dropped at the end of the chain)."""
    base = type(stage.layer).__name__
    return base == "Softmax" or (base == "Activation" and _act_name(stage.layer.activation) == "softmax")


def _dense_act(stage, last: bool, dropped: list[str]) -> str:
    act = _act_name(stage.layer.activation)
    if act == "softmax" and last:
        dropped.append(f"softmax of '{stage.name}' (argmax unchanged; the runtime outputs int8 logits)")
        return "linear"
    if act not in ("linear", "relu"):
        raise UnsupportedLayerError(f"layer '{stage.name}' (Dense): activation={act!r}; the C runtime supports "
                                    "linear and relu (softmax only on the last layer, where it is dropped).")
    return act


def _check_stage(stage, rnn_seen: bool, dense_seen: bool) -> None:
    kind = stage.kind
    what = f"layer '{stage.name}' ({type(stage.layer).__name__})"
    if kind == "rnn" and dense_seen:
        raise UnsupportedLayerError(f"{what}: a recurrent layer after a Dense; the C runtime runs RNN layers "
                                    f"first, then Dense layers. Supported: {SUPPORTED}.")
    if kind == "dense" and not rnn_seen:
        raise UnsupportedLayerError(f"{what}: a Dense before the first recurrent layer. Supported: {SUPPORTED}.")
    if kind not in ("identity", "rnn", "dense") and not _softmax_stage(stage):
        raise UnsupportedLayerError(f"{what} is not supported by the C runtime. Supported: {SUPPORTED}.")


def build(plan, x_rep: np.ndarray, ternary_packing: str, table_bytes: int) -> M.IntModel:
    """The integer model of ``plan`` (the exporter's analysis, stream mode); the input scale
    and every Dense output scale are calibrated on ``x_rep`` (N, T, features)."""
    infos: dict[str, dict] = {}
    for info in plan.weights:
        infos.setdefault(info.layer, {})[info.name] = info
    stages = plan.stages
    in_scale, in_zp = calibrate(x_rep)
    im = M.IntModel([], in_scale, in_zp)
    xq = im.quantize_input(x_rep)
    scale, zp = in_scale, in_zp
    for k, stage in enumerate(stages):
        rnn_seen = any(l.is_rnn for l in im.layers)
        _check_stage(stage, rnn_seen, any(not l.is_rnn for l in im.layers))
        if stage.kind == "identity":
            im.dropped.append(f"'{stage.name}' ({type(stage.layer).__name__}): " + (
                "firmware feeds only the real frames of a sequence (klp_reset between sequences)"
                if type(stage.layer).__name__ == "Masking" else "identity at inference"))
        elif stage.kind == "rnn":
            im.layers.append(rnn_layer(stage, infos[stage.name], scale, zp, ternary_packing))
            im.head_every_step = bool(stage.return_sequences)
            scale, zp = M.H_SCALE, 0
        elif stage.kind == "dense":
            last = not any(s.kind in ("rnn", "dense") for s in stages[k + 1:])
            outs, _ = reference.run(im, xq)
            x_in = outs.reshape(-1, outs.shape[-1]) if im.head_every_step else outs[:, -1]
            layer = dense_layer(stage, infos[stage.name], scale, zp, x_in, _dense_act(stage, last, im.dropped),
                                ternary_packing)
            im.layers.append(layer)
            scale, zp = layer.out_scale, layer.out_zp
        else:  # a final softmax (checked above)
            if any(s.kind in ("rnn", "dense") for s in stages[k + 1:]):
                raise UnsupportedLayerError(f"layer '{stage.name}': softmax is supported only at the end.")
            im.dropped.append(f"'{stage.name}' (softmax; argmax unchanged, the runtime outputs int8 logits)")
    for layer in im.layers:
        for m in (layer.w, layer.u):
            if m is not None:
                m.set_block(table_bytes)
    return im
