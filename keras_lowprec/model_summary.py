"""Bits and memory of a quantized model, per layer (Larq-style ``summary``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np

from keras_lowprec.convert import quantized_owners

_FLOAT_BITS = 32


@dataclass
class LayerSummary:
    """One layer's row. Bytes: ``float32`` 4 per weight; ``tflite_int8`` as an int8
    ``.tflite`` stores them (1 byte per kernel weight, int32 biases); ``packed`` at the
    method's minimal bits (binary 1, ternary 2, exponential sign + exponent code),
    float weights (and channel scales) at 32 bits."""

    name: str
    layer_type: str
    quantizer: str
    levels: str
    params: int
    float32_bytes: int
    tflite_int8_bytes: int
    packed_bytes: int
    zero_fraction: float | None = None
    shipped_bytes: int | None = None


@dataclass
class ModelSummary:
    layers: list[LayerSummary] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        keys = ("params", "float32_bytes", "tflite_int8_bytes", "packed_bytes")
        return {k: sum(getattr(row, k) for row in self.layers) for k in keys}

    def table(self) -> str:
        shipped = any(r.shipped_bytes is not None for r in self.layers)
        header = ["Layer", "Type", "Quantizer", "Levels/bits", "Params", "float32 B", "int8 .tflite B",
                  "packed B", *(["shipped B"] if shipped else []), "zeros"]
        rows = [
            [r.name, r.layer_type, r.quantizer, r.levels, f"{r.params:,}", f"{r.float32_bytes:,}",
             f"{r.tflite_int8_bytes:,}", f"{r.packed_bytes:,}",
             *([f"{r.shipped_bytes:,}" if r.shipped_bytes is not None else "-"] if shipped else []),
             "-" if r.zero_fraction is None else f"{r.zero_fraction:.1%}"]
            for r in self.layers
        ]
        t = self.totals
        total_shipped = sum(r.shipped_bytes or 0 for r in self.layers)
        rows.append(["Total", "", "", "", f"{t['params']:,}", f"{t['float32_bytes']:,}",
                     f"{t['tflite_int8_bytes']:,}", f"{t['packed_bytes']:,}",
                     *([f"{total_shipped:,}"] if shipped else []), ""])
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
        sep = "-" * len(line(header))
        ratio = t["float32_bytes"] / t["packed_bytes"] if t["packed_bytes"] else float("nan")
        out = [sep, line(header), sep, *[line(r) for r in rows[:-1]], sep, line(rows[-1]), sep,
               f"Packed weights are {ratio:.1f}x smaller than float32."]
        return "\n".join(out)


def _is_bias(name: str) -> bool:
    return "bias" in name


def _layer_summary(layer: keras.layers.Layer) -> LayerSummary:
    owners = quantized_owners(layer)
    params = float32 = int8 = 0
    bits = 0
    zeros = total_quantized = 0
    methods, level_info = [], []
    handled = set()
    for owner in owners:
        rounded = owner.quantized_weights(training=False, apply_channel_scale=False)
        scales = owner.channel_scales()
        for variable in scales.values():  # float32 per output, in the .tflite too (per-channel scales)
            handled.add(id(variable))
            n = int(np.prod(variable.shape))
            params += n
            float32 += 4 * n
            int8 += 4 * n
            bits += _FLOAT_BITS * n
        for name, variable in owner.master_weights().items():
            handled.add(id(variable))
            n = int(np.prod(variable.shape))
            quantizer = owner.quantizer_for(name)
            params += n
            float32 += 4 * n
            int8 += (4 if _is_bias(name) else 1) * n
            if quantizer is None:
                bits += _FLOAT_BITS * n
                continue
            bits += quantizer.precision * n
            values = keras.ops.convert_to_numpy(rounded[name])
            zeros += int((values == 0).sum())
            total_quantized += n
            kind = quantizer.method + (" (stoch.)" if quantizer.stochastic else "")
            if kind not in methods:
                methods.append(kind)
            info = f"{len(quantizer.levels(owner.glorot_bound_for(name)))}/{quantizer.precision}b"
            if info not in level_info:
                level_info.append(info)
    # Weights not held by a quantizer (float layers, normalization, ...): 32 bits.
    for variable in layer.weights:
        if id(variable) in handled:
            continue
        n = int(np.prod(variable.shape))
        params += n
        float32 += 4 * n
        int8 += (4 if _is_bias(variable.path) else 1) * n
        bits += _FLOAT_BITS * n
    scaled = any(owner.channel_scales() for owner in owners)
    return LayerSummary(
        name=layer.name,
        layer_type=type(layer).__name__,
        quantizer=(", ".join(methods) or "float") + (" + channel scales" if scaled else ""),
        levels=", ".join(level_info) or "-",
        params=params,
        float32_bytes=float32,
        tflite_int8_bytes=int8,
        packed_bytes=math.ceil(bits / 8),
        zero_fraction=(zeros / total_quantized) if total_quantized else None,
    )


def summary(model: keras.Model, print_fn: Callable[[str], None] | None = None, export=None) -> ModelSummary:
    """Prints and returns per-layer quantizer, levels, parameters and weight memory.

    Columns: quantizer method(s); levels/bits (level count / packed bits per weight);
    parameter count; bytes at float32, as int8 in a ``.tflite`` (kernels 1 byte,
    biases int32) and packed at the method's minimal bits; fraction of weights that
    round to zero. With ``export`` (the ``ExportResult`` of ``to_tflite`` for this model)
    also ``shipped B``: the bytes the layer's weight tensors take in that file (LUT
    indices and value tables when it was exported with ``compress``). The model must be built.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"summary: expected a keras.Model, got {type(model).__name__}.")
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"summary: print_fn must be callable, got {print_fn!r}.")
    if not model.built:
        raise ValueError("summary: the model is not built; call it on data or give it an Input first.")
    result = ModelSummary([_layer_summary(layer) for layer in model.layers if layer.weights])
    if export is not None:
        shipped = _shipped_bytes(export)
        for row in result.layers:
            row.shipped_bytes = shipped.get(row.name)
    (print_fn or print)(result.table())
    return result


def _shipped_bytes(export) -> dict[str, int]:
    """Layer name -> bytes of its weight tensors (with their LUT value tables) in the file."""
    from keras_lowprec.export.tflite import TFLiteModel

    report = getattr(export, "report", None)
    if report is None or not hasattr(export, "model_bytes"):
        raise TypeError(f"summary: export must be the ExportResult of to_tflite, got {type(export).__name__}.")
    fb = TFLiteModel.from_bytes(export.model_bytes)
    by_name = {t.name: t for t in fb.tensors}
    buffers: dict[str, set] = {}
    for t in report["tensors"]:
        if not t.get("weight"):
            continue  # a constant of the graph, not a layer's weight
        layer = t["weight"].split("/")[0]
        for name in (t["name"], t["name"] + "_ancillary"):
            if name in by_name:
                buffers.setdefault(layer, set()).add(by_name[name].buffer)
    return {layer: sum(len(fb.buffer_data(b) or b"") for b in ids) for layer, ids in buffers.items()}
