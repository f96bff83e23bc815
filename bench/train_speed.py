"""Training-step and inference speed of quantized RNN layers vs their Keras float twins.

In one process, side by side: for each case a float model (``keras.layers.LSTM`` /
``GRU``) and a quantized one (``QuantLSTM`` / ``QuantGRU`` with ternary weights,
deterministic or stochastic) of the same size. Timings are interleaved
(float, quantized, float, quantized, ...) so that load on the machine hits both
alike; the median over repeats is reported. One JSON line per case:
``ratio = quantized / float`` (target <= 1.10 on CPU).

    python bench/train_speed.py --out results/train_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_lowprec import layers as L  # noqa: E402
from keras_lowprec import quantizers as Q  # noqa: E402

FLOAT = {"LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU}
QUANT = {"LSTM": L.QuantLSTM, "GRU": L.QuantGRU}


def make_model(layer: keras.layers.Layer, steps: int, inputs: int) -> keras.Model:
    model = keras.Sequential([keras.Input((steps, inputs)), layer, keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_case(kind: str, quantizer: str, args) -> list[dict]:
    rng = np.random.RandomState(0)
    x = rng.randn(args.batch, args.steps, args.inputs).astype("float32")
    y = rng.randint(0, 10, size=args.batch)
    float_model = make_model(FLOAT[kind](args.units), args.steps, args.inputs)
    q = Q.get(quantizer)
    quant_model = make_model(
        QUANT[kind](args.units, kernel_quantizer=q, recurrent_quantizer=Q.get(quantizer), bias_quantizer=Q.get(quantizer)),
        args.steps,
        args.inputs,
    )
    rows = []
    for phase in ("train_step", "inference"):
        fns = {}
        for name, model in (("float", float_model), ("quantized", quant_model)):
            if phase == "train_step":
                fns[name] = lambda m=model: m.train_on_batch(x, y)
            else:
                fns[name] = lambda m=model: m.predict_on_batch(x)
            timed(fns[name], args.warmup)  # trace and warm up
        samples = {"float": [], "quantized": []}
        for _ in range(args.rounds):  # interleave
            for name in ("float", "quantized"):
                samples[name] += timed(fns[name], args.repeats)
        f, qt = statistics.median(samples["float"]), statistics.median(samples["quantized"])
        rows.append({
            "case": f"{kind}/{quantizer}/{phase}",
            "layer": QUANT[kind].__name__,
            "quantizer": quantizer,
            "phase": phase,
            "float_ms": round(1e3 * f, 2),
            "quantized_ms": round(1e3 * qt, 2),
            "ratio": round(qt / f, 3),
            "target": 1.10,
            "meets_target": qt / f <= 1.10,
            "batch": args.batch, "steps": args.steps, "inputs": args.inputs, "units": args.units,
            "samples_each": len(samples["float"]),
        })
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--inputs", type=int, default=50)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["LSTM", "GRU"], choices=list(FLOAT))
    parser.add_argument("--quantizers", nargs="+", default=["ternary", "stochastic_ternary"])
    parser.add_argument("--out", help="also write the JSON lines to this file")
    args = parser.parse_args(argv)

    rows = []
    for kind in args.kinds:
        for quantizer in args.quantizers:
            for row in bench_case(kind, quantizer, args):
                row.update(backend=keras.backend.backend(), keras=keras.__version__, machine=platform.machine(),
                           cpus=os.cpu_count())
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


if __name__ == "__main__":
    main()
