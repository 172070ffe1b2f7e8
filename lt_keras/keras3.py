"""The Keras 3 bridge: a Keras 3 model rebuilt as the Keras 2 (tf_keras) model lt_keras works on.

TensorFlow >= 2.16 gives Keras 3 as ``import keras``; lt_keras works on
Keras 2 because TFMOT does (and Keras 3 has no pruning or quantization
training of its own). ``from_keras3`` rebuilds a Sequential or functional
Keras 3 model of standard layers, nested blocks included, layer by layer
with the same configs and weights, so ``mask_model`` and the searches take
it. Keras offers no converter between its two lines; this is one walk over
the graph. Tickets go back to Keras 3 as SavedModels (``lt_keras.export``),
which Keras 3 loads with ``keras.layers.TFSMLayer``.
"""
import inspect
import sys

from lt_keras._keras import keras, tf
from lt_keras.errors import LtKerasError

# Keys of a Keras 3 layer config that a Keras 2 layer may not know; dropped when they hold no setting.
_BASE_KWARGS = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape",
                "batch_size", "weights", "activity_regularizer", "autocast"}


def keras_line(obj) -> str:
    """``"keras3"``, ``"keras2"`` or ``""`` for a model, layer or tensor, by the package its class comes from."""
    module = type(obj).__module__
    if module.startswith("keras.") or module == "keras":
        return "keras3"
    if module.startswith("tf_keras."):
        return "keras2"
    return ""


def not_keras2_message(obj, what="model") -> str:
    """The one message for an object that is not a Keras 2 model: which Keras it is and what to do."""
    if keras_line(obj) == "keras3":
        version = getattr(sys.modules.get("keras"), "__version__", "3")
        return (f"expected a Keras 2 (tf_keras) {what}, got a Keras 3 {type(obj).__name__} (keras "
                f"{version}); convert the model with lt_keras.from_keras3(model), or build it from "
                "lt_keras.keras (tf_keras).")
    return f"expected a Keras 2 (tf_keras) {what}, got {type(obj).__name__}."


def from_keras3(model):
    """A Keras 2 (tf_keras) copy of the Keras 3 ``model``: same layers, configs, weights and outputs.

    Sequential and functional models of standard layers convert (Dense,
    convolutions, BatchNormalization, pooling, activations, Dropout, Flatten,
    Add / Concatenate, ...; nested Sequential or functional blocks are
    rebuilt as nested blocks). Anything without a Keras 2 twin is named in
    the error. A Keras 2 model comes back unchanged.
    """
    if keras_line(model) == "keras2" and isinstance(model, keras.Model):
        return model
    if keras_line(model) != "keras3" or not hasattr(model, "layers"):
        raise LtKerasError(f"from_keras3: expected a Keras 3 model, got {type(model).__name__}.")
    bad = [f"{layer.name} ({type(layer).__name__})" for layer in _leaf_layers(model) if _twin_class(layer) is None]
    if bad:
        raise LtKerasError(f"from_keras3: these layers of {model.name!r} have no Keras 2 twin: {', '.join(bad)}; "
                           "build them from lt_keras.keras layers instead.")
    if not model.inputs:
        raise LtKerasError(f"from_keras3: model {model.name!r} is not built; give it a keras.Input first.")
    return _rebuild(model)


def _leaf_layers(model):
    for layer in model.layers:
        if _is_model(layer):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _is_model(layer):
    return hasattr(layer, "layers") and hasattr(layer, "inputs") and type(layer).__name__ in (
        "Functional", "Sequential", "Model")


def _twin_class(layer):
    if type(layer).__module__.split(".")[:2] != ["keras", "src"]:
        return None  # a user's own layer class
    return getattr(keras.layers, type(layer).__name__, None)


def _rebuild(model):
    inputs = [keras.Input(shape=tuple(x.shape[1:]), dtype=str(x.dtype), name=_input_name(x)) for x in model.inputs]
    outputs = _apply(model, inputs)
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _input_name(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else None


def _apply(model, inputs):
    """Apply the Keras 3 ``model``'s graph to Keras 2 ``inputs`` with each layer replaced by its twin."""
    if type(model).__name__ == "Sequential":
        x = inputs[0]
        for layer in model.layers:
            x = _call_twin(layer, (x,), {})
        return [x]
    new_of = {id(x): y for x, y in zip(model.inputs, inputs)}

    def mapped(structure):
        return tf.nest.map_structure(lambda t: new_of.get(id(t), t), structure)

    for depth in sorted(model._nodes_by_depth, reverse=True):  # Keras 3 runs its graph in this order too
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args = mapped(node.arguments.args)
            kwargs = {k: v for k, v in mapped(node.arguments.kwargs).items() if v is not None}
            result = _call_twin(node.operation, args, kwargs)
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(result)):
                new_of[id(old)] = new
    return [new_of[id(t)] for t in model.outputs]


def _call_twin(layer, args, kwargs):
    if _is_model(layer):
        block_inputs = [keras.Input(shape=tuple(x.shape[1:]), dtype=str(x.dtype), name=_input_name(x))
                        for x in layer.inputs]
        block_outputs = _apply(layer, block_inputs)
        block = keras.Model(block_inputs, block_outputs if len(block_outputs) > 1 else block_outputs[0],
                            name=layer.name)
        return block(*args, **kwargs)
    twin_cls = _twin_class(layer)
    twin = twin_cls.from_config(_translate_config(layer, twin_cls))
    out = twin(*args, **kwargs)
    values = layer.get_weights()
    if [tuple(v.shape) for v in values] != [tuple(w.shape) for w in twin.weights]:
        raise LtKerasError(f"from_keras3: layer {layer.name!r} ({type(layer).__name__}) has weights "
                           f"{[tuple(v.shape) for v in values]} but its Keras 2 twin {[tuple(w.shape) for w in twin.weights]}.")
    twin.set_weights(values)
    return out


def _accepted(cls):
    names = set()
    for klass in inspect.getmro(cls):
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters)
    return names | _BASE_KWARGS


def _translate_config(layer, twin_cls):
    """The Keras 3 layer's config in Keras 2 terms; a setting Keras 2 cannot express is an error."""
    accepted = _accepted(twin_cls)
    config = {}
    for key, value in layer.get_config().items():
        if key == "dtype" and isinstance(value, dict):
            value = value.get("config", {}).get("name", "float32")
        elif isinstance(value, dict) and "class_name" in value:
            value = _translate_object(key, value)
        if key not in accepted:
            if value in (None, False):
                continue
            raise LtKerasError(f"from_keras3: layer {layer.name!r} ({type(layer).__name__}) sets {key}={value!r}, "
                               "which its Keras 2 twin does not have.")
        config[key] = value
    return config


def _translate_object(key, value):
    """An initializer / regularizer / constraint config for Keras 2, keeping only the arguments it takes."""
    kind = {"initializer": keras.initializers, "regularizer": keras.regularizers,
            "constraint": keras.constraints}.get(key.rsplit("_", 1)[-1])
    target = getattr(kind, value["class_name"], None) if kind is not None else None
    if target is None:
        return {"class_name": value["class_name"], "config": value.get("config", {})}
    accepted = set(inspect.signature(target.__init__).parameters) if inspect.isclass(target) else set()
    return {"class_name": value["class_name"],
            "config": {k: v for k, v in value.get("config", {}).items() if k in accepted}}
