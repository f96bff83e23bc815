"""The flatbuffer rewrites after conversion, in order: route-specific preparation, the
integer-only check, exact weights, stream state I/O, activation ranges, unrolling,
buffer sharing, metadata. Each pass is one function of the flatbuffer modules; this
module only decides which run and in what order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keras_lowprec.export.plan import ends_with_sequence

METADATA_FORMAT = "keras_lowprec.export/1"


@dataclass
class Rewritten:
    """What the rewrites produced: the model, the encoding of each weight tensor (dicts of
    ``TensorRecord``), the number of state inputs a stream invoke takes, how many
    activation input ranges were tightened."""

    model_bytes: bytes
    tensors: list[dict] = field(default_factory=list)
    n_states: int = 0
    tightened: int = 0


def run(raw: bytes, plan, route, mode: str, stream_timesteps: int | None) -> Rewritten:
    """All rewrites of the converted model ``raw`` (``stream_timesteps``: the length the
    fused graph was converted with, set to 1 for a fused stream export)."""
    from keras_lowprec.export.tflite import (TFLiteModel, activations, checks, exact_weights, fused_lstm,
                                             metadata as meta, unroll)

    fb = TFLiteModel.from_bytes(raw)
    if route.fused:
        fused_lstm.prepare(fb, len(plan.recurrent), stream_timesteps if mode == "stream" else None)
    checks.check_integer_only(fb)
    records = exact_weights.encode_weights(fb, plan.weights, _optional_weights(plan, route))
    n_states = 0 if route.fused else len(plan.state_sizes)  # fused: the op's variable tensors
    if route.build == "stream" and not route.fused:
        _state_io(fb, plan, n_states)
    # Inputs of TANH / LOGISTIC: no wider than the range that changes their int8 output.
    tightened = activations.tighten_saturating_inputs(fb)
    tensors = [r.as_dict() for r in records]
    if route.via_stream:
        remap = unroll.unroll_stream(fb, plan.timesteps, n_states, ends_with_sequence(plan))
        tensors = [dict(r, index=remap[r["index"]]) for r in tensors if r["index"] in remap]
        n_states = 0
    exact_weights.dedupe_buffers(fb)
    meta.add_metadata(fb, meta.METADATA_NAME, metadata(plan, route, mode, tensors))
    model_bytes = fb.to_bytes()
    checks.check_integer_only(TFLiteModel.from_bytes(model_bytes))
    return Rewritten(model_bytes, tensors, n_states, tightened)


def _optional_weights(plan, route) -> tuple[str, ...]:
    """Weights the converter may fold away: with one time step the recurrent kernels
    multiply the zero initial state."""
    if route.build == "sequence" and plan.timesteps == 1:
        return tuple(w.key for w in plan.weights if w.name == "recurrent_kernel")
    return ()


def _state_io(fb, plan, n_states: int) -> None:
    from keras_lowprec.export.tflite import state_io

    state_io.order_stream_io(fb, plan.state_sizes)
    state_io.share_state_quantization(fb, [(1 + i, 1 + i) for i in range(n_states)])


def lstm_info(plan, route) -> dict | None:
    """How the model's LSTMs run (None without an LSTM)."""
    if not any(s.params.get("cell") == "LSTM" for s in plan.recurrent):
        return None
    if route.fused:
        return {"kernel": "fused", "op": "UNIDIRECTIONAL_SEQUENCE_LSTM", "cell_state": "int16"}
    return {"kernel": "unrolled", "cell_state": "int8", "why_not_fused": route.unfused_reason}


def metadata(plan, route, mode: str, tensors: list[dict]) -> dict[str, Any]:
    """The ``keras_lowprec`` metadata entry of the flatbuffer (``read_metadata``)."""
    out = {
        "format": METADATA_FORMAT,
        "mode": mode,
        "timesteps": plan.timesteps if mode == "sequence" else None,
        "features": plan.features,
        "state": route.state,
        "state_names": plan.state_names,
        "lstm": lstm_info(plan, route),
        "tensors": [{k: r[k] for k in ("index", "name", "weight", "encoding", "scale")} for r in tensors],
    }
    if plan.mask_value is not None:
        out["mask_value"] = plan.mask_value
    return out
