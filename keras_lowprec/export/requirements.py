"""What the exporter needs besides the core install, checked before any work: the
``export`` extra (``pip install 'keras_lowprec[export]'``). A missing piece is an error
naming it, never a quiet fallback (without ``tf_keras`` an LSTM would have to be exported
unrolled: about 3x the flash)."""

from __future__ import annotations

import importlib.util

from keras_lowprec.export.errors import ExportError

# import name -> (pip package, what the exporter uses it for)
NEEDED = {
    "tensorflow": ("tensorflow", "the TFLite converter"),
    "tf_keras": ("tf-keras", "the fused LSTM route (TFLM's integer LSTM kernel)"),
    "tflite_micro": ("tflite-micro", "TFLM's Python interpreter, buffer alignment and compression"),
    "ai_edge_litert": ("ai-edge-litert", "the LiteRT interpreter that verification compares with"),
}


def missing() -> list[str]:
    """Import names of ``NEEDED`` that cannot be found."""
    return [name for name in NEEDED if not _found(name)]


def _found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken install or an import hook that refuses it
        return False


def check() -> None:
    """Raises ``ExportError`` naming each missing package and the install command."""
    absent = missing()
    if absent:
        what = "; ".join(f"{NEEDED[n][0]} ({NEEDED[n][1]})" for n in absent)
        raise ExportError(f"the exporter needs packages that are not installed: {what}. "
                          "Install them with: pip install 'keras_lowprec[export]'")
