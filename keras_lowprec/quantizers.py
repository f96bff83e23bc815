"""Weight-rounding methods of Ott et al. (2016), "Recurrent Neural Networks With
Limited Numerical Precision", as Keras 3 objects.

Every quantizer maps full-precision master weights ``W`` to a small set of levels
``Q(W)`` and passes the gradient straight through:

* ``quantizer(w, training=True)`` returns ``Q(w) + (w - stop_gradient(w))``: the
  forward value is ``Q(w)`` bit for bit, the gradient with respect to ``w`` is the
  identity (the straight-through estimator ``w + stop_gradient(Q(w) - w)``, without
  its float rounding error).
  Stochastic quantizers draw fresh randomness here, from the ``seed`` generator.
* ``quantizer(w, training=False)`` returns the **deterministic** rounding ``Q(w)``
  itself, also for a stochastic quantizer (inference and export use it).

Scales follow the Glorot bound of the weight's gate matrix,
``G = sqrt(6 / (fan_in + units))``. A layer passes ``glorot_bound`` for each of its
weights (one gate of a GRU/LSTM kernel at a time); called on its own, a quantizer
derives it from a 2-D tensor's shape (``fan_in`` = rows, ``units`` = columns).
An explicit scale argument always wins.

Non-finite master weights are never turned into numbers: ``NaN`` and ``inf`` come
out as ``NaN`` so that an exporter can refuse them. Finite input never gives ``NaN``.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from typing import Any, Callable

import keras
import numpy as np
from keras import ops

__all__ = [
    "Quantizer",
    "Binary",
    "Ternary",
    "Pow2Ternary",
    "Exponential",
    "glorot_bound",
    "get",
    "serialize",
    "deserialize",
    "ALIASES",
]

_PACKAGE = "keras_lowprec"
# Filled by Quantizer.__init_subclass__: alias -> factory, class name -> class.
ALIASES: dict[str, Callable[[], "Quantizer"]] = {}
_CLASSES: dict[str, type] = {}


def _snake_case(name: str) -> str:
    """``Pow2Ternary`` -> ``pow2_ternary`` (Keras's rule for names derived from classes)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
_F32_MIN_EXP, _F32_MAX_EXP = -126, 127


def glorot_bound(fan_in: int, units: int) -> float:
    """Glorot-uniform bound ``sqrt(6 / (fan_in + units))`` of one gate matrix."""
    if fan_in <= 0 or units <= 0:
        raise ValueError(
            f"glorot_bound needs positive fan_in and units, got fan_in={fan_in}, units={units}."
        )
    return math.sqrt(6.0 / (fan_in + units))


def _bound_from_shape(shape: tuple, name: str) -> float:
    if len(shape) != 2 or shape[0] is None or shape[1] is None:
        raise ValueError(
            f"{name}: cannot derive the Glorot bound of a tensor of shape {tuple(shape)}; "
            "pass `glorot_bound=` when calling it, or give the quantizer an explicit scale."
        )
    return glorot_bound(int(shape[0]), int(shape[1]))


def _straight_through(w, q, training: bool):
    """Forward value exactly ``q``; in training, gradient identity to ``w``.

    ``q + (w - stop_gradient(w))`` has the gradient of ``w + stop_gradient(q - w)``
    but its value is ``q`` bit for bit (the added term is exactly 0), also for weights
    far outside the level range. ``w - w`` is 0 for finite weights and NaN for NaN/inf,
    so non-finite master weights stay visible.
    """
    if training:
        return ops.add(q, ops.subtract(w, ops.stop_gradient(w)))
    return ops.add(q, ops.subtract(w, w))


def _uniform_like(w, seed):
    return keras.random.uniform(ops.shape(w), dtype=w.dtype, seed=seed)


class Quantizer:
    """Base class: one rounding method, deterministic or stochastic.

    Subclasses implement ``_round(w, bound, noise)`` where ``noise`` is ``None``
    (deterministic) or uniform samples in [0, 1) of ``w``'s shape, and
    ``levels(glorot_bound)`` / ``clip_value(glorot_bound)``.

    Defining a subclass registers it: its ``method`` (the class name in snake case unless
    the class sets one) and ``"stochastic_" + method`` become aliases for :func:`get`, and
    ``deserialize`` knows the class. Classes whose name starts with ``_`` are not registered.

    Attributes:
        precision: bits per weight of the level set when packed (sign included).
        method: the rounding method's name (``"ternary"``...).
        power_of_two_levels: every non-zero level is a signed power of two, so a weight is
            a shift (the exporter encodes it as shift codes).
        stochastic: whether training uses stochastic rounding.
    """

    precision: int = 32
    method: str = ""
    power_of_two_levels: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):
            return
        if "method" not in cls.__dict__:
            cls.method = _snake_case(cls.__name__)
        _CLASSES[cls.__name__] = cls
        ALIASES[cls.method] = cls
        ALIASES["stochastic_" + cls.method] = functools.partial(cls, stochastic=True)

    def __init__(self, stochastic: bool = False, seed: int | None = None):
        if not isinstance(stochastic, (bool, np.bool_)):
            raise TypeError(
                f"{type(self).__name__}: `stochastic` must be a bool, got {stochastic!r}."
            )
        _check_int(type(self).__name__, "seed", seed, minimum=0)
        self.stochastic = bool(stochastic)
        self.seed = None if seed is None else int(seed)
        self._own_seed_generator: keras.random.SeedGenerator | None = None

    # -- interface -----------------------------------------------------------------
    def __call__(self, w, training: bool = False, *, glorot_bound: float | None = None, seed=None):
        """Rounds ``w``.

        Args:
            w: master weights (tensor or variable).
            training: stochastic rounding and the straight-through form when True.
            glorot_bound: ``G`` of the weight's gate matrix; derived from a 2-D
                ``w`` when omitted.
            seed: a ``keras.random.SeedGenerator`` for stochastic rounding
                (layers pass their own). Without it the quantizer uses one it owns,
                which is fine eagerly but must not be relied on under JAX jit.
        """
        w = ops.convert_to_tensor(w)
        bound = self._resolve_bound(w, glorot_bound)
        noise = None
        if training and self.stochastic:
            noise = _uniform_like(w, seed if seed is not None else self._seed_generator())
        return _straight_through(w, self._round(w, bound, noise), training)

    def levels(self, glorot_bound: float | None = None) -> np.ndarray:
        """Sorted float32 array of every value the rounding can produce."""
        raise NotImplementedError

    def clip_value(self, glorot_bound: float | None = None) -> float:
        """Largest magnitude of the level set: master weights are clipped to it."""
        return float(np.max(np.abs(self.levels(glorot_bound))))

    def needs_glorot_bound(self) -> bool:
        """Whether the scale comes from the weight's shape (no explicit scale given)."""
        return True

    def get_config(self) -> dict[str, Any]:
        return {"stochastic": self.stochastic, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Quantizer":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    # -- helpers ---------------------------------------------------------------------
    def _resolve_bound(self, w, glorot_bound):
        if not self.needs_glorot_bound():
            return None
        if glorot_bound is not None:
            # A sign or NaN here would silently give wrong levels (-1 turns every ternary
            # weight into -1, 0 or NaN every weight into 0).
            _check_positive(type(self).__name__, "glorot_bound", glorot_bound)
            return float(glorot_bound)
        return _bound_from_shape(tuple(w.shape), type(self).__name__)

    def _seed_generator(self) -> keras.random.SeedGenerator:
        if self._own_seed_generator is None:
            self._own_seed_generator = keras.random.SeedGenerator(self.seed)
        return self._own_seed_generator

    def _round(self, w, bound, noise):
        raise NotImplementedError


def _f32(x: float) -> float:
    """``x`` rounded to float32, so Python-side levels equal the tensors exactly."""
    return float(np.float32(x))


def is_positive_real(value) -> bool:
    """A finite number > 0 (Python or NumPy scalar), not a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
        and value > 0
    )


def _check_positive(owner: str, name: str, value: float | None) -> None:
    if value is not None and not is_positive_real(value):
        raise ValueError(f"{owner}: `{name}` must be a positive finite number, got {value!r}.")


def _check_exponents(owner: str, name: str, low: int, high: int) -> None:
    """Levels 2^low .. 2^high must be normal float32 numbers."""
    if low < _F32_MIN_EXP or high > _F32_MAX_EXP:
        raise ValueError(
            f"{owner}: `{name}` gives levels 2^{low}..2^{high}; float32 holds normal powers of two "
            f"2^{_F32_MIN_EXP}..2^{_F32_MAX_EXP} only."
        )


def _check_int(owner: str, name: str, value: int | None, minimum: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{owner}: `{name}` must be an integer, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}: `{name}` must be >= {minimum}, got {value}.")


class _MagnitudeQuantizer(Quantizer):
    """A quantizer whose levels are multiples of one magnitude: ``scale`` if given,
    else ``default_fraction_of_bound * G``."""

    default_fraction_of_bound = 1.0

    def __init__(self, scale: float | None = None, stochastic: bool = False, seed: int | None = None):
        _check_positive(type(self).__name__, "scale", scale)
        super().__init__(stochastic=stochastic, seed=seed)
        self.scale = None if scale is None else float(scale)

    def needs_glorot_bound(self) -> bool:
        return self.scale is None

    def magnitude(self, glorot_bound: float | None) -> float:
        """The level magnitude (float32-exact) for a weight with this Glorot bound."""
        if self.scale is not None:
            return _f32(self.scale)
        return _f32(_require(glorot_bound, self) * self.default_fraction_of_bound)

    def get_config(self):
        return {"scale": self.scale, **super().get_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Binary(_MagnitudeQuantizer):
    """Binarization (BinaryConnect): levels ``{-H, +H}``.

    * deterministic: ``+H if W >= 0 else -H``;
    * stochastic: ``+H`` with probability ``clip((W / H + 1) / 2, 0, 1)``, else ``-H``.

    Args:
        scale: ``H``. Default ``G / 2`` (BinaryConnect).
        stochastic: stochastic rounding in training.
        seed: seed of the quantizer's own generator (used only when called without one).
    """

    precision = 1
    default_fraction_of_bound = 0.5

    def levels(self, glorot_bound=None):
        h = self.magnitude(glorot_bound)
        return np.array([-h, h], dtype=np.float32)

    def _round(self, w, bound, noise):
        h = ops.cast(self.magnitude(bound), w.dtype)
        if noise is None:
            positive = ops.greater_equal(w, 0)
        else:
            p = ops.clip((w / h + 1.0) / 2.0, 0.0, 1.0)
            positive = ops.less(noise, p)
        return ops.where(positive, h, -h)


def _require(glorot_bound, quantizer) -> float:
    if glorot_bound is None:
        raise ValueError(
            f"{type(quantizer).__name__}: its scale comes from the weight's Glorot bound; "
            "pass `glorot_bound=` or give the scale explicitly."
        )
    _check_positive(type(quantizer).__name__, "glorot_bound", glorot_bound)
    return float(glorot_bound)


def _ternary_round(w, level, noise):
    """Ternary rounding to ``{-L, 0, +L}``.

    * deterministic: ``+L if W > L/2``, ``-L if W < -L/2``, else 0;
    * stochastic: ``L * sign(W) * Bernoulli(min(|W| / L, 1))`` (unbiased for |W| <= L).
    """
    level = ops.cast(level, w.dtype)
    zero = ops.zeros_like(w)
    if noise is None:
        half = level / 2.0
        return ops.where(ops.greater(w, half), level, ops.where(ops.less(w, -half), -level, zero))
    keep = ops.less(noise, ops.minimum(ops.abs(w) / level, 1.0))
    signed = ops.where(ops.less(w, 0), -level, level)
    return ops.where(keep, signed, zero)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Ternary(_MagnitudeQuantizer):
    """Ternarization (TernaryConnect): levels ``{-W0, 0, +W0}``.

    * deterministic: ``+W0 if W > W0/2``, ``-W0 if W < -W0/2``, else 0;
    * stochastic: ``W0 * sign(W) * Bernoulli(min(|W| / W0, 1))``.

    Args:
        scale: ``W0``. Default ``G``, the full Glorot bound.
    """

    precision = 2
    default_fraction_of_bound = 1.0

    def levels(self, glorot_bound=None):
        w0 = self.magnitude(glorot_bound)
        return np.array([-w0, 0.0, w0], dtype=np.float32)

    def _round(self, w, bound, noise):
        return _ternary_round(w, self.magnitude(bound), noise)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Pow2Ternary(Quantizer):
    """Pow2-ternarization (dual-copy rounding): levels ``{-2^e, 0, +2^e}``.

    Fixed-point rounding with one fractional bit of the paper (``e = -1`` gives
    ``{-0.5, 0, 0.5}``), generalized to any exponent. Threshold ``2^(e-1)``:

    * deterministic: ``±2^e if |W| > 2^(e-1)`` else 0;
    * stochastic: ``sign(W) * 2^e * Bernoulli(min(|W| / 2^e, 1))``.

    Args:
        exponent: ``e``. Default ``round(log2(G))``.
    """

    precision = 2
    power_of_two_levels = True

    def __init__(self, exponent: int | None = None, stochastic: bool = False, seed: int | None = None):
        _check_int("Pow2Ternary", "exponent", exponent)
        if exponent is not None:
            _check_exponents("Pow2Ternary", "exponent", int(exponent), int(exponent))
        super().__init__(stochastic=stochastic, seed=seed)
        self.exponent = None if exponent is None else int(exponent)

    def needs_glorot_bound(self) -> bool:
        return self.exponent is None

    def resolved_exponent(self, glorot_bound: float | None) -> int:
        if self.exponent is not None:
            return self.exponent
        return int(round(math.log2(_require(glorot_bound, self))))

    def levels(self, glorot_bound=None):
        level = 2.0 ** self.resolved_exponent(glorot_bound)
        return np.array([-level, 0.0, level], dtype=np.float32)

    def _round(self, w, bound, noise):
        return _ternary_round(w, 2.0 ** self.resolved_exponent(bound), noise)

    def get_config(self):
        return {"exponent": self.exponent, **super().get_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Exponential(Quantizer):
    """Exponential quantization: ``Q(W) = sign(W) * 2^k'`` on a window of exponents.

    With ``k = floor(log2|W|)`` and ``p = |W| / 2^k - 1`` in [0, 1), the exponents
    are limited to ``[kmin, max_exponent]``, ``kmin = max_exponent - num_levels + 1``:

    * deterministic: ``|W| < 2^(kmin-1)`` gives 0; otherwise
      ``k' = clip(k + [p > 0.5], kmin, max_exponent)`` (linear midpoint 1.5 * 2^k);
    * stochastic: inside the window ``k' = k + Bernoulli(p)`` (unbiased); below it 0
      or ``2^kmin`` with probability ``|W| / 2^kmin`` (unbiased); above it
      ``2^max_exponent``.

    Args:
        max_exponent: largest exponent. Default ``ceil(log2(G)) + exponent_offset``.
        num_levels: number of consecutive exponents (magnitudes), default 7: with
            zero and a sign this is what an int8 shift code holds (``±2^0 … ±2^6``).
        exponent_offset: moves the default window up (or down) by this many exponents;
            only without ``max_exponent``. With 2, master weights may grow to at least
            4G before the clip binds.
    """

    power_of_two_levels = True

    def __init__(
        self,
        max_exponent: int | None = None,
        num_levels: int = 7,
        stochastic: bool = False,
        seed: int | None = None,
        exponent_offset: int = 0,
    ):
        _check_int("Exponential", "max_exponent", max_exponent)
        _check_int("Exponential", "num_levels", num_levels, minimum=1)
        _check_int("Exponential", "exponent_offset", exponent_offset)
        if max_exponent is not None:
            _check_exponents("Exponential", "max_exponent", max_exponent - num_levels + 1, max_exponent)
            if exponent_offset:
                raise ValueError("Exponential: `exponent_offset` moves the default window; it cannot be "
                                 f"combined with `max_exponent` (got {exponent_offset!r} and {max_exponent!r}).")
        super().__init__(stochastic=stochastic, seed=seed)
        self.max_exponent = None if max_exponent is None else int(max_exponent)
        self.num_levels = int(num_levels)
        self.exponent_offset = int(exponent_offset)

    @property
    def precision(self) -> int:  # type: ignore[override]
        """Sign bit plus enough bits for ``num_levels`` magnitudes and zero."""
        return 1 + math.ceil(math.log2(self.num_levels + 1))

    def needs_glorot_bound(self) -> bool:
        return self.max_exponent is None

    def exponent_range(self, glorot_bound: float | None = None) -> tuple[int, int]:
        """``(kmin, max_exponent)`` of the window."""
        if self.max_exponent is not None:
            kmax = self.max_exponent
        else:
            kmax = int(math.ceil(math.log2(_require(glorot_bound, self)))) + self.exponent_offset
        return kmax - self.num_levels + 1, kmax

    def levels(self, glorot_bound=None):
        kmin, kmax = self.exponent_range(glorot_bound)
        mags = [2.0**k for k in range(kmin, kmax + 1)]
        return np.array(sorted([-m for m in mags] + [0.0] + mags), dtype=np.float32)

    def _round(self, w, bound, noise):
        kmin, kmax = self.exponent_range(bound)
        dtype = w.dtype
        a = ops.abs(w)
        # Work on |W| clipped into [2^(kmin-1), 2^kmax]: log2 is then finite (no log2(0)),
        # and values outside the window are settled by the masks below.
        a_c = ops.clip(a, 2.0 ** (kmin - 1), 2.0**kmax)
        k = ops.floor(ops.log2(a_c))
        # log2 may be off by one ulp at exact powers of two: correct k so 2^k <= a_c < 2^(k+1).
        k = ops.where(ops.greater(ops.power(2.0, k), a_c), k - 1.0, k)
        k = ops.where(ops.less_equal(ops.power(2.0, k + 1.0), a_c), k + 1.0, k)
        p = a_c / ops.power(2.0, k) - 1.0
        sign = ops.where(ops.less(w, 0), ops.cast(-1.0, dtype), ops.cast(1.0, dtype))
        if noise is None:
            k_new = k + ops.cast(ops.greater(p, 0.5), dtype)
            below = ops.less(a, 2.0 ** (kmin - 1))
        else:
            k_new = k + ops.cast(ops.less(noise, p), dtype)
            # Below the window: 2^kmin with probability |W| / 2^kmin, else 0.
            below = ops.logical_and(
                ops.less(a, 2.0**kmin), ops.greater_equal(noise, a / 2.0**kmin)
            )
            k_new = ops.where(ops.less(a, 2.0**kmin), float(kmin), k_new)
        k_new = ops.clip(k_new, float(kmin), float(kmax))
        q = sign * ops.power(2.0, k_new)
        return ops.where(below, ops.zeros_like(w), ops.cast(q, dtype))

    def get_config(self):
        config = {"max_exponent": self.max_exponent, "num_levels": self.num_levels, **super().get_config()}
        if self.exponent_offset:  # configs without it stay as before
            config["exponent_offset"] = self.exponent_offset
        return config


def serialize(quantizer: Quantizer | None) -> dict | None:
    """Keras-serializable dict of a quantizer (``None`` stays ``None``)."""
    if quantizer is None:
        return None
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(config: dict | str, custom_objects: dict | None = None) -> Quantizer:
    """Inverse of ``serialize``; also accepts an alias string."""
    if isinstance(config, str):
        return get(config)
    objects = {**_CLASSES, **(custom_objects or {})}
    return keras.saving.deserialize_keras_object(config, custom_objects=objects)


def get(identifier: Quantizer | str | dict | None) -> Quantizer | None:
    """Resolves ``None``, an alias, a serialized dict or an instance to a quantizer."""
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in ALIASES:
            raise ValueError(
                f"Unknown quantizer {identifier!r}. Valid names: {', '.join(sorted(ALIASES))} "
                "(or a keras_lowprec.quantizers.Quantizer instance, or None)."
            )
        return ALIASES[key]()
    if isinstance(identifier, dict):
        try:
            quantizer = deserialize(identifier)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Could not deserialize quantizer {identifier!r}: {err}") from None
        if not isinstance(quantizer, Quantizer):
            raise ValueError(
                f"Could not interpret quantizer {identifier!r}: the dict does not describe a keras_lowprec "
                f"quantizer (classes: {', '.join(sorted(_CLASSES))})."
            )
        return quantizer
    raise ValueError(
        f"Could not interpret quantizer {identifier!r}: expected None, one of "
        f"{', '.join(sorted(ALIASES))}, a serialized dict or a Quantizer instance."
    )
