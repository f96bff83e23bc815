"""Steps of the export pipeline on their own, without the converter: analysis into a plan,
the route choice, the data split, the options' checks."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from keras_lowprec import layers as L
from keras_lowprec.export import ExportError, UnsupportedLayerError, analysis, data, routes
from keras_lowprec.export.options import ExportOptions

T, F = 5, 3


def _plan(*layers, mode="sequence", inp=None):
    model = keras.Sequential([keras.Input((T, F)) if inp is None else inp, *layers, L.TernaryDense(4)])
    return analysis.analyze(model, None, mode)


def test_plan_holds_stages_weights_and_states():
    plan = _plan(L.TernaryLSTM(6, return_sequences=True), keras.layers.Dropout(0.2), L.ExponentialGRU(5))
    assert [s.kind for s in plan.stages] == ["rnn", "identity", "rnn", "dense"]
    assert plan.state_names == [f"{plan.stages[0].name}/h", f"{plan.stages[0].name}/c", f"{plan.stages[2].name}/h"]
    assert plan.state_sizes == [6, 6, 5]
    enc = {(w.layer, w.name): w.encoding for w in plan.weights}
    assert enc[(plan.stages[0].name, "kernel")] == "ternary" and enc[(plan.stages[2].name, "kernel")] == "shift"
    assert set(plan.stages[0].params["pieces"]) == set("ifco")


@pytest.mark.parametrize("layers,mode,kernel,graph", [
    ([L.TernaryLSTM(6)], "sequence", "auto", "fused-lstm"),
    ([L.TernaryLSTM(6)], "stream", "auto", "step"),
    ([L.TernaryLSTM(6)], "stream", "fused", "fused-lstm"),
    ([L.TernaryLSTM(6)], "sequence", "unrolled", "unrolled-step"),
    ([L.TernaryGRU(6)], "sequence", "auto", "unrolled-step"),
    ([L.TernaryGRU(6, return_sequences=True), keras.layers.Flatten()], "sequence", "auto", "unrolled"),
])
def test_route_choice(layers, mode, kernel, graph):
    route = routes.choose(_plan(*layers, mode=mode), mode, kernel)
    assert route.graph == graph
    assert route.state == {"fused-lstm": "variables", "step": "io"}.get(graph)
    assert (route.not_on_cmsis_nn is not None) == (graph == "fused-lstm" and mode == "stream")


def test_fused_refused_with_the_reason():
    plan = _plan(L.TernaryLSTM(6, return_sequences=True), L.TernaryGRU(4))
    with pytest.raises(UnsupportedLayerError, match="lstm_kernel='fused'.*GRU"):
        routes.choose(plan, "sequence", "fused")
    assert "GRU" in routes.choose(plan, "sequence", "auto").unfused_reason


def test_split_holds_out_the_last_fifth():
    plan = _plan(L.TernaryGRU(6))
    x = np.arange(20 * T * F, dtype=np.float32).reshape(20, T, F)
    calib, held, held_out = data.split(x, plan, ExportOptions(max_verify=3).check())
    assert held_out and len(calib) == 16 and np.array_equal(held, x[16:19])
    calib, held, held_out = data.split(x[:9], plan, ExportOptions().check())
    assert not held_out and len(calib) == len(held) == 9
    with pytest.raises(ExportError, match="representative_data: 4 features per step, but the model expects 3"):
        data.split(np.zeros((4, T, 4), np.float32), plan, ExportOptions().check())


def test_step_samples_follow_real_frames_only():
    plan = _plan(keras.layers.Masking(0.0), L.TernaryGRU(6), mode="stream", inp=keras.Input((None, F)))
    x = np.ones((3, 6, F), np.float32)
    x[0, 2:] = 0.0  # two real frames
    samples = data.step_samples(plan, x)
    assert len(samples) == 2 + 6 + 6 and all(len(s) == 2 for s in samples)


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "batch"}, "mode must be one of sequence, stream"),
    ({"timesteps": 0}, "timesteps must be a positive integer"),
    ({"max_verify": True}, "max_verify must be a positive integer"),
    ({"lstm_kernel": "cudnn"}, "lstm_kernel must be one of auto, fused, unrolled"),
    ({"compress": "lz4"}, "compress must be False, True, 'auto' or 'flash'"),
    ({"verify": "yes"}, "verify must be True or False"),
])
def test_options_name_the_bad_argument(kwargs, message):
    with pytest.raises(ExportError, match=message):
        ExportOptions(**kwargs).check()
