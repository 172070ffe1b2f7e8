"""The Keras 3 bridge: a Keras 3 model rebuilt as the Keras 2 (tf_keras) model lt_keras works on.

TensorFlow >= 2.16 gives Keras 3 as ``import keras``; lt_keras works on
Keras 2 because TFMOT does (and Keras 3 has no pruning or quantization
training of its own). ``from_keras3`` rebuilds a Sequential or functional
Keras 3 model of standard layers, nested blocks included, layer by layer
with the same configs and weights, so ``mask_model`` and the searches take
it. Tickets go back to Keras 3 either as SavedModels (``lt_keras.export``;
Keras 3 loads them with ``keras.layers.TFSMLayer``) or, since Keras 3 cannot
read Keras 2's ``.keras`` files, rebuilt by ``to_keras3`` and saved as
``.keras`` from Keras 3. Keras offers no converter between its two lines;
both directions are one walk over the graph (``lt_keras.graph``).
"""
import inspect
import sys

from lt_keras._keras import keras, keras3
from lt_keras.errors import LtKerasError
from lt_keras.graph import inline, input_name, rebuild
from lt_keras.layers import masked_layers

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
    inputs = [keras.Input(shape=tuple(x.shape[1:]), dtype=str(x.dtype), name=input_name(x)) for x in model.inputs]
    outputs = rebuild(model, inputs, _call_twin)
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _call_twin(layer, args, kwargs):
    if _is_model(layer):  # a nested block stays a nested block
        return _rebuild(layer)(*args, **kwargs)
    twin_cls = _twin_class(layer)
    config = _translate_config(layer, twin_cls)
    # tf_keras's MultiHeadAttention.from_config wants the input shapes Keras 3 does not record; built by the call
    twin = twin_cls(**config) if twin_cls is keras.layers.MultiHeadAttention else twin_cls.from_config(config)
    out = twin(*args, **kwargs)
    _copy_weights(layer, twin)
    return out


def _copy_weights(source, target):
    values = source.get_weights()
    if [tuple(v.shape) for v in values] != [tuple(w.shape) for w in target.weights]:
        raise LtKerasError(f"layer {source.name!r} ({type(source).__name__}) has weights "
                           f"{[tuple(v.shape) for v in values]} but its twin "
                           f"{[tuple(w.shape) for w in target.weights]}.")
    target.set_weights(values)


def to_keras3(model):
    """A Keras 3 copy of a plain Keras 2 model (``strip_masks``' output, a slimmed Early-Bird ticket): same
    layers, weights and outputs, nested blocks inlined; save it as ``.keras`` for Keras 3 users.

    Keras 3 cannot read Keras 2's ``.keras`` files; this rebuilds the model in Keras 3 instead.
    """
    keras_3 = keras3()
    if keras_line(model) != "keras2" or not isinstance(model, keras.Model):
        raise LtKerasError(f"to_keras3: expected a Keras 2 (tf_keras) model, got {type(model).__name__}.")
    if masked_layers(model):
        raise LtKerasError("to_keras3: the model has masked layers; convert lt_keras.strip_masks(model) instead.")
    bad = [f"{layer.name} ({type(layer).__name__})" for layer in _leaf_layers(model)
           if getattr(keras_3.layers, type(layer).__name__, None) is None]
    if bad:
        raise LtKerasError(f"to_keras3: these layers have no Keras 3 twin: {', '.join(bad)}.")

    def twin_of(layer):
        cls = getattr(keras_3.layers, type(layer).__name__)
        return cls.from_config(_translate_config(layer, cls, "to_keras3"))

    inputs = [keras_3.Input(shape=tuple(x.shape[1:]), dtype=x.dtype.name, name=input_name(x)) for x in model.inputs]
    outputs, pairs = inline(model, inputs, twin_of)
    converted = keras_3.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for old, new in pairs:
        _copy_weights(old, new)
    return converted


_BUILT_FROM_CALL = ("batch_input_shape", "input_shape", "input_length", "batch_size", "query_shape", "key_shape",
                    "value_shape")
_HOW_NOT_WHAT = ("implementation", "use_cudnn")  # recurrent layers: gate layout, cuDNN or not


def _accepted(cls):
    names = set()
    for klass in inspect.getmro(cls):
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters)
    return names | _BASE_KWARGS


def _translate_config(layer, twin_cls, direction="from_keras3"):
    """``layer``'s config in the terms of ``twin_cls`` (the other Keras); a setting it cannot express is an error.

    Settings the twin lacks are dropped when they do nothing: unset (None,
    False, one group) or an initializer (the weights are copied, not drawn).
    Input shapes are dropped: both bridges rebuild the model from its inputs.
    """
    accepted = _accepted(twin_cls)
    config = {}
    for key, value in layer.get_config().items():
        if key in _BUILT_FROM_CALL and direction == "to_keras3":
            continue  # tf_keras's Embedding and MultiHeadAttention write them; Keras 3 builds from the call
        if key in _HOW_NOT_WHAT:
            continue  # how the same result is computed, which the other Keras chooses itself
        if key == "dtype" and isinstance(value, dict):
            value = value.get("config", {}).get("name", "float32")
        elif isinstance(value, dict) and "class_name" in value and direction == "from_keras3":
            value = _translate_object(key, value)
        if key not in accepted:
            if value in (None, False) or (key == "groups" and value == 1) or key.endswith("_initializer"):
                continue
            raise LtKerasError(f"{direction}: layer {layer.name!r} ({type(layer).__name__}) sets {key}={value!r}, "
                               "which its twin in the other Keras does not have.")
        config[key] = value
    axis = config.get("axis")
    if isinstance(layer, keras.layers.BatchNormalization) and isinstance(axis, (list, tuple)) and len(axis) == 1:
        config["axis"] = int(config["axis"][0])  # Keras 3 takes one axis as an int
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
