"""LSTM models through TFLite's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op.

TFLM ships one integer LSTM kernel (CMSIS-NN-optimized on Cortex-M): int8 input, weights
and hidden state, **int16 cell state** with a power-of-two scale, gate pre-activations in
fixed point (2^-12) inside the kernel. Compared with an LSTM written out op by op with
int8 tensors, the cell state keeps 8 more bits across time steps, and the graph does not
grow with the sequence length.

TF's converter emits the op only when it finds the function Keras 2 wraps its LSTM in
(``api_implements="lstm_<uuid>"``) in a SavedModel; a Keras 3 LSTM, or the same math in a
plain ``tf.function``, converts to a WHILE loop instead. So for a chain the fused kernel
can run (every recurrent layer an LSTM with Keras's default ``tanh`` / ``sigmoid``; Dense,
Activation, per-feature BatchNormalization / Normalization, LayerNormalization and identity
layers around it) the exporter rebuilds the chain as a ``tf_keras`` model at batch 1 with
the **deterministic rounded weights** and converts that (``TFLiteConverter.from_keras_model``).
The weight tensors are then rewritten exactly like those of any other export, and the int32
gate biases re-expressed in ``input_scale * weight_scale``.

Stream mode uses the same op with one time step per invoke: the hidden and cell states
are the op's **variable tensors**, which TFLM keeps between invokes (firmware calls
``interpreter.Reset()`` between sequences). The stream model is the sequence model,
calibrated on whole sequences, with its time axis set to 1 (``tflite.fused_lstm.to_single_step``), so
both share every activation scale.

The op lists five intermediate tensors without data (shape ``[0]``); the converter types
four of them float32. ``tflite.fused_lstm.integer_intermediates`` retypes those int16 (the gate
pre-activation type of the integer kernel), so that no tensor of the graph is float;
TFLM gives bit-identical outputs either way (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np



def unfusable_reason(plan) -> str | None:
    """Why the plan cannot use the fused LSTM kernel (``None``: it can); asked of each
    stage's handler."""
    if not plan.recurrent:
        return "the model has no recurrent layer"
    stages = [s for s in plan.stages if s.kind != "identity"]
    for stage, after in zip(stages, stages[1:] + [None]):
        reason = stage.handler.unfusable(stage, after, plan)
        if reason is not None:
            return reason
    return None


def twin_model(plan, timesteps: int):
    """The chain as a ``tf_keras`` model at batch 1 with the rounded weights."""
    import tf_keras

    x = inp = tf_keras.Input((timesteps, plan.features), batch_size=1, name="input")
    for stage in plan.stages:
        if stage.kind != "identity":
            x = stage.handler.fused_twin(stage, x, tf_keras)
    return tf_keras.Model(inp, x)


def converter(plan, timesteps: int) -> Any:
    """A ``TFLiteConverter`` for the twin (from a SavedModel: the path that fuses)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(twin_model(plan, timesteps))


def calibration_windows(seqs: list[np.ndarray]) -> list[np.ndarray]:
    """Stream mode with Masking: real-frame sequences of different lengths, cut to one
    length (the median; shorter ones left out) for the fixed-length model that is
    calibrated before its time axis is set to 1."""
    n = int(np.median([len(s) for s in seqs]))
    return [s[:n] for s in seqs if len(s) >= n]
