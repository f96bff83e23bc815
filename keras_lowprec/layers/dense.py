"""Quantization-aware ``Dense``: ``y = act(x Q(W) + Q(b))``."""

from __future__ import annotations

import keras
from keras import ops

from keras_lowprec.layers.base import QuantizedWeightsMixin


@keras.saving.register_keras_serializable(package="keras_lowprec")
class QuantDense(QuantizedWeightsMixin, keras.layers.Dense):
    """``keras.layers.Dense`` whose kernel and bias are rounded by quantizers.

    Arguments are those of ``keras.layers.Dense`` plus ``kernel_quantizer``,
    ``bias_quantizer`` (instance, alias or ``None``) and ``seed`` for stochastic
    rounding. Both scales use the Glorot bound ``sqrt(6 / (input_dim + units))``.
    Constraints default to ``"auto"`` (clip master weights to the quantizer's range).
    ``channel_scale=True``: a trainable float scale per output unit on the rounded kernel
    (``layers.base``).
    """

    _weight_names = ("kernel", "bias")

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint="auto",
        bias_constraint="auto",
        kernel_quantizer=None,
        bias_quantizer=None,
        seed=None,
        channel_scale=False,
        **kwargs,
    ):
        super().__init__(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self._init_quantization(
            {"kernel_quantizer": kernel_quantizer, "bias_quantizer": bias_quantizer},
            {"kernel_constraint": kernel_constraint, "bias_constraint": bias_constraint},
            channel_scale,
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self._prepare_quantization(input_shape[-1])
        super().build(input_shape)
        self._build_channel_scales()
        self._clip_initial_weights()

    def call(self, inputs, training=None):
        weights = self.quantized_weights(bool(training))
        x = ops.matmul(inputs, weights["kernel"])
        if "bias" in weights:
            x = ops.add(x, weights["bias"])
        if self.activation is not None:
            x = self.activation(x)
        return x

    def quantize(self, *args, **kwargs):
        raise NotImplementedError(
            "QuantDense: Keras post-training quantization (`layer.quantize`) does not apply; "
            "the layer already trains with rounded weights. Export with keras_lowprec.export."
        )

    # Keras's Dense saves a fixed list of variables (kernel, bias, its int8 scales); the
    # Layer default saves every variable in order, channel scales included. Files written
    # before channel scales (kernel, bias) load unchanged.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return {**super().get_config(), **self.quantizer_config(), "seed": self.seed}
