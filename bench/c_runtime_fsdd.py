"""The C runtime on spoken digits: accuracy of the exported integer model against Keras.

Trains the quick-budget conventional-split FSDD model (96 units, Masking on the padded
log-mel frames, 30 epochs, best validation epoch kept; ``examples/common.py``) for each
rounding method, exports it with ``keras_lowprec.export.to_c`` and runs the 300 test
utterances through the NumPy reference of the runtime's integer arithmetic, which the tests
show bit-exact with the C code on the host, Cortex-M4 and Cortex-M0. Each utterance is fed
its real frames only, as firmware does. Writes ``results/c_runtime_fsdd.json``.

    python bench/c_runtime_fsdd.py --out results/c_runtime_fsdd.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import common  # noqa: E402


def measure(cell: str, method: str, seed: int, tmp: str) -> dict:
    from keras_lowprec import datasets
    from keras_lowprec.export import to_c
    from keras_lowprec.export.targets.c import predict_real_frames

    settings = dict(cell=cell, method=method, units=96, epochs=30, batch_size=32, lr=2e-3, normalize="global",
                    noise=0.3, dropout=0.3, seed=seed)
    result, model = common.train_fsdd(settings, common.default_data_dir(), tmp, verbose=0)
    data = datasets.fsdd(common.default_data_dir(), normalize="global")
    keras_pred = np.asarray(model.predict(data.test.x, verbose=0)).argmax(-1)
    res = to_c(model, data.train.x[:400], os.path.join(tmp, f"{cell}_{method}"), verify_data=data.test.x[:8])
    c_pred = predict_real_frames(res.model, 0.0, data.test.x).argmax(-1)
    return {"cell": cell, "method": method, "seed": seed, "test_utterances": int(len(data.test.y)),
            "keras_test_accuracy": float(np.mean(keras_pred == data.test.y)),
            "c_test_accuracy": float(np.mean(c_pred == data.test.y)),
            "c_keras_argmax_agreement": float(np.mean(c_pred == keras_pred)),
            "bits_per_weight": res.report["bits_per_weight"], "flash_bytes": res.report["flash_bytes"],
            "ram_bytes": res.report["ram_bytes"]["total"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/c_runtime_fsdd.json")
    parser.add_argument("--cells", nargs="+", default=["lstm"])
    parser.add_argument("--methods", nargs="+", default=["ternary", "exponential"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells:
            for method in args.methods:
                row = measure(cell, method, args.seed, tmp)
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"command": "python bench/c_runtime_fsdd.py " + " ".join(argv or sys.argv[1:]), "rows": rows}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    for r in rows:
        print(f"{r['cell']} {r['method']}: Keras {r['keras_test_accuracy']:.2%}, C runtime "
              f"{r['c_test_accuracy']:.2%} ({r['c_test_accuracy'] - r['keras_test_accuracy']:+.2%}), "
              f"agreement {r['c_keras_argmax_agreement']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
