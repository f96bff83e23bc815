"""Read-only checks and summaries of a rewritten model: integer-only, I/O quantization,
weight bytes, operator names."""

from __future__ import annotations

from keras_lowprec.export.errors import ExportError
from keras_lowprec.export.tflite.model import Subgraph, TFLiteModel

_INTEGER_TYPES = ("INT8", "INT16", "INT32", "BOOL")


def op_names(model: TFLiteModel) -> list[str]:
    """Sorted distinct operator names of every subgraph (what the op resolver registers)."""
    return model.op_names()


def _op_problems(sg: Subgraph) -> list[str]:
    """Custom/Flex ops, and ops with a non-integer tensor (the first one each)."""
    problems = []
    for op in sg.operators:
        name = op.name
        if name.startswith("CUSTOM") or name.startswith("FLEX"):
            problems.append(f"{name} (custom/Flex op)")
            continue
        for idx in op.inputs + op.outputs + (op.intermediates or []):
            if idx < 0:
                continue
            t = sg.tensors[idx]
            if t.type_name not in _INTEGER_TYPES:
                problems.append(f"{name} with {t.type_name} tensor '{t.name}'")
                break
    return problems


def check_integer_only(model: TFLiteModel) -> None:
    """Raises ``ExportError`` unless the graph is one subgraph of builtin ops with integer
    tensors only, static shapes, and int8 inputs and outputs."""
    if len(model.subgraphs) != 1:
        raise ExportError(
            f"the converted model has {len(model.subgraphs)} subgraphs (control flow such as WHILE); "
            "TFLM int8 export needs a single unrolled graph."
        )
    sg = model.subgraph
    problems = _op_problems(sg)
    for t in sg.tensors:
        sig = t.shape_signature
        if sig is not None and any(d < 0 for d in sig):
            problems.append(f"dynamic shape {sig} of tensor '{t.name}'")
            break
    for idx in sg.inputs + sg.outputs:
        if sg.tensors[idx].type_name != "INT8":
            problems.append(f"model input/output of type {sg.tensors[idx].type_name}")
    if problems:
        raise ExportError(
            "the converter left non-integer parts in the graph, which TFLM int8 firmware cannot run: "
            + "; ".join(sorted(set(problems))[:8])
            + ". The model is refused (a layer or option that does not quantize to int8; "
            "try removing normalization/activation layers around the RNN)."
        )


def io_quantization(model: TFLiteModel) -> dict[str, list[dict]]:
    """Shape, dtype, scale and zero point of each model input and output (first channel)."""
    sg = model.subgraph

    def info(idx):
        t = sg.tensors[idx]
        scale, zp = t.scales, t.zero_points
        return {"shape": t.shape, "dtype": t.type_name.lower(),
                "scale": float(scale[0]) if scale.size else None, "zero_point": int(zp[0]) if zp.size else None}

    return {"inputs": [info(i) for i in sg.inputs], "outputs": [info(i) for i in sg.outputs]}


def weight_bytes(model: TFLiteModel, int8_only: bool = False) -> int:
    """Bytes of the constant data of weights and biases (each buffer once; shape vectors and
    other unquantized int32 constants excluded). ``int8_only``: the int8 weight tensors only."""
    seen = set()
    total = 0
    for t in model.tensors:
        if t.buffer in seen:
            continue
        arr = t.array
        if arr is None or (int8_only and t.type_name != "INT8"):
            continue
        if t.type_name == "INT32" and t.scales.size == 0:
            continue  # shape/index constants
        seen.add(t.buffer)
        total += arr.nbytes
    return total
