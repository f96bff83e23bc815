"""Stream step graphs: inputs and outputs in the documented order (x / y first, then the
states in ``plan.state_names`` order)."""

from __future__ import annotations

import re

from keras_lowprec.export.errors import ExportError


def order_stream_io(fb, state_sizes: list[int]) -> None:
    """Puts the stream model's inputs/outputs in the documented order.

    The converter names the function's inputs after the TensorSpec names (``input``,
    ``state_0``...) and keeps the returned tuple order for the outputs, named ``Identity``,
    ``Identity_1``...; this checks the shapes and fixes the order by name when needed.
    """
    sg = fb.subgraphs[0]
    n = len(state_sizes)
    if len(sg.inputs) != 1 + n or len(sg.outputs) != 1 + n:
        raise ExportError(f"stream export: expected {1 + n} inputs and outputs, the converter produced "
                          f"{len(sg.inputs)} inputs and {len(sg.outputs)} outputs.")
    _order_inputs(sg, n)
    # sort by the Identity number (a name sort would put Identity_10 before Identity_2)
    numbers = [re.fullmatch(r"Identity(?:_(\d+))?", _name(sg, i)) for i in sg.outputs]
    if all(numbers):
        sg.outputs = [i for _, i in sorted(zip([int(m.group(1) or 0) for m in numbers], sg.outputs))]
    for k in range(n):
        for tensors in (sg.inputs, sg.outputs):
            shape = [int(s) for s in sg.tensors[tensors[1 + k]].shape]
            if shape != [1, state_sizes[k]]:
                raise ExportError(f"stream export: state {k} has shape {shape}, expected [1, {state_sizes[k]}].")


def _order_inputs(sg, n: int) -> None:
    by_name = {}
    for i in sg.inputs:
        nm = _name(sg, i)
        key = "input" if "input" in nm else next((f"state_{k}" for k in range(n) if nm.endswith(f"state_{k}")
                                                 or f"state_{k}:" in nm), nm)
        by_name[key] = i
    order = ["input"] + [f"state_{k}" for k in range(n)]
    if all(k in by_name for k in order):
        sg.inputs = [by_name[k] for k in order]


def _name(sg, i: int) -> str:
    t = sg.tensors[i].name
    return t.decode() if isinstance(t, bytes) else str(t)
