"""SimpleRNN, GRU and LSTM (keras_lowprec's Quant layers, their presets, Keras's own).

Each step is written out gate by gate (one matrix product per gate and input) instead of
calling Keras's cells: Keras computes all gates with one product and SPLITs the result,
and when a gate output is unused (e.g. the forget gate at t=0, where c_0 = 0) the
converter can leave that SPLIT in float. The math is Keras's own (gate order i, f, c, o
for LSTM; z, r, h for GRU, ``reset_after`` or not).

``stream`` steps put every bias into a product, ``x W + b`` and (GRU ``reset_after``)
``h U + rb``, each one FULLY_CONNECTED with an int32 bias, instead of a separate ADD: each
int8 op between the products and the activation rounds the pre-activation once more. In
a stream graph the state scale is the one fixed scale of the state input. The twin
unrolled in Python keeps the biases out of the state-side products, whose input scale
differs at every step there (one int32 copy per step).
"""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.handlers import register
from keras_lowprec.export.handlers.base import Handler, activation_name, base_name, refuse, rounded_weights
from keras_lowprec.export.plan import Stage

GATES = {"LSTM": "ifco", "GRU": "zrh", "SimpleRNN": "h"}


@register
class RecurrentHandler(Handler):
    classes = ("LSTM", "GRU", "SimpleRNN")
    kind = "rnn"
    recurrent = True
    description = ("QuantLSTM / QuantGRU / QuantSimpleRNN and their presets (e.g. TernaryLSTM), keras LSTM / GRU / "
                   "SimpleRNN")

    def analyze(self, layer, plan, mode):
        self._check(layer)
        base = base_name(layer)
        weights = rounded_weights(layer.cell, layer.name, len(GATES[base]))
        values = {w.name: w.value for w in weights}
        n_states = 2 if base == "LSTM" else 1
        units = int(layer.cell.units)
        plan.weights.extend(weights)
        for s in ("h", "c")[:n_states]:
            plan.state_names.append(f"{layer.name}/{s}")
            plan.state_sizes.append(units)
        return Stage(self.kind, layer, layer.name, self, params={"values": values, "cell": base,
                                                                "pieces": gate_pieces(values, base, units)},
                     units=units, n_states=n_states, return_sequences=bool(layer.return_sequences))

    @staticmethod
    def _check(layer) -> None:
        if layer.go_backwards:
            raise refuse(layer, "go_backwards=True is not supported; train with go_backwards=False (reverse the "
                                "input yourself if you need it).")
        if layer.return_state:
            raise refuse(layer, "return_state=True is not supported.")
        if layer.stateful:
            raise refuse(layer, "stateful=True is not supported; export the non-stateful model (mode='stream' "
                                "carries the state between invokes).")

    def step(self, stage, x, states, stream: bool = False):
        """One step of the stage's cell in TF ops; returns ``(h, new_states)``."""
        import keras

        cell = stage.layer.cell
        act = keras.activations.get(cell.activation)
        rec_act = keras.activations.get(getattr(cell, "recurrent_activation", None) or "sigmoid")
        kind = stage.params["cell"]
        if kind == "SimpleRNN":
            p = stage.params["pieces"]["h"]
            h_new = act(_with_bias(_lin(p, x, "W"), p["b"]) + _lin(p, states[0], "U"))
            return h_new, [h_new]
        if kind == "LSTM":
            return _lstm_step(stage.params["pieces"], x, states, act, rec_act, stream)
        reset_after = bool(getattr(cell, "reset_after", True))
        return _gru_step(stage.params["pieces"], x, states[0], act, rec_act, stream, reset_after)

    def unfusable(self, stage, after, plan):
        if stage.params["cell"] != "LSTM":
            return (f"layer '{stage.name}' is a {stage.params['cell']}: the fused kernel is LSTM-only (one graph "
                    "does not mix it with per-step state tensors)")
        cell = stage.layer.cell
        if getattr(cell, "channel_scale", False):
            return (f"layer '{stage.name}' has channel_scale=True: the fused kernel takes one weight scale per "
                    "gate matrix, per-unit scales need the step graph")
        if activation_name(cell.activation) != "tanh" or activation_name(cell.recurrent_activation) != "sigmoid":
            return f"layer '{stage.name}': the fused kernel needs activation='tanh', recurrent_activation='sigmoid'"
        return None

    def fused_twin(self, stage, x, tf_keras):
        values = stage.params["values"]
        # Always with gate biases (zeros for use_bias=False): the converter's fused LSTM
        # without them crashes TFLite's calibration.
        bias = values.get("bias", np.zeros(4 * stage.units, np.float32))
        twin = tf_keras.layers.LSTM(stage.units, return_sequences=stage.return_sequences, name=f"{stage.name}_twin")
        x = twin(x)
        twin.set_weights([values["kernel"], values["recurrent_kernel"], bias])
        return x


def gate_pieces(values: dict, cell: str, units: int) -> dict[str, dict[str, np.ndarray]]:
    """Per gate ``{"W": (in, U), "U": (U, U), "b": (U,) or None, "rb": (U,) or None}``."""
    out = {}
    bias = values.get("bias")
    for g, gate in enumerate(GATES[cell]):
        cols = slice(g * units, (g + 1) * units)
        piece = {"W": values["kernel"][:, cols], "U": values["recurrent_kernel"][:, cols], "b": None, "rb": None}
        if bias is not None and bias.ndim == 2:  # GRU reset_after: (input bias, recurrent bias)
            piece["b"], piece["rb"] = bias[0][cols], bias[1][cols]
        elif bias is not None:
            piece["b"] = bias[cols]
        out[gate] = piece
    return out


def _lin(p, inp, which):
    import tensorflow as tf

    return tf.matmul(inp, tf.constant(p[which]))


def _with_bias(z, b):
    import tensorflow as tf

    return z if b is None else z + tf.constant(b)


def _lstm_step(pieces, x, states, act, rec_act, stream):
    h, c = states
    if stream:
        z = {g: _with_bias(_lin(p, x, "W"), p["b"]) + _lin(p, h, "U") for g, p in pieces.items()}
    else:
        z = {g: _with_bias(_lin(p, x, "W") + _lin(p, h, "U"), p["b"]) for g, p in pieces.items()}
    i, f, o = rec_act(z["i"]), rec_act(z["f"]), rec_act(z["o"])
    c_new = f * c + i * act(z["c"])
    h_new = o * act(c_new)
    return h_new, [h_new, c_new]


def _gru_step(pieces, x, h, act, rec_act, stream, reset_after):
    """GRU step. The biases are added where the converter keeps them as shared int8
    constants: ``x W + b_in`` (same input scale at every step: one int32 bias), the
    recurrent bias after the sum (z, r) or multiplied by r (candidate), never fused into the
    h-side FULLY_CONNECTED of an unrolled twin (one int32 copy per step)."""
    import tensorflow as tf

    px = {g: _with_bias(_lin(p, x, "W"), p["b"]) for g, p in pieces.items()}
    if reset_after and stream:
        ph = {g: _with_bias(_lin(p, h, "U"), p["rb"]) for g, p in pieces.items()}
        z = rec_act(px["z"] + ph["z"])
        r = rec_act(px["r"] + ph["r"])
        hh = act(px["h"] + r * ph["h"])
    elif reset_after:
        z = rec_act(_with_bias(px["z"] + _lin(pieces["z"], h, "U"), pieces["z"]["rb"]))
        r = rec_act(_with_bias(px["r"] + _lin(pieces["r"], h, "U"), pieces["r"]["rb"]))
        rh = r * _lin(pieces["h"], h, "U")
        if pieces["h"]["rb"] is not None:
            rh = rh + r * tf.constant(pieces["h"]["rb"])
        hh = act(px["h"] + rh)
    else:
        z = rec_act(px["z"] + _lin(pieces["z"], h, "U"))
        r = rec_act(px["r"] + _lin(pieces["r"], h, "U"))
        hh = act(px["h"] + _lin(pieces["h"], r * h, "U"))
    h_new = z * h + (1.0 - z) * hh
    return h_new, [h_new]
