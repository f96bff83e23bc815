"""``report.json``: what an export is (graph, state, ops, sizes) and how exact its weights are."""

from __future__ import annotations

from typing import Any

from keras_lowprec.export.encodings import EXACT
from keras_lowprec.export.rewrite import lstm_info


def build(plan, route, mode: str, rewritten, seconds: float) -> dict[str, Any]:
    """The report of a rewritten model, before verification."""
    from keras_lowprec.export.tflite import TFLiteModel, checks

    fb = TFLiteModel.from_bytes(rewritten.model_bytes)
    tensors = rewritten.tensors
    return {
        "mode": mode,
        # "fused-lstm", "step", "unrolled-step" or "unrolled": see ``routes``
        "graph": route.graph,
        "timesteps": plan.timesteps if mode == "sequence" else None,
        "features": plan.features,
        "state": route.state,
        "state_names": plan.state_names,
        "lstm": lstm_info(plan, route),
        "kernel_sets": "reference" if route.not_on_cmsis_nn else "any",
        "not_on_cmsis_nn": route.not_on_cmsis_nn,
        "ops": checks.op_names(fb),
        "io": checks.io_quantization(fb),
        "model_bytes": len(rewritten.model_bytes),
        "weight_bytes": checks.weight_bytes(fb),
        "int8_weight_bytes": checks.weight_bytes(fb, int8_only=True),
        "weights": weights(plan, tensors),
        "tensors": tensors,
        "exactness": exactness(tensors),
        "tightened_activation_ranges": rewritten.tightened,
        "masking": plan.masking,
        "convert_seconds": round(seconds, 3),
    }


def weights(plan, tensors: list[dict]) -> dict[str, dict]:
    """Per rounded weight: its encoding and the tensors holding it. ``exact``: every tensor
    holding (a gate of) it is exact; None when the converter kept no tensor of it (all-zero,
    or a bias folded away)."""
    out = {}
    for w in plan.weights:
        holders = [r for r in tensors if r["weight"] == w.key]
        out[w.key] = {
            "method": w.method, "encoding": w.encoding, "scale": w.scale,
            "channel_scale": w.channel_scale is not None,
            "levels": None if w.levels is None else [float(v) for v in w.levels],
            "tensors": [r["index"] for r in holders],
            "exact": (all(bool(r["exact"]) for r in holders) if holders else None),
            "max_abs_error": max((r["max_abs_error"] or 0.0 for r in holders), default=None),
        }
    return out


def exactness(tensors: list[dict]) -> dict[str, Any]:
    exact = [r for r in tensors if r["encoding"] in EXACT]
    return {
        "all_exact": all(r["exact"] for r in exact),
        "exact_tensors": len(exact),
        "plain_int8_tensors": sum(r["encoding"] == "int8" for r in tensors),
        "constant_tensors": sum(r["encoding"] == "int8-constant" for r in tensors),
        "int32_bias_tensors": sum(r["encoding"] == "int32-bias" for r in tensors),
    }
