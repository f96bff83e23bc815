"""Export options and their checks: everything about the arguments that can be said
before the model is analyzed (no TensorFlow; the CLI runs them before it imports it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from keras_lowprec.export.errors import ExportError

MODES = ("sequence", "stream")
LSTM_KERNELS = ("auto", "fused", "unrolled")


@dataclass
class ExportOptions:
    """The keyword arguments of ``to_tflite`` (see its docstring), checked by :meth:`check`."""

    timesteps: int | None = None
    mode: str = "sequence"
    output_dir: str | os.PathLike | None = None
    c_array: bool = True
    verify: bool = True
    verify_data: Any = None
    max_verify: int = 200
    progress: Callable[[str, int, int], None] | None = None
    lstm_kernel: str = "auto"
    compress: bool | str = False
    # Internal: without verification, still load the model in TFLM once (False only for
    # the sequence export a stream export is compared with).
    probe: bool = True

    def check(self) -> "ExportOptions":
        """Raises ``ExportError`` naming the first bad argument; returns ``self``
        (``compress`` normalized to False, "auto" or "flash")."""
        from keras_lowprec.export import compress as compress_lib

        if self.output_dir is not None:
            check_output_dir(self.output_dir)
        _check_choice("mode", self.mode, MODES)
        if self.timesteps is not None:
            _check_positive_int("timesteps", self.timesteps)
        _check_positive_int("max_verify", self.max_verify)
        self.compress = compress_lib.check_mode(self.compress)
        for name in ("c_array", "verify"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ExportError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.progress is not None and not callable(self.progress):
            raise ExportError(f"progress must be a callable progress(stage, done, total) or None, "
                              f"got {self.progress!r}.")
        _check_choice("lstm_kernel", self.lstm_kernel, LSTM_KERNELS)
        return self

    def report_progress(self, stage: str):
        """``progress`` bound to one stage name (None without a progress callback)."""
        return None if self.progress is None else (lambda i, n: self.progress(stage, i, n))


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ExportError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ExportError(f"{name} must be a positive integer, got {value!r}.")


def check_representative_data(data, features: int | None = None, timesteps: int | None = None,
                              name: str = "representative_data") -> np.ndarray:
    """Returns ``data`` as float32 (N, T, F) or raises ``ExportError`` saying what is wrong."""
    if data is None:
        raise ExportError(f"{name} is required: an array of shape (samples, timesteps, features).")
    try:
        arr = np.asarray(data)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"{name}: cannot be read as an array ({err}).") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ExportError(f"{name}: expected a numeric array, got dtype {arr.dtype}.")
    if arr.ndim != 3:
        raise ExportError(f"{name}: expected shape (samples, timesteps, features), got shape {arr.shape}.")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ExportError(f"{name}: empty array of shape {arr.shape}.")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ExportError(f"{name}: contains NaN or inf values.")
    if features is not None and arr.shape[2] != features:
        raise ExportError(f"{name}: {arr.shape[2]} features per step, but the model expects {features}.")
    if timesteps is not None and arr.shape[1] != timesteps:
        raise ExportError(f"{name}: {arr.shape[1]} timesteps, but the export uses timesteps={timesteps}.")
    return arr


def check_output_dir(output_dir, name: str = "output_dir") -> None:
    """Raises ``ExportError`` unless ``output_dir`` is a folder path that can be created or
    written (checked before any conversion, so a bad path does not cost a whole export)."""
    if not isinstance(output_dir, (str, os.PathLike)):
        raise ExportError(f"{name}: expected a folder path (str or os.PathLike), got {type(output_dir).__name__}.")
    path = os.path.abspath(os.fspath(output_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ExportError(f"{name}: {output_dir!s} exists and is not a folder.")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ExportError(f"{name}: cannot create {output_dir!s}: {parent} is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{name}: {output_dir!s} is not writable ({parent} does not allow writing).")
