"""Config fields that carry their flag's help text, choices and bounds, and the absl flags made from them.

A hyperparameter is declared once, as a field of a frozen config dataclass
(``TrainConfig``, ``DataConfig``, ``ImpConfig``, ...): its default, meaning
and allowed values live there. ``define`` turns the fields into absl flags,
``build`` reads a config back from parsed flags, and ``flag_lines`` writes a
config as the flagfile lines that give it (a run's ``flags.txt``), so a
default is written once, in the dataclass. A field whose type is itself a
config dataclass contributes its fields. The library never reads flags, so
every config works from Python as it does from a binary.

Written by hand because absl has no dataclass binding (ml_collections'
config_flags takes a whole config file, not typed fields as flags).
"""
import dataclasses
import typing

from absl import flags

from lt_keras.errors import LtKerasError


def option(default, help, choices=None, lower_bound=None, item=None, duration=False):
    """A dataclass field with what its flag needs.

    ``choices``: the allowed values (a list, or a function returning one,
    for registries filled at import); ``lower_bound``: the smallest allowed
    number; ``item``: the element type of a tuple field (a comma-separated flag);
    ``duration``: the field (or each item) is a time in ``lt_keras.duration``'s
    unit (iterations or epochs: a string flag, canonicalized by the config).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "lower_bound": lower_bound, "item": item, "duration": duration})


def choices_of(field):
    choices = field.metadata.get("choices")
    return list(choices() if callable(choices) else choices) if choices is not None else None


def _kind(cls, field):
    hint = typing.get_type_hints(cls)[field.name]
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Union else hint


def flag_fields(cls):
    """``(class, field)`` for every field of ``cls`` that is a flag (declared with ``option``), the fields of
    nested config dataclasses included."""
    out = []
    for field in dataclasses.fields(cls):
        kind = _kind(cls, field)
        if dataclasses.is_dataclass(kind):
            out.extend(flag_fields(kind))
        elif "help" in field.metadata:
            out.append((cls, field))
    return out


def define(cls, flag_values, skip=()):
    """Define ``--<field>`` for every option field of ``cls`` not in ``skip``."""
    for owner, field in flag_fields(cls):
        if field.name in skip:
            continue
        kind, meta = _kind(owner, field), field.metadata
        default, choices, bound = field.default, choices_of(field), meta.get("lower_bound")
        args = dict(flag_values=flag_values)
        if meta.get("duration") and kind is not tuple:
            flags.DEFINE_string(field.name, None if default is None else str(default), meta["help"], **args)
        elif kind is bool:
            flags.DEFINE_bool(field.name, default, meta["help"], **args)
        elif kind is tuple:
            flags.DEFINE_list(field.name, None if default is None else [str(v) for v in default], meta["help"],
                              **args)
        elif choices is not None:
            flags.DEFINE_enum(field.name, default, choices, meta["help"], **args)
        elif kind is int:
            flags.DEFINE_integer(field.name, default, meta["help"], lower_bound=bound, **args)
        elif kind is float:
            flags.DEFINE_float(field.name, default, meta["help"], lower_bound=bound, **args)
        else:
            flags.DEFINE_string(field.name, default, meta["help"], **args)


def build(cls, flag_values, **overrides):
    """An instance of ``cls`` from the parsed flags (``overrides`` win; nested configs are built too)."""
    values = {}
    for field in dataclasses.fields(cls):
        kind = _kind(cls, field)
        if field.name in overrides:
            continue
        if dataclasses.is_dataclass(kind):
            values[field.name] = build(kind, flag_values)
        elif "help" in field.metadata and field.name in flag_values:
            value = flag_values[field.name].value
            if kind is tuple and value is not None:
                value = tuple(_item(field, v) for v in value)
            values[field.name] = value
    return cls(**values, **overrides)


def _item(field, text):
    kind = field.metadata.get("item") or str
    try:
        return kind(text)
    except ValueError:
        raise LtKerasError(f"--{field.name}: {text!r} is not a valid {kind.__name__}.") from None


def flag_lines(config, only=None) -> list:
    """``--name=value`` lines, sorted by name, that set every option of ``config`` (nested configs included)
    not None and, with ``only``, named there; serialized by absl itself (each line parses back to the same
    value)."""
    scratch = flags.FlagValues()
    define(type(config), scratch)
    values = {}

    def collect(instance):
        for field in dataclasses.fields(instance):
            value = getattr(instance, field.name)
            if dataclasses.is_dataclass(value):
                collect(value)
            elif "help" in field.metadata and value is not None and (only is None or field.name in only):
                values[field.name] = [str(v) for v in value] if isinstance(value, tuple) else value

    collect(config)
    lines = []
    for name in sorted(values):
        scratch[name].value = values[name]
        lines.append(scratch[name].serialize())
    return lines
