"""The data of an export: the calibration / verification split and the calibration samples
of each route."""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.errors import ExportError
from keras_lowprec.export.options import check_representative_data
from keras_lowprec.export.plan import real_frames

MAX_CALIBRATION_SAMPLES = 400
# Stream step graphs (and the sequence exports made of them) calibrate on single steps
# (cheap samples): more of them cover the range of the states (docs/export.md).
MAX_STREAM_CALIBRATION_STEPS = 4000


def split(data: np.ndarray, plan, opts) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(calibration, verification, held_out)``. Without ``verify_data`` the last fifth of
    ``data`` is held out when it has at least 10 sequences (else both are ``data``);
    verification keeps at most ``max_verify`` sequences."""
    seq_t = plan.timesteps if opts.mode == "sequence" else None
    data = check_representative_data(data, plan.features, seq_t)
    if opts.mode == "stream" and plan.timesteps is not None and data.shape[1] != plan.timesteps:
        raise ExportError(
            f"representative_data: {data.shape[1]} timesteps, but the model's time axis is {plan.timesteps}.")
    if opts.verify_data is not None:
        # Stream mode runs any length unless the model fixes it.
        t_verify = plan.timesteps if (opts.mode == "sequence" or plan.timesteps is not None) else None
        held = check_representative_data(opts.verify_data, plan.features, t_verify, name="verify_data")
        calib, held_out = data, True
    elif len(data) >= 10:
        k = max(1, len(data) // 5)
        calib, held, held_out = data[:-k], data[-k:], True
    else:
        calib, held, held_out = data, data, False
    return calib, held[:opts.max_verify], held_out


def spread(n: int, k: int) -> np.ndarray:
    """At most ``k`` indices spread evenly over ``range(n)``."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int))


def real_sequences(plan, x: np.ndarray, name: str) -> list:
    """Stream mode: the sequences of ``x`` as firmware feeds them (Masking: real frames only,
    sequences without any real frame left out)."""
    seqs = real_frames(x, plan.mask_value)
    if plan.mask_value is not None:
        seqs = [s for s in seqs if len(s)]
        if not seqs:
            raise ExportError(f"{name}: every frame equals the Masking layer's mask_value {plan.mask_value:g}; "
                              "no real frame to calibrate or verify on.")
    return seqs


def sequence_samples(calib: np.ndarray) -> list[list[np.ndarray]]:
    """Calibration samples of a whole-sequence graph: batch-1 sequences."""
    return [[calib[i:i + 1]] for i in spread(len(calib), MAX_CALIBRATION_SAMPLES)]


def fused_samples(seqs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Calibration samples of the fused-LSTM graph from equal-length sequences."""
    return [[seqs[i][None]] for i in spread(len(seqs), MAX_CALIBRATION_SAMPLES)]


def step_samples(plan, calib: np.ndarray) -> list[list[np.ndarray]]:
    """Calibration samples of the step graph: ``[x_t, *states]`` of the float step twin run
    over the calibration sequences (Masking: their real frames only, what firmware feeds)."""
    from keras_lowprec.export import twin

    seqs = real_sequences(plan, calib, "representative_data")
    per_seq = max(1.0, float(np.mean([len(s) for s in seqs])))
    pick = spread(len(seqs), max(1, int(MAX_STREAM_CALIBRATION_STEPS // per_seq)))
    steps, _ = twin.stream_reference(plan, [seqs[i] for i in pick])
    return [steps[i] for i in spread(len(steps), MAX_STREAM_CALIBRATION_STEPS)]
