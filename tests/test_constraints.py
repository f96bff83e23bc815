"""Clip constraints of ``keras_lowprec.constraints`` (methods.md, "Training mechanics":
after each update W is clipped to the quantizer's range; NaN/inf are not turned into
numbers)."""

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

from keras_lowprec import constraints as C  # noqa: E402
from keras_lowprec import quantizers as Q  # noqa: E402

F32 = np.float32
BIG = float(np.finfo(F32).max)
TINY = float(np.finfo(F32).tiny)

ALIASES = [
    "binary", "stochastic_binary", "ternary", "stochastic_ternary", "pow2_ternary",
    "stochastic_pow2_ternary", "exponential", "stochastic_exponential",
]

HSET = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# No subnormals: TensorFlow's CPU kernels flush them to zero, which is irrelevant here.
finite = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    st.floats(-3.0, 3.0, width=32, allow_subnormal=False),
    st.sampled_from([0.0, -0.0, TINY, -TINY, BIG, -BIG, 1e-30, 1.0, -1.0]),
)


def ref_clip_value(alias: str, G: float) -> float:
    """Largest level magnitude per methods.md: binary G/2, ternary G, pow2 2^round(log2 G),
    exponential 2^ceil(log2 G)."""
    method = alias.replace("stochastic_", "")
    if method == "binary":
        return float(F32(G / 2))
    if method == "ternary":
        return float(F32(G))
    if method == "pow2_ternary":
        return 2.0 ** math.floor(math.log2(G) + 0.5)
    m, e = math.frexp(G)
    return 2.0 ** (e - 1 if m == 0.5 else e)


def np_out(x):
    return keras.ops.convert_to_numpy(x)


# --------------------------------------------------------------------------------------
# Clip
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_value", [0.5, 1e-3, 2.0, 0.3])
@HSET
@given(w=hnp.arrays(F32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=finite))
@example(w=np.array([0.0, -0.0, 0.5, -0.5, 0.50001, -7.0, BIG, -BIG], F32))
def test_clip_is_elementwise_clip(max_value, w):
    out = np_out(C.Clip(max_value)(w))
    assert out.shape == w.shape
    assert out.dtype == np.float32
    m = F32(max_value)
    np.testing.assert_array_equal(out, np.clip(w, -m, m))
    assert (np.abs(out) <= m).all()


def test_clip_leaves_nan_and_inf_as_they_are():
    w = np.array([np.nan, np.inf, -np.inf, 3.0, -3.0, 0.1], F32)
    out = np_out(C.Clip(0.5)(w))
    assert np.isnan(out[0])
    assert out[1] == np.inf and out[2] == -np.inf
    np.testing.assert_array_equal(out[3:], np.array([0.5, -0.5, 0.1], F32))


def test_clip_on_variables_and_as_layer_constraint():
    v = keras.Variable(np.array([[2.0, -0.2], [-9.0, 0.7]], F32))
    np.testing.assert_array_equal(np_out(C.Clip(0.5)(v)), np.array([[0.5, -0.2], [-0.5, 0.5]], F32))
    # as a Keras weight constraint: applied after the optimizer step
    layer = keras.layers.Dense(2, use_bias=False, kernel_constraint=C.Clip(0.25))
    layer.build((None, 3))
    layer.kernel.assign(np.full((3, 2), 0.2, F32))
    opt = keras.optimizers.SGD(learning_rate=10.0)
    opt.apply([np.full((3, 2), -1.0, F32)], [layer.kernel])  # pushes the kernel to 10.2
    np.testing.assert_array_equal(np_out(layer.kernel), np.full((3, 2), 0.25, F32))


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "1", None, [1.0]])
def test_clip_bad_max_value(bad):
    with pytest.raises(ValueError, match="max_value"):
        C.Clip(bad)


@pytest.mark.parametrize("value", [np.float32(0.5), np.float64(0.5), 1, np.int64(2)],
                         ids=["np.float32", "np.float64", "int", "np.int64"])
def test_clip_accepts_numpy_scalars_and_ints(value):
    clip = C.Clip(value)
    assert clip.max_value == float(value)
    assert type(clip.max_value) is float
    json.dumps(clip.get_config())


@pytest.mark.parametrize("max_value", [0.5, 0.0625, 1.7320508075688772])
def test_clip_config_round_trip(max_value):
    clip = C.Clip(max_value)
    assert clip.get_config() == {"max_value": max_value}
    back = C.Clip.from_config(clip.get_config())
    assert back.max_value == max_value
    config = keras.saving.serialize_keras_object(clip)
    back = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert isinstance(back, C.Clip) and back.max_value == max_value
    back = keras.constraints.get(config)
    assert isinstance(back, C.Clip) and back.max_value == max_value
    w = np.linspace(-3, 3, 13, dtype=F32)
    np.testing.assert_array_equal(np_out(back(w)), np_out(clip(w)))


# --------------------------------------------------------------------------------------
# for_quantizer / resolve("auto")
# --------------------------------------------------------------------------------------
GLOROT = [math.sqrt(6 / 8), 0.5, math.sqrt(6 / 306), math.sqrt(3.0), 0.05]


@pytest.mark.parametrize("G", GLOROT, ids=lambda g: f"G={g:.4f}")
@pytest.mark.parametrize("alias", ALIASES)
def test_for_quantizer_and_auto_match_clip_value(alias, G):
    q = Q.get(alias)
    expected = ref_clip_value(alias, G)
    assert q.clip_value(G) == expected
    assert q.clip_value(G) == float(np.max(np.abs(q.levels(G))))
    clip = C.for_quantizer(q, G)
    assert isinstance(clip, C.Clip) and clip.max_value == expected
    auto = C.resolve("auto", q, G)
    assert isinstance(auto, C.Clip) and auto.max_value == expected
    assert C.resolve(C.AUTO, q, G).max_value == expected


@pytest.mark.parametrize("q,expected", [
    (Q.Binary(scale=0.25), 0.25),
    (Q.Ternary(scale=0.3), float(F32(0.3))),
    (Q.Pow2Ternary(exponent=-1), 0.5),
    (Q.Exponential(max_exponent=2, num_levels=3), 4.0),
], ids=repr)
def test_for_quantizer_explicit_scale_needs_no_bound(q, expected):
    assert C.for_quantizer(q, None).max_value == expected
    assert C.for_quantizer(q, 123.0).max_value == expected  # explicit scale wins
    assert C.resolve("auto", q, None).max_value == expected


@pytest.mark.parametrize("alias", ALIASES)
def test_auto_without_bound_for_default_scale_raises(alias):
    with pytest.raises(ValueError, match="glorot_bound"):
        C.resolve("auto", Q.get(alias), None)


def test_resolve_other_specs():
    q = Q.get("ternary")
    assert C.resolve("auto", None, 0.5) is None  # nothing to clip for a float weight
    assert C.resolve(None, q, 0.5) is None  # explicit None turns clipping off
    clip = C.Clip(0.3)
    assert C.resolve(clip, q, 0.5) is clip
    assert isinstance(C.resolve("non_neg", q, 0.5), keras.constraints.NonNeg)
    mn = C.resolve({"class_name": "MaxNorm", "config": {"max_value": 2.0}}, q, 0.5)
    assert isinstance(mn, keras.constraints.MaxNorm)
    with pytest.raises(ValueError):
        C.resolve("no_such_constraint", q, 0.5)


# --------------------------------------------------------------------------------------
# Clipping does not change the rounding (property)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ["binary", "ternary", "pow2_ternary", "exponential"])
@HSET
@given(w=st.tuples(st.integers(1, 8), st.integers(1, 8))
       .filter(lambda s: s[0] + s[1] not in (3, 12))
       .flatmap(lambda s: hnp.arrays(F32, s, elements=finite)))
def test_clipping_preserves_deterministic_rounding(alias, w):
    """Beyond the clip value every weight rounds to the largest level anyway, so
    Q(clip(W)) == Q(W): the constraint never changes what the layer computes."""
    q = Q.get(alias)
    G = math.sqrt(6 / (w.shape[0] + w.shape[1]))
    clip = C.resolve("auto", q, G)
    clipped = np_out(clip(w))
    assert (np.abs(clipped) <= q.clip_value(G)).all()
    np.testing.assert_array_equal(np_out(q(clipped)), np_out(q(w)))
