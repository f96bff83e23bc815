"""Sequence graphs made of the stream graph: one calibration, the same integers.

A stream export is one time step, ``(x_t, *state_in) -> (y_t, *state_out)``, with every
activation scale calibrated once over all steps and each input state sharing its output
state's quantization. :func:`unroll_stream` rewrites that flatbuffer into the sequence
graph ``(1, T, F) -> y``:

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

import copy

import numpy as np

from keras_lowprec.export.errors import ExportError


def _opcode(model, name: str, version: int) -> int:
    """Index of builtin operator ``name`` in the model's operator codes (added if missing)."""
    from keras_lowprec.export import flatbuffer

    schema = flatbuffer._schema()
    value = getattr(schema.BuiltinOperator, name)
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == value:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = value
    code.deprecatedBuiltinCode = min(value, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _is_constant(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _new_tensor(sg, like, name: str, shape=None) -> int:
    t = copy.deepcopy(like)
    t.name = name
    t.buffer = 0  # activations: the empty buffer
    if shape is not None:
        t.shape = list(shape)
        t.shapeSignature = None
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _needed(ops: list, outputs: list[int]) -> list:
    """The operators of ``ops`` (in execution order) whose results reach ``outputs``."""
    need = set(outputs)
    keep = []
    for op in reversed(ops):
        if any(int(o) in need for o in op.outputs):
            keep.append(op)
            need.update(int(i) for i in op.inputs if i >= 0)
    return keep[::-1]


def drop_unused_tensors(model) -> dict[int, int]:
    """Removes tensors no operator, input or output refers to; returns ``{old: new}`` indices."""
    sg = model.subgraphs[0]
    used = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
    for op in sg.operators:
        used.update(int(i) for i in op.inputs if i >= 0)
        used.update(int(i) for i in op.outputs)
        used.update(int(i) for i in (op.intermediates if op.intermediates is not None else []))
    remap = {old: new for new, old in enumerate(i for i in range(len(sg.tensors)) if i in used)}
    sg.tensors = [t for i, t in enumerate(sg.tensors) if i in used]
    for op in sg.operators:
        op.inputs = [remap[int(i)] if i >= 0 else -1 for i in op.inputs]
        op.outputs = [remap[int(i)] for i in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [remap[int(i)] for i in op.intermediates]
    sg.inputs = [remap[int(i)] for i in sg.inputs]
    sg.outputs = [remap[int(i)] for i in sg.outputs]
    for sig in model.signatureDefs or []:
        for m in list(sig.inputs or []) + list(sig.outputs or []):
            m.tensorIndex = remap.get(int(m.tensorIndex), m.tensorIndex)
    return remap


def unroll_stream(model, timesteps: int, n_states: int, return_sequences: bool) -> dict[int, int]:
    """Rewrites the stream graph ``model`` (ModelT; inputs ``x, *states``, outputs
    ``y, *states`` in that order, input states quantized like the output states) into the
    sequence graph of ``timesteps`` steps described in the module docstring.

    Returns the ``{old: new}`` tensor indices (tensors dropped are missing).
    """
    from keras_lowprec.export import flatbuffer

    schema = flatbuffer._schema()
    if len(model.subgraphs) != 1:
        raise ExportError(f"unroll: expected one subgraph, found {len(model.subgraphs)}.")
    sg = model.subgraphs[0]
    if len(sg.inputs) != 1 + n_states or len(sg.outputs) != 1 + n_states:
        raise ExportError(f"unroll: expected {1 + n_states} inputs and outputs, found "
                          f"{len(sg.inputs)} and {len(sg.outputs)}.")
    x_in, states_in = int(sg.inputs[0]), [int(i) for i in sg.inputs[1:]]
    y_out, states_out = int(sg.outputs[0]), [int(i) for i in sg.outputs[1:]]
    for s_in, s_out in zip(states_in, states_out):
        a, b = sg.tensors[s_in].quantization, sg.tensors[s_out].quantization
        if list(a.scale) != list(b.scale) or list(a.zeroPoint) != list(b.zeroPoint):
            raise ExportError("unroll: an input state is not quantized like its output state.")
    step_ops = list(sg.operators)
    x_t = sg.tensors[x_in]
    features = int(x_t.shape[-1])

    # The sequence input and its split along time.
    seq_in = _new_tensor(sg, x_t, "input", shape=[1, timesteps, features])
    x_steps = [_new_tensor(sg, x_t, f"input_t{t}") for t in range(timesteps)]
    unpack = schema.OperatorT()
    unpack.opcodeIndex = _opcode(model, "UNPACK", 2)
    unpack.inputs, unpack.outputs = [seq_in], x_steps
    unpack.builtinOptionsType = schema.BuiltinOptions.UnpackOptions
    unpack.builtinOptions = schema.UnpackOptionsT()
    unpack.builtinOptions.num, unpack.builtinOptions.axis = timesteps, 1
    ops = [unpack]

    # Initial states: constants holding the zero point.
    current = []
    for k, s_in in enumerate(states_in):
        t = copy.deepcopy(sg.tensors[s_in])
        t.name = f"initial_state_{k}"
        buf = schema.BufferT()
        zp = int(t.quantization.zeroPoint[0]) if t.quantization.zeroPoint is not None else 0
        size = int(np.prod([int(d) for d in t.shape]))
        dtype = {"INT8": np.int8, "INT16": np.int16}.get(flatbuffer.type_name(t.type))
        if dtype is None:
            raise ExportError(f"unroll: state {k} is {flatbuffer.type_name(t.type)}, expected an integer type.")
        buf.data = np.frombuffer(np.full(size, zp, dtype=dtype).tobytes(), dtype=np.uint8).copy()
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        current.append(len(sg.tensors) - 1)

    y_steps = []
    for t in range(timesteps):
        # step tensor -> this step's tensor: constants shared, activations copied
        mapping = {x_in: x_steps[t], **dict(zip(states_in, current))}
        for op in step_ops:
            clone = copy.deepcopy(op)
            clone.inputs = [_step_tensor(model, mapping, i, t) for i in op.inputs]
            clone.outputs = [_step_tensor(model, mapping, i, t) for i in op.outputs]
            if op.intermediates is not None:
                clone.intermediates = [_step_tensor(model, mapping, i, t) for i in op.intermediates]
            ops.append(clone)
        current = [mapping[s] for s in states_out]
        y_steps.append(mapping[y_out])

    if return_sequences:
        y = sg.tensors[y_out]
        seq_out = _new_tensor(sg, y, "output", shape=[1, timesteps] + [int(d) for d in y.shape[1:]])
        pack = schema.OperatorT()
        pack.opcodeIndex = _opcode(model, "PACK", 2)
        pack.inputs, pack.outputs = y_steps, [seq_out]
        pack.builtinOptionsType = schema.BuiltinOptions.PackOptions
        pack.builtinOptions = schema.PackOptionsT()
        pack.builtinOptions.valuesCount, pack.builtinOptions.axis = timesteps, 1
        ops.append(pack)
        outputs = [seq_out]
    else:
        outputs = [y_steps[-1]]
    sg.operators = _needed(ops, outputs)
    sg.inputs, sg.outputs = [seq_in], outputs
    for sig in model.signatureDefs or []:
        sig.inputs = [m for m in (sig.inputs or []) if int(m.tensorIndex) == x_in][:1]
        sig.outputs = [m for m in (sig.outputs or []) if int(m.tensorIndex) == y_out][:1]
        for m in sig.inputs:
            m.tensorIndex = seq_in
        for m in sig.outputs:
            m.tensorIndex = outputs[0]
    return drop_unused_tensors(model)


def _step_tensor(model, mapping: dict[int, int], index: int, t: int) -> int:
    """Index of step ``t``'s copy of step-graph tensor ``index`` (-1: an omitted input)."""
    index = int(index)
    if index < 0:
        return -1
    if index not in mapping:
        tensor = model.subgraphs[0].tensors[index]
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        mapping[index] = index if _is_constant(model, tensor) else _new_tensor(model.subgraphs[0], tensor,
                                                                                 f"{name}_t{t}")
    return mapping[index]
