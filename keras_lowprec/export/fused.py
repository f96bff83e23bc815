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
calibrated on whole sequences, with its time axis set to 1 (:func:`to_single_step`), so
both share every activation scale.

The op lists five intermediate tensors without data (shape ``[0]``); the converter types
four of them float32. :func:`integer_intermediates` retypes those int16 (the gate
pre-activation type of the integer kernel), so that no tensor of the graph is float;
TFLM gives bit-identical outputs either way (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_lowprec.export.errors import ExportError

# Ops a fused graph may contain for its time axis to be set to 1 (stream mode).
_STREAMABLE_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "FULLY_CONNECTED", "SOFTMAX", "LOGISTIC",
                   "TANH", "RELU", "RELU6", "QUANTIZE", "MUL", "ADD", "SUB", "MEAN", "RSQRT"}


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


def prepare(model, n_lstm: int, stream_timesteps: int | None) -> None:
    """Checks and rewrites of a converted fused graph, before the integer-only check:
    empty intermediates retyped, one fused op per LSTM layer, and (stream mode) the time
    axis of a graph converted with ``stream_timesteps`` steps set to 1."""
    integer_intermediates(model)
    check_fused(model, n_lstm)
    if stream_timesteps is not None:
        to_single_step(model, stream_timesteps)


def check_fused(model, n_lstm: int) -> None:
    """Raises unless the converter produced one fused op per LSTM layer."""
    from keras_lowprec.export import flatbuffer

    got = sum(flatbuffer.op_name(model, op) == "UNIDIRECTIONAL_SEQUENCE_LSTM" for op in model.subgraphs[0].operators)
    if got != n_lstm:
        raise ExportError(
            f"the converter produced {got} UNIDIRECTIONAL_SEQUENCE_LSTM ops for {n_lstm} LSTM layers; "
            "export with lstm_kernel='unrolled'."
        )


def calibration_windows(seqs: list[np.ndarray]) -> list[np.ndarray]:
    """Stream mode with Masking: real-frame sequences of different lengths, cut to one
    length (the median; shorter ones left out) for the fixed-length model that is
    calibrated before its time axis is set to 1."""
    n = int(np.median([len(s) for s in seqs]))
    return [s[:n] for s in seqs if len(s) >= n]


def to_single_step(model, timesteps: int) -> None:
    """Sets the time axis of a fused graph to 1: every ``[1, T, n]`` tensor becomes
    ``[1, 1, n]``. Refuses graphs with ops whose parameters could depend on T."""
    from keras_lowprec.export import flatbuffer

    names = set(flatbuffer.op_names(model))
    extra = sorted(names - _STREAMABLE_OPS)
    if extra:
        raise ExportError(f"stream export with the fused LSTM: ops {extra} may depend on the sequence length; "
                          "export with lstm_kernel='unrolled'.")
    sg = model.subgraphs[0]
    for op in sg.operators:
        if flatbuffer.op_name(model, op) == "STRIDED_SLICE":  # the last step: begin -1, end 0 (masked)
            begin = flatbuffer._buffer_array(model, sg.tensors[op.inputs[1]])
            if begin is None or int(begin.reshape(-1)[1]) != -1:
                raise ExportError("stream export with the fused LSTM: unexpected STRIDED_SLICE; "
                                  "export with lstm_kernel='unrolled'.")
    if timesteps == 1:
        return
    for t in sg.tensors:
        shape = [int(d) for d in t.shape] if t.shape is not None else []
        if len(shape) == 3 and shape[0] == 1 and shape[1] == timesteps:
            t.shape = np.array([1, 1, shape[2]], np.int32)
            if t.shapeSignature is not None and len(t.shapeSignature):
                t.shapeSignature = np.array([1, 1, shape[2]], np.int32)


def integer_intermediates(model) -> int:
    """Retypes the fused LSTM's empty float32 intermediates int16; returns how many."""
    from keras_lowprec.export import flatbuffer

    sg = model.subgraphs[0]
    n = 0
    for op in sg.operators:
        if flatbuffer.op_name(model, op) != "UNIDIRECTIONAL_SEQUENCE_LSTM" or op.intermediates is None:
            continue
        for i in op.intermediates:
            t = sg.tensors[i]
            data = model.buffers[t.buffer].data
            if flatbuffer.type_name(t.type) == "FLOAT32" and int(np.prod(t.shape)) == 0 and not (
                    data is not None and len(data)):
                t.type = flatbuffer._schema().TensorType.INT16
                n += 1
    return n
