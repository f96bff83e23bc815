"""``to_c``: a Keras RNN model as C99 source for the keras_lowprec C runtime (``klp.h``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from keras_lowprec.export.cruntime import codegen
from keras_lowprec.export.cruntime import model as M
from keras_lowprec.export.errors import ExportError
from keras_lowprec.export.options import check_output_dir

PACKINGS = {"2bit": "trit4", "trit5": "trit5"}
RUNTIME_FILES = ("klp.c", "klp.h")
C_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "c")


@dataclasses.dataclass
class CExport:
    """What ``to_c`` wrote.

    Attributes:
        output_dir: the folder.
        source / header: ``<name>.c`` / ``<name>.h`` (the model).
        runtime: the runtime library copied beside them (``klp.c``, ``klp.h``).
        test_data: ``klp_test_data.h`` (with ``verify_data``), else None.
        report: sizes, quantization, layers, the comparison with Keras on ``verify_data``.
        model: the integer model (``cruntime.model.IntModel``); run it with ``cruntime.reference``.
    """

    output_dir: str
    source: str
    header: str
    runtime: list[str]
    test_data: str | None
    report: dict[str, Any]
    model: M.IntModel


def _sequences(arg: str, data, features: int) -> np.ndarray:
    """Checks ``data`` is a finite float array (N, T, features) with N, T >= 1."""
    try:
        x = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise ExportError(f"{arg}: expected an array of shape (sequences, timesteps, {features}) of floats; "
                          f"got {type(data).__name__}.") from None
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != features:
        raise ExportError(f"{arg}: expected shape (sequences >= 1, timesteps >= 1, {features}); got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ExportError(f"{arg}: contains NaN or inf.")
    return x


def _check_args(model, output_dir, packing, name, table_bytes) -> int:
    """Argument checks; returns the model's feature count."""
    import keras

    if not isinstance(model, keras.Model):
        raise ExportError(f"model: expected a keras.Model, got {type(model).__name__}.")
    if not str(output_dir):
        raise ExportError("output_dir: expected a folder path, got an empty string.")
    check_output_dir(output_dir)
    if packing not in PACKINGS:
        raise ExportError(f"packing: must be one of {', '.join(map(repr, PACKINGS))} (ternary weights at 2 bits, "
                          f"4 per byte, or 1.6 bits, 5 per byte); got {packing!r}.")
    if not codegen.check_name(name):
        raise ExportError(f"name: must be a C identifier (letters, digits, _; not starting with a digit; at most "
                          f"63 characters); got {name!r}.")
    if isinstance(table_bytes, bool) or not isinstance(table_bytes, (int, np.integer)) or table_bytes < 512:
        raise ExportError(f"table_bytes: must be an int >= 512 (RAM for the partial-sum tables; one 5-trit "
                          f"group needs 486 bytes); got {table_bytes!r}.")
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, ValueError):
        raise ExportError("model: has no defined input; build it with keras.Input((timesteps, features)).") from None
    if len(shape) != 3 or shape[-1] is None:
        raise ExportError(f"model: input shape {shape}; expected (batch, timesteps, features).")
    return int(shape[-1])


def to_c(model, representative_data, output_dir, *, packing: str = "2bit", name: str = "model",
         table_bytes: int = 2048, verify_data=None) -> CExport:
    """Writes ``model`` as C99 for the keras_lowprec C runtime.

    Args:
        model: a Keras chain: identity layers, SimpleRNN / GRU / LSTM layers (keras_lowprec's
            quantized ones or Keras's float ones), Dense layers (see ``quantize.SUPPORTED``).
        representative_data: float sequences (N, T, features) to calibrate the int8 input
            and the Dense outputs.
        output_dir: folder for ``<name>.c``, ``<name>.h``, ``klp.c``, ``klp.h``, ``report.json``
            (and ``klp_test_data.h``), written as one set: files of an earlier export that this
            one does not write are removed, other files are kept.
        packing: ternary weights at ``"2bit"`` (4 per byte) or ``"trit5"`` (5 per byte, 1.6
            bits, slower and more table RAM). Exponential weights always use 4-bit shift codes,
            float weights int8.
        name: C identifier of the model (file names and symbols).
        table_bytes: RAM budget of the partial-sum tables (tables are built per block of inputs).
        verify_data: optional held-out float sequences: writes ``klp_test_data.h`` (inputs, the
            NumPy reference's outputs of every step and final states) and compares with Keras.

    Returns:
        ``CExport`` (paths, report, integer model).

    Raises:
        ExportError naming the bad argument; UnsupportedLayerError for a layer the runtime lacks.
    """
    features = _check_args(model, output_dir, packing, name, table_bytes)
    x_rep = _sequences("representative_data", representative_data, features)
    x_ver = None if verify_data is None else _sequences("verify_data", verify_data, features)
    fixed_t = model.inputs[0].shape[1]
    if x_ver is not None and fixed_t is not None and x_ver.shape[1] != fixed_t:
        raise ExportError(f"verify_data: {x_ver.shape[1]} time steps, but the model's input has a fixed time "
                          f"axis of {fixed_t}; pass sequences of {fixed_t} steps.")
    from keras_lowprec.export import pipeline
    from keras_lowprec.export.options import ExportOptions
    from keras_lowprec.export.targets.c import CTarget

    opts = ExportOptions(mode="stream", output_dir=output_dir, verify=x_ver is not None, verify_data=x_ver)
    return pipeline.run(model, x_rep, opts, CTarget(packing, name, table_bytes))


def make_report(im: M.IntModel, mem: dict, packing: str) -> dict[str, Any]:
    """Sizes (bytes) and quantization of the integer model."""
    layers, weights, n_weights, params = [], 0, 0, 0
    for layer in im.layers:
        row = {"name": layer.name, "type": layer.type, "inputs": layer.inputs, "units": layer.units}
        for key, m in (("kernel", layer.w), ("recurrent_kernel", layer.u)):
            if m is None:
                continue
            nbytes = len(m.codes)
            row[key] = {"packing": m.packing, "shape": [m.rows, m.cols], "bytes": nbytes,
                        "bits_per_weight": 8.0 * nbytes / (m.rows * m.cols),
                        "table_block_groups": min(m.block, m.stride)}
            weights, n_weights = weights + nbytes, n_weights + m.rows * m.cols
        params += 4 * (len(layer.bias) + len(layer.mult_x) + len(layer.mult_h)) + len(layer.shift)
        params += 0 if layer.bias_h is None else 4 * len(layer.bias_h)
        layers.append(row)
    return {
        "packing": packing, "layers": layers, "dropped": list(im.dropped), "head_every_step": im.head_every_step,
        "input": {"size": im.input_size, "scale": im.input_scale, "zero_point": im.input_zp},
        "output": {"size": im.output_size, "scale": im.output_scale, "zero_point": im.output_zp},
        "flash_bytes": {"weights": weights, "params": params, "tables": len(im.sigmoid) + len(im.tanh)},
        "weights": n_weights, "bits_per_weight": 8.0 * weights / max(1, n_weights),
        "ram_bytes": {"state": mem["state_bytes"], "scratch": mem["scratch_bytes"],
                      "accumulators": mem["acc_bytes"], "tables": mem["table_bytes"],
                      "buffers": mem["scratch_bytes"] - mem["acc_bytes"] - mem["table_bytes"],
                      "total": mem["state_bytes"] + mem["scratch_bytes"]},
    }
