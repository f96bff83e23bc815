"""The handler interface and what every handler shares."""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.errors import ExportError, UnsupportedLayerError


class Handler:
    """Turns one family of Keras layers into stages and their twin ops.

    Class attributes: ``classes`` (Keras class names handled, matched on the layer's class
    or the Keras class it derives from), ``kind`` (the stage kind), ``description`` (the
    phrase in the supported-layers list), ``recurrent`` (whether it provides ``step``).
    """

    classes: tuple[str, ...] = ()
    kind = ""
    description = ""
    recurrent = False

    def analyze(self, layer, plan, mode: str):
        """The layer's ``Stage``; may add weights or states to ``plan``; raises
        ``UnsupportedLayerError`` for a configuration the exporter cannot run."""
        raise NotImplementedError

    def build(self, stage) -> None:
        """Creates what ``apply`` needs before a twin is traced (default: nothing)."""

    def apply(self, stage, x):
        """The stage on tensor ``x`` in TF ops (the float twin)."""
        raise NotImplementedError

    def fused_twin(self, stage, x, tf_keras):
        """The stage on ``x`` in the ``tf_keras`` twin of the fused-LSTM route."""
        raise NotImplementedError

    def unfusable(self, stage, after, plan) -> str | None:
        """Why the fused-LSTM route cannot take this stage (``after``: the next stage)."""
        return f"layer '{stage.name}' ({type(stage.layer).__name__}) has no tf_keras twin here"


def base_name(layer) -> str:
    """Name of the Keras class a layer derives from (QuantLSTM -> LSTM)."""
    import keras

    for cls in type(layer).__mro__:
        if cls.__module__.startswith("keras.") and hasattr(keras.layers, cls.__name__):
            return cls.__name__
    return type(layer).__name__


def activation_name(fn) -> str | None:
    """The ``keras.activations`` name of ``fn`` (None when it has none)."""
    import keras

    if fn is None:
        return None
    name = keras.activations.serialize(fn) if callable(fn) else fn
    return name.get("config", name) if isinstance(name, dict) else name


def input_ndim(layer) -> int | None:
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):  # a layer without one input tensor
        return None


def check_finite(layer) -> None:
    for w in layer.weights:
        value = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        if not np.all(np.isfinite(value)):
            raise ExportError(
                f"layer '{layer.name}' weight '{w.name}' has non-finite values (NaN or inf): "
                "the model cannot be exported; retrain or restore a finite checkpoint.")


def rounded_weights(obj, layer_name: str, gates: int = 1) -> list:
    """The rounded weights of a Quant cell / QuantDense (float weights of a Keras one) as
    ``WeightInfo`` with their encodings (``encodings.encoding_for``)."""
    from keras_lowprec.export import encodings
    from keras_lowprec.export.plan import WeightInfo

    out = []
    quantized = hasattr(obj, "quantized_weights")
    rounded = obj.quantized_weights(training=False, apply_channel_scale=False) if quantized else None
    scales = obj.channel_scales() if quantized else {}
    for name in ("kernel", "recurrent_kernel", "bias"):
        var = getattr(obj, name, None)
        if var is None:
            continue
        quantizer, bound = None, None
        if rounded is not None and name in rounded:
            value = np.asarray(rounded[name], dtype=np.float32)
            quantizer = obj.quantizer_for(name)
            bound = obj.glorot_bound_for(name) if quantizer is not None else None
        else:
            value = np.asarray(var.numpy(), dtype=np.float32)
        where = f"layer '{layer_name}' weight '{name}'"
        if not np.all(np.isfinite(value)):
            raise ExportError(f"{where}: the rounded weight has non-finite values; the master weights contain NaN "
                              "or inf. Retrain or restore a finite checkpoint.")
        enc = encodings.encoding_for(quantizer, bound, where)
        encodings.check_levels(value, enc, where)
        column_scale = _column_scale(scales.get(name), where)
        if column_scale is not None:
            value = value * column_scale  # float32, as the layer computes it
        out.append(WeightInfo(layer_name, name, value, None if quantizer is None else quantizer.method,
                              enc.name, enc.scale, enc.levels, gates, column_scale))
    return out


def _column_scale(variable, where: str) -> np.ndarray | None:
    """The float32 channel scales of a weight (None without them); finite, or an error."""
    if variable is None:
        return None
    s = np.asarray(variable.numpy(), dtype=np.float32)
    if not np.all(np.isfinite(s)):
        raise ExportError(f"{where}: the channel scales have non-finite values (NaN or inf). Retrain or restore "
                          "a finite checkpoint.")
    return s


def refuse(layer, what: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"layer '{layer.name}' ({type(layer).__name__}): {what}")

