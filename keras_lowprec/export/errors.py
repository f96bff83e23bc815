"""Errors raised by the exporter (no TensorFlow import here: the CLI uses them early)."""

from __future__ import annotations


class ExportError(ValueError):
    """The model or the data cannot be exported as asked; the message says why and what to do."""


class UnsupportedLayerError(ExportError, NotImplementedError):
    """A layer (or a layer option) the exporter has no handler for."""


class ExactnessError(ExportError):
    """Rounded weights that cannot be held exactly in int8 (e.g. too many exponent levels)."""


class TFLMError(ExportError, RuntimeError):
    """TensorFlow Lite Micro could not load or run the exported model; carries TFLM's message."""
