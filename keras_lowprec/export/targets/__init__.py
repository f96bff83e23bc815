"""Export targets: what an export is checked on and which files it becomes.

A target implements :class:`Target`: ``verify(ctx)`` runs the rewritten model (or at least
loads it) and fills ``ctx.report``; ``emit(ctx)`` returns the files of the export folder.
``tflm`` is TensorFlow Lite Micro (the ``.tflite`` flatbuffer, C arrays, op resolver and
test vectors, optionally LUT-compressed weights).
"""

from __future__ import annotations

from typing import Protocol


class Target(Protocol):
    name: str

    def verify(self, ctx) -> None:
        """Runs / loads ``ctx.model_bytes``; fills ``ctx.report`` (and the arena fields)."""

    def emit(self, ctx) -> dict[str, bytes | str]:
        """The export folder's files by name (written as one set by the pipeline)."""


def get(name: str) -> Target:
    if name == "tflm":
        from keras_lowprec.export.targets.tflm import TFLMTarget

        return TFLMTarget()
    raise ValueError(f"unknown export target {name!r}; available: tflm")
