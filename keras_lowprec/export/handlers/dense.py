"""Dense layers: keras_lowprec's QuantDense and presets (rounded weights) and Keras's Dense
(float weights, the converter's plain int8). The twin is a float ``Dense`` holding the
rounded weights."""

from __future__ import annotations

from keras_lowprec.export.handlers import register
from keras_lowprec.export.handlers.base import Handler, activation_name, rounded_weights
from keras_lowprec.export.plan import Stage

# Activations the tf_keras twin of the fused route maps to builtin int8 ops.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax")


@register
class DenseHandler(Handler):
    classes = ("Dense",)
    kind = "dense"
    description = "QuantDense and presets (e.g. TernaryDense), Dense"

    def analyze(self, layer, plan, mode):
        weights = rounded_weights(layer, layer.name)
        plan.weights.extend(weights)
        return Stage(self.kind, layer, layer.name, self, params={"values": {w.name: w.value for w in weights}})

    def build(self, stage):
        self._twin(stage)

    def apply(self, stage, x):
        return self._twin(stage)(x)

    @staticmethod
    def _twin(stage):
        """A float ``keras.layers.Dense`` with the rounded weights, built once per stage."""
        import keras

        twin = stage.params.get("twin")
        if twin is None:
            layer = stage.layer
            twin = keras.layers.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias,
                                      name=f"{layer.name}_twin")
            twin.build((1, layer.kernel.shape[0]))
            for name, value in stage.params["values"].items():
                getattr(twin, name).assign(value)
            stage.params["twin"] = twin
        return twin

    def unfusable(self, stage, after, plan):
        return fused_activation_reason(stage)

    def fused_twin(self, stage, x, tf_keras):
        values = stage.params["values"]
        twin = tf_keras.layers.Dense(int(stage.layer.units), activation=activation_name(stage.layer.activation),
                                     use_bias="bias" in values, name=f"{stage.name}_twin")
        x = twin(x)
        twin.set_weights([values["kernel"]] + ([values["bias"]] if "bias" in values else []))
        return x


def fused_activation_reason(stage) -> str | None:
    fn = stage.layer.activation
    if activation_name(fn) not in FUSED_ACTIVATIONS:
        return f"layer '{stage.name}': activation {getattr(fn, '__name__', '?')!r}"
    return None
