"""One handler per layer family, registered by the Keras classes it handles.

A handler turns a layer into a ``plan.Stage`` at analysis and provides the stage's part of
each twin graph: ``apply`` (one op of the float twin), ``step`` (recurrent handlers: one
time step with explicit state), ``fused_twin`` (the ``tf_keras`` layer of the fused-LSTM
route) and ``unfusable`` (why the fused route cannot take it). Adding a layer type to the
exporter is one new handler class with ``@register``; the list of supported layers in
errors and docs is built from the registry (:func:`supported_layers`).
"""

from __future__ import annotations

from keras_lowprec.export.errors import UnsupportedLayerError
from keras_lowprec.export.handlers.base import Handler, base_name

_REGISTRY: dict[str, Handler] = {}
_ORDER: list[Handler] = []
# Layers refused with a reason more useful than "not supported".
REFUSED = {
    "Bidirectional": "TFLM firmware would have to run the sequence backwards as well. Use a unidirectional RNN",
}


def register(cls: type[Handler]) -> type[Handler]:
    """Class decorator: registers one instance of ``cls`` for each name in ``cls.classes``."""
    handler = cls()
    for name in cls.classes:
        if name in _REGISTRY:
            raise ValueError(f"two export handlers for {name}: {type(_REGISTRY[name]).__name__}, {cls.__name__}")
        _REGISTRY[name] = handler
    _ORDER.append(handler)
    return cls


def handler_for(layer) -> Handler:
    """The handler of ``layer`` (by its class name, then by the Keras class it derives from)."""
    _load()
    cls = type(layer).__name__
    handler = _REGISTRY.get(cls) or _REGISTRY.get(base_name(layer))
    if handler is not None:
        return handler
    hint = REFUSED.get(cls) or REFUSED.get(base_name(layer))
    detail = f" is not supported: {hint}" if hint else " is not supported by the exporter"
    raise UnsupportedLayerError(f"layer '{layer.name}' ({cls}){detail}. Supported: {supported_layers()}.")


def supported_layers() -> str:
    """The supported layers, one phrase per handler (for errors and documentation)."""
    _load()
    return "; ".join(h.description for h in _ORDER)


def _load() -> None:
    # The handler modules register themselves on import.
    from keras_lowprec.export.handlers import dense, normalization, passthrough, recurrent  # noqa: F401
