"""What every quantized layer shares: quantizer arguments, clip constraints and the
"round once, use many times" binding of rounded weights.

A quantized layer keeps its full-precision **master** variables under the float
twin's names (``kernel``, ``recurrent_kernel``, ``bias``). While it computes, the
attributes of those names are bound to the rounded tensors ``Q(W)``, so the float
twin's own math (Keras's ``LSTMCell.call`` and friends, including the cuDNN path)
runs on rounded weights unchanged. RNN layers bind once around the whole time loop:
each weight is rounded once per layer call, never once per time step.

Scales: a weight's quantizer is told the Glorot bound of one gate matrix,
``G_in = sqrt(6 / (input_dim + units))`` for ``kernel`` and ``bias`` and
``G_rec = sqrt(6 / (2 * units))`` for ``recurrent_kernel``.

Channel scales (``channel_scale=True``): each output column ``j`` of a rounded kernel and
recurrent kernel (one gate unit) is multiplied by a trainable float ``s_j``, initialized to 1,
after the rounding: ``W_eff[:, j] = s_j * Q(W)[:, j]``. The weights keep the quantizer's levels
(and clip range, and straight-through gradient); each gate unit chooses its own range. At
inference ``s_j`` is one float per output, applied once per output (an int8 kernel's
per-channel scale), never per weight. Biases are not scaled.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras

from keras_lowprec import constraints as constraints_lib
from keras_lowprec import quantizers as quantizers_lib

# weight attribute -> (quantizer argument, constraint argument, Glorot bound it uses)
_SLOTS = {
    "kernel": ("kernel_quantizer", "kernel_constraint", "input"),
    "recurrent_kernel": ("recurrent_quantizer", "recurrent_constraint", "recurrent"),
    "bias": ("bias_quantizer", "bias_constraint", "input"),
}
# Weights that take a per-column scale with ``channel_scale=True`` (biases do not).
SCALABLE = ("kernel", "recurrent_kernel")


def scale_name(weight: str) -> str:
    """Name of the channel-scale variable of a weight slot (``kernel`` -> ``kernel_channel_scale``;
    not ``kernel_scale``, which Keras's own int8 ``Dense`` uses)."""
    return f"{weight}_channel_scale"


class QuantizedWeightsMixin:
    """Mixin for a Keras layer/cell whose ``kernel`` / ``recurrent_kernel`` / ``bias``
    are rounded by quantizers. Put it first in the bases, before the Keras class.

    Subclasses set ``_weight_names`` (the slots they own) and call
    ``_init_quantization`` in ``__init__``, after the Keras constructor.
    """

    _weight_names: tuple[str, ...] = ("kernel", "recurrent_kernel", "bias")

    def _init_quantization(self, quantizer_args: dict[str, Any], constraint_args: dict[str, Any],
                           channel_scale: bool = False) -> None:
        if not isinstance(channel_scale, bool):
            raise TypeError(f"{type(self).__name__} `channel_scale`: expected True or False, got {channel_scale!r}.")
        self.channel_scale = channel_scale
        self._bound = False
        self._constraint_specs = {}
        for name in self._weight_names:
            q_arg, c_arg, _ = _SLOTS[name]
            try:
                quantizer = quantizers_lib.get(quantizer_args.get(q_arg))
            except ValueError as err:
                raise ValueError(f"{type(self).__name__} `{q_arg}`: {err}") from None
            setattr(self, q_arg, quantizer)
            spec = constraint_args.get(c_arg, constraints_lib.AUTO)
            self._constraint_specs[c_arg] = spec
            # "auto" needs the Glorot bound, known in build(); others resolve now.
            if not (isinstance(spec, str) and spec == constraints_lib.AUTO):
                setattr(self, c_arg, keras.constraints.get(spec))
            else:
                setattr(self, c_arg, None)
        if channel_scale and not any(getattr(self, _SLOTS[n][0]) is not None for n in self._scalable()):
            raise ValueError(
                f"{type(self).__name__} `channel_scale=True` scales rounded kernels, but no kernel of this layer "
                f"has a quantizer ({', '.join(_SLOTS[n][0] for n in self._scalable())} are None).")

    def _scalable(self) -> tuple[str, ...]:
        return tuple(n for n in SCALABLE if n in self._weight_names)

    # -- scales and constraints ----------------------------------------------------
    def glorot_bounds(self, input_dim: int) -> dict[str, float]:
        """Glorot bound of one gate matrix for each weight of this layer."""
        kinds = {
            "input": quantizers_lib.glorot_bound(input_dim, self.units),
            "recurrent": quantizers_lib.glorot_bound(self.units, self.units),
        }
        return {name: kinds[_SLOTS[name][2]] for name in self._weight_names}

    def _prepare_quantization(self, input_dim: int) -> None:
        """Before the Keras ``build``: fixes the bounds and the ``"auto"`` clip constraints."""
        if input_dim is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': the last input dimension must be known "
                "to derive the quantization scales (Glorot bound)."
            )
        self._glorot_bounds = self.glorot_bounds(int(input_dim))
        for name in self._weight_names:
            q_arg, c_arg, _ = _SLOTS[name]
            spec = self._constraint_specs[c_arg]
            if isinstance(spec, str) and spec == constraints_lib.AUTO:
                quantizer = getattr(self, q_arg)
                setattr(self, c_arg, constraints_lib.resolve(spec, quantizer, self._glorot_bounds[name]))

    def _build_channel_scales(self) -> None:
        """After the Keras ``build``: one trainable scale per output column of each rounded kernel."""
        self._channel_scales = {}
        if not self.channel_scale:
            return
        for name in self._scalable():
            variable = self._master(name)
            if variable is None or self.quantizer_for(name) is None:
                continue
            self._channel_scales[name] = self.add_weight(
                shape=(int(variable.shape[-1]),), initializer="ones", name=scale_name(name), trainable=True)

    def channel_scales(self) -> dict[str, keras.Variable]:
        """The per-column scale variables, by weight slot (empty without ``channel_scale``)."""
        return dict(getattr(self, "_channel_scales", {}))

    def _clip_initial_weights(self) -> None:
        """Applies each weight's constraint to its initial value (e.g. LSTM's forget bias)."""
        for name, variable in self.master_weights().items():
            constraint = getattr(self, _SLOTS[name][1])
            if constraint is not None:
                variable.assign(constraint(variable))

    # -- rounding ------------------------------------------------------------------
    def master_weights(self) -> dict[str, keras.Variable]:
        """The full-precision variables, by slot name (absent ones skipped)."""
        out = {}
        for name in self._weight_names:
            variable = self._master(name)
            if variable is not None:
                out[name] = variable
        return out

    def _master(self, name: str):
        return getattr(self, name, None)

    def quantizer_for(self, name: str) -> quantizers_lib.Quantizer | None:
        return getattr(self, _SLOTS[name][0])

    def glorot_bound_for(self, name: str) -> float:
        return self._glorot_bounds[name]

    def quantized_weights(self, training: bool = False, apply_channel_scale: bool = True) -> dict[str, Any]:
        """``{name: Q(W)}`` for every weight; unquantized weights pass through as is.

        With ``training=False`` the result is the deterministic rounding that
        inference and export use. With channel scales, ``s * Q(W)`` (column-wise) unless
        ``apply_channel_scale=False``, which gives the rounded levels alone.
        """
        out = {}
        scales = self.channel_scales() if apply_channel_scale else {}
        for name, variable in self.master_weights().items():
            quantizer = self.quantizer_for(name)
            if quantizer is None:
                out[name] = variable
            else:
                out[name] = quantizer(
                    variable,
                    training=bool(training),
                    glorot_bound=self._glorot_bounds[name],
                    seed=self.seed_generator,
                )
                if name in scales:
                    out[name] = out[name] * scales[name]
        return out

    @contextlib.contextmanager
    def bind_quantized_weights(self, training: bool = False) -> Iterator[None]:
        """Within the block, ``self.kernel`` etc. are the rounded tensors.

        Nested use is a no-op, so a layer that binds around its time loop makes the
        cell reuse those tensors at every step.
        """
        if self._bound or not any(self.quantizer_for(n) for n in self.master_weights()):
            yield
            return
        rounded = self.quantized_weights(training)
        saved = {name: self.__dict__[name] for name in rounded}
        try:
            object.__setattr__(self, "_bound", True)
            for name, tensor in rounded.items():
                object.__setattr__(self, name, tensor)
            yield
        finally:
            for name, variable in saved.items():
                object.__setattr__(self, name, variable)
            object.__setattr__(self, "_bound", False)

    # -- config --------------------------------------------------------------------
    def quantizer_config(self) -> dict[str, Any]:
        """Quantizer, constraint and ``channel_scale`` arguments as given, serialized."""
        config = {"channel_scale": self.channel_scale}
        for name in self._weight_names:
            q_arg, c_arg, _ = _SLOTS[name]
            config[q_arg] = quantizers_lib.serialize(getattr(self, q_arg))
            spec = self._constraint_specs[c_arg]
            config[c_arg] = spec if isinstance(spec, str) else keras.constraints.serialize(
                keras.constraints.get(spec)
            )
        return config

