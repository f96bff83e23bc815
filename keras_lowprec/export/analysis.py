"""Analysis: a Keras model read as a chain of stages (``plan.Plan``), one handler per layer.

Refuses, naming the layer, anything the exporter cannot run: models that are not a plain
chain with one input and one output, layers without a handler, activations without an int8
TFLM kernel, non-finite weights.
"""

from __future__ import annotations

from keras_lowprec.export import handlers
from keras_lowprec.export.errors import ExportError, UnsupportedLayerError
from keras_lowprec.export.handlers.base import activation_name, check_finite
from keras_lowprec.export.plan import Plan, check_streamable

# Activations the converter turns into int8 builtins that TFLM runs (keras.activations names;
# elu, selu, gelu, softplus, exponential and mish leave float ops or ops TFLM lacks).
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "hard_sigmoid", "silu", "hard_silu",
               "leaky_relu", "softsign", "log_softmax")
_ACTIVATION_ATTRS = ("activation", "recurrent_activation")


def analyze(model, timesteps: int | None, mode: str) -> Plan:
    """Reads ``model`` as a chain of stages; raises on anything the exporter cannot handle."""
    layers = chain(model)
    plan = Plan(stages=[], timesteps=None, features=0)
    plan.timesteps, plan.features = _time_axis(model, timesteps, mode)
    for layer in layers:
        check_finite(layer)
        _check_activations(layer)
        plan.stages.append(handlers.handler_for(layer).analyze(layer, plan, mode))
    if mode == "stream":
        check_streamable(plan)
    return plan


def _time_axis(model, timesteps: int | None, mode: str) -> tuple[int | None, int]:
    """``(T, features)`` of the export from the model's input and the ``timesteps`` asked."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 3:
        raise UnsupportedLayerError(
            f"model input shape {shape}: the exporter expects sequences (batch, timesteps, features).")
    t_model, features = shape[1], shape[2]
    if features is None:
        raise ExportError("the model's feature dimension (last input axis) must be known.")
    if t_model is not None and timesteps is not None and int(timesteps) != int(t_model):
        raise ExportError(f"timesteps={timesteps} but the model's input has a fixed time axis of {t_model}.")
    T = int(timesteps) if timesteps is not None else (None if t_model is None else int(t_model))
    if T is None and mode == "sequence":
        raise ExportError(
            "the model has a variable time axis (input shape (None, None, features)); pass timesteps=T "
            "(CLI: --timesteps T) for a sequence export, or use mode='stream'.")
    if T is not None and T < 1:
        raise ExportError(f"timesteps must be >= 1, got {T}.")
    return T, int(features)


def chain(model) -> list:
    """The model's layers, in order, after checking that they form a plain chain."""
    import keras

    _check_io(model)
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    for layer in layers:  # before the chain check, which would blame the next layer
        if getattr(layer, "return_state", False):
            raise UnsupportedLayerError(
                f"layer '{layer.name}' ({type(layer).__name__}): return_state=True is not supported; export a "
                "model whose recurrent layers return only their output (mode='stream' exposes the states).")
    if not isinstance(model, keras.Sequential):
        _check_linear(model, layers)
    return layers


def _check_io(model) -> None:
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
            "(or call it on data) before exporting.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayerError(
            f"model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "the exporter handles models with one input and one output.")


def _check_linear(model, layers) -> None:
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
            inp = inp[0]  # (x, mask): the mask a Masking layer propagates
        if inp is not prev:
            raise UnsupportedLayerError(
                f"layer '{layer.name}' does not take the previous layer's output; the exporter "
                "handles a plain chain of layers (Sequential or a linear functional model).")
        prev = layer.output


def _check_activations(layer) -> None:
    """Refuses an activation the int8 builtins cannot compute (e.g. gelu), naming it."""
    for attr in _ACTIVATION_ATTRS:
        fn = getattr(layer, attr, None) or getattr(getattr(layer, "cell", None), attr, None)
        if fn is None:
            continue
        name = activation_name(fn)
        if name not in ACTIVATIONS:
            raise UnsupportedLayerError(
                f"layer '{layer.name}' ({type(layer).__name__}): {attr}={name!r} has no int8 TFLM kernel; the "
                f"exporter supports {', '.join(ACTIVATIONS)}.")
