"""keras_lowprec: recurrent networks with binary, ternary, pow2-ternary and exponential
weights for Keras 3 (Ott et al., 2016), exported to TensorFlow Lite Micro."""

from keras_lowprec import constraints, layers, quantizers
from keras_lowprec.convert import quantize_model
from keras_lowprec.summary import summary

__version__ = "0.1.0"

__all__ = ["constraints", "layers", "quantizers", "quantize_model", "summary", "__version__"]
