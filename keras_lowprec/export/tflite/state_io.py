"""Stream (step) graphs: inputs and outputs in the documented order, and input states
quantized like the output states they are fed from."""

from __future__ import annotations

import re

from keras_lowprec.export.errors import ExportError
from keras_lowprec.export.tflite.exact_weights import int32_biases, requantize_biases, unshare_buffers
from keras_lowprec.export.tflite.model import TFLiteModel

# Ops that read their input scale at Prepare (no "same scale in and out" requirement), so
# a state input they read may take any scale.
_SCALE_FREE_READERS = {"FULLY_CONNECTED", "MUL", "ADD", "SUB", "LOGISTIC", "TANH"}


def share_state_quantization(model: TFLiteModel, pairs: list[tuple[int, int]]) -> None:
    """For each (input position, output position) pair, gives the input state the output's
    scales and zero points, so firmware copies the output's int8 bytes into the input
    unchanged; the int32 biases are re-expressed in the new input scales. ``ExportError``
    if a state input feeds an op whose output must keep its input's scale."""
    unshare_buffers(model)
    sg = model.subgraph
    old_bias = int32_biases(model)
    consumers = sg.consumer_map()
    inputs, outputs = sg.inputs, sg.outputs
    for in_pos, out_pos in pairs:
        t_in, t_out = sg.tensors[inputs[in_pos]], sg.tensors[outputs[out_pos]]
        for op, _ in consumers.get(inputs[in_pos], []):
            if op.name not in _SCALE_FREE_READERS:
                raise ExportError(
                    f"stream mode: a state input feeds {op.name}, whose output must share the "
                    "input's scale; cannot give the state a common scale."
                )
        t_in.set_quantization(t_out.raw.quantization.scale, t_out.raw.quantization.zeroPoint)
    requantize_biases(model, old_bias)


def _input_key(name: str, n: int) -> str:
    """``input`` or ``state_<k>`` for a converter input name (``serving_default_state_1:0``...)."""
    if "input" in name:
        return "input"
    return next((f"state_{k}" for k in range(n) if name.endswith(f"state_{k}") or f"state_{k}:" in name), name)


def order_stream_io(model: TFLiteModel, state_sizes: list[int]) -> None:
    """Puts a stream model's inputs/outputs in the documented order: x/y first, then the
    states (``state_sizes[k]`` units each), and checks the state shapes ``[1, units]``.

    The converter names the function's inputs after the TensorSpec names (``input``,
    ``state_0``...) and keeps the returned tuple order for the outputs, named ``Identity``,
    ``Identity_1``...; inputs are reordered by name and outputs by that number when every
    name is recognized. ``ExportError`` on a wrong count or shape.
    """
    sg = model.subgraph
    n = len(state_sizes)
    if len(sg.inputs) != 1 + n or len(sg.outputs) != 1 + n:
        raise ExportError(
            f"stream export: expected {1 + n} inputs and outputs, the converter produced "
            f"{len(sg.inputs)} inputs and {len(sg.outputs)} outputs."
        )
    tensors = sg.tensors
    by_name = {_input_key(tensors[i].name, n): i for i in sg.inputs}
    order = ["input"] + [f"state_{k}" for k in range(n)]
    if all(k in by_name for k in order):
        sg.inputs = [by_name[k] for k in order]
    # By number, not name: a name sort would put Identity_10 before Identity_2.
    numbers = [re.fullmatch(r"Identity(?:_(\d+))?", tensors[i].name) for i in sg.outputs]
    if all(numbers):
        sg.outputs = [i for _, i in sorted(zip([int(m.group(1) or 0) for m in numbers], sg.outputs))]
    for k in range(n):
        for indices in (sg.inputs, sg.outputs):
            shape = tensors[indices[1 + k]].shape
            if shape != [1, state_sizes[k]]:
                raise ExportError(f"stream export: state {k} has shape {shape}, expected [1, {state_sizes[k]}].")
