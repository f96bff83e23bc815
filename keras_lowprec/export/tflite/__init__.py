"""The exporter's TFLite flatbuffer rewrites, on a typed model wrapper.

:class:`~keras_lowprec.export.tflite.model.TFLiteModel` (``model``) reads, edits and writes
a flatbuffer; each rewrite pass is a module of functions taking a ``TFLiteModel`` first:

* ``exact_weights``: exact weight encoding, int32 bias requantization, buffer (un)sharing;
* ``state_io``: stream graphs' input/output order and shared state quantization;
* ``activations``: TANH / LOGISTIC input ranges;
* ``unroll``: the sequence graph made of the stream step;
* ``fused_lstm``: fused LSTM graphs (int16 intermediates, single step);
* ``decode``: around TFLM's LUT compression (specs, per-tensor scales, shared DECODEs);
* ``checks``: integer-only check, I/O quantization, weight bytes, op names;
* ``metadata``: the ``keras_lowprec`` JSON metadata entry.

Nothing here imports Keras or TensorFlow: the schema is ``tflite_micro``'s.
"""

from keras_lowprec.export.tflite.model import Operator, Subgraph, Tensor, TFLiteModel, check_model_bytes

__all__ = ["TFLiteModel", "Subgraph", "Tensor", "Operator", "check_model_bytes"]
