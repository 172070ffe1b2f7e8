"""The ticket: the one artifact every search writes and every consumer reads.

    ticket/
      model.keras   masked model at the weights the ticket starts from
      mask.npz      mask key -> 0/1 array (exactly the model's masks), + mask.json
      ticket.json   TicketInfo (method, found_at_precision, settings) + densities, versions

``write_ticket`` builds the folder under a temporary name and renames it, so
a ticket folder is complete or absent. ``load_ticket`` checks every part and
says what is wrong with a broken one.
"""
import dataclasses
import json
import os
import shutil
import zipfile

import numpy as np

import lt_keras.layers  # noqa: F401  (registers the masked layers, which model.keras files deserialize)
from lt_keras._keras import keras
from lt_keras.errors import LtKerasError
from lt_keras.io_utils import atomic_save_model, atomic_write_json
from lt_keras.mask import Mask
from lt_keras.precision import PRECISIONS
from lt_keras.versions import library_versions

FILES = ("model.keras", "mask.npz", "ticket.json")


@dataclasses.dataclass(frozen=True)
class TicketInfo:
    """What ticket.json says a ticket is: the method, the precision it was found at, the method's settings.

    Tickets are always stored (and retrained) at fp32; ``found_at_precision``
    is the one precision field. ``settings`` holds what the method records
    (IMP: round, criterion, rewind, mask1, mask0; supermask: estimator, ...;
    Early-Bird: prune_ratio, eb_epoch, ...). ticket.json keeps them flat,
    beside density, layer_density and versions, which are added when written.
    """

    method: str
    found_at_precision: str = "fp32"
    settings: dict = dataclasses.field(default_factory=dict)
    retrained_from: str = None

    _COMPUTED = ("density", "layer_density", "versions")
    _LEGACY = ("precision", "search_precision")  # written before found_at_precision was the one field

    def __post_init__(self):
        if not isinstance(self.method, str) or not self.method:
            raise LtKerasError(f"a ticket's method must be a non-empty string, got {self.method!r}.")
        if self.found_at_precision not in PRECISIONS:
            raise LtKerasError(f"found_at_precision={self.found_at_precision!r} is not one of {list(PRECISIONS)}.")
        reserved = sorted(set(self.settings) & {"method", "found_at_precision", "retrained_from", *self._COMPUTED})
        if reserved:
            raise LtKerasError(f"ticket settings may not use the reserved keys {reserved}.")

    def to_json(self) -> dict:
        fields = {"method": self.method, "found_at_precision": self.found_at_precision, **self.settings}
        return {**fields, "retrained_from": self.retrained_from} if self.retrained_from else fields

    @classmethod
    def from_json(cls, data: dict) -> "TicketInfo":
        data = dict(data)
        legacy = data.pop("search_precision", None)
        data.pop("precision", None)
        found = data.pop("found_at_precision", None) or (legacy or {}).get("precision", "fp32")
        for key in cls._COMPUTED:
            data.pop(key, None)
        return cls(method=data.pop("method", None), found_at_precision=found,
                   retrained_from=data.pop("retrained_from", None), settings=data)


@dataclasses.dataclass
class Ticket:
    model: object  # keras.Model with masked layers, mask applied
    mask: Mask
    info: TicketInfo
    path: str


def write_ticket(folder, model, mask: Mask, info: TicketInfo):
    """Write ``model`` (with ``mask`` applied) and its description to ``folder`` atomically."""
    if not isinstance(info, TicketInfo):
        raise TypeError(f"write_ticket takes a TicketInfo, got {type(info).__name__}.")
    mask.check_fits(model)
    mask.apply_to(model)
    _check_finite(model, f"refusing to write ticket {os.fspath(folder)!r}: the model")
    folder = os.fspath(folder)
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    atomic_save_model(_uncompiled(model), os.path.join(partial, "model.keras"))
    mask.save(os.path.join(partial, "mask.npz"))
    atomic_write_json(os.path.join(partial, "ticket.json"), {
        **info.to_json(),
        "density": mask.density(),
        "layer_density": mask.layer_densities(),
        "versions": library_versions(),
    })
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return folder


def ticket_model_name(folder) -> str:
    """The name of a ticket's model, read from model.keras's config without loading it ("" if unreadable: the
    load that follows names the problem)."""
    try:
        with zipfile.ZipFile(os.path.join(os.fspath(folder), "model.keras")) as archive:
            return json.loads(archive.read("config.json"))["config"]["name"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return ""


def _uncompiled(model):
    """``model``'s layers and weights without its compile state: a ticket is a starting point, and an optimizer
    saved with it would depend on what the writing process compiled before (a resumed run compiles differently)."""
    if getattr(model, "optimizer", None) is None and not getattr(model, "compiled_loss", None):
        return model
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def load_ticket(folder) -> Ticket:
    """Load and validate a ticket folder; ``LtKerasError`` names the missing or broken part."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise LtKerasError(f"ticket {folder!r}: not a directory.")
    missing = [name for name in FILES if not os.path.exists(os.path.join(folder, name))]
    if missing:
        raise LtKerasError(f"ticket {folder!r}: missing {missing}; a ticket holds {list(FILES)}.")
    try:
        with open(os.path.join(folder, "ticket.json")) as f:
            info = json.load(f, parse_constant=_refuse_constant)
    except (OSError, ValueError) as e:
        raise LtKerasError(f"ticket {folder!r}: ticket.json is unreadable: {e}") from None
    if not isinstance(info, dict):
        raise LtKerasError(f"ticket {folder!r}: ticket.json must hold a JSON object, got {type(info).__name__}.")
    try:
        _check_fields(info)
        info = TicketInfo.from_json(info)
    except LtKerasError as e:
        raise LtKerasError(f"ticket {folder!r}: ticket.json: {e}") from None
    try:
        mask = Mask.load(os.path.join(folder, "mask.npz"))
    except LtKerasError:
        raise
    except Exception as e:  # numpy raises several types for a corrupted archive
        raise LtKerasError(f"ticket {folder!r}: mask.npz is unreadable: {e}") from None
    try:
        model = keras.models.load_model(os.path.join(folder, "model.keras"))
    except Exception as e:
        raise LtKerasError(f"ticket {folder!r}: model.keras is unreadable: {e}") from None
    try:
        mask.check_fits(model)
    except LtKerasError as e:
        raise LtKerasError(f"ticket {folder!r}: mask.npz does not fit model.keras: {e}") from None
    if Mask.from_model(model) != mask:
        raise LtKerasError(f"ticket {folder!r}: the masks inside model.keras differ from mask.npz.")
    _check_finite(model, f"ticket {folder!r}: model.keras")
    return Ticket(model=model, mask=mask, info=info, path=folder)


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number a ticket may hold")


# What each method's ticket.json must hold, and of which type (written by write_ticket; a hand edit is checked).
_REQUIRED = {"imp": {"round": int}, "early_bird": {"prune_ratio": float, "eb_epoch": int}}


def _check_fields(info):
    """ticket.json's numbers are numbers where the tools read them: density and layer_density in [0, 1], and each
    method's own fields (IMP's round, Early-Bird's prune_ratio and eb_epoch) present with their types."""
    def fraction(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise LtKerasError(f"{name} must be a number in [0, 1], got {value!r}.")

    if "density" in info:
        fraction("density", info["density"])
    if not isinstance(info.get("layer_density", {}), dict):
        raise LtKerasError(f"layer_density must map layers to densities, got {info['layer_density']!r}.")
    for key, value in info.get("layer_density", {}).items():
        fraction(f"layer_density[{key!r}]", value)
    for name, kind in _REQUIRED.get(info.get("method"), {}).items():
        value = info.get(name)
        ok = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
        if name not in info or isinstance(value, bool) or not ok or value < 0:
            raise LtKerasError(f"a {info['method']} ticket needs {name!r}, a number >= 0"
                               f"{'' if kind is float else ' (whole)'}; got {value!r}.")


def _check_finite(model, what):
    """A ticket's weights are finite: a NaN or infinite weight is a diverged run, never a result."""
    bad = [w.name for w in model.weights if not np.isfinite(w.numpy()).all()]
    if bad:
        raise LtKerasError(f"{what} has non-finite weights in {bad[:5]}; it comes from a diverged run.")
