"""Probe: which int8 rounding of a SimpleRNN stream export costs argmax agreement with Keras?

Trains the export benchmark's ternary SimpleRNN (``bench/export_size_latency.py``: digits,
30 epochs, same seed), exports it in stream mode as the benchmark does and reads the int8
scale and zero point of every activation of the step graph
(``FULLY_CONNECTED(x) -> a``, ``FULLY_CONNECTED(h) -> r``, ``ADD -> z``, ``TANH -> h``,
``FULLY_CONNECTED(h) -> y``, and the input ``x``). A NumPy model of the step then rounds
any subset of those tensors to their int8 grids (float math otherwise, the exact rounded
weights) and measures argmax agreement with Keras on the 360 test sequences: all of them
(the simulation's stand-in for TFLM, which also reports its own figure), each one alone,
all but one, and all but ``a`` and ``r`` (what one merged product before TANH would leave).
Writes ``results/probes/stream_roundings_simplernn<units>_ternary.json``.

    python examples/probes/stream_roundings.py --units 16
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import export_size_latency as bench  # noqa: E402
import numpy as np  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--units", type=int, default=16)
parser.add_argument("--epochs", type=int, default=30)
args = parser.parse_args()
OUT = os.path.join(HERE, "..", "..", "results", "probes", f"stream_roundings_simplernn{args.units}_ternary.json")

import keras  # noqa: E402

from keras_lowprec.export import to_tflite, verify  # noqa: E402
from keras_lowprec.export.tflite import TFLiteModel  # noqa: E402

x_train, y_train, x_test, y_test = bench.digits()
model = bench.build("Ternary", "SimpleRNN", args.units)
model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
reference = model.predict(x_test, verbose=0)
agree_keras = reference.argmax(-1)
res = to_tflite(model, x_train[:300], mode="stream", verify_data=x_test, max_verify=len(x_test))

# The step graph's activations, by the op that writes them.
fb = TFLiteModel.from_bytes(res.model_bytes)
sg = fb.subgraph.raw
ops = [(op.name, op.raw) for op in fb.operators]
names = [n for n, _ in ops]
if names != ["FULLY_CONNECTED", "FULLY_CONNECTED", "ADD", "TANH", "FULLY_CONNECTED"]:
    raise SystemExit(f"unexpected step graph {names}")


def quant(index):
    q = sg.tensors[index].quantization
    return float(q.scale[0]), int(q.zeroPoint[0])


grid = {"x": quant(sg.inputs[0]), "a": quant(ops[0][1].outputs[0]), "r": quant(ops[1][1].outputs[0]),
        "z": quant(ops[2][1].outputs[0]), "h": quant(ops[3][1].outputs[0]), "y": quant(ops[4][1].outputs[0])}
rnn, head = model.layers[0], model.layers[1]
w = {k: keras.ops.convert_to_numpy(v).astype(np.float64) for k, v in rnn.quantized_weights().items()}
v = {k: keras.ops.convert_to_numpy(v).astype(np.float64) for k, v in head.quantized_weights().items()}


def rounded(value, name, on):
    if name not in on:
        return value
    return verify.dequantize(verify.quantize(value, *grid[name]), *grid[name])


def agreement(on) -> float:
    h = np.zeros((len(x_test), args.units))
    for t in range(x_test.shape[1]):
        x = rounded(x_test[:, t], "x", on)
        a = rounded(x @ w["kernel"] + w["bias"], "a", on)
        r = rounded(h @ w["recurrent_kernel"], "r", on)
        h = rounded(np.tanh(rounded(a + r, "z", on)), "h", on)
    y = rounded(h @ v["kernel"] + v["bias"], "y", on)
    return float(np.mean(y.argmax(-1) == agree_keras))


every = set(grid)
out = {
    "command": f"python examples/probes/stream_roundings.py --units {args.units} --epochs {args.epochs}",
    "model": f"TernarySimpleRNN({args.units}) + TernaryDense(10), digits, {args.epochs} epochs (the benchmark's)",
    "keras_accuracy": float(np.mean(agree_keras == y_test)),
    "tflm_argmax_agreement_with_keras": res.verification["tflm"]["argmax_agreement"],
    "tflm_output_grid_ceiling": res.verification["tflm"]["output_grid_ceiling"],
    "grids": {k: {"scale": s, "zero_point": z} for k, (s, z) in grid.items()},
    "simulated_agreement": {
        "no_rounding": agreement(set()),
        "all": agreement(every),
        "only": {k: agreement({k}) for k in grid},
        "all_but": {k: agreement(every - {k}) for k in grid},
        "all_but_a_and_r": agreement(every - {"a", "r"}),
    },
    "test_sequences": len(x_test),
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as fh:
    json.dump(out, fh, indent=2)
    fh.write("\n")
print(json.dumps(out, indent=2))
