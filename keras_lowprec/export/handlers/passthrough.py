"""Layers without weights of their own: the identity at inference (dropout and noise),
activations and reshapes applied as they are, and Masking on the model input (stream mode:
firmware feeds only the real frames)."""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.handlers import register
from keras_lowprec.export.handlers.base import Handler, activation_name, base_name, refuse
from keras_lowprec.export.handlers.dense import fused_activation_reason
from keras_lowprec.export.plan import Stage


@register
class IdentityHandler(Handler):
    classes = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
               "ActivityRegularization")
    kind = "identity"
    description = "Dropout and the other noise/dropout layers (identity at inference)"

    def analyze(self, layer, plan, mode):
        return Stage(self.kind, layer, layer.name, self)

    def apply(self, stage, x):
        return x


@register
class ApplyHandler(Handler):
    """Float Keras layers applied as they are; ``PER_STEP`` says which act on each time step
    separately (the others mix time steps and cannot stream)."""

    PER_STEP = {"Activation": True, "ReLU": True, "LeakyReLU": True, "Softmax": True,
                "Flatten": False, "Reshape": False}
    classes = ("Activation", "ReLU", "LeakyReLU", "Softmax", "Flatten", "Reshape")
    kind = "apply"
    description = "Activation, ReLU, LeakyReLU, Softmax, Flatten, Reshape"

    def analyze(self, layer, plan, mode):
        per_step = self.PER_STEP.get(type(layer).__name__, self.PER_STEP.get(base_name(layer), False))
        return Stage(self.kind, layer, layer.name, self, per_step=per_step)

    def apply(self, stage, x):
        return stage.layer(x, training=False)

    def unfusable(self, stage, after, plan):
        if type(stage.layer).__name__ == "Activation":
            return fused_activation_reason(stage)
        return super().unfusable(stage, after, plan)

    def fused_twin(self, stage, x, tf_keras):
        return tf_keras.layers.Activation(activation_name(stage.layer.activation), name=f"{stage.name}_twin")(x)


@register
class MaskingHandler(Handler):
    classes = ("Masking",)
    kind = "identity"
    description = "Masking on the model input (mode='stream' only)"

    def analyze(self, layer, plan, mode):
        if mode != "stream":
            raise refuse(layer, "Masking is not supported in mode='sequence': a fixed-length graph cannot skip "
                                "masked frames. Use mode='stream' (firmware feeds only the real frames of a "
                                "sequence, one per invoke, and resets the state between sequences), or export a "
                                "model without Masking.")
        if plan.mask_value is not None or any(s.kind != "identity" for s in plan.stages):
            raise refuse(layer, "Masking is supported only directly on the model input (before the first "
                                "recurrent layer, only dropout/noise layers before it).")
        mask_value = float(np.asarray(layer.mask_value))
        if not np.isfinite(mask_value):
            raise refuse(layer, "mask_value must be finite.")
        plan.mask_value = mask_value
        plan.masking = (f"Masking '{layer.name}' dropped: stream firmware feeds only the real frames of a "
                        f"sequence (mask_value={mask_value:g})")
        return Stage(self.kind, layer, layer.name, self)

    def apply(self, stage, x):
        return x
