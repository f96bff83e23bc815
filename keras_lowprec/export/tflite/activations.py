"""Saturating activations: input ranges no wider than what changes the int8 output.

Int8 TANH has the output scale 1/128 (zero point 0) and LOGISTIC 1/256 (zero point -128)
in TFLite. Beyond these input bounds the int8 output is already at its end code
(tanh: 127 above atanh(126.5/128) = 2.57, -128 below atanh(-127.5/128) = -3.09; logistic:
127 above logit(254.5/256) = 5.14, -128 below logit(0.5/256) = -6.24), so an input range
clipped there gives the same outputs with a finer input step. Small margins kept.
"""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.tflite.model import Tensor, TFLiteModel

SATURATION_BOUNDS = {"TANH": (-3.2, 2.7), "LOGISTIC": (-6.4, 5.3)}
# Producers that read their output scale at Prepare: their output may be requantized freely.
_RESCALABLE_PRODUCERS = ("FULLY_CONNECTED", "ADD", "SUB", "MUL")


def _tightened(t: Tensor, bounds: tuple[float, float]) -> tuple[float, int] | None:
    """``(scale, zero point)`` of ``t``'s int8 range clipped to ``bounds`` (zero kept
    representable), or None when the range is (almost) inside them already."""
    s, z = float(t.scales[0]), int(t.zero_points[0])
    lo, hi = (-128 - z) * s, (127 - z) * s
    new_lo, new_hi = max(lo, bounds[0]), min(hi, bounds[1])
    if new_hi - new_lo > 0.97 * (hi - lo):
        return None
    new_lo, new_hi = min(new_lo, 0.0), max(new_hi, 0.0)
    new_s = np.float32((new_hi - new_lo) / 255.0)
    return float(new_s), int(np.clip(np.round(-128 - new_lo / float(new_s)), -128, 127))


def tighten_saturating_inputs(model: TFLiteModel) -> int:
    """Narrows the int8 range of each tensor read only by TANH / LOGISTIC to the bounds above
    (never widens it); returns how many tensors changed. Only per-tensor int8 tensors that
    are not graph inputs/outputs, produced by FULLY_CONNECTED, ADD, SUB or MUL, are touched."""
    sg = model.subgraph
    consumers, producers = sg.consumer_map(), sg.producer_map()
    graph_io = set(sg.inputs) | set(sg.outputs)
    changed = 0
    for t in sg.tensors:
        idx = t.index
        if idx in graph_io or idx not in producers or t.type_name != "INT8":
            continue
        names = {op.name for op, _ in consumers.get(idx, [])}
        if len(names) != 1 or not names <= set(SATURATION_BOUNDS):
            continue
        if producers[idx].name not in _RESCALABLE_PRODUCERS or t.scales.size != 1:
            continue
        new = _tightened(t, SATURATION_BOUNDS[names.pop()])
        if new is not None:
            t.set_quantization([new[0]], [new[1]])
            changed += 1
    return changed
