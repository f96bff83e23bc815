"""keras_lowprec: recurrent networks with binary, ternary, pow2-ternary and exponential
weights for Keras 3 (Ott et al., 2016), exported to TensorFlow Lite Micro.

``import keras_lowprec`` registers every layer, quantizer and constraint with Keras, so
``keras.saving.load_model`` reads models saved in another process. The exporter
(``keras_lowprec.export``, TensorFlow Lite) and the datasets are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Registration happens when these modules are imported (keras.saving.register_keras_serializable).
from keras_lowprec import constraints, layers, quantizers  # noqa: E402,F401
from keras_lowprec.convert import quantize_model  # noqa: E402
from keras_lowprec.model_summary import summary  # noqa: E402

_LAZY = ("datasets", "export")

__all__ = ["constraints", "datasets", "export", "layers", "quantizers", "quantize_model", "summary", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from keras_lowprec import datasets, export


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"keras_lowprec.{name}")
    raise AttributeError(f"module 'keras_lowprec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
