"""The float twins: TensorFlow functions of the plan with the rounded weights.

* :func:`step_function`: one time step per call, the recurrent state passed in and out as
  explicit tensors (``x_t, state_0, ... -> y_t, new_state_0, ...``): the stream export,
  and, repeated in the flatbuffer (``tflite.unroll``), the sequence export;
* :func:`sequence_function`: batch 1, ``timesteps`` fixed, the time loop unrolled in Python
  (a Keras 3 RNN converts to a WHILE loop, which int8 calibration cannot handle): the
  sequence export of a model that cannot run step by step (``plan.check_streamable``).

Each stage contributes through its handler (``apply``, recurrent ``step``), so the twin
computes what the trained model computes at inference.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from keras_lowprec.export.plan import Plan


def sequence_function(plan: Plan) -> Callable:
    """``tf.function`` of input ``(1, T, F)`` float32: the unrolled float twin."""
    import tensorflow as tf

    _build(plan)
    T, F = plan.timesteps, plan.features

    @tf.function(input_signature=[tf.TensorSpec((1, T, F), tf.float32, name="input")])
    def sequence(x):
        for stage in plan.stages:
            if not stage.handler.recurrent:
                x = stage.handler.apply(stage, x)
                continue
            states = [tf.zeros((1, stage.units), tf.float32) for _ in range(stage.n_states)]
            outs = []
            for t in range(T):
                h, states = stage.handler.step(stage, x[:, t, :], states)
                outs.append(h)
            x = tf.stack(outs, axis=1) if stage.return_sequences else outs[-1]
        return x

    return sequence


def step_function(plan: Plan) -> Callable:
    """``tf.function`` of ``(x_t (1, F), *states (1, U))`` -> ``(y_t, *new_states)``."""
    import tensorflow as tf

    _build(plan)
    specs = [tf.TensorSpec((1, plan.features), tf.float32, name="input")]
    specs += [tf.TensorSpec((1, n), tf.float32, name=f"state_{i}") for i, n in enumerate(plan.state_sizes)]

    @tf.function(input_signature=specs)
    def step(x, *states):
        new_states = []
        k = 0
        for stage in plan.stages:
            if not stage.handler.recurrent:
                x = stage.handler.apply(stage, x)
                continue
            x, new = stage.handler.step(stage, x, list(states[k:k + stage.n_states]), stream=True)
            new_states.extend(new)
            k += stage.n_states
        return (x, *new_states)

    return step


def _build(plan: Plan) -> None:
    """Creates the stages' twin layers before tracing (Keras variables are not created
    inside a ``tf.function``)."""
    for stage in plan.stages:
        stage.handler.build(stage)


def stream_reference(plan: Plan, x) -> tuple[list[np.ndarray], Any]:
    """Runs the float step twin over ``x`` (N, T, F) or a list of (T_i, F) sequences.

    Returns ``(samples, outputs)`` where ``samples`` is a list of ``[x_t, *states]`` float32
    arrays (batch 1) and ``outputs`` the per-step outputs ``(N, T, ...)`` (a list of
    ``(T_i, ...)`` arrays when the sequences differ in length).
    """
    step = step_function(plan)
    samples, outputs = [], []
    for seq in x:
        states = [np.zeros((1, n), np.float32) for n in plan.state_sizes]
        outs = []
        for t in range(seq.shape[0]):
            xt = seq[t][None, :].astype(np.float32)
            samples.append([xt, *states])
            res = step(xt, *states)
            states = [r.numpy() for r in res[1:]]
            outs.append(res[0].numpy()[0])
        outputs.append(np.stack(outs))
    if len({o.shape for o in outputs}) == 1:
        return samples, np.stack(outputs)
    return samples, outputs
