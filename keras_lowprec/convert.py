"""``quantize_model``: the quantization-aware twin of a float Keras model."""

from __future__ import annotations

import warnings

import keras

from keras_lowprec import quantizers as quantizers_lib
from keras_lowprec.layers import QuantDense, QuantGRU, QuantLSTM, QuantSimpleRNN
from keras_lowprec.layers.base import QuantizedWeightsMixin

# Float layer -> quantized twin. Subclasses (our own Quant* layers) are left alone.
_TWINS = {
    keras.layers.Dense: QuantDense,
    keras.layers.SimpleRNN: QuantSimpleRNN,
    keras.layers.GRU: QuantGRU,
    keras.layers.LSTM: QuantLSTM,
}
_CONSTRAINTS = ("kernel_constraint", "recurrent_constraint", "bias_constraint")


def _twin_class(layer):
    return _TWINS.get(type(layer))


def quantize_model(
    model: keras.Model,
    kernel_quantizer="ternary",
    recurrent_quantizer="ternary",
    bias_quantizer="ternary",
) -> keras.Model:
    """Returns a copy of ``model`` whose Dense/SimpleRNN/GRU/LSTM layers (also inside
    ``Bidirectional``, ``TimeDistributed`` and nested models) are replaced by their
    ``Quant*`` twins, weights carried over. Layers with float weights it cannot reach
    (e.g. a generic ``keras.layers.RNN`` over an ``LSTMCell``) are named in a ``UserWarning``.

    Every other layer is cloned as is. Dense layers take ``kernel_quantizer`` and
    ``bias_quantizer``; recurrent layers all three. Float layers' default constraint
    (``None``) becomes ``"auto"`` (clip to the quantizer's range) when the weight is
    quantized, and the carried master weights are clipped to it; an explicit
    constraint of the float layer is kept. Clipping never changes ``Q(W)``.

    Args:
        model: a Functional or Sequential Keras model.
        kernel_quantizer, recurrent_quantizer, bias_quantizer: quantizer instance,
            alias (see ``keras_lowprec.quantizers.ALIASES``) or ``None``.
    """
    if not isinstance(model, (keras.Sequential, keras.Model)) or not hasattr(model, "layers"):
        raise TypeError(f"quantize_model expects a keras.Model, got {type(model).__name__}.")
    args = {
        "kernel_quantizer": kernel_quantizer,
        "recurrent_quantizer": recurrent_quantizer,
        "bias_quantizer": bias_quantizer,
    }
    for arg, value in args.items():
        try:
            quantizers_lib.get(value)
        except ValueError as err:
            raise ValueError(f"quantize_model `{arg}`: {err}") from None

    try:
        quantized = keras.models.clone_model(model, clone_function=lambda layer: _quantize_layer(layer, args))
    except ValueError as err:
        raise ValueError(
            f"quantize_model supports Functional and Sequential models; cloning failed: {err}"
        ) from None
    if not quantized.built:
        raise ValueError(
            "quantize_model: the model must be built (give it an Input or call it once) "
            "so that weights can be carried over."
        )
    for old, new in zip(model.layers, quantized.layers):
        new.set_weights(old.get_weights())
        for owner in quantized_owners(new):
            owner._clip_initial_weights()
    left = left_in_float(quantized)
    if left:
        warnings.warn(
            f"quantize_model left these layers in float (no quantized twin for them or for the wrapper "
            f"around them): {', '.join(left)}.", stacklevel=2)
    return quantized



def _quantize_layer(layer, args: dict):
    """The ``Quant*`` twin of one layer (wrappers and nested models recursively), or a clone."""
    if isinstance(layer, keras.Model):  # a nested Sequential / Functional model
        return quantize_model(layer, **args)
    if isinstance(layer, keras.layers.TimeDistributed):
        return keras.layers.TimeDistributed(_quantize_layer(layer.layer, args), name=layer.name)
    if isinstance(layer, keras.layers.Bidirectional):
        return keras.layers.Bidirectional(
            _quantize_layer(layer.forward_layer, args),
            backward_layer=_quantize_layer(layer.backward_layer, args),
            merge_mode=layer.merge_mode,
            name=layer.name,
        )
    twin = _twin_class(layer)
    if twin is None:
        return layer.__class__.from_config(layer.get_config())
    config = layer.get_config()
    if twin is QuantDense:
        quantizer_args = {k: args[k] for k in ("kernel_quantizer", "bias_quantizer")}
    else:
        quantizer_args = dict(args)
    for constraint in _CONSTRAINTS:
        if constraint in config and config[constraint] is None:
            config[constraint] = "auto"
    return twin(**config, **{k: quantizers_lib.get(v) for k, v in quantizer_args.items()})


def left_in_float(model) -> list[str]:
    """Names of the Dense / recurrent layers and cells with float weights anywhere in
    ``model`` (wrappers and nested models included)."""
    float_kinds = (*_TWINS, keras.layers.SimpleRNNCell, keras.layers.GRUCell, keras.layers.LSTMCell)
    return [f"{layer.name} ({type(layer).__name__})" for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, float_kinds) and not quantized_owners(layer)]


def quantized_owners(layer) -> list[QuantizedWeightsMixin]:
    """The objects holding quantized weights in ``layer``: the layer (Dense), its cell
    (RNNs), or those of a ``Bidirectional``'s forward and backward layers."""
    if isinstance(layer, keras.layers.Bidirectional):
        return quantized_owners(layer.forward_layer) + quantized_owners(layer.backward_layer)
    if isinstance(layer, keras.layers.TimeDistributed):
        return quantized_owners(layer.layer)
    if isinstance(layer, keras.Model):
        return [owner for sub in layer.layers for owner in quantized_owners(sub)]
    if isinstance(layer, QuantizedWeightsMixin):
        return [layer]
    cell = getattr(layer, "cell", None)
    if isinstance(cell, QuantizedWeightsMixin):
        return [cell]
    return []
