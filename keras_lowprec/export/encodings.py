"""How a rounded weight is stored in int8 so that ``code * scale`` equals it exactly.

The encoding is read from the quantizer's level set (``quantizer.levels(G)``) and from
whether it declares its levels powers of two (``power_of_two_levels``), never from the
method's name, so a new rounding method gets an exact encoding by being a ``Quantizer``:

* **shift** (power-of-two levels ``±2^k``, ``kmin <= k <= kmax``, ``kmax - kmin <= 6``):
  codes ``±2^(k - kmax + 6)`` in ``±1 .. ±64`` and the scale ``2^(kmax - 6)``;
* **binary / ternary / linear** (levels that are integer multiples ``m * s`` of their
  smallest magnitude ``s``): codes ``m * 2^p`` and scale ``s / 2^p`` with the largest
  ``p`` that keeps every code within ±127; one magnitude gives codes ±64 (``binary``
  without a zero level, ``ternary`` with one). Codes ±64 rather than ±1 keep the int32
  biases of the ops that read the weight (scale ``input_scale * weight_scale``) 64x finer,
  and ``level / 64`` is exact in float32;
* **int8**: a full-precision weight (no quantizer): the converter's own int8, not exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_lowprec.export.errors import ExactnessError, ExportError

# Encodings whose codes times scale equal the rounded weight exactly.
EXACT = ("ternary", "binary", "shift", "linear")
_MAX_SHIFT_LEVELS = 7  # codes ±2^0 .. ±2^6


@dataclass(frozen=True)
class Encoding:
    """``name`` (see the module docstring), the int8 ``scale`` (None: the converter's) and
    the quantizer's ``levels`` (None for a full-precision weight)."""

    name: str
    scale: float | None
    levels: np.ndarray | None

    @property
    def exact(self) -> bool:
        return self.name in EXACT


def encoding_for(quantizer, bound: float | None, where: str) -> Encoding:
    """The encoding of a weight rounded by ``quantizer`` with Glorot bound ``bound``
    (``quantizer=None``: a float weight). ``where`` names the weight in errors."""
    if quantizer is None:
        return Encoding("int8", None, None)
    levels = np.asarray(quantizer.levels(bound), dtype=np.float32)
    magnitudes = np.unique(np.abs(levels[levels != 0]))
    if not len(magnitudes):
        raise ExportError(f"{where}: the quantizer {quantizer!r} has no non-zero level.")
    if quantizer.power_of_two_levels:
        return Encoding("shift", _shift_scale(magnitudes, where), levels)
    return _linear(levels, magnitudes, where, quantizer)


def _shift_scale(magnitudes: np.ndarray, where: str) -> float:
    exponents = np.log2(magnitudes.astype(np.float64))
    if not np.all(exponents == np.round(exponents)):
        raise ExportError(f"{where}: levels {magnitudes.tolist()} are declared powers of two but are not.")
    kmin, kmax = int(exponents.min()), int(exponents.max())
    if kmax - kmin >= _MAX_SHIFT_LEVELS:
        raise ExactnessError(
            f"{where}: {kmax - kmin + 1} exponent levels (2^{kmin} .. 2^{kmax}) cannot be shift-encoded in int8, "
            f"which holds at most {_MAX_SHIFT_LEVELS} (codes ±2^0 .. ±2^6). Fix: train with "
            f"Exponential(num_levels={_MAX_SHIFT_LEVELS}) or fewer, or a quantizer with at most "
            f"{_MAX_SHIFT_LEVELS} power-of-two magnitudes.")
    scale = 2.0 ** (kmax - 6)
    if not np.finfo(np.float32).tiny <= scale:
        raise ExportError(f"{where}: shift scale 2^{kmax - 6} underflows float32.")
    return float(np.float32(scale))


def _linear(levels: np.ndarray, magnitudes: np.ndarray, where: str, quantizer) -> Encoding:
    step = np.float32(magnitudes[0])
    multiples = levels / step
    if not np.array_equal(np.round(multiples) * step, levels) or np.max(np.abs(multiples)) > 127:
        raise ExactnessError(
            f"{where}: the levels of {quantizer!r} are not integer multiples (at most 127) of one step, "
            "so int8 cannot hold them exactly.")
    widen = 2 ** int(np.floor(np.log2(127 / np.max(np.abs(multiples)))))
    scale = np.float32(step / np.float32(widen))
    if np.float32(widen) * scale != step:
        scale, widen = step, 1  # subnormal corner: codes are the multiples themselves
    if len(magnitudes) == 1:
        name = "ternary" if np.any(levels == 0) else "binary"
    else:
        name = "linear"
    return Encoding(name, float(scale), levels)


def check_levels(value: np.ndarray, encoding: Encoding, where: str) -> None:
    """Raises unless every value of the rounded weight is one of the encoding's levels."""
    if encoding.levels is None:
        return
    bad = ~np.isin(value, encoding.levels)
    if bad.any():
        raise ExportError(f"{where}: {int(bad.sum())} rounded values are not among the quantizer's levels "
                          f"{encoding.levels.tolist()}.")
