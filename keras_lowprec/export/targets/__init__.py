"""Export targets: what an export is checked on and which files it becomes.

A target implements :class:`Target`: ``verify(ctx)`` runs the rewritten model (or at least
loads it) and fills ``ctx.report``; ``emit(ctx)`` returns the files of the export folder.
``tflm`` is TensorFlow Lite Micro (the ``.tflite`` flatbuffer, C arrays, op resolver and
test vectors, optionally LUT-compressed weights); ``c`` the project's C runtime (packed
weights, multiplier-free kernels).
"""

from __future__ import annotations

from typing import Protocol


class Target(Protocol):
    """``name`` selects the target's steps in ``pipeline.STEPS``."""

    name: str

    def requirements(self) -> None:
        """Raises ``ExportError`` naming what the target needs and is not installed."""

    def verify(self, ctx) -> None:
        """Runs / loads ``ctx.model_bytes``; fills ``ctx.report`` (and the arena fields)."""

    def emit(self, ctx) -> dict[str, bytes | str]:
        """The export folder's files by name (written as one set by the pipeline)."""

    def file_key(self, name: str) -> str:
        """The key of file ``name`` in the result's paths."""

    def owned_files(self) -> tuple[str, ...]:
        """The file names an export owns in its folder (replaced or removed by the next one)."""

    def result(self, ctx):
        """What the export returns to the caller."""


def get(name: str) -> Target:
    if name == "tflm":
        from keras_lowprec.export.targets.tflm import TFLMTarget

        return TFLMTarget()
    if name == "c":
        from keras_lowprec.export.targets.c import CTarget

        return CTarget()
    raise ValueError(f"unknown export target {name!r}; available: tflm, c")
