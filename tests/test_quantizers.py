"""Rounding methods of ``keras_lowprec.quantizers`` checked against methods.md.

The NumPy reference below (:class:`Spec`) is written from
``shared/reference/methods.md`` (sections 1-4 and "Scales"), not from the library
code: it works in float64 on the float32 level values and gets ``floor(log2|W|)``
exactly from ``np.frexp``.

Conventions used throughout:

* methods.md, "Ties": a weight exactly on a threshold may round either way, so at
  an exact threshold the tests accept both neighbouring levels; one float32 ulp on
  either side (``np.nextafter``) must round exactly as the definition says.
* Subnormal float32 inputs are left out of the bit-for-bit comparisons with the
  reference: TensorFlow's CPU kernels flush denormals to zero, so e.g. a negative
  subnormal binarizes like 0. (They are still used where only the level set or the
  absence of NaN is checked.)
* In training, quantizers return ``w + stop_gradient(Q(w) - w)``. Tests about the
  stochastic draws themselves (support, bias, randomness) compare training outputs
  to the levels with a relative tolerance of a few ulps, so that each property is
  checked on its own; whether the training forward value equals ``Q(w)`` exactly
  is checked by dedicated tests (``test_training_forward_value_*`` and the
  ``training=True`` cases of ``test_outputs_lie_in_level_set``).
"""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from keras_lowprec import quantizers as Q  # noqa: E402

F32 = np.float32
TINY = float(np.finfo(F32).tiny)  # smallest normal float32
BIG = float(np.finfo(F32).max)

# alias -> (class, stochastic)
ALIAS_TABLE = {
    "binary": (Q.Binary, False),
    "stochastic_binary": (Q.Binary, True),
    "ternary": (Q.Ternary, False),
    "stochastic_ternary": (Q.Ternary, True),
    "pow2_ternary": (Q.Pow2Ternary, False),
    "stochastic_pow2_ternary": (Q.Pow2Ternary, True),
    "exponential": (Q.Exponential, False),
    "stochastic_exponential": (Q.Exponential, True),
}
ALIASES = list(ALIAS_TABLE)
DETERMINISTIC = [a for a in ALIASES if not ALIAS_TABLE[a][1]]
STOCHASTIC = [a for a in ALIASES if ALIAS_TABLE[a][1]]
METHODS = DETERMINISTIC  # "binary", "ternary", "pow2_ternary", "exponential"


def method_of(alias: str) -> str:
    return alias.replace("stochastic_", "")


# Layer-like 2-D shapes (fan_in, units). fan_in + units avoids 3 * 4^j, where
# log2(G) is a half-integer and round(log2(G)) (pow2 default) would be a tie; it
# includes 16 + 8 = 24, where G = 0.5 exactly (ceil(log2 G) on an exact power of 2).
SHAPES = [(1, 1), (3, 5), (16, 8), (7, 13), (64, 32), (50, 256)]

# Explicit scales named in the issue: (method, constructor kwargs).
EXPLICIT = [
    ("binary", {"scale": 0.25}),
    ("binary", {"scale": 1.0}),
    ("binary", {"scale": 0.3}),
    ("ternary", {"scale": 0.3}),
    ("ternary", {"scale": 1.0}),
    ("pow2_ternary", {"exponent": -1}),
    ("pow2_ternary", {"exponent": 2}),
    ("pow2_ternary", {"exponent": -7}),
    ("exponential", {"max_exponent": 0}),
    ("exponential", {"max_exponent": 0, "num_levels": 7}),
    ("exponential", {"max_exponent": 3, "num_levels": 3}),
    ("exponential", {"max_exponent": -2, "num_levels": 1}),
    ("exponential", {"max_exponent": -4, "num_levels": 10}),
]
EXPLICIT_IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for m, kw in EXPLICIT]

CLASS_OF = {"binary": Q.Binary, "ternary": Q.Ternary, "pow2_ternary": Q.Pow2Ternary,
            "exponential": Q.Exponential}

HSET = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

requires_tf = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="uses tf.GradientTape / tf.function"
)


# --------------------------------------------------------------------------------------
# NumPy reference, from methods.md
# --------------------------------------------------------------------------------------
def ref_glorot(fan_in: int, units: int) -> float:
    return math.sqrt(6.0 / (fan_in + units))


def f32(x: float) -> float:
    return float(F32(x))


def ceil_log2(x: float) -> int:
    """Exact ceil(log2(x)) for x > 0."""
    m, e = math.frexp(x)  # x = m * 2^e, m in [0.5, 1)
    return e - 1 if m == 0.5 else e


def floor_log2(a: np.ndarray) -> np.ndarray:
    """Exact floor(log2(a)) for a > 0 (elementwise)."""
    _, e = np.frexp(a)
    return e.astype(np.float64) - 1.0


class Spec:
    """One quantizer configuration as methods.md defines it."""

    def __init__(self, method, G=None, scale=None, exponent=None, max_exponent=None,
                 num_levels=7):
        self.method = method
        if method == "binary":
            self.h = f32(scale if scale is not None else G / 2.0)  # BinaryConnect H = G/2
        elif method == "ternary":
            self.level = f32(scale if scale is not None else G)  # W0 = G
        elif method == "pow2_ternary":
            e = exponent if exponent is not None else math.floor(math.log2(G) + 0.5)
            self.e = int(e)
            self.level = 2.0 ** self.e
        elif method == "exponential":
            self.kmax = int(max_exponent if max_exponent is not None else ceil_log2(G))
            self.kmin = self.kmax - num_levels + 1
        else:
            raise AssertionError(method)

    @classmethod
    def explicit(cls, method, kwargs):
        return cls(method, **kwargs)

    # levels ------------------------------------------------------------------------
    def levels(self) -> np.ndarray:
        if self.method == "binary":
            v = [-self.h, self.h]
        elif self.method in ("ternary", "pow2_ternary"):
            v = [-self.level, 0.0, self.level]
        else:
            mags = [2.0**k for k in range(self.kmin, self.kmax + 1)]
            v = [-m for m in mags] + [0.0] + mags
        return np.array(sorted(v), dtype=np.float64)

    def clip_value(self) -> float:
        return float(np.max(np.abs(self.levels())))

    # thresholds (positive side; the negative side is symmetric) ---------------------
    def thresholds(self) -> list[float]:
        if self.method == "binary":
            return [0.0]
        if self.method in ("ternary", "pow2_ternary"):
            return [self.level / 2.0]
        # exponential: zero/2^kmin at 2^(kmin-1); 2^k/2^(k+1) at the linear midpoint 1.5*2^k
        return [2.0 ** (self.kmin - 1)] + [1.5 * 2.0**k for k in range(self.kmin, self.kmax)]

    def landmarks(self) -> list[float]:
        """Other points worth probing: levels, powers of two around the window, ..."""
        pts = [abs(x) for x in self.levels()] + [TINY, 1e-30, 1e30, BIG]
        c = self.clip_value()
        pts += [c * f for f in (0.01, 0.1, 0.3, 0.49, 0.51, 0.7, 0.99, 1.5, 2.0, 10.0)]
        if self.method == "exponential":
            for k in range(self.kmin - 3, self.kmax + 3):
                # exact powers of two (log2 off-by-one trap) and points between the
                # geometric (sqrt(2)*2^k) and the linear (1.5*2^k) midpoints
                pts += [2.0**k, 1.2 * 2.0**k, 1.42 * 2.0**k, 1.45 * 2.0**k, 1.49 * 2.0**k,
                        1.51 * 2.0**k, 1.9 * 2.0**k]
        return pts

    # deterministic rounding -----------------------------------------------------------
    def round(self, w: np.ndarray):
        """(q, alt): q the rounding of ``w``; alt the other admissible value at an exact
        threshold (equal to q elsewhere)."""
        w = np.asarray(w, dtype=F32).astype(np.float64)
        if self.method == "binary":
            h = self.h
            q = np.where(w >= 0, h, -h)
            alt = np.where(w == 0, -q, q)
        elif self.method in ("ternary", "pow2_ternary"):
            L = self.level
            q = np.where(w > L / 2, L, np.where(w < -L / 2, -L, 0.0))
            alt = np.where(np.abs(w) == L / 2, np.sign(w) * L, q)
        else:
            a = np.abs(w)
            sgn = np.where(w < 0, -1.0, 1.0)
            safe = np.where(a > 0, a, 1.0)
            k = floor_log2(safe)
            p = safe / 2.0**k - 1.0  # in [0, 1)
            kp = np.clip(k + (p > 0.5), self.kmin, self.kmax)
            zero = a < 2.0 ** (self.kmin - 1)
            q = np.where(zero, 0.0, sgn * 2.0**kp)
            alt = q.copy()
            at_zero_threshold = a == 2.0 ** (self.kmin - 1)
            alt = np.where(at_zero_threshold, 0.0, alt)
            at_mid = (p == 0.5) & (k >= self.kmin) & (k < self.kmax) & ~zero
            alt = np.where(at_mid, sgn * 2.0 ** (k + 1), alt)
        return q, alt

    # stochastic rounding --------------------------------------------------------------
    def stochastic(self, w: np.ndarray):
        """(lo, hi, p): stochastic rounding gives ``hi`` with probability ``p``, else ``lo``."""
        w = np.asarray(w, dtype=F32).astype(np.float64)
        sgn = np.where(w < 0, -1.0, 1.0)
        a = np.abs(w)
        if self.method == "binary":
            h = self.h
            p = np.clip((w / h + 1.0) / 2.0, 0.0, 1.0)  # hard sigmoid
            return np.full_like(w, -h), np.full_like(w, h), p
        if self.method in ("ternary", "pow2_ternary"):
            L = self.level
            p = np.minimum(a / L, 1.0)
            return np.zeros_like(w), np.sign(w) * L, p
        kmin, kmax = self.kmin, self.kmax
        safe = np.where(a > 0, a, 1.0)
        k = floor_log2(safe)
        inside_lo = sgn * 2.0**k
        inside_hi = sgn * 2.0 ** (k + 1)
        inside_p = safe / 2.0**k - 1.0
        below = a < 2.0**kmin
        above = a >= 2.0**kmax
        lo = np.where(below, 0.0, np.where(above, sgn * 2.0**kmax, inside_lo))
        hi = np.where(below, sgn * 2.0**kmin, np.where(above, sgn * 2.0**kmax, inside_hi))
        p = np.where(below, a / 2.0**kmin, np.where(above, 1.0, inside_p))
        return lo, hi, p


def spec_for_alias(alias: str, G: float) -> Spec:
    return Spec(method_of(alias), G=G)


def probe_points(spec: Spec) -> np.ndarray:
    """Every threshold, one float32 ulp on each side of it, and the landmarks; both signs."""
    mags = []
    for t in spec.thresholds() + spec.landmarks():
        t32 = F32(t)
        if not np.isfinite(t32):
            continue
        with np.errstate(over="ignore"):  # nextafter(max float32, inf) is inf: dropped below
            mags += [t32, np.nextafter(t32, F32(0)), np.nextafter(t32, F32(np.inf))]
    mags = np.array(mags, dtype=F32)
    mags = mags[np.isfinite(mags) & ((mags == 0) | (np.abs(mags) >= TINY))]  # no subnormals
    vals = np.concatenate([mags, -mags, np.array([0.0], F32)])
    return np.unique(vals)


def apply_shaped(q, values, shape, training=False, **kw) -> np.ndarray:
    """Calls ``q`` on ``values`` laid out in tensors of ``shape`` (so that the default
    scale is derived from that 2-D shape), chunking and padding as needed."""
    values = np.asarray(values, dtype=F32).reshape(-1)
    n = int(np.prod(shape))
    out = []
    for i in range(0, len(values), n):
        chunk = values[i : i + n]
        buf = np.full(n, chunk[0], dtype=F32)
        buf[: len(chunk)] = chunk
        res = keras.ops.convert_to_numpy(q(buf.reshape(shape), training=training, **kw))
        assert res.shape == tuple(shape)
        out.append(res.reshape(-1)[: len(chunk)])
    return np.concatenate(out)


def assert_matches_reference(out, w, spec: Spec):
    q, alt = spec.round(w)
    out = np.asarray(out, dtype=np.float64)
    ok = (out == q) | (out == alt)
    if not ok.all():
        bad = np.flatnonzero(~ok)[:10]
        w = np.asarray(w).reshape(-1)
        raise AssertionError(
            "rounding differs from methods.md at "
            + ", ".join(f"w={w[i]!r}: got {out.reshape(-1)[i]!r}, expected {q.reshape(-1)[i]!r}"
                        for i in bad)
        )


def assert_in_levels(out, levels):
    out = np.asarray(out)
    levels = np.asarray(levels)
    inside = np.isin(out, levels)
    if not inside.all():
        bad = [float(x) for x in out.reshape(-1)[~inside.reshape(-1)][:10]]
        raise AssertionError(
            f"values {bad} are not in the level set {[float(x) for x in levels]}"
        )


def close_to(out, target, rtol=1e-6):
    """Equality up to a few float32 ulps (the straight-through form in training)."""
    out = np.asarray(out, np.float64)
    target = np.asarray(target, np.float64)
    return np.abs(out - target) <= rtol * np.abs(target)


# Hypothesis strategies ------------------------------------------------------------------
SPECIAL = [0.0, -0.0, TINY, -TINY, BIG, -BIG, 1e-30, -1e-30, 1e30, -1e30, 1.0, -1.0, 0.5, -0.5]


def finite_elements(subnormals: bool = True):
    return st.one_of(
        st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=subnormals),
        st.floats(-2.0, 2.0, width=32, allow_subnormal=subnormals),  # the interesting range
        st.sampled_from(SPECIAL),
    )


def layer_shape():
    """(fan_in, units) pairs of small tensors (fan_in + units never 3 * 4^j)."""
    return st.tuples(st.integers(1, 12), st.integers(1, 12)).filter(
        lambda s: s[0] + s[1] not in (3, 12, 48)
    )


def arrays_2d(subnormals: bool = True):
    return layer_shape().flatmap(
        lambda shape: hnp.arrays(F32, shape, elements=finite_elements(subnormals))
    )


def make(alias: str) -> Q.Quantizer:
    return Q.get(alias)


# --------------------------------------------------------------------------------------
# Level sets, precision, clip values
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_levels_match_methods_md(alias, shape):
    G = ref_glorot(*shape)
    q = make(alias)
    levels = q.levels(G)
    expected = spec_for_alias(alias, G).levels()
    assert levels.dtype == np.float32
    np.testing.assert_array_equal(levels.astype(np.float64), expected)
    assert q.clip_value(G) == pytest.approx(spec_for_alias(alias, G).clip_value(), rel=0, abs=0)


@pytest.mark.parametrize("alias,size", [
    ("binary", 2), ("stochastic_binary", 2), ("ternary", 3), ("stochastic_ternary", 3),
    ("pow2_ternary", 3), ("stochastic_pow2_ternary", 3), ("exponential", 15),
    ("stochastic_exponential", 15),
])
def test_level_set_size_sorted_symmetric(alias, size):
    levels = make(alias).levels(0.37)
    assert levels.shape == (size,)
    assert np.all(np.diff(levels) > 0), "levels must be sorted and distinct"
    np.testing.assert_array_equal(levels, -levels[::-1])
    assert np.all(np.isfinite(levels))


@pytest.mark.parametrize("alias,bits", [
    ("binary", 1), ("stochastic_binary", 1), ("ternary", 2), ("stochastic_ternary", 2),
    ("pow2_ternary", 2), ("stochastic_pow2_ternary", 2), ("exponential", 4),
    ("stochastic_exponential", 4),
])
def test_precision(alias, bits):
    assert make(alias).precision == bits


@pytest.mark.parametrize("num_levels,bits", [(1, 2), (2, 3), (3, 3), (7, 4), (8, 5), (15, 5),
                                             (16, 6)])
def test_exponential_precision_follows_num_levels(num_levels, bits):
    # sign bit + enough bits for num_levels magnitudes and zero
    q = Q.Exponential(max_exponent=0, num_levels=num_levels)
    assert q.precision == bits
    assert q.levels().shape == (2 * num_levels + 1,)
    assert 2 ** (bits - 1) >= num_levels + 1


@pytest.mark.parametrize("method,kwargs", EXPLICIT, ids=EXPLICIT_IDS)
def test_explicit_scale_levels(method, kwargs):
    q = CLASS_OF[method](**kwargs)
    spec = Spec.explicit(method, kwargs)
    assert not q.needs_glorot_bound()
    # no Glorot bound needed, and one given is ignored: an explicit scale always wins
    np.testing.assert_array_equal(q.levels().astype(np.float64), spec.levels())
    np.testing.assert_array_equal(q.levels(0.123).astype(np.float64), spec.levels())
    assert q.clip_value() == spec.clip_value()


def test_pow2_ternary_paper_setting():
    np.testing.assert_array_equal(Q.Pow2Ternary(exponent=-1).levels(), [-0.5, 0.0, 0.5])
    out = keras.ops.convert_to_numpy(
        Q.Pow2Ternary(exponent=-1)(np.array([-0.9, -0.26, -0.24, 0.0, 0.24, 0.26, 0.9], F32))
    )
    np.testing.assert_array_equal(out, [-0.5, -0.5, 0.0, 0.0, 0.0, 0.5, 0.5])


def test_exponential_default_window():
    # G = 0.5 exactly for (16, 8): max_exp = ceil(log2 0.5) = -1, 7 levels 2^-7 .. 2^-1
    q = Q.Exponential()
    G = ref_glorot(16, 8)
    assert G == 0.5
    assert q.exponent_range(G) == (-7, -1)
    np.testing.assert_array_equal(q.levels(G)[8:], [2.0**k for k in range(-7, 0)])
    # G = sqrt(6/8) ~ 0.866: max_exp = 0
    assert q.exponent_range(ref_glorot(3, 5)) == (-6, 0)


def test_exponential_exponent_offset_moves_the_window_and_the_clip():
    G = ref_glorot(16, 8)  # 0.5: default window 2^-7 .. 2^-1
    q = Q.Exponential(exponent_offset=2)
    assert q.exponent_range(G) == (-5, 1)
    assert q.clip_value(G) == 2.0  # master weights may grow to 4G
    out = keras.ops.convert_to_numpy(q(np.array([3.0, 0.7, 0.02, 0.01], F32), glorot_bound=G))
    np.testing.assert_array_equal(out, [2.0, 0.5, 2.0**-5, 0.0])  # 0.01 < 2^-6: zero
    back = Q.get(json.loads(json.dumps(Q.serialize(q))))
    assert back == q and back.exponent_range(G) == (-5, 1)
    assert "exponent_offset" not in Q.Exponential().get_config()  # older configs unchanged
    with pytest.raises(ValueError, match="exponent_offset"):
        Q.Exponential(max_exponent=0, exponent_offset=1)
    with pytest.raises(ValueError, match="exponent_offset"):
        Q.Exponential(exponent_offset=1.5)


@pytest.mark.parametrize("alias", ALIASES)
def test_default_scale_levels_need_a_bound(alias):
    with pytest.raises(ValueError, match="glorot_bound"):
        make(alias).levels()


def test_glorot_bound_function():
    assert Q.glorot_bound(3, 5) == pytest.approx(math.sqrt(6 / 8))
    assert Q.glorot_bound(16, 8) == 0.5
    for bad in [(0, 3), (3, 0), (-1, 2)]:
        with pytest.raises(ValueError):
            Q.glorot_bound(*bad)


# --------------------------------------------------------------------------------------
# Every output lies in the level set (property-based)
# --------------------------------------------------------------------------------------
# (deterministic quantizers in training: test_training_forward_value_equals_rounding)
@pytest.mark.parametrize("alias,training",
                         [(a, False) for a in ALIASES] + [(a, True) for a in STOCHASTIC],
                         ids=[f"{a}-inference" for a in ALIASES]
                         + [f"{a}-training" for a in STOCHASTIC])
@HSET
@given(w=arrays_2d(subnormals=True))
@example(w=np.array([[3e7, -3e7], [1e-30, 0.3]], F32))
@example(w=np.array([[0.3, 0.77, -0.01]], F32))
def test_outputs_lie_in_level_set(alias, training, w):
    q = make(alias)
    G = ref_glorot(*w.shape)
    out = keras.ops.convert_to_numpy(q(w, training=training, seed=keras.random.SeedGenerator(0)))
    assert out.shape == w.shape
    assert out.dtype == np.float32
    assert not np.isnan(out).any(), "finite input gave NaN"
    assert_in_levels(out, q.levels(G))


EXPLICIT_FEW = [EXPLICIT[i] for i in (0, 3, 5, 10, 11)]


@pytest.mark.parametrize("method,kwargs", EXPLICIT_FEW,
                         ids=[EXPLICIT_IDS[i] for i in (0, 3, 5, 10, 11)])
@settings(HSET, max_examples=25)
@given(w=hnp.arrays(F32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                    elements=finite_elements(True)))
def test_explicit_scale_outputs_lie_in_level_set_any_shape(method, kwargs, w):
    for stochastic in (False, True):
        q = CLASS_OF[method](stochastic=stochastic, **kwargs)
        for training in (False,) if not stochastic else (False, True):
            out = keras.ops.convert_to_numpy(q(w, training=training))
            assert out.shape == w.shape
            if training:  # see the module docstring: draws are checked up to ulps here
                lv = q.levels()
                nearest = lv[np.argmin(np.abs(out.reshape(-1, 1) - lv.reshape(1, -1)), axis=1)]
                ok = close_to(out.reshape(-1), nearest) | ~(np.abs(w.reshape(-1)) <= 2 * q.clip_value())
                assert ok.all()
            else:
                assert_in_levels(out, q.levels())


# --------------------------------------------------------------------------------------
# Deterministic rounding == methods.md, at and around every threshold
# --------------------------------------------------------------------------------------
# (stochastic quantizers in inference: test_stochastic_is_deterministic_in_inference)
@pytest.mark.parametrize("alias", DETERMINISTIC)
@pytest.mark.parametrize("shape", SHAPES[1:], ids=str)  # (1, 1) would need ~200 calls
def test_deterministic_rounding_at_thresholds_default_scale(alias, shape):
    G = ref_glorot(*shape)
    spec = spec_for_alias(alias, G)
    w = probe_points(spec)
    out = apply_shaped(make(alias), w, shape)
    assert_matches_reference(out, w, spec)


@pytest.mark.parametrize("method,kwargs", EXPLICIT, ids=EXPLICIT_IDS)
def test_deterministic_rounding_at_thresholds_explicit_scale(method, kwargs):
    spec = Spec.explicit(method, kwargs)
    w = probe_points(spec)
    for stochastic in (False, True):
        q = CLASS_OF[method](stochastic=stochastic, **kwargs)
        out = keras.ops.convert_to_numpy(q(w))  # 1-D: no shape needed with an explicit scale
        assert_matches_reference(out, w, spec)
        # an explicit scale wins over a Glorot bound passed by a layer
        out = keras.ops.convert_to_numpy(q(w, glorot_bound=7.0))
        assert_matches_reference(out, w, spec)


@pytest.mark.parametrize("method", METHODS)
@HSET
@given(shape=layer_shape(), data=st.data())
def test_deterministic_rounding_matches_reference_property(method, shape, data):
    w = data.draw(hnp.arrays(F32, shape, elements=finite_elements(subnormals=False)))
    G = ref_glorot(*shape)
    out = keras.ops.convert_to_numpy(Q.get(method)(w))
    assert_matches_reference(out, w, Spec(method, G=G))
    # the bound passed explicitly (as layers do) gives the same as the one from the shape
    out2 = keras.ops.convert_to_numpy(Q.get(method)(w.reshape(-1), glorot_bound=G))
    np.testing.assert_array_equal(out2, out.reshape(-1))


@pytest.mark.parametrize("k", range(-7, 1))
def test_exponential_powers_of_two_and_linear_midpoint(k):
    q = Q.Exponential(max_exponent=0, num_levels=7)  # window 2^-6 .. 2^0
    kmin, kmax = -6, 0
    p2 = F32(2.0**k)
    mid = F32(1.5 * 2.0**k)
    w = np.array([p2, np.nextafter(p2, F32(0)), np.nextafter(p2, F32(1)),
                  mid, np.nextafter(mid, F32(0)), np.nextafter(mid, F32(2)),
                  F32(1.45 * 2.0**k)], F32)  # between geometric and linear midpoint
    out = keras.ops.convert_to_numpy(q(np.concatenate([w, -w])))
    out_pos, out_neg = out[: len(w)], out[len(w):]
    np.testing.assert_array_equal(out_neg, -out_pos)
    if k >= kmin:
        assert out_pos[0] == p2, "an exact power of two in the window is its own level"
        assert out_pos[1] == p2, "just below 2^k rounds up to 2^k"
        assert out_pos[2] == p2, "just above 2^k rounds down to 2^k"
    if kmin <= k < kmax:
        assert out_pos[3] in (2.0**k, 2.0 ** (k + 1)), "exact linear midpoint: either"
        assert out_pos[4] == 2.0**k, "below the linear midpoint 1.5*2^k -> 2^k"
        assert out_pos[5] == 2.0 ** (k + 1), "above the linear midpoint 1.5*2^k -> 2^(k+1)"
        assert out_pos[6] == 2.0**k, "1.45*2^k is above the geometric midpoint but rounds down"
    if k == kmax:
        assert out_pos[3] == out_pos[5] == 2.0**kmax, "saturates at 2^max_exp"
    if k == kmin - 1:
        # 2^(kmin-1) is the zero threshold (tie); above it, up to 2^kmin, gives 2^kmin
        assert out_pos[0] in (0.0, 2.0**kmin)
        assert out_pos[1] == 0.0
        assert out_pos[2] == 2.0**kmin
        assert out_pos[3] == out_pos[4] == out_pos[5] == 2.0**kmin


def test_exponential_below_window_and_saturation():
    q = Q.Exponential(max_exponent=0, num_levels=7)
    w = np.array([2.0**-8, 2.0**-7 * 0.99, 2.0**-7 * 1.01, 2.0**-6, 1.0, 1.4, 1.6, 3.0, 1e30, BIG],
                 F32)
    out = keras.ops.convert_to_numpy(q(w))
    np.testing.assert_array_equal(out, [0, 0, 2.0**-6, 2.0**-6, 1, 1, 1, 1, 1, 1])


# --------------------------------------------------------------------------------------
# Training mode: forward value and straight-through gradient
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", DETERMINISTIC)
@HSET
@given(w=arrays_2d(subnormals=True))
@example(w=np.array([[0.049, 0.0001], [-0.2, 1e-30]], F32))  # inside the range, shape -> G
@example(w=np.array([[3e7, -1e30, 2.5]], F32))  # outside the range (no clip)
def test_training_forward_value_equals_rounding(alias, w):
    """methods.md: each training forward pass uses Q(W) (only the gradient is
    straight-through), so for a deterministic quantizer training=True and
    training=False give the same values, bit for bit."""
    q = make(alias)
    train = keras.ops.convert_to_numpy(q(w, training=True))
    infer = keras.ops.convert_to_numpy(q(w, training=False))
    np.testing.assert_array_equal(train, infer)


@pytest.mark.parametrize("alias", DETERMINISTIC)
@pytest.mark.parametrize("shape", [(64, 32), (50, 256), (7, 13)], ids=str)
def test_training_forward_value_equals_rounding_inside_clip_range(alias, shape):
    """Same as above restricted to master weights already clipped to the quantizer's
    range (what the default constraint guarantees)."""
    G = ref_glorot(*shape)
    q = make(alias)
    c = q.clip_value(G)
    rng = np.random.default_rng(0)
    scale = rng.choice([1.0, 1e-2, 1e-4, 1e-8], shape)
    w = (rng.uniform(-1, 1, shape) * scale * c).astype(F32)
    train = keras.ops.convert_to_numpy(q(w, training=True))
    assert_in_levels(train, q.levels(G))
    np.testing.assert_array_equal(train, keras.ops.convert_to_numpy(q(w)))


@requires_tf
@pytest.mark.parametrize("alias", ALIASES)
def test_straight_through_gradient_is_identity(alias):
    import tensorflow as tf

    shape = (6, 5)
    q = make(alias)
    c = q.clip_value(ref_glorot(*shape))
    rng = np.random.default_rng(1)
    w = tf.Variable((rng.uniform(-1, 1, shape) * c).astype(F32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(q(w, training=True, seed=keras.random.SeedGenerator(3)))
    grad = tape.gradient(y, w)
    assert grad is not None
    np.testing.assert_array_equal(grad.numpy(), np.ones(shape, F32))
    # a weighted loss: gradient is the upstream gradient, unchanged
    weights = rng.normal(size=shape).astype(F32)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(weights * q(w, training=True, seed=keras.random.SeedGenerator(3)))
    np.testing.assert_array_equal(tape.gradient(y, w).numpy(), weights)


@pytest.mark.parametrize("alias", ALIASES)
def test_accepts_variables(alias):
    q = make(alias)
    w = np.random.default_rng(2).uniform(-0.5, 0.5, (4, 3)).astype(F32)
    v = keras.Variable(w)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(q(v)), keras.ops.convert_to_numpy(q(w)))


# --------------------------------------------------------------------------------------
# Zero, tiny, huge, NaN, inf
# --------------------------------------------------------------------------------------
NONFINITE_PROBE = np.array(
    [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, TINY, -TINY, 1e-30, BIG, -BIG, 0.3, -0.3],
    F32,
)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("alias", ALIASES)
def test_nan_and_inf_give_nan_finite_gives_finite(alias, training):
    q = make(alias)
    for w, kw in [(NONFINITE_PROBE, {"glorot_bound": 0.5}),
                  (NONFINITE_PROBE.reshape(2, 7), {})]:
        out = keras.ops.convert_to_numpy(q(w, training=training, **kw))
        finite_in = np.isfinite(w)
        assert np.isnan(out[~finite_in]).all(), "NaN/inf master weights must come out as NaN"
        assert np.isfinite(out[finite_in]).all(), "finite input must give finite output"


@pytest.mark.parametrize("alias", ALIASES)
def test_zeros_give_no_nan(alias):
    # log2(0) is the classic trap (exponential); all-zero biases are common
    q = make(alias)
    for training in (False, True):
        out = keras.ops.convert_to_numpy(q(np.zeros((4, 3), F32), training=training))
        assert np.isfinite(out).all()
        assert_in_levels(out, q.levels(ref_glorot(4, 3)))


# --------------------------------------------------------------------------------------
# Shape handling and the Glorot bound
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4)], ids=str)
def test_default_scale_needs_2d_or_explicit_bound(alias, shape):
    q = make(alias)
    w = np.full(shape, 0.1, F32)
    with pytest.raises(ValueError, match="glorot_bound"):
        q(w)
    out = keras.ops.convert_to_numpy(q(w, glorot_bound=0.5))
    assert out.shape == shape
    assert_in_levels(out, q.levels(0.5))


@pytest.mark.parametrize("alias", DETERMINISTIC)
def test_glorot_bound_argument_overrides_shape(alias):
    w = np.linspace(-2, 2, 60, dtype=F32).reshape(6, 10)
    q = make(alias)
    for G in (0.05, 0.5, 1.7):
        out = keras.ops.convert_to_numpy(q(w, glorot_bound=G))
        assert_matches_reference(out, w, spec_for_alias(alias, G))


# --------------------------------------------------------------------------------------
# Stochastic rounding
# --------------------------------------------------------------------------------------
def in_range_probe(spec: Spec) -> np.ndarray:
    """Values inside the quantizer's range (where methods.md says unbiased), both signs,
    plus a few beyond it (saturation)."""
    c = spec.clip_value()
    fr = [0.0, 0.003, 0.05, 0.25, 0.5, 0.77, 0.999, 1.0]
    vals = [c * f for f in fr]
    if spec.method == "exponential":
        for k in range(spec.kmin - 1, spec.kmax):
            vals += [2.0**k * f for f in (1.0, 1.1, 1.5, 1.93)]
        vals += [2.0 ** (spec.kmin - 3), 0.7 * 2.0 ** (spec.kmin - 1)]
    vals += [1.3 * c, 4.0 * c]  # saturation
    vals = np.array(vals, F32)
    return np.unique(np.concatenate([vals, -vals]))


STOCH_CONFIGS = [
    ("stochastic_binary", None),
    ("stochastic_ternary", None),
    ("stochastic_pow2_ternary", None),
    ("stochastic_exponential", None),
    ("binary", {"scale": 0.25}),
    ("ternary", {"scale": 1.0}),
    ("pow2_ternary", {"exponent": -1}),
    ("exponential", {"max_exponent": 1, "num_levels": 4}),
]
STOCH_IDS = [a if kw is None else f"{a}-{list(kw.values())}" for a, kw in STOCH_CONFIGS]


def stoch_quantizer_and_spec(alias, kwargs, G=0.6):
    if kwargs is None:
        return Q.get(alias), spec_for_alias(alias, G), {"glorot_bound": G}
    method = method_of(alias)
    return CLASS_OF[method](stochastic=True, **kwargs), Spec.explicit(method, kwargs), {}


@pytest.mark.parametrize("alias,kwargs", STOCH_CONFIGS, ids=STOCH_IDS)
def test_stochastic_rounding_probabilities_and_unbiased(alias, kwargs):
    q, spec, kw = stoch_quantizer_and_spec(alias, kwargs)
    values = in_range_probe(spec)
    n = 4000
    w = np.tile(values, (n, 1))
    out = keras.ops.convert_to_numpy(
        q(w, training=True, seed=keras.random.SeedGenerator(1234), **kw)
    ).astype(np.float64)
    lo, hi, p = spec.stochastic(values)
    is_hi = close_to(out, hi[None, :])  # exact where the level is 0
    is_lo = close_to(out, lo[None, :])
    assert (is_hi | is_lo).all(), "stochastic rounding must give one of the two bracketing levels"
    same = lo == hi
    freq = np.where(same, 1.0, is_hi.mean(axis=0))
    p_eff = np.where(same, 1.0, p)
    tol = 5.0 * np.sqrt(p_eff * (1 - p_eff) / n) + 1e-12
    bad = np.abs(freq - p_eff) > tol
    assert not bad.any(), (
        f"P(upper level) off for w={values[bad]}: got {freq[bad]}, expected {p_eff[bad]}"
    )
    # unbiased inside the range: E[Q(w)] = w
    c = spec.clip_value()
    inside = np.abs(values.astype(np.float64)) <= c
    mean = out.mean(axis=0)
    std = np.abs(hi - lo) * np.sqrt(p * (1 - p) / n)
    err = np.abs(mean - values)
    assert (err[inside] <= 5 * std[inside] + 1e-6 * c).all(), (
        f"biased: w={values[inside]}, mean={mean[inside]}"
    )
    # beyond the range: saturates at the largest level of the sign
    outside = ~inside
    np.testing.assert_allclose(out[:, outside], np.broadcast_to(np.sign(values[outside]) * c,
                                                                 out[:, outside].shape), rtol=1e-6)


@pytest.mark.parametrize("alias", STOCHASTIC)
@HSET
@given(data=st.data())
def test_stochastic_support_property(alias, data):
    """Each stochastic draw is one of the two levels bracketing w (methods.md)."""
    shape = data.draw(layer_shape())
    G = ref_glorot(*shape)
    spec = spec_for_alias(alias, G)
    c = spec.clip_value()
    frac = data.draw(hnp.arrays(F32, shape, elements=st.one_of(
        st.floats(-2.0, 2.0, width=32, allow_subnormal=False),
        st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.5, 1e-6, -1e-6]))))
    w = (frac.astype(np.float64) * c).astype(F32)
    out = keras.ops.convert_to_numpy(
        make(alias)(w, training=True, seed=keras.random.SeedGenerator(data.draw(st.integers(0, 99))))
    ).astype(np.float64)
    lo, hi, _ = spec.stochastic(w)
    ok = close_to(out, lo) | close_to(out, hi)
    assert ok.all(), f"w={w[~ok]}, got {out[~ok]}, brackets {lo[~ok]}..{hi[~ok]}"


def _mid_range(alias, shape=(20, 30)):
    """Weights whose stochastic rounding is far from certain (p away from 0 and 1)."""
    G = ref_glorot(*shape)
    spec = spec_for_alias(alias, G)
    c = spec.clip_value()
    rng = np.random.default_rng(5)
    if spec.method == "exponential":
        k = rng.integers(spec.kmin, spec.kmax, shape)
        mag = 2.0**k * rng.uniform(1.3, 1.7, shape)
    else:
        mag = c * rng.uniform(0.3, 0.7, shape)
    return (mag * rng.choice([-1, 1], shape)).astype(F32)


@pytest.mark.parametrize("alias", STOCHASTIC)
def test_stochastic_new_randomness_each_call_same_generator(alias):
    q = make(alias)
    w = _mid_range(alias)
    gen = keras.random.SeedGenerator(7)
    a = keras.ops.convert_to_numpy(q(w, training=True, seed=gen))
    b = keras.ops.convert_to_numpy(q(w, training=True, seed=gen))
    assert not np.array_equal(a, b), "the same generator must give fresh noise on each call"
    # and the quantizer's own generator too
    a = keras.ops.convert_to_numpy(q(w, training=True))
    b = keras.ops.convert_to_numpy(q(w, training=True))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("alias", STOCHASTIC)
def test_stochastic_reproducible_under_set_random_seed(alias):
    w = _mid_range(alias)

    def run():
        keras.utils.set_random_seed(1234)
        q = make(alias)  # own generator, seed=None
        gen = keras.random.SeedGenerator()  # unseeded generator, as a layer makes one
        first = keras.ops.convert_to_numpy(q(w, training=True))
        second = keras.ops.convert_to_numpy(q(w, training=True))
        third = keras.ops.convert_to_numpy(q(w, training=True, seed=gen))
        return first, second, third

    r1, r2 = run(), run()
    for x, y in zip(r1, r2):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(r1[0], r1[1])
    keras.utils.set_random_seed(4321)
    other = keras.ops.convert_to_numpy(make(alias)(w, training=True))
    assert not np.array_equal(other, r1[0]), "a different global seed must change the draws"


@pytest.mark.parametrize("alias", STOCHASTIC)
def test_stochastic_seed_argument_reproducible(alias):
    cls, _ = ALIAS_TABLE[alias]
    w = _mid_range(alias)
    a = keras.ops.convert_to_numpy(cls(stochastic=True, seed=11)(w, training=True))
    b = keras.ops.convert_to_numpy(cls(stochastic=True, seed=11)(w, training=True))
    c = keras.ops.convert_to_numpy(cls(stochastic=True, seed=12)(w, training=True))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    g1, g2 = keras.random.SeedGenerator(5), keras.random.SeedGenerator(5)
    q = cls(stochastic=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(q(w, training=True, seed=g1)),
                                  keras.ops.convert_to_numpy(q(w, training=True, seed=g2)))


@pytest.mark.parametrize("alias", STOCHASTIC)
def test_stochastic_is_deterministic_in_inference(alias):
    q = make(alias)
    det = Q.get(method_of(alias))
    w = _mid_range(alias)
    G = ref_glorot(*w.shape)
    outs = [keras.ops.convert_to_numpy(q(w, training=False, seed=keras.random.SeedGenerator(i)))
            for i in range(3)]
    outs.append(keras.ops.convert_to_numpy(q(w)))  # training defaults to False
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_array_equal(outs[0], keras.ops.convert_to_numpy(det(w)))
    assert_matches_reference(outs[0], w, spec_for_alias(alias, G))


@requires_tf
@pytest.mark.parametrize("own_generator", [False, True], ids=["passed_generator", "own_generator"])
@pytest.mark.parametrize("alias", STOCHASTIC)
def test_stochastic_noise_not_frozen_in_tf_function(alias, own_generator):
    import tensorflow as tf

    q = make(alias)
    w = _mid_range(alias)
    gen = keras.random.SeedGenerator(9)

    @tf.function
    def step(x):
        if own_generator:
            return q(x, training=True)
        return q(x, training=True, seed=gen)

    a = step(tf.constant(w)).numpy()
    b = step(tf.constant(w)).numpy()
    traces = step.experimental_get_tracing_count()  # 2 when the first call made a variable
    c = step(tf.constant(w)).numpy()
    assert step.experimental_get_tracing_count() == traces, "retraced on every call"
    assert not np.array_equal(a, b), "noise frozen at trace time"
    assert not np.array_equal(b, c), "noise frozen at trace time"
    G = ref_glorot(*w.shape)
    for out in (a, b, c):
        lo, hi, _ = spec_for_alias(alias, G).stochastic(w)
        assert (close_to(out, lo) | close_to(out, hi)).all()


# --------------------------------------------------------------------------------------
# Registry: get / serialize / deserialize / errors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ALIASES)
def test_get_aliases(alias):
    cls, stochastic = ALIAS_TABLE[alias]
    q = Q.get(alias)
    assert type(q) is cls
    assert q.stochastic is stochastic
    assert q.needs_glorot_bound()
    assert alias in Q.ALIASES
    assert Q.get(alias) is not q, "each get() must give a fresh instance (own generator)"


@pytest.mark.parametrize("alias", ALIASES)
def test_get_is_case_insensitive(alias):
    for name in (alias.upper(), alias.title(), alias.capitalize()):
        assert Q.get(name) == Q.get(alias)


def test_get_passthrough():
    assert Q.get(None) is None
    q = Q.Ternary(scale=0.3)
    assert Q.get(q) is q


@pytest.mark.parametrize("bad", ["tenary", "binary ", "", "sign", "ste_sign", "Binary2"])
def test_get_unknown_name_lists_valid_ones(bad):
    with pytest.raises(ValueError) as info:
        Q.get(bad)
    for alias in ALIASES:
        assert alias in str(info.value)


@pytest.mark.parametrize("bad", [3, 0.5, ["binary"], object()])
def test_get_bad_type(bad):
    with pytest.raises(ValueError):
        Q.get(bad)


def _all_instances():
    out = [Q.get(a) for a in ALIASES]
    for method, kwargs in EXPLICIT:
        out.append(CLASS_OF[method](**kwargs))
        out.append(CLASS_OF[method](stochastic=True, seed=3, **kwargs))
    return out


@pytest.mark.parametrize("q", _all_instances(), ids=repr)
def test_serialize_round_trip(q):
    config = Q.serialize(q)
    json.dumps(config)  # plain JSON
    back = Q.deserialize(config)
    assert type(back) is type(q)
    assert back == q
    assert back.get_config() == q.get_config()
    public = lambda obj: {k: v for k, v in vars(obj).items() if not k.startswith("_")}  # noqa: E731
    assert public(back) == public(q)  # scale, stochastic, seed, ... all survive
    assert Q.get(config) == q
    # via Keras' own functions, with no custom_objects (registered classes)
    config2 = keras.saving.serialize_keras_object(q)
    back2 = keras.saving.deserialize_keras_object(json.loads(json.dumps(config2)))
    assert type(back2) is type(q) and back2 == q
    # from_config(get_config())
    assert type(q).from_config(q.get_config()) == q
    # same rounding after the round trip
    w = np.linspace(-1.5, 1.5, 24, dtype=F32).reshape(4, 6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(back(w)),
                                  keras.ops.convert_to_numpy(q(w)))


def test_serialize_none_and_deserialize_alias():
    assert Q.serialize(None) is None
    assert Q.deserialize("stochastic_exponential") == Q.Exponential(stochastic=True)


def test_equality_reflects_config():
    assert Q.Ternary(scale=0.3) != Q.Ternary(scale=0.4)
    assert Q.Ternary() != Q.Ternary(stochastic=True)
    assert Q.Ternary(scale=0.3) != Q.Binary(scale=0.3)
    assert hash(Q.Exponential(max_exponent=0)) == hash(Q.Exponential(max_exponent=0))


BAD_ARGS = [
    (Q.Binary, {"scale": 0.0}, "scale"),
    (Q.Binary, {"scale": -0.5}, "scale"),
    (Q.Binary, {"scale": float("nan")}, "scale"),
    (Q.Binary, {"scale": float("inf")}, "scale"),
    (Q.Binary, {"scale": "0.5"}, "scale"),
    (Q.Binary, {"scale": True}, "scale"),
    (Q.Ternary, {"scale": 0}, "scale"),
    (Q.Ternary, {"scale": -1.0}, "scale"),
    (Q.Ternary, {"scale": float("nan")}, "scale"),
    (Q.Ternary, {"scale": [0.5]}, "scale"),
    (Q.Pow2Ternary, {"exponent": 1.5}, "exponent"),
    (Q.Pow2Ternary, {"exponent": "-1"}, "exponent"),
    (Q.Pow2Ternary, {"exponent": True}, "exponent"),
    (Q.Exponential, {"max_exponent": 0.5}, "max_exponent"),
    (Q.Exponential, {"max_exponent": "0"}, "max_exponent"),
    (Q.Exponential, {"num_levels": 0}, "num_levels"),
    (Q.Exponential, {"num_levels": -3}, "num_levels"),
    (Q.Exponential, {"num_levels": 2.5}, "num_levels"),
]


@pytest.mark.parametrize("cls,kwargs,name", BAD_ARGS,
                         ids=[f"{c.__name__}-" + "-".join(f"{k}={v!r}" for k, v in kw.items())
                              for c, kw, _ in BAD_ARGS])
def test_bad_constructor_args_raise_value_error_naming_argument(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [Q.Binary, Q.Ternary, Q.Pow2Ternary, Q.Exponential])
@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_bad_stochastic_flag(cls, bad):
    with pytest.raises((TypeError, ValueError), match="stochastic"):
        cls(stochastic=bad)


@pytest.mark.parametrize("make_q", [
    lambda: Q.Binary(scale=np.float32(0.25)),
    lambda: Q.Binary(scale=np.float64(0.25)),
    lambda: Q.Ternary(scale=np.float32(0.25)),
    lambda: Q.Ternary(scale=2),
    lambda: Q.Pow2Ternary(exponent=np.int64(-2)),
    lambda: Q.Exponential(max_exponent=np.int32(-2), num_levels=np.int64(7)),
], ids=["binary-np.float32", "binary-np.float64", "ternary-np.float32", "ternary-int",
        "pow2-np.int64", "exponential-np.int"])
def test_numpy_scalar_and_int_scales_accepted(make_q):
    """A scale computed with NumPy (e.g. np.float32) is a positive finite number too."""
    q = make_q()
    assert q.clip_value() in (0.25, 2.0)
    json.dumps(Q.serialize(q))  # the config stays plain JSON


@pytest.mark.parametrize("make_q", [
    lambda: Q.Pow2Ternary(exponent=128),
    lambda: Q.Pow2Ternary(exponent=-150),
    lambda: Q.Exponential(max_exponent=130),
    lambda: Q.Exponential(max_exponent=-148, num_levels=7),
], ids=["pow2-128", "pow2--150", "exp-max130", "exp-max-148"])
def test_exponents_outside_float32_rejected_or_representable(make_q):
    """Levels must be distinct finite float32 numbers: an exponent whose power of two
    overflows (inf) or underflows (0) in float32 must be refused with a ValueError
    naming the argument, not produce an inf/duplicate level set."""
    try:
        q = make_q()
    except ValueError as err:
        assert "exponent" in str(err)
        return
    levels = q.levels()
    assert np.all(np.isfinite(levels)), f"levels {levels} overflow float32"
    assert np.all(np.diff(levels) > 0), f"levels {levels} are not distinct"
