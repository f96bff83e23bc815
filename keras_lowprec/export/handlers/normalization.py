"""Normalization layers at inference: per-feature BatchNormalization / Normalization as an
affine ``x * scale + offset``, LayerNormalization over the last axis."""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.handlers import register
from keras_lowprec.export.handlers.base import Handler, base_name, input_ndim, refuse
from keras_lowprec.export.plan import Stage


@register
class AffineHandler(Handler):
    classes = ("BatchNormalization", "Normalization")
    kind = "affine"
    description = "BatchNormalization, Normalization (per feature)"

    def analyze(self, layer, plan, mode):
        affine = affine_of(layer)
        if affine is None and base_name(layer) == "BatchNormalization":
            # statistics along another axis (e.g. time): the layer itself, over the whole sequence
            from keras_lowprec.export.handlers.passthrough import ApplyHandler

            return Stage(ApplyHandler.kind, layer, layer.name, ApplyHandler(), per_step=False)
        if affine is None:
            raise refuse(layer, f"keeps statistics along axis {layer.axis}; the exporter supports per-feature "
                                "statistics (axis=-1, the default).")
        return Stage(self.kind, layer, layer.name, self, params={"affine": affine})

    def apply(self, stage, x):
        scale, offset = stage.params["affine"]
        return x * scale + offset

    def unfusable(self, stage, after, plan):
        if after is not None and after.kind == "dense" and any(w.layer == after.name and w.method
                                                               for w in plan.weights):
            # the converter folds x * scale into the next FULLY_CONNECTED's weights
            return (f"layer '{stage.name}' ({type(stage.layer).__name__}) right before Dense '{after.name}': the "
                    "converter would fold it into that layer's rounded weights")
        return None

    def fused_twin(self, stage, x, tf_keras):
        scale, offset = stage.params["affine"]
        return tf_keras.layers.Lambda(lambda t, s=scale, o=offset: t * s + o, name=f"{stage.name}_twin")(x)


@register
class LayerNormHandler(Handler):
    classes = ("LayerNormalization",)
    kind = "layernorm"
    description = "LayerNormalization (last axis)"

    def analyze(self, layer, plan, mode):
        import keras

        ndim = input_ndim(layer)
        if tuple(layer.axis) not in ((-1,),) + (((ndim - 1,),) if ndim else ()):
            raise refuse(layer, f"normalizes over axes {tuple(layer.axis)}; the exporter supports the last axis "
                                "(axis=-1, the default).")
        n = int(layer.input.shape[-1])
        gamma = keras.ops.convert_to_numpy(layer.gamma) if layer.gamma is not None else np.ones(n)
        beta = keras.ops.convert_to_numpy(layer.beta) if layer.beta is not None else np.zeros(n)
        affine = (np.asarray(gamma, np.float32), np.asarray(beta, np.float32))
        return Stage(self.kind, layer, layer.name, self, params={"affine": affine})

    def apply(self, stage, x):
        return layer_norm(x, stage)

    def unfusable(self, stage, after, plan):
        return None

    def fused_twin(self, stage, x, tf_keras):
        return tf_keras.layers.Lambda(lambda t, st=stage: layer_norm(t, st), name=f"{stage.name}_twin")(x)


def affine_of(layer) -> tuple[np.ndarray, np.ndarray] | None:
    """Inference-time ``BatchNormalization`` or ``Normalization`` as ``y = x * scale + offset``
    with one ``(scale, offset)`` per feature (last axis), float32; ``None`` when its statistics
    run along another axis.

    BatchNormalization: ``scale = gamma / sqrt(moving_variance + epsilon)``,
    ``offset = beta - moving_mean * scale``. Normalization: ``std = max(sqrt(variance),
    epsilon)``, ``scale = 1 / std``, ``offset = -mean / std`` (``invert=True``: ``scale = std``,
    ``offset = mean``), Keras's own formulas.
    """
    if base_name(layer) == "BatchNormalization":
        return _batch_norm_affine(layer)
    import keras

    mean, var = _arr(layer.mean), _arr(layer.variance)
    if any(d != 1 for d in mean.shape[:-1]):
        return None
    std = np.maximum(np.sqrt(var), keras.config.epsilon()).reshape(-1)
    mean = mean.reshape(-1)
    scale, offset = (std, mean) if layer.invert else (1.0 / std, -mean / std)
    return scale.astype(np.float32), offset.astype(np.float32)


def _arr(v) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(v), np.float64)


def _batch_norm_affine(layer):
    ndim = input_ndim(layer)
    if not (layer.axis == -1 or (ndim is not None and layer.axis == ndim - 1)):
        return None
    scale = 1.0 / np.sqrt(_arr(layer.moving_variance) + layer.epsilon)
    if layer.scale:
        scale = scale * _arr(layer.gamma)
    offset = -_arr(layer.moving_mean) * scale
    if layer.center:
        offset = offset + _arr(layer.beta)
    return scale.astype(np.float32), offset.astype(np.float32)


def layer_norm(x, stage: Stage):
    """``LayerNormalization`` over the last axis in TF ops that convert to int8 builtins (MEAN,
    SUB, MUL, ADD, RSQRT; Keras's own graph leaves a float NEG behind), Keras's formula:
    ``(x - mean) * rsqrt(var + epsilon) * gamma + beta``; with ``rms_scaling``
    ``x * rsqrt(var + epsilon) * gamma`` (``var`` is the centered variance in both)."""
    import tensorflow as tf

    layer = stage.layer
    gamma, beta = stage.params["affine"]
    d = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    inv = tf.math.rsqrt(tf.reduce_mean(d * d, axis=-1, keepdims=True) + layer.epsilon)
    # gamma before the data-dependent factor: a constant factor right before a product with
    # rounded weights would be folded into them by the converter
    return (x if layer.rms_scaling else d) * gamma * inv + beta
