"""The keras_lowprec C runtime exporter: ``to_c`` writes a model as C99 for ``export/c/klp.h``.

Modules: ``packing`` (weight bytes), ``model`` (the integer model and its fixed-point
formats), ``quantize`` (Keras -> integer model, calibration), ``reference`` (NumPy, bit-exact
with the C code), ``codegen`` (C source and header), ``build`` (compile and run the test
program on the host and under QEMU), ``api`` (``to_c``).
"""

from keras_lowprec.export.cruntime.api import CExport, to_c

__all__ = ["CExport", "to_c"]
