"""Re-running a functional model's graph with other layers: the one graph walk behind flattening and the
Keras 2 / Keras 3 bridges.

Keras keeps a functional model's graph as nodes by depth (Keras 2 and 3
alike, with different node attributes); neither offers a public way to
rebuild a graph with each layer swapped for another, which ``flatten_model``
(nested blocks inlined), ``from_keras3`` and ``to_keras3`` all need.
"""
from lt_keras._keras import tf
from lt_keras.errors import LtKerasError


def _parts(node):
    """(layer, args, kwargs) of a Keras 2 or Keras 3 node."""
    if hasattr(node, "operation"):  # Keras 3
        return node.operation, node.arguments.args, node.arguments.kwargs
    return node.layer, node.call_args, node.call_kwargs


def rebuild(model, inputs, call_layer):
    """Run ``model``'s graph on ``inputs`` (a list of tensors), calling ``call_layer(layer, args, kwargs)`` for
    every layer (nested blocks included, as layers) with the new tensors; returns the list of outputs.

    Keyword arguments that are None (Keras's unset ``mask`` or ``training``) are dropped.
    """
    if not hasattr(model, "_nodes_by_depth"):
        if type(model).__name__ != "Sequential":
            raise LtKerasError(f"model {model.name!r} is subclassed: its graph cannot be read; build it as a "
                               "Sequential or functional model.")
        x = inputs[0]  # a Keras 3 Sequential: a chain
        for layer in model.layers:
            x = call_layer(layer, (x,), {})
        return [x]
    new_of = {id(x): y for x, y in zip(model.inputs, inputs)}

    def mapped(structure):
        return tf.nest.map_structure(lambda t: new_of.get(id(t), t), structure)

    for layer, args, kwargs, outputs in nodes(model):
        result = call_layer(layer, mapped(args), {k: v for k, v in mapped(kwargs).items() if v is not None})
        for old, new in zip(outputs, tf.nest.flatten(result)):
            new_of[id(old)] = new
    return [new_of[id(t)] for t in model.outputs]


def nodes(model):
    """(layer, args, kwargs, [output tensors]) of every call in a functional model's graph (Keras 2 or 3), in
    the order Keras itself runs them."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if not node.is_input:
                yield (*_parts(node), tf.nest.flatten(node.outputs))


def input_name(tensor):
    """The name of the input layer that made ``tensor`` (Keras 2 or 3), or None."""
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else None


def inline(model, inputs, twin_of):
    """Run ``model``'s graph on ``inputs`` with nested blocks inlined and each leaf layer replaced by
    ``twin_of(layer)`` (one twin per layer, so shared layers stay shared); returns (outputs, [(layer, twin)])."""
    twins = {}

    def call(layer, args, kwargs):
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested block (Keras 2 or 3)
            return rebuild(layer, list(tf.nest.flatten(args)), call)
        if id(layer) not in twins:
            twins[id(layer)] = (layer, twin_of(layer))
        return twins[id(layer)][1](*args, **kwargs)

    return rebuild(model, inputs, call), list(twins.values())
