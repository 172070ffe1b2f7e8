"""absl flags generated from config dataclasses, and the configs built back from the parsed flags.

Written by hand because absl has no dataclass binding (ml_collections'
config_flags takes a whole config file, not typed fields as flags). Each
field declared with ``lt_keras.options.option`` becomes ``--<field>`` with
the field's default, help, choices and bound; ``build`` reads them back, so
a default is written once, in the dataclass.
"""
import dataclasses
import typing

from absl import flags

from lt_keras.errors import LtKerasError
from lt_keras.options import choices_of

FLAGS = flags.FLAGS


def flag_fields(cls):
    """The fields of ``cls`` that are flags (declared with ``option``)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def _kind(cls, field):
    hint = typing.get_type_hints(cls)[field.name]
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Union else hint


def define(cls, flag_values=FLAGS, skip=()):
    """Define ``--<field>`` for every option field of ``cls`` not in ``skip``."""
    for field in flag_fields(cls):
        if field.name in skip:
            continue
        kind, meta = _kind(cls, field), field.metadata
        default, choices, bound = field.default, choices_of(field), meta.get("lower_bound")
        args = dict(flag_values=flag_values)
        if kind is bool:
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


def build(cls, flag_values=FLAGS, **overrides):
    """An instance of ``cls`` from the parsed flags (``overrides`` win)."""
    values = {}
    for field in flag_fields(cls):
        if field.name in overrides or field.name not in flag_values:
            continue
        value = flag_values[field.name].value
        if _kind(cls, field) is tuple and value is not None:
            value = tuple(_item(field, v) for v in value)
        values[field.name] = value
    return cls(**values, **overrides)


def _item(field, text):
    kind = field.metadata.get("item") or str
    try:
        return kind(text)
    except ValueError:
        raise LtKerasError(f"--{field.name}: {text!r} is not a valid {kind.__name__}.") from None
