"""keras_lowprec: recurrent networks with binary, ternary, pow2-ternary and exponential
weights for Keras 3 (Ott et al., 2016), exported to TensorFlow Lite Micro.

Submodules are imported on first use, so ``import keras_lowprec`` (and the
``keras-lowprec`` command's argument checks) does not start TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_SUBMODULES = ("constraints", "convert", "datasets", "export", "layers", "model_summary", "quantizers")
_FUNCTIONS = {"quantize_model": "convert", "summary": "model_summary"}

__all__ = ["constraints", "datasets", "export", "layers", "quantizers", "quantize_model", "summary", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from keras_lowprec import constraints, datasets, export, layers, quantizers
    from keras_lowprec.convert import quantize_model
    from keras_lowprec.model_summary import summary


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_lowprec.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"keras_lowprec.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module 'keras_lowprec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
