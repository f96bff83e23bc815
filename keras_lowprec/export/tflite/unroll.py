"""Sequence graphs made of the stream graph: one calibration, the same integers.

A stream export is one time step, ``(x_t, *state_in) -> (y_t, *state_out)``, with every
activation scale calibrated once over all steps and each input state sharing its output
state's quantization. :func:`unroll_stream` rewrites that graph into the sequence graph
``(1, T, F) -> y``:

* ``UNPACK`` splits the int8 input along time (same scale and zero point: a byte copy);
* the step's operators are repeated ``T`` times; constant tensors (weights, int32 biases)
  are shared by every step, activation tensors are copied per step with the stream
  tensor's quantization; step ``t`` reads the state tensors step ``t - 1`` wrote;
* the initial states are constant tensors holding the zero point (the real value 0.0);
* the output is the last step's ``y`` or, for a model that returns sequences, every
  step's ``y`` joined by ``PACK`` along time; operators whose results reach no output
  (e.g. a classifier head before the last step) are dropped.

Every step runs the stream graph's operators on the same int8 values with the same
scales, so a sequence export made this way gives bit for bit what ``T`` stream invokes
give, and its size grows with ``T`` only by operators and activation tensors (the
weights are stored once).
"""

from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from keras_lowprec.export.errors import ExportError
from keras_lowprec.export.tflite.model import Operator, Subgraph, TFLiteModel


def _needed(ops: list[Operator], outputs: list[int]) -> list[Operator]:
    """The operators of ``ops`` (in execution order) whose results reach ``outputs``."""
    need = set(outputs)
    keep = []
    for op in reversed(ops):
        if any(o in need for o in op.outputs):
            keep.append(op)
            need.update(i for i in op.inputs if i >= 0)
    return keep[::-1]


def drop_unused_tensors(model: TFLiteModel) -> dict[int, int]:
    """Removes the main subgraph's tensors no operator, input or output refers to, and
    renumbers the rest (operators, inputs/outputs, signature defs); returns ``{old: new}``."""
    sg = model.subgraph
    ops = sg.operators
    used = set(sg.inputs) | set(sg.outputs)
    for op in ops:
        used.update(i for i in op.inputs if i >= 0)
        used.update(op.outputs)
        used.update(op.intermediates or [])
    remap = {old: new for new, old in enumerate(i for i in range(len(sg.tensors)) if i in used)}
    sg.raw.tensors = [t for i, t in enumerate(sg.raw.tensors) if i in used]
    for op in ops:
        op.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
        op.outputs = [remap[i] for i in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [remap[i] for i in op.intermediates]
    sg.inputs = [remap[i] for i in sg.inputs]
    sg.outputs = [remap[i] for i in sg.outputs]
    for sig in model.raw.signatureDefs or []:
        for m in list(sig.inputs or []) + list(sig.outputs or []):
            m.tensorIndex = remap.get(int(m.tensorIndex), m.tensorIndex)
    return remap


def _check_stream_graph(model: TFLiteModel, n_states: int) -> None:
    if len(model.subgraphs) != 1:
        raise ExportError(f"unroll: expected one subgraph, found {len(model.subgraphs)}.")
    sg = model.subgraph
    if len(sg.inputs) != 1 + n_states or len(sg.outputs) != 1 + n_states:
        raise ExportError(f"unroll: expected {1 + n_states} inputs and outputs, found "
                          f"{len(sg.inputs)} and {len(sg.outputs)}.")
    for s_in, s_out in zip(sg.inputs[1:], sg.outputs[1:]):
        a, b = sg.tensors[s_in].raw.quantization, sg.tensors[s_out].raw.quantization
        if list(a.scale) != list(b.scale) or list(a.zeroPoint) != list(b.zeroPoint):
            raise ExportError("unroll: an input state is not quantized like its output state.")


def _initial_states(model: TFLiteModel, states_in: list[int]) -> list[int]:
    """Constant tensors like the input states, holding their zero point (real 0.0)."""
    sg = model.subgraph
    out = []
    for k, s_in in enumerate(states_in):
        like = sg.tensors[s_in]
        dtype = {"INT8": np.int8, "INT16": np.int16}.get(like.type_name)
        if dtype is None:
            raise ExportError(f"unroll: state {k} is {like.type_name}, expected an integer type.")
        zp = int(like.raw.quantization.zeroPoint[0]) if like.raw.quantization.zeroPoint is not None else 0
        idx = sg.add_tensor(like, f"initial_state_{k}")
        # add_tensor drops the shape signature only when given a shape: none given here.
        sg.tensors[idx].buffer = model.add_buffer(np.full(int(np.prod(like.shape)), zp, dtype=dtype))
        out.append(idx)
    return out


def _step_tensor(sg: Subgraph, mapping: dict[int, int], index: int, t: int) -> int:
    """Index of step ``t``'s copy of step-graph tensor ``index`` (-1: an omitted input)."""
    if index < 0:
        return -1
    if index not in mapping:
        tensor = sg.tensors[index]
        mapping[index] = index if tensor.is_constant else sg.add_tensor(tensor, f"{tensor.name}_t{t}")
    return mapping[index]


def _repeat_steps(sg: Subgraph, step_ops: list[Operator], x_in: int, x_steps: list[int], states_in: list[int],
                  states_out: list[int], y_out: int, current: list[int]) -> tuple[list[Operator], list[int]]:
    """The step operators once per time step, step ``t`` reading ``x_steps[t]`` and the
    states step ``t - 1`` wrote (``current`` at first); returns ``(operators, y of each step)``."""
    ops, y_steps = [], []
    for t in range(len(x_steps)):
        # step tensor -> this step's tensor: constants shared, activations copied
        mapping = {x_in: x_steps[t], **dict(zip(states_in, current))}
        for op in step_ops:
            clone = op.copy()
            clone.inputs = [_step_tensor(sg, mapping, i, t) for i in op.inputs]
            clone.outputs = [_step_tensor(sg, mapping, i, t) for i in op.outputs]
            if op.intermediates is not None:
                clone.intermediates = [_step_tensor(sg, mapping, i, t) for i in op.intermediates]
            ops.append(clone)
        current = [mapping[s] for s in states_out]
        y_steps.append(mapping[y_out])
    return ops, y_steps


def unroll_stream(model: TFLiteModel, timesteps: int, n_states: int, return_sequences: bool) -> dict[int, int]:
    """Rewrites the stream graph ``model`` (inputs ``x, *states``, outputs ``y, *states``
    in that order, input states quantized like the output states) into the sequence graph
    of ``timesteps`` steps described in the module docstring.

    Returns the ``{old: new}`` tensor indices (tensors dropped are missing).
    """
    _check_stream_graph(model, n_states)
    sg = model.subgraph
    x_in, states_in = sg.inputs[0], sg.inputs[1:]
    y_out, states_out = sg.outputs[0], sg.outputs[1:]
    step_ops = sg.operators
    features = sg.tensors[x_in].shape[-1]

    # The sequence input and its split along time.
    seq_in = sg.add_tensor(x_in, "input", shape=[1, timesteps, features])
    x_steps = [sg.add_tensor(x_in, f"input_t{t}") for t in range(timesteps)]
    options = schema.UnpackOptionsT()
    options.num, options.axis = timesteps, 1
    unpack = model.new_operator("UNPACK", 2, [seq_in], x_steps, options)
    current = _initial_states(model, states_in)
    steps, y_steps = _repeat_steps(sg, step_ops, x_in, x_steps, states_in, states_out, y_out, current)
    ops = [unpack, *steps]
    if return_sequences:
        y_shape = sg.tensors[y_out].shape
        seq_out = sg.add_tensor(y_out, "output", shape=[1, timesteps] + y_shape[1:])
        options = schema.PackOptionsT()
        options.valuesCount, options.axis = timesteps, 1
        ops.append(model.new_operator("PACK", 2, y_steps, [seq_out], options))
        outputs = [seq_out]
    else:
        outputs = [y_steps[-1]]
    sg.operators = _needed(ops, outputs)
    sg.inputs, sg.outputs = [seq_in], outputs
    # The signature keeps one input and one output: the sequence's.
    for sig in model.raw.signatureDefs or []:
        sig.inputs = [m for m in (sig.inputs or []) if int(m.tensorIndex) == x_in][:1]
        sig.outputs = [m for m in (sig.outputs or []) if int(m.tensorIndex) == y_out][:1]
        for m in sig.inputs:
            m.tensorIndex = seq_in
        for m in sig.outputs:
            m.tensorIndex = outputs[0]
    return drop_unused_tensors(model)
