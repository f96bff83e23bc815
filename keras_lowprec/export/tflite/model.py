"""A typed view of a TFLite flatbuffer, shared by every rewrite pass of the exporter.

:class:`TFLiteModel` wraps the mutable object-API tree (``ModelT``) of TFLite's schema as
shipped with ``tflite_micro`` (a superset of TensorFlow's copy; no TensorFlow import).
It gives the idioms every pass needs in one place:

* tensor names as ``str`` (the object API gives ``bytes`` after reading, ``str`` after a
  pass assigned one), types by name (``"INT8"``), shapes as ``list[int]``;
* a tensor's constant data as a numpy array of its dtype and shape (:attr:`Tensor.array`)
  and its quantization as arrays (:attr:`Tensor.scales`, ...);
* operator names as TFLite spells them (``FULLY_CONNECTED``, ``CUSTOM:TFLM_DECODE``),
  operator codes added on demand (:meth:`TFLiteModel.opcode_index`);
* consumers and producers of a tensor, new tensors made like an existing one;
* the ``keras_lowprec`` metadata entry;
* :meth:`TFLiteModel.to_bytes` with TFLM's 16-byte buffer alignment (an error, never a
  silently unaligned file, when the alignment tool is missing).

Views (:class:`Tensor`, :class:`Operator`, :class:`Subgraph`) hold no state of their own:
they read and write the underlying schema objects, so a pass may mix them with
:attr:`TFLiteModel.raw` where it truly needs a field the views do not cover. A
:class:`Tensor` remembers the index it was looked up at; after a pass that renumbers
tensors (``drop_unused_tensors``) look tensors up again.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from typing import Iterator

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from keras_lowprec.export.errors import ExportError

FILE_IDENTIFIER = b"TFL3"
# numpy dtypes of the tensor types whose data the passes read (others: no array).
_DTYPES = {"INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "FLOAT32": np.float32,
           "INT64": np.int64, "UINT8": np.uint8}


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_OPERATOR_NAMES = _enum_names(schema.BuiltinOperator)
_TYPE_NAMES = _enum_names(schema.TensorType)


def text(value) -> str:
    """A flatbuffer string as ``str`` (``bytes`` after reading, ``str`` once assigned)."""
    return value.decode() if isinstance(value, bytes) else str(value or "")


def type_name(t: int) -> str:
    """Name of TFLite tensor type ``t`` (``"INT8"``...)."""
    return _TYPE_NAMES[t]


def check_model_bytes(model_bytes, name: str = "model_bytes") -> None:
    """Cheap checks before a flatbuffer is parsed or handed to an interpreter: bytes-like,
    at least a header, and TFLite's file identifier ``TFL3`` at offset 4."""
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise ExportError(f"{name}: expected the bytes of a .tflite model, got {type(model_bytes).__name__}.")
    data = bytes(model_bytes[:8])
    if len(model_bytes) < 16 or data[4:8] != FILE_IDENTIFIER:
        raise ExportError(f"{name}: not a TFLite flatbuffer ({len(model_bytes)} bytes without the 'TFL3' file "
                          "identifier); pass the bytes of a model written by to_tflite (model.tflite).")


def _as_uint8(data) -> np.ndarray:
    """Buffer contents as the uint8 array the schema packs (a copy)."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes()
    return np.frombuffer(bytes(data), dtype=np.uint8).copy()


class Tensor:
    """One tensor of a subgraph (a view of its ``TensorT``, :attr:`raw`)."""

    __slots__ = ("model", "raw", "index")

    def __init__(self, model: TFLiteModel, raw, index: int | None = None):
        self.model, self.raw, self.index = model, raw, index

    def __eq__(self, other) -> bool:
        return isinstance(other, Tensor) and other.raw is self.raw

    def __hash__(self) -> int:
        return id(self.raw)

    def __repr__(self) -> str:
        return f"Tensor({self.index}, {self.name!r}, {self.type_name}, {self.shape})"

    @property
    def name(self) -> str:
        return text(self.raw.name)

    @name.setter
    def name(self, value: str) -> None:
        self.raw.name = value

    @property
    def type_name(self) -> str:
        return type_name(self.raw.type)

    @type_name.setter
    def type_name(self, value: str) -> None:
        self.raw.type = getattr(schema.TensorType, value)

    @property
    def dtype(self):
        """The numpy dtype of the tensor's data, None for types the passes do not read."""
        return _DTYPES.get(self.type_name)

    @property
    def shape(self) -> list[int]:
        return [] if self.raw.shape is None else [int(d) for d in self.raw.shape]

    @shape.setter
    def shape(self, value) -> None:
        self.raw.shape = value

    @property
    def shape_signature(self) -> list[int] | None:
        sig = self.raw.shapeSignature
        return None if sig is None else [int(d) for d in sig]

    @property
    def buffer(self) -> int:
        return int(self.raw.buffer)

    @buffer.setter
    def buffer(self, value: int) -> None:
        self.raw.buffer = value

    @property
    def data(self) -> bytes | None:
        """The bytes of the tensor's buffer; None for an activation (empty buffer)."""
        return self.model.buffer_data(self.raw.buffer)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def array(self) -> np.ndarray | None:
        """The constant data as an array of the tensor's dtype and shape (flat when the
        shape does not fit the data); None for an activation or a type without dtype."""
        data, dtype = self.data, self.dtype
        if data is None or dtype is None:
            return None
        arr = np.frombuffer(data, dtype=dtype)
        shape = self.shape if self.raw.shape is not None else [arr.size]
        return arr.reshape(shape) if int(np.prod(shape)) == arr.size else arr

    @array.setter
    def array(self, value: np.ndarray) -> None:
        # Written through the tensor's buffer: every tensor sharing it sees the new data
        # (passes that rewrite data call exact_weights.unshare_buffers first).
        value = np.asarray(value)
        if value.dtype != self.dtype:
            raise ValueError(f"tensor '{self.name}' is {self.type_name}; got a {value.dtype} array.")
        if self.raw.shape is not None and value.size != int(np.prod(self.shape)):
            raise ValueError(f"tensor '{self.name}' has shape {self.shape}; got {value.size} values.")
        self.model.set_buffer_data(self.raw.buffer, value)

    # -- quantization ------------------------------------------------------------------
    def _quant(self) -> tuple[np.ndarray, np.ndarray, int]:
        q = self.raw.quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return np.array([], np.float32), np.array([], np.int64), 0
        return np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint, np.int64), int(q.quantizedDimension)

    @property
    def scales(self) -> np.ndarray:
        """float32 scales (empty when the tensor is not quantized)."""
        return self._quant()[0]

    @property
    def zero_points(self) -> np.ndarray:
        return self._quant()[1]

    @property
    def axis(self) -> int:
        """The quantized dimension of per-channel scales (0 when not quantized)."""
        return self._quant()[2]

    def set_quantization(self, scales, zero_points, axis: int | None = None) -> None:
        """Sets the scales and zero points (and the quantized dimension when ``axis`` is
        given); the other quantization fields are kept."""
        if self.raw.quantization is None:
            self.raw.quantization = schema.QuantizationParametersT()
        q = self.raw.quantization
        q.scale = [float(s) for s in scales]
        q.zeroPoint = [int(z) for z in zero_points]
        if axis is not None:
            q.quantizedDimension = int(axis)

    def dequantize(self, q: np.ndarray | None = None) -> np.ndarray:
        """Real values (float32) of the integer array ``q`` (default: the tensor's data)."""
        q = self.array if q is None else q
        scale, zp, axis = self._quant()
        q = q.astype(np.float64)
        if scale.size <= 1:
            return ((q - (zp[0] if zp.size else 0)) * (scale[0] if scale.size else 1.0)).astype(np.float32)
        shape = [1] * q.ndim
        shape[axis] = -1
        return ((q - zp.reshape(shape)) * scale.reshape(shape).astype(np.float64)).astype(np.float32)


class Operator:
    """One operator (a view of its ``OperatorT``, :attr:`raw`)."""

    __slots__ = ("model", "raw")

    def __init__(self, model: TFLiteModel, raw):
        self.model, self.raw = model, raw

    def __eq__(self, other) -> bool:
        return isinstance(other, Operator) and other.raw is self.raw

    def __hash__(self) -> int:
        return id(self.raw)

    def __repr__(self) -> str:
        return f"Operator({self.name}, {self.inputs} -> {self.outputs})"

    @property
    def name(self) -> str:
        """``FULLY_CONNECTED``..., ``CUSTOM:<code>`` for a custom operator."""
        return self.model.opcode_name(self.raw.opcodeIndex)

    @property
    def inputs(self) -> list[int]:
        """Tensor indices; -1 for an omitted optional input."""
        return [int(i) for i in self.raw.inputs] if self.raw.inputs is not None else []

    @inputs.setter
    def inputs(self, value) -> None:
        self.raw.inputs = [int(i) for i in value]

    @property
    def outputs(self) -> list[int]:
        return [int(i) for i in self.raw.outputs] if self.raw.outputs is not None else []

    @outputs.setter
    def outputs(self, value) -> None:
        self.raw.outputs = [int(i) for i in value]

    @property
    def intermediates(self) -> list[int] | None:
        return None if self.raw.intermediates is None else [int(i) for i in self.raw.intermediates]

    @intermediates.setter
    def intermediates(self, value) -> None:
        self.raw.intermediates = None if value is None else [int(i) for i in value]

    def copy(self) -> Operator:
        """A deep copy (options included), not yet part of any subgraph."""
        return Operator(self.model, copy.deepcopy(self.raw))


class _Tensors(Sequence):
    """The tensors of a subgraph as :class:`Tensor` views, made on access."""

    def __init__(self, model: TFLiteModel, raw: list):
        self._model, self._raw = model, raw

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self._raw)))]
        i = int(i)
        return Tensor(self._model, self._raw[i], i if i >= 0 else len(self._raw) + i)

    def __iter__(self) -> Iterator[Tensor]:
        return (Tensor(self._model, t, i) for i, t in enumerate(self._raw))


class Subgraph:
    """One subgraph (a view of its ``SubGraphT``, :attr:`raw`)."""

    __slots__ = ("model", "raw")

    def __init__(self, model: TFLiteModel, raw):
        self.model, self.raw = model, raw

    @property
    def tensors(self) -> _Tensors:
        """Index or iterate: :class:`Tensor` views carrying their index."""
        return _Tensors(self.model, self.raw.tensors)

    @property
    def operators(self) -> list[Operator]:
        """The operators in execution order (a new list: assign one to reorder or drop)."""
        return [Operator(self.model, op) for op in (self.raw.operators or [])]

    @operators.setter
    def operators(self, ops) -> None:
        self.raw.operators = [op.raw if isinstance(op, Operator) else op for op in ops]

    @property
    def inputs(self) -> list[int]:
        return [int(i) for i in self.raw.inputs]

    @inputs.setter
    def inputs(self, value) -> None:
        self.raw.inputs = [int(i) for i in value]

    @property
    def outputs(self) -> list[int]:
        return [int(i) for i in self.raw.outputs]

    @outputs.setter
    def outputs(self, value) -> None:
        self.raw.outputs = [int(i) for i in value]

    def consumer_map(self) -> dict[int, list[tuple[Operator, int]]]:
        """``{tensor index: [(operator, input position), ...]}`` in execution order, for
        every tensor some operator reads (a snapshot: recompute after rewiring)."""
        out: dict[int, list[tuple[Operator, int]]] = {}
        for op in self.operators:
            for pos, idx in enumerate(op.inputs):
                if idx >= 0:
                    out.setdefault(idx, []).append((op, pos))
        return out

    def consumers(self, index: int) -> list[tuple[Operator, int]]:
        """``(operator, input position)`` of every read of tensor ``index``."""
        return self.consumer_map().get(int(index), [])

    def producer_map(self) -> dict[int, Operator]:
        """``{tensor index: the operator that writes it}`` (the last one if several)."""
        return {o: op for op in self.operators for o in op.outputs}

    def producer(self, index: int) -> Operator | None:
        """The operator that writes tensor ``index``; None for inputs and constants."""
        return self.producer_map().get(int(index))

    def add_tensor(self, like: Tensor | int, name: str, shape=None) -> int:
        """Appends a copy of tensor ``like`` (type, quantization) named ``name`` as an
        activation (the empty buffer 0), with ``shape`` when given (then without shape
        signature); returns its index."""
        src = self.raw.tensors[int(like)] if not isinstance(like, Tensor) else like.raw
        t = copy.deepcopy(src)
        t.name = name
        t.buffer = 0
        if shape is not None:
            t.shape = list(shape)
            t.shapeSignature = None
        self.raw.tensors.append(t)
        return len(self.raw.tensors) - 1


class TFLiteModel:
    """A TFLite model being rewritten; :attr:`raw` is the schema's ``ModelT``."""

    def __init__(self, raw):
        self.raw = raw

    @classmethod
    def from_bytes(cls, model_bytes, name: str = "model_bytes") -> TFLiteModel:
        """Parses a flatbuffer; ``ExportError`` naming ``name`` if the bytes are not a TFLite model."""
        check_model_bytes(model_bytes, name)
        try:
            raw = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model_bytes), 0))
        except Exception as err:  # noqa: BLE001 - struct.error, IndexError... from a damaged buffer
            raise ExportError(f"{name}: not a readable TFLite flatbuffer ({type(err).__name__}: {err}).") from None
        return cls(raw)

    def to_bytes(self, align: bool = True) -> bytes:
        """The flatbuffer, with every buffer re-aligned to 16 bytes by TFLM's alignment tool
        (TFLM reads weights in place and needs it). ``align=False``: the plain packing,
        for inspection only. ``ExportError`` if the tool (tflite-micro) cannot be imported."""
        builder = flatbuffers.Builder(1024)
        builder.Finish(self.raw.Pack(builder), file_identifier=FILE_IDENTIFIER)
        packed = bytes(builder.Output())
        if not align:
            return packed
        try:
            from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper as tool
        except ImportError as err:
            raise ExportError(f"cannot align the model's buffers to 16 bytes for TFLM: tflite-micro's alignment "
                              f"tool is not importable ({err}); pip install 'keras_lowprec[export]'.") from None
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "in.tflite"), os.path.join(tmp, "out.tflite")
            with open(src, "wb") as fh:
                fh.write(packed)
            tool.align_tflite_model(src, dst)
            with open(dst, "rb") as fh:
                return fh.read()

    def copy(self) -> TFLiteModel:
        """An independent deep copy."""
        return TFLiteModel(copy.deepcopy(self.raw))

    # -- structure -------------------------------------------------------------------------
    @property
    def subgraphs(self) -> list[Subgraph]:
        return [Subgraph(self, sg) for sg in self.raw.subgraphs or []]

    @property
    def subgraph(self) -> Subgraph:
        """The main subgraph (0): the only one of a graph the exporter accepts."""
        return Subgraph(self, self.raw.subgraphs[0])

    @property
    def tensors(self) -> _Tensors:
        """The main subgraph's tensors."""
        return self.subgraph.tensors

    @property
    def operators(self) -> list[Operator]:
        """The main subgraph's operators."""
        return self.subgraph.operators

    def consumers(self, index: int) -> list[tuple[Operator, int]]:
        """Readers of tensor ``index`` of the main subgraph (see :meth:`Subgraph.consumers`)."""
        return self.subgraph.consumers(index)

    def producer(self, index: int) -> Operator | None:
        """Writer of tensor ``index`` of the main subgraph (see :meth:`Subgraph.producer`)."""
        return self.subgraph.producer(index)

    def add_tensor(self, like: Tensor | int, name: str, shape=None) -> int:
        """A new tensor of the main subgraph (see :meth:`Subgraph.add_tensor`)."""
        return self.subgraph.add_tensor(like, name, shape)

    # -- operator codes --------------------------------------------------------------------
    def opcode_name(self, opcode_index: int) -> str:
        """Name of operator code ``opcode_index``: the builtin's, or ``CUSTOM:<code>``."""
        code = self.raw.operatorCodes[opcode_index]
        value = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = _OPERATOR_NAMES.get(value, str(value))
        return f"CUSTOM:{text(code.customCode)}" if name == "CUSTOM" else name

    def op_names(self) -> list[str]:
        """Sorted distinct operator names of every subgraph."""
        return sorted({op.name for sg in self.subgraphs for op in sg.operators})

    def opcode_index(self, name: str, version: int) -> int:
        """Index of builtin operator ``name`` in the operator codes; appended (with
        ``version``) when missing."""
        value = getattr(schema.BuiltinOperator, name)
        for i, code in enumerate(self.raw.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == value:
                return i
        code = schema.OperatorCodeT()
        code.builtinCode = value
        # Codes past 127 live in builtinCode only; the deprecated int8 field says so.
        code.deprecatedBuiltinCode = min(value, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
        code.version = version
        self.raw.operatorCodes.append(code)
        return len(self.raw.operatorCodes) - 1

    def new_operator(self, name: str, version: int, inputs, outputs, options=None) -> Operator:
        """A builtin operator (its code added if missing) with builtin ``options`` (e.g.
        ``schema.PackOptionsT()``, whose class names the options type); not yet placed in
        a subgraph: assign it into :attr:`Subgraph.operators`."""
        op = schema.OperatorT()
        op.opcodeIndex = self.opcode_index(name, version)
        op.inputs, op.outputs = [int(i) for i in inputs], [int(i) for i in outputs]
        if options is not None:
            op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__.removesuffix("T"))
            op.builtinOptions = options
        return Operator(self, op)

    # -- buffers -----------------------------------------------------------------------------
    @property
    def num_buffers(self) -> int:
        return len(self.raw.buffers)

    def buffer_data(self, index: int) -> bytes | None:
        """The bytes of buffer ``index``; None when it is empty."""
        data = self.raw.buffers[index].data
        if data is None or len(data) == 0:
            return None
        return np.asarray(data, dtype=np.uint8).tobytes()

    def set_buffer_data(self, index: int, data) -> None:
        """Replaces the contents of buffer ``index`` (bytes or an array's bytes; None: empty)."""
        self.raw.buffers[index].data = None if data is None else _as_uint8(data)

    def add_buffer(self, data) -> int:
        """Appends a buffer holding ``data`` (bytes or an array's bytes); returns its index."""
        buf = schema.BufferT()
        buf.data = _as_uint8(data)
        self.raw.buffers.append(buf)
        return len(self.raw.buffers) - 1

    # -- metadata ----------------------------------------------------------------------------
    def metadata(self, name: str) -> bytes | None:
        """The bytes of metadata entry ``name``; None when there is none."""
        for m in self.raw.metadata or []:
            if text(m.name) == name:
                return self.buffer_data(m.buffer) or b""
        return None

    def set_metadata(self, name: str, data: bytes) -> None:
        """Sets metadata entry ``name`` to ``data`` in a new buffer (an entry of that name
        is replaced; its old buffer stays, unreferenced)."""
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = self.add_buffer(data)
        self.raw.metadata = [m for m in (self.raw.metadata or []) if text(m.name) != name] + [meta]

    def is_metadata_buffer(self, index: int) -> bool:
        return any(m.buffer == index for m in (self.raw.metadata or []))
