"""Config fields that carry their flag's help text, choices and bounds.

A hyperparameter is declared once, as a field of a frozen config dataclass
(``TrainConfig``, ``DataConfig``, ``ImpConfig``, ...): its default, meaning
and allowed values live there, and the binaries generate their absl flags
from the fields (``lt_keras/bin/config_flags.py``). The library itself never
reads flags, so every config works from Python as it does from a binary.
"""
import dataclasses


def option(default, help, choices=None, lower_bound=None, item=None):
    """A dataclass field with what its flag needs.

    ``choices``: the allowed values (a list, or a function returning one,
    for registries filled at import); ``lower_bound``: the smallest allowed
    number; ``item``: the element type of a tuple field (a comma-separated flag).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "lower_bound": lower_bound, "item": item})


def choices_of(field):
    choices = field.metadata.get("choices")
    return list(choices() if callable(choices) else choices) if choices is not None else None
