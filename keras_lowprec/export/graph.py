"""From a Keras model to a TensorFlow function that converts to an int8 TFLM graph.

The exporter never converts the trained model itself. It reads the model as a chain of
*stages* (one handler per layer type) and builds a float **twin** whose weights are the
layers' deterministic rounded weights ``Q(W)``:

* ``step_function``: one time step per call, the recurrent state passed in and out as
  explicit tensors (``x_t, state_0, ... -> y_t, new_state_0, ...``): the stream export,
  and, repeated in the flatbuffer (``unroll``), the sequence export;
* ``sequence_function``: batch 1, ``timesteps`` fixed, the time loop unrolled in Python
  (a Keras 3 RNN converts to a WHILE loop, which int8 calibration cannot handle): the
  sequence export of a model that cannot run step by step (``check_streamable``).

Each RNN step is written out gate by gate with Keras's own math, activations and gate
order (see ``_rnn_step``), so the twin computes what the trained model computes at
inference; ``Dense``/``QuantDense`` get a float ``Dense`` twin, other supported layers
are applied as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from keras_lowprec.export.errors import ExportError, UnsupportedLayerError

# Layers that are the identity at inference.
_IDENTITY = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")
# Layers applied as they are (float Keras layers) around the recurrent ones. The second
# element says whether the layer acts on each time step separately (needed in stream mode).
_APPLY = {
    "Dense": True,
    "Activation": True,
    "ReLU": True,
    "LeakyReLU": True,
    "Softmax": True,
    "BatchNormalization": False,  # statistics along an axis other than the features (else "affine")
    "Flatten": False,
    "Reshape": False,
}
_RNN = ("LSTM", "GRU", "SimpleRNN")
# Activations the converter turns into int8 builtins that TFLM runs (keras.activations names;
# elu, selu, gelu, softplus, exponential and mish leave float ops or ops TFLM lacks).
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "hard_sigmoid", "silu", "hard_silu",
               "leaky_relu", "softsign", "log_softmax")
_ACTIVATION_ATTRS = ("activation", "recurrent_activation")
_CELL_MATH_ARGS = ("units", "activation", "recurrent_activation", "use_bias", "reset_after")

SUPPORTED_LAYERS = (
    "QuantLSTM / QuantGRU / QuantSimpleRNN and their presets (e.g. TernaryLSTM), keras LSTM / GRU / "
    "SimpleRNN, QuantDense and presets (e.g. TernaryDense), Dense, Activation, ReLU, LeakyReLU, "
    "Softmax, BatchNormalization, Normalization (per feature), LayerNormalization (last axis), Flatten, "
    "Reshape, Dropout and the other "
    "noise/dropout layers (identity at inference), Masking on the model input (mode='stream' only)"
)


@dataclass
class WeightInfo:
    """One rounded weight of the model, as the exporter must encode it."""

    layer: str
    name: str
    value: np.ndarray  # float32, the deterministic rounded weight (or the float weight)
    method: str | None  # quantizer.method, None for a full-precision weight
    encoding: str  # "ternary", "binary", "shift" or "int8"
    scale: float | None  # the exact int8 scale (None: the converter's plain int8)
    levels: np.ndarray | None = None
    gates: int = 1  # gate matrices side by side along the last axis (LSTM 4, GRU 3)

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.name}"


@dataclass
class Stage:
    kind: str  # "rnn", "dense", "affine", "layernorm", "apply", "identity"
    layer: Any
    name: str
    per_step: bool = True
    cell: Any = None  # (None, {weight name: rounded value}) (rnn)
    pieces: Any = None  # per-gate weight arrays (rnn), see gate_pieces
    twin: Any = None  # float twin layer (dense)
    affine: Any = None  # (scale, offset) per feature: y = x * scale + offset (affine; layernorm: gamma, beta)
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


# -- encodings -------------------------------------------------------------------------
def encoding_for(quantizer, bound: float, layer: str, name: str) -> tuple[str, float | None, np.ndarray | None]:
    """``(encoding, scale, levels)`` of a weight rounded by ``quantizer`` (``None``: float)."""
    if quantizer is None:
        return "int8", None, None
    method = quantizer.method
    levels = np.asarray(quantizer.levels(bound), dtype=np.float32)
    # Codes are ±64 (= 2^6) rather than ±1: ``level / 64`` is exact in float32 (a power-of-two
    # division), so code * scale == level still holds bit for bit, and the int32 biases of
    # the ops using the weight (scale input_scale * weight_scale) keep 64x finer resolution.
    if method in ("binary", "ternary"):
        level = np.float32(quantizer.magnitude(bound))
        scale = np.float32(level / np.float32(64.0))
        if np.float32(64.0) * scale != level:
            scale = level  # subnormal corner: fall back to codes ±1
        return method, float(scale), levels
    if method == "pow2_ternary":
        return "shift", float(np.float32(2.0 ** (quantizer.resolved_exponent(bound) - 6))), levels
    if method == "exponential":
        kmin, kmax = quantizer.exponent_range(bound)
        if kmax - kmin > 6:
            from keras_lowprec.export.errors import ExactnessError

            raise ExactnessError(
                f"layer '{layer}' weight '{name}': exponential quantization with {kmax - kmin + 1} exponent "
                f"levels (2^{kmin} .. 2^{kmax}) cannot be shift-encoded in int8, which holds at most 7 "
                "(codes ±2^0 .. ±2^6). Fix: train with Exponential(num_levels=7) or fewer, or export "
                "this weight without exactness by using a quantizer of at most 7 levels."
            )
        scale = 2.0 ** (kmax - 6)
        if not (np.finfo(np.float32).tiny <= scale):
            raise ExportError(f"layer '{layer}' weight '{name}': shift scale 2^{kmax - 6} underflows float32.")
        return "shift", float(np.float32(scale)), levels
    raise UnsupportedLayerError(
        f"layer '{layer}' weight '{name}': no int8 encoding for quantization method {method!r}."
    )


# -- model analysis --------------------------------------------------------------------
def _base_name(layer) -> str:
    """Name of the Keras float class a layer derives from (QuantLSTM -> LSTM)."""
    import keras

    for cls in type(layer).__mro__:
        if cls.__module__.startswith("keras.") and hasattr(keras.layers, cls.__name__):
            return cls.__name__
    return type(layer).__name__


def _chain(model) -> list:
    import keras

    if not isinstance(model, keras.Model):
        raise ExportError(f"to_tflite expects a keras.Model, got {type(model).__name__}.")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ExportError(
            f"model '{model.name}' has no defined input: build it with keras.Input((timesteps, features)) "
            "(or call it on data) before exporting."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayerError(
            f"model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "the exporter handles models with one input and one output."
        )
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    for layer in layers:  # before the chain check, which would blame the next layer
        if getattr(layer, "return_state", False):
            raise UnsupportedLayerError(
                f"layer '{layer.name}' ({type(layer).__name__}): return_state=True is not supported; export a "
                "model whose recurrent layers return only their output (mode='stream' exposes the states)."
            )
    if not isinstance(model, keras.Sequential):
        prev = model.inputs[0]
        for layer in layers:
            try:
                inp = layer.input
            except Exception:  # a layer used several times
                raise UnsupportedLayerError(
                    f"layer '{layer.name}' is used more than once; the exporter handles a plain chain of layers."
                ) from None
            if isinstance(inp, (list, tuple)) and len(inp) > 1 and inp[0] is prev and all(
                    "bool" in str(getattr(m, "dtype", "")) for m in inp[1:]):
                inp = inp[0]  # (x, mask): the mask a Masking layer propagates (see analyze)
            if inp is not prev:
                raise UnsupportedLayerError(
                    f"layer '{layer.name}' does not take the previous layer's output; the exporter "
                    "handles a plain chain of layers (Sequential or a linear functional model)."
                )
            prev = layer.output
    return layers


def _check_finite(layer) -> None:
    for w in layer.weights:
        value = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        if not np.all(np.isfinite(value)):
            raise ExportError(
                f"layer '{layer.name}' weight '{w.name}' has non-finite values (NaN or inf): "
                "the model cannot be exported; retrain or restore a finite checkpoint."
            )


def _quant_weights(obj, layer_name: str, gates: int = 1) -> list[WeightInfo]:
    """Rounded weights of a Quant cell / QuantDense, or float weights of a Keras one."""
    out = []
    rounded = obj.quantized_weights(training=False) if hasattr(obj, "quantized_weights") else None
    for name in ("kernel", "recurrent_kernel", "bias"):
        var = getattr(obj, name, None)
        if var is None:
            continue
        if rounded is not None and name in rounded:
            value = np.asarray(rounded[name], dtype=np.float32)
            quantizer = obj.quantizer_for(name)
            bound = obj.glorot_bound_for(name) if quantizer is not None else None
        else:
            value = np.asarray(var.numpy(), dtype=np.float32)
            quantizer, bound = None, None
        if not np.all(np.isfinite(value)):
            raise ExportError(
                f"layer '{layer_name}' weight '{name}': the rounded weight has non-finite values; "
                "the master weights contain NaN or inf. Retrain or restore a finite checkpoint."
            )
        encoding, scale, levels = encoding_for(quantizer, bound, layer_name, name)
        if levels is not None:
            bad = ~np.isin(value, levels)
            if bad.any():
                raise ExportError(
                    f"layer '{layer_name}' weight '{name}': {int(bad.sum())} rounded values are not among "
                    f"the quantizer's levels {levels.tolist()}."
                )
        out.append(WeightInfo(layer_name, name, value, None if quantizer is None else quantizer.method,
                              encoding, scale, levels, gates))
    return out


def _twin_dense(layer, weights: list[WeightInfo]):
    import keras

    twin = keras.layers.Dense(
        layer.units, activation=layer.activation, use_bias=layer.use_bias, name=f"{layer.name}_twin"
    )
    return twin, {w.name: w.value for w in weights}


def _input_ndim(layer) -> int | None:
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):  # a layer without one input tensor
        return None


def affine_of(layer) -> tuple[np.ndarray, np.ndarray] | None:
    """Inference-time ``BatchNormalization`` or ``Normalization`` as ``y = x * scale + offset``
    with one ``(scale, offset)`` per feature (last axis), float32; ``None`` when its statistics
    run along another axis.

    BatchNormalization: ``scale = gamma / sqrt(moving_variance + epsilon)``,
    ``offset = beta - moving_mean * scale``. Normalization: ``std = max(sqrt(variance),
    epsilon)``, ``scale = 1 / std``, ``offset = -mean / std`` (``invert=True``: ``scale = std``,
    ``offset = mean``), Keras's own formulas.
    """
    import keras

    def arr(v):
        return np.asarray(keras.ops.convert_to_numpy(v), np.float64)

    if _base_name(layer) == "BatchNormalization":
        ndim = _input_ndim(layer)
        if not (layer.axis == -1 or (ndim is not None and layer.axis == ndim - 1)):
            return None
        scale = 1.0 / np.sqrt(arr(layer.moving_variance) + layer.epsilon)
        if layer.scale:
            scale = scale * arr(layer.gamma)
        offset = -arr(layer.moving_mean) * scale
        if layer.center:
            offset = offset + arr(layer.beta)
    else:
        mean, var = arr(layer.mean), arr(layer.variance)
        if any(d != 1 for d in mean.shape[:-1]):
            return None
        std = np.maximum(np.sqrt(var), keras.config.epsilon()).reshape(-1)
        mean = mean.reshape(-1)
        scale, offset = (std, mean) if layer.invert else (1.0 / std, -mean / std)
    return scale.astype(np.float32), offset.astype(np.float32)


def layer_norm(x, stage: "Stage"):
    """``LayerNormalization`` over the last axis in TF ops that convert to int8 builtins (MEAN,
    SUB, MUL, ADD, RSQRT; Keras's own graph leaves a float NEG behind), Keras's formula:
    ``(x - mean) * rsqrt(var + epsilon) * gamma + beta``; with ``rms_scaling``
    ``x * rsqrt(var + epsilon) * gamma`` (``var`` is the centered variance in both)."""
    import tensorflow as tf

    layer = stage.layer
    gamma, beta = stage.affine
    d = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    inv = tf.math.rsqrt(tf.reduce_mean(d * d, axis=-1, keepdims=True) + layer.epsilon)
    # gamma before the data-dependent factor: a constant factor right before a product with
    # rounded weights would be folded into them by the converter
    return (x if layer.rms_scaling else d) * gamma * inv + beta


def _layer_norm_stage(layer) -> "Stage":
    import keras

    ndim = _input_ndim(layer)
    if tuple(layer.axis) not in ((-1,),) + (((ndim - 1,),) if ndim else ()):
        raise UnsupportedLayerError(
            f"layer '{layer.name}' (LayerNormalization) normalizes over axes {tuple(layer.axis)}; the exporter "
            "supports the last axis (axis=-1, the default)."
        )
    n = int(layer.input.shape[-1])
    gamma = keras.ops.convert_to_numpy(layer.gamma) if layer.gamma is not None else np.ones(n)
    beta = keras.ops.convert_to_numpy(layer.beta) if layer.beta is not None else np.zeros(n)
    return Stage("layernorm", layer, layer.name, affine=(np.asarray(gamma, np.float32), np.asarray(beta, np.float32)))


def _check_activations(layer) -> None:
    """Refuses an activation the int8 builtins cannot compute (e.g. gelu), naming it."""
    import keras

    for attr in _ACTIVATION_ATTRS:
        fn = getattr(layer, attr, None) or getattr(getattr(layer, "cell", None), attr, None)
        if fn is None:
            continue
        name = keras.activations.serialize(fn) if callable(fn) else fn
        name = name.get("config", name) if isinstance(name, dict) else name
        if name not in ACTIVATIONS:
            raise UnsupportedLayerError(
                f"layer '{layer.name}' ({type(layer).__name__}): {attr}={name!r} has no int8 TFLM kernel; the "
                f"exporter supports {', '.join(ACTIVATIONS)}."
            )


def analyze(model, timesteps: int | None, mode: str) -> Plan:
    """Reads ``model`` as a chain of stages; raises on anything the exporter cannot handle."""
    import keras

    layers = _chain(model)
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 3:
        raise UnsupportedLayerError(
            f"model input shape {shape}: the exporter expects sequences (batch, timesteps, features)."
        )
    t_model, features = shape[1], shape[2]
    if features is None:
        raise ExportError("the model's feature dimension (last input axis) must be known.")
    if t_model is not None and timesteps is not None and int(timesteps) != int(t_model):
        raise ExportError(f"timesteps={timesteps} but the model's input has a fixed time axis of {t_model}.")
    T = int(timesteps) if timesteps is not None else (None if t_model is None else int(t_model))
    if T is None and mode == "sequence":
        raise ExportError(
            "the model has a variable time axis (input shape (None, None, features)); pass timesteps=T "
            "(CLI: --timesteps T) for a sequence export, or use mode='stream'."
        )
    if T is not None and T < 1:
        raise ExportError(f"timesteps must be >= 1, got {T}.")

    plan = Plan(stages=[], timesteps=T, features=int(features))
    for layer in layers:
        _check_finite(layer)
        _check_activations(layer)
        base = _base_name(layer)
        cls = type(layer).__name__
        if isinstance(layer, keras.layers.Bidirectional):
            raise UnsupportedLayerError(
                f"layer '{layer.name}' (Bidirectional) is not supported: TFLM firmware would have to run "
                "the sequence backwards as well. Use a unidirectional RNN. Supported: " + SUPPORTED_LAYERS + "."
            )
        if isinstance(layer, keras.layers.Masking):
            if mode != "stream":
                raise UnsupportedLayerError(
                    f"layer '{layer.name}' (Masking) is not supported in mode='sequence': a fixed-length "
                    "graph cannot skip masked frames. Use mode='stream' (firmware feeds only the real frames "
                    "of a sequence, one per invoke, and resets the state between sequences), or export a "
                    "model without Masking."
                )
            if plan.mask_value is not None or any(s.kind != "identity" for s in plan.stages):
                raise UnsupportedLayerError(
                    f"layer '{layer.name}' (Masking) is supported only directly on the model input (before "
                    "the first recurrent layer, only dropout/noise layers before it)."
                )
            mask_value = float(np.asarray(layer.mask_value))
            if not np.isfinite(mask_value):
                raise UnsupportedLayerError(f"layer '{layer.name}' (Masking): mask_value must be finite.")
            plan.mask_value = mask_value
            plan.masking = (f"Masking '{layer.name}' dropped: stream firmware feeds only the real frames of a "
                            f"sequence (mask_value={mask_value:g})")
            plan.stages.append(Stage("identity", layer, layer.name))
            continue
        if base in _RNN:
            if layer.go_backwards:
                raise UnsupportedLayerError(
                    f"layer '{layer.name}' ({cls}) has go_backwards=True, which the exporter does not support; "
                    "train with go_backwards=False (reverse the input yourself if you need it)."
                )
            if layer.return_state:
                raise UnsupportedLayerError(f"layer '{layer.name}' ({cls}): return_state=True is not supported.")
            if layer.stateful:
                raise UnsupportedLayerError(
                    f"layer '{layer.name}' ({cls}): stateful=True is not supported; export the non-stateful "
                    "model (mode='stream' carries the state between invokes)."
                )
            weights = _quant_weights(layer.cell, layer.name, _GATES[base])
            values = {w.name: w.value for w in weights}
            cell = None
            n_states = 2 if base == "LSTM" else 1
            stage = Stage("rnn", layer, layer.name, cell=(cell, values), units=int(layer.cell.units),
                          n_states=n_states, return_sequences=bool(layer.return_sequences))
            plan.weights.extend(weights)
            for s in (("h", "c") if n_states == 2 else ("h",)):
                plan.state_names.append(f"{layer.name}/{s}")
                plan.state_sizes.append(int(layer.cell.units))
        elif base == "Dense" and hasattr(layer, "quantized_weights"):
            weights = _quant_weights(layer, layer.name)
            stage = Stage("dense", layer, layer.name, twin=_twin_dense(layer, weights))
            plan.weights.extend(weights)
        elif base == "Dense":
            weights = _quant_weights(layer, layer.name)
            stage = Stage("dense", layer, layer.name, twin=_twin_dense(layer, weights))
            plan.weights.extend(weights)
        elif cls in _IDENTITY or base in _IDENTITY:
            stage = Stage("identity", layer, layer.name)
        elif base in ("BatchNormalization", "Normalization") and (affine := affine_of(layer)) is not None:
            stage = Stage("affine", layer, layer.name, affine=affine)
        elif base == "LayerNormalization":
            stage = _layer_norm_stage(layer)
        elif base == "Normalization":
            raise UnsupportedLayerError(
                f"layer '{layer.name}' (Normalization) keeps statistics along axis {layer.axis}; the exporter "
                "supports per-feature statistics (axis=-1, the default)."
            )
        elif cls in _APPLY or base in _APPLY:
            stage = Stage("apply", layer, layer.name, per_step=_APPLY.get(cls, _APPLY.get(base)))
        else:
            raise UnsupportedLayerError(
                f"layer '{layer.name}' ({cls}) is not supported by the exporter. Supported: {SUPPORTED_LAYERS}."
            )
        plan.stages.append(stage)

    if mode == "stream":
        check_streamable(plan)
    return plan


def check_streamable(plan: Plan) -> None:
    """Raises ``UnsupportedLayerError`` unless the plan can run one time step per invoke."""
    seen_rnn = False
    seq = True  # whether the tensor between stages still has a time axis
    for stage in plan.stages:
        if stage.kind == "rnn":
            if not seq:
                raise UnsupportedLayerError(
                    f"layer '{stage.name}': stream mode needs every RNN before it to return sequences."
                )
            seen_rnn = True
            seq = stage.return_sequences
        elif not stage.per_step and seq:
            raise UnsupportedLayerError(
                f"layer '{stage.name}' ({type(stage.layer).__name__}) mixes time steps and cannot run one "
                "step per invoke; use mode='sequence'."
            )
    if not seen_rnn:
        raise UnsupportedLayerError("stream mode needs at least one recurrent layer.")


def ends_with_sequence(plan: Plan) -> bool:
    """Whether the model's output keeps the time axis (its last RNN returns sequences)."""
    seq = True
    for stage in plan.stages:
        if stage.kind == "rnn":
            seq = stage.return_sequences
    return seq


# -- twin functions --------------------------------------------------------------------
# The recurrent cells are written out gate by gate (one matrix product per gate and
# input) instead of calling Keras's cells: Keras computes all gates with one product and
# SPLITs the result, and when a gate output is unused (e.g. the forget gate at t=0, where
# c_0 = 0) the converter can leave that SPLIT in float. The math is Keras's own
# (gate order i, f, c, o for LSTM; z, r, h for GRU, reset_after or not).
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def gate_pieces(stage: "Stage") -> dict[str, dict[str, np.ndarray]]:
    """Per gate ``{"W": (in, U), "U": (U, U), "b": (U,) or None, "rb": (U,) or None}``."""
    values = stage.cell[1]
    base = _base_name(stage.layer)
    n, u = _GATES[base], stage.units
    names = {"LSTM": "ifco", "GRU": "zrh", "SimpleRNN": "h"}[base]
    out = {}
    bias = values.get("bias")
    for g in range(n):
        cols = slice(g * u, (g + 1) * u)
        piece = {"W": values["kernel"][:, cols], "U": values["recurrent_kernel"][:, cols], "b": None, "rb": None}
        if bias is not None:
            if bias.ndim == 2:  # GRU reset_after: (input bias, recurrent bias)
                piece["b"], piece["rb"] = bias[0][cols], bias[1][cols]
            else:
                piece["b"] = bias[cols]
        out[names[g]] = piece
    return out


def _rnn_step(stage: "Stage", x, states, stream: bool = False):
    """One step of the stage's cell in TF ops; returns ``(h, new_states)``.

    ``stream``: every bias goes into a product, ``x W + b`` and (GRU ``reset_after``)
    ``h U + rb``, each one FULLY_CONNECTED with an int32 bias, instead of a separate ADD:
    each int8 op between the products and the activation rounds the pre-activation once
    more (measured: LSTM stream max error vs Keras 0.45 -> 0.30 on the digits benchmark).
    In a stream graph the state scale is the one fixed scale of the state input. The
    twin unrolled in Python keeps the biases out of the state-side products, whose input
    scale differs at every step there (one int32 copy per step).
    """
    import keras
    import tensorflow as tf

    base = _base_name(stage.layer)
    cell = stage.layer.cell
    act = keras.activations.get(cell.activation)
    rec_act = keras.activations.get(getattr(cell, "recurrent_activation", None) or "sigmoid")
    pieces = stage.pieces

    def lin(p, inp, which):
        return tf.matmul(inp, tf.constant(p[which]))

    def with_bias(z, b):
        return z if b is None else z + tf.constant(b)

    h = states[0]
    if base == "SimpleRNN":
        p = pieces["h"]
        h_new = act(with_bias(lin(p, x, "W"), p["b"]) + lin(p, h, "U"))
        return h_new, [h_new]
    if base == "LSTM":
        c = states[1]
        if stream:
            z = {g: with_bias(lin(p, x, "W"), p["b"]) + lin(p, h, "U") for g, p in pieces.items()}
        else:
            z = {g: with_bias(lin(p, x, "W") + lin(p, h, "U"), p["b"]) for g, p in pieces.items()}
        i, f, o = rec_act(z["i"]), rec_act(z["f"]), rec_act(z["o"])
        c_new = f * c + i * act(z["c"])
        h_new = o * act(c_new)
        return h_new, [h_new, c_new]
    # GRU. The biases are added where the converter keeps them as shared int8 constants:
    # x W + b_in (same input scale at every step: one int32 bias), the recurrent bias
    # after the sum (z, r) or multiplied by r (candidate), never fused into the h-side
    # FULLY_CONNECTED (whose input scale differs at every step: one int32 copy per step).
    reset_after = bool(getattr(cell, "reset_after", True))
    px = {g: with_bias(lin(p, x, "W"), p["b"]) for g, p in pieces.items()}
    if reset_after and stream:
        ph = {g: with_bias(lin(p, h, "U"), p["rb"]) for g, p in pieces.items()}
        z = rec_act(px["z"] + ph["z"])
        r = rec_act(px["r"] + ph["r"])
        hh = act(px["h"] + r * ph["h"])
    elif reset_after:
        def gate(g):
            return with_bias(px[g] + lin(pieces[g], h, "U"), pieces[g]["rb"])

        z = rec_act(gate("z"))
        r = rec_act(gate("r"))
        rh = r * lin(pieces["h"], h, "U")
        if pieces["h"]["rb"] is not None:
            rh = rh + r * tf.constant(pieces["h"]["rb"])
        hh = act(px["h"] + rh)
    else:
        z = rec_act(px["z"] + lin(pieces["z"], h, "U"))
        r = rec_act(px["r"] + lin(pieces["r"], h, "U"))
        hh = act(px["h"] + lin(pieces["h"], r * h, "U"))
    h_new = z * h + (1.0 - z) * hh
    return h_new, [h_new]


def _build_twins(plan: Plan) -> None:
    for stage in plan.stages:
        if stage.kind == "rnn" and getattr(stage, "pieces", None) is None:
            stage.pieces = gate_pieces(stage)
        if stage.kind == "dense" and not getattr(stage, "_built", False):
            twin, values = stage.twin
            twin.build((1, stage.layer.kernel.shape[0]))
            for name, value in values.items():
                getattr(twin, name).assign(value)
            stage._built = True


def _apply(stage: Stage, x):
    if stage.kind == "identity":
        return x
    if stage.kind == "dense":
        return stage.twin[0](x)
    if stage.kind == "affine":
        scale, offset = stage.affine
        return x * scale + offset
    if stage.kind == "layernorm":
        return layer_norm(x, stage)
    return stage.layer(x, training=False)


def sequence_function(plan: Plan) -> Callable:
    """``tf.function`` of input ``(1, T, F)`` float32: the unrolled float twin."""
    import tensorflow as tf

    _build_twins(plan)
    T, F = plan.timesteps, plan.features

    @tf.function(input_signature=[tf.TensorSpec((1, T, F), tf.float32, name="input")])
    def sequence(x):
        for stage in plan.stages:
            if stage.kind == "rnn":
                states = [tf.zeros((1, stage.units), tf.float32) for _ in range(stage.n_states)]
                outs = []
                for t in range(T):
                    h, states = _rnn_step(stage, x[:, t, :], states)
                    outs.append(h)
                x = tf.stack(outs, axis=1) if stage.return_sequences else outs[-1]
            else:
                x = _apply(stage, x)
        return x

    return sequence


def step_function(plan: Plan) -> Callable:
    """``tf.function`` of ``(x_t (1, F), *states (1, U))`` -> ``(y_t, *new_states)``."""
    import tensorflow as tf

    _build_twins(plan)
    specs = [tf.TensorSpec((1, plan.features), tf.float32, name="input")]
    specs += [tf.TensorSpec((1, n), tf.float32, name=f"state_{i}") for i, n in enumerate(plan.state_sizes)]

    @tf.function(input_signature=specs)
    def step(x, *states):
        new_states = []
        k = 0
        for stage in plan.stages:
            if stage.kind == "rnn":
                x, new = _rnn_step(stage, x, list(states[k:k + stage.n_states]), stream=True)
                new_states.extend(new)
                k += stage.n_states
            else:
                x = _apply(stage, x)
        return (x, *new_states)

    return step


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


def stream_reference(plan: Plan, x) -> tuple[list[np.ndarray], Any]:
    """Runs the float step twin over ``x`` (N, T, F) or a list of (T_i, F) sequences.

    Returns ``(samples, outputs)`` where ``samples`` is a list of ``[x_t, *states]`` float32
    arrays (batch 1) and ``outputs`` the per-step outputs ``(N, T, ...)`` (a list of
    ``(T_i, ...)`` arrays when the sequences differ in length).
    """
    step = step_function(plan)
    samples, outputs = [], []
    for seq in x:
        states = [np.zeros((1, n), np.float32) for n in plan.state_sizes]
        outs = []
        for t in range(seq.shape[0]):
            xt = seq[t][None, :].astype(np.float32)
            samples.append([xt, *states])
            res = step(xt, *states)
            states = [r.numpy() for r in res[1:]]
            outs.append(res[0].numpy()[0])
        outputs.append(np.stack(outs))
    if len({o.shape for o in outputs}) == 1:
        return samples, np.stack(outputs)
    return samples, outputs
