"""``quantize_model``: the quantization-aware twin of a float Keras model."""

from __future__ import annotations

import warnings

import keras
import numpy as np

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
_QUANTIZER_ARGS = ("kernel_quantizer", "recurrent_quantizer", "bias_quantizer")


def _twin_class(layer):
    return _TWINS.get(type(layer))


def quantize_model(
    model: keras.Model,
    kernel_quantizer="ternary",
    recurrent_quantizer="ternary",
    bias_quantizer="ternary",
    channel_scale: bool = False,
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

    With ``channel_scale=True`` every twin scales each output column of its rounded
    kernels by a trainable float, ``W_eff[:, j] = s_j * Q(W)[:, j]`` (see
    ``keras_lowprec.layers.base``); the scales start at 1, every other weight is carried over.

    Args:
        model: a Functional or Sequential Keras model.
        kernel_quantizer, recurrent_quantizer, bias_quantizer: quantizer instance,
            alias (see ``keras_lowprec.quantizers.ALIASES``) or ``None``.
        channel_scale: ``True`` or ``False``; ``True`` needs a kernel quantizer.
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
    if not isinstance(channel_scale, bool):
        raise TypeError(f"quantize_model `channel_scale`: expected True or False, got {channel_scale!r}.")
    if channel_scale and kernel_quantizer is None and recurrent_quantizer is None:
        raise ValueError("quantize_model `channel_scale=True` scales rounded kernels, but `kernel_quantizer` and "
                         "`recurrent_quantizer` are both None.")
    args["channel_scale"] = channel_scale

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
        _carry_weights(old, new)
        for owner in quantized_owners(new):
            owner._clip_initial_weights()
    left = left_in_float(quantized)
    if left:
        warnings.warn(
            f"quantize_model left these layers in float (no quantized twin for them or for the wrapper "
            f"around them): {', '.join(left)}.", stacklevel=2)
    return quantized



def _carry_weights(old, new) -> None:
    """Copies ``old``'s weights into its twin in order; the twin's channel scales, which
    ``old`` does not have, keep their initial 1."""
    scales = {id(v) for owner in quantized_owners(new) for v in owner.channel_scales().values()}
    targets = [v for v in new.weights if id(v) not in scales]
    values = old.get_weights()
    if [tuple(v.shape) for v in targets] != [np.shape(x) for x in values]:
        raise ValueError(f"quantize_model: the weights of layer '{old.name}' do not match its twin's "
                         f"({[np.shape(x) for x in values]} vs {[tuple(v.shape) for v in targets]}).")
    for var, value in zip(targets, values):
        var.assign(value)


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
    names = ("kernel_quantizer", "bias_quantizer") if twin is QuantDense else _QUANTIZER_ARGS
    quantizer_args = {k: quantizers_lib.get(args[k]) for k in names}
    for constraint in _CONSTRAINTS:
        if constraint in config and config[constraint] is None:
            config[constraint] = "auto"
    # a layer left without a rounded kernel (e.g. Dense with kernel_quantizer=None) gets no scales
    kernels = [q for k, q in quantizer_args.items() if k != "bias_quantizer"]
    scaled = args["channel_scale"] and any(q is not None for q in kernels)
    return twin(**config, **quantizer_args, channel_scale=scaled)


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
