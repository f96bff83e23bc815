"""Quantization-aware SimpleRNN, GRU and LSTM cells and layers.

Each is its Keras float twin (same constructor arguments, defaults and math) plus
``kernel_quantizer``, ``recurrent_quantizer`` and ``bias_quantizer``. With
quantizers ``Q`` the cell computes, e.g. for the LSTM,

    z = x_t Q(W) + h_{t-1} Q(U) + Q(b)
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
    c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)

with ``Q(W)`` the deterministic rounding at inference and, in training, the
(possibly stochastic) rounding with a straight-through gradient to the master
weights ``W``. The layers round every weight **once per call**, before the time
loop; a cell used on its own (``keras.layers.RNN(QuantLSTMCell(...))``) rounds at
every step, which for stochastic quantizers draws new noise at every step.

Constraints default to ``"auto"``: master weights are clipped to the quantizer's
range after every update (and at initialization). Pass ``None`` to turn it off.

``channel_scale=True`` adds a trainable float scale per output column (gate unit) of the
rounded kernel and recurrent kernel: ``Q(W)`` becomes ``Q(W) * s`` (see ``layers.base``).
It closes most of the gap to float on character-level PTB (``results/findings.md``, item 15).
"""

from __future__ import annotations

from typing import Any

import keras
from keras.src import backend as keras_backend
from keras.layers import InputSpec

from keras_lowprec.layers.base import QuantizedWeightsMixin

_PACKAGE = "keras_lowprec"


class _QuantCellMixin(QuantizedWeightsMixin):
    """Cell side: builds with quantization and binds rounded weights around ``call``."""

    def __init__(
        self,
        *args,
        kernel_quantizer=None,
        recurrent_quantizer=None,
        bias_quantizer=None,
        kernel_constraint="auto",
        recurrent_constraint="auto",
        bias_constraint="auto",
        channel_scale=False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._init_quantization(
            {
                "kernel_quantizer": kernel_quantizer,
                "recurrent_quantizer": recurrent_quantizer,
                "bias_quantizer": bias_quantizer,
            },
            {
                "kernel_constraint": kernel_constraint,
                "recurrent_constraint": recurrent_constraint,
                "bias_constraint": bias_constraint,
            },
            channel_scale,
        )

    def build(self, input_shape):
        self._prepare_quantization(input_shape[-1])
        super().build(input_shape)
        self._build_channel_scales()
        self._clip_initial_weights()

    def call(self, inputs, states, training=False):
        with self.bind_quantized_weights(training):
            return super().call(inputs, states, training=training)

    def get_config(self):
        return {**super().get_config(), **self.quantizer_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantSimpleRNNCell(_QuantCellMixin, keras.layers.SimpleRNNCell):
    """``keras.layers.SimpleRNNCell`` with rounded weights: ``h_t = act(x_t Q(W) + h_{t-1} Q(U) + Q(b))``."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantGRUCell(_QuantCellMixin, keras.layers.GRUCell):
    """``keras.layers.GRUCell`` with rounded kernel, recurrent kernel and biases."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantLSTMCell(_QuantCellMixin, keras.layers.LSTMCell):
    """``keras.layers.LSTMCell`` with rounded kernel, recurrent kernel and bias."""


class _QuantRNNMixin:
    """Layer side: rounds once around the whole time loop; config adds quantizers."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        with self.cell.bind_quantized_weights(training):
            return super().inner_loop(sequences, initial_state, mask, training=training)

    @property
    def kernel_quantizer(self):
        return self.cell.kernel_quantizer

    @property
    def recurrent_quantizer(self):
        return self.cell.recurrent_quantizer

    @property
    def bias_quantizer(self):
        return self.cell.bias_quantizer

    @property
    def channel_scale(self) -> bool:
        return self.cell.channel_scale

    def channel_scales(self) -> dict[str, Any]:
        """The cell's per-column scale variables (empty without ``channel_scale``)."""
        return self.cell.channel_scales()

    def quantized_weights(self, training: bool = False, apply_channel_scale: bool = True) -> dict[str, Any]:
        """The cell's ``{name: Q(W)}`` (deterministic when ``training=False``; with channel
        scales ``s * Q(W)`` unless ``apply_channel_scale=False``)."""
        return self.cell.quantized_weights(training, apply_channel_scale)

    def get_config(self):
        return {**super().get_config(), **self.cell.quantizer_config()}

    def _init_cudnn(self, use_cudnn, **cudnn_kwargs) -> None:
        """What ``keras.layers.LSTM/GRU.__init__`` does after ``RNN.__init__``."""
        if use_cudnn not in ("auto", True, False):
            raise ValueError(
                f"{type(self).__name__}: invalid `use_cudnn`={use_cudnn!r}; expected one of 'auto', True, False."
            )
        self.input_spec = InputSpec(ndim=3)
        self.use_cudnn = use_cudnn
        cell = self.cell
        if (
            keras_backend.backend() == "tensorflow"
            and keras_backend.cudnn_ok(
                cell.activation, cell.recurrent_activation, self.unroll, cell.use_bias, **cudnn_kwargs
            )
            and use_cudnn in (True, "auto")
        ):
            self.supports_jit = False


def _cell_common(kwargs: dict, name: str) -> dict:
    return {"dtype": kwargs.get("dtype", None), "trainable": kwargs.get("trainable", True), "name": name}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantSimpleRNN(_QuantRNNMixin, keras.layers.SimpleRNN):
    """``keras.layers.SimpleRNN`` whose weights are rounded by the given quantizers.

    Arguments are those of ``keras.layers.SimpleRNN`` plus the three quantizers and ``channel_scale``
    (instance, alias such as ``"ternary"``, or ``None`` for full precision).
    Constraints default to ``"auto"`` (clip to the quantizer's range).
    """

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint="auto",
        recurrent_constraint="auto",
        bias_constraint="auto",
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        seed=None,
        kernel_quantizer=None,
        recurrent_quantizer=None,
        bias_quantizer=None,
        channel_scale=False,
        **kwargs,
    ):
        cell = QuantSimpleRNNCell(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            kernel_quantizer=kernel_quantizer,
            recurrent_quantizer=recurrent_quantizer,
            bias_quantizer=bias_quantizer,
            channel_scale=channel_scale,
            **_cell_common(kwargs, "simple_rnn_cell"),
        )
        keras.layers.RNN.__init__(
            self,
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            **kwargs,
        )
        self.input_spec = [InputSpec(ndim=3)]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantGRU(_QuantRNNMixin, keras.layers.GRU):
    """``keras.layers.GRU`` whose weights are rounded by the given quantizers.

    Arguments are those of ``keras.layers.GRU`` (``reset_after=True`` by default)
    plus the three quantizers and ``channel_scale``. GRU's recurrent bias uses the input kernel's scale.
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint="auto",
        recurrent_constraint="auto",
        bias_constraint="auto",
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        reset_after=True,
        use_cudnn="auto",
        kernel_quantizer=None,
        recurrent_quantizer=None,
        bias_quantizer=None,
        channel_scale=False,
        **kwargs,
    ):
        cell = QuantGRUCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            reset_after=reset_after,
            seed=seed,
            implementation=kwargs.pop("implementation", 2),
            kernel_quantizer=kernel_quantizer,
            recurrent_quantizer=recurrent_quantizer,
            bias_quantizer=bias_quantizer,
            channel_scale=channel_scale,
            **_cell_common(kwargs, "gru_cell"),
        )
        keras.layers.RNN.__init__(
            self,
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self._init_cudnn(use_cudnn, reset_after=reset_after)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantLSTM(_QuantRNNMixin, keras.layers.LSTM):
    """``keras.layers.LSTM`` whose weights are rounded by the given quantizers.

    Arguments are those of ``keras.layers.LSTM`` plus the three quantizers and ``channel_scale``. With
    ``unit_forget_bias=True`` the forget-gate bias of 1 is clipped to the bias
    quantizer's range at initialization (constraint ``"auto"``).
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint="auto",
        recurrent_constraint="auto",
        bias_constraint="auto",
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        kernel_quantizer=None,
        recurrent_quantizer=None,
        bias_quantizer=None,
        channel_scale=False,
        **kwargs,
    ):
        cell = QuantLSTMCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            unit_forget_bias=unit_forget_bias,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            implementation=kwargs.pop("implementation", 2),
            kernel_quantizer=kernel_quantizer,
            recurrent_quantizer=recurrent_quantizer,
            bias_quantizer=bias_quantizer,
            channel_scale=channel_scale,
            **_cell_common(kwargs, "lstm_cell"),
        )
        keras.layers.RNN.__init__(
            self,
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self._init_cudnn(use_cudnn)
