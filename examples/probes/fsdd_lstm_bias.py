"""Probe, validation split only: is the ternary LSTM's gap to float on the conventional FSDD
split the rounded bias? (The forget-gate bias of 1 is clipped to the bias quantizer's largest
level, G of the input kernel, about 0.21 here.)

Trains the quick budget's conventional-split ternary LSTM (96 units, 30 epochs, global
normalization, Gaussian noise 0.3, dropout 0.3, best validation epoch kept) twice, with
rounded biases (the paper's setting) and with float biases (``bias_quantizer=None``), and
the float LSTM as reference; writes validation accuracy (takes 5-9) to
``results/probes/fsdd_lstm_bias.json``.

    python examples/probes/fsdd_lstm_bias.py
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import common  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "results", "probes", "fsdd_lstm_bias.json")
SETTINGS = dict(cell="lstm", units=96, epochs=30, batch_size=32, lr=2e-3, normalize="global", noise=0.3, dropout=0.3)
rnn_layer = common.rnn_layer
out = {}
for name, method, extra in [("float", "float", {}), ("ternary", "ternary", {}),
                            ("ternary, float bias", "ternary", {"bias_quantizer": None})]:
    common.rnn_layer = lambda *a, _extra=extra, **kw: rnn_layer(*a, **kw, **_extra)
    with tempfile.TemporaryDirectory() as scratch:
        result, model = common.train_fsdd({**SETTINGS, "method": method}, common.default_data_dir(), scratch,
                                          verbose=0)
    out[name] = {"validation_accuracy": result["validation_accuracy"], "best_epoch": result["best_epoch"]}
    print(name, out[name], flush=True)
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as fh:
    json.dump({"command": "python examples/probes/fsdd_lstm_bias.py", "settings": SETTINGS, "results": out}, fh,
              indent=1)
