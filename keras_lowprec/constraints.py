"""Weight constraints that keep full-precision master weights inside a quantizer's range.

BinaryConnect/TernaryConnect practice: after each optimizer update the master weights
are clipped to ``[-c, c]`` with ``c`` the largest level magnitude of the quantizer
(``quantizer.clip_value(glorot_bound)``). Beyond ``c`` a weight would round to the
same level anyway, and its straight-through gradient would let it drift without bound.

Quantized layers take ``kernel_constraint="auto"`` (the default): the layer builds a
:class:`Clip` from its quantizer once the input width, hence the Glorot bound, is
known. ``None`` turns clipping off; any other Keras constraint is used as given.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_lowprec import quantizers as quantizers_lib

__all__ = ["Clip", "AUTO", "for_quantizer", "resolve"]

AUTO = "auto"


@keras.saving.register_keras_serializable(package="keras_lowprec")
class Clip(keras.constraints.Constraint):
    """Clips weights to ``[-max_value, max_value]``.

    Non-finite weights are left as they are (``NaN``/``inf`` are not turned into
    numbers), so that a diverged model is refused at export instead of hidden.
    """

    def __init__(self, max_value: float):
        if not quantizers_lib.is_positive_real(max_value):
            raise ValueError(f"Clip: `max_value` must be a positive finite number, got {max_value!r}.")
        self.max_value = float(max_value)

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        clipped = ops.clip(w, -self.max_value, self.max_value)
        return ops.where(ops.isfinite(w), clipped, w)

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value}


def for_quantizer(quantizer: quantizers_lib.Quantizer, glorot_bound: float | None) -> Clip:
    """The clip constraint matching ``quantizer``'s level range for one weight."""
    return Clip(quantizer.clip_value(glorot_bound))


def resolve(spec, quantizer: quantizers_lib.Quantizer | None, glorot_bound: float | None):
    """Turns a layer's constraint argument into the constraint its weight gets.

    ``"auto"`` becomes :class:`Clip` for the quantizer (nothing when the weight is not
    quantized); anything else goes through ``keras.constraints.get``.
    """
    if isinstance(spec, str) and spec == AUTO:
        return None if quantizer is None else for_quantizer(quantizer, glorot_bound)
    return keras.constraints.get(spec)
