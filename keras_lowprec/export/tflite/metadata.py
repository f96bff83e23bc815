"""The exporter's JSON metadata entry (``keras_lowprec``): weight encodings, mode, states."""

from __future__ import annotations

import json

import numpy as np

from keras_lowprec.export.tflite.model import TFLiteModel

METADATA_NAME = "keras_lowprec"


def json_default(obj):
    """JSON for numpy scalars and arrays."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def add_metadata(model: TFLiteModel, name: str, payload: dict) -> None:
    """Stores ``payload`` as JSON (sorted keys) in metadata entry ``name``, replacing one of
    that name."""
    model.set_metadata(name, json.dumps(payload, sort_keys=True, default=json_default).encode())


def read_metadata(model, name: str = METADATA_NAME) -> dict | None:
    """The JSON metadata entry ``name`` of a model (its bytes or a :class:`TFLiteModel`), or None."""
    if not isinstance(model, TFLiteModel):
        model = TFLiteModel.from_bytes(model)
    data = model.metadata(name)
    return None if data is None else json.loads(data.decode())
