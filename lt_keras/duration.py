"""One time unit for every point and length of training: iterations, epochs, or both.

Written as open_lth writes its ``Step``: ``"500"`` or ``"500it"`` (iterations),
``"30ep"`` (epochs; fractions allowed, ``"0.5ep"``), ``"2ep100it"`` (both).
A run resolves it to iterations with its own steps per epoch. The warmup, the
step schedule's decay points, the evaluation interval, late rewinding's
``step:K`` and Early-Bird's decay (which shifts the schedule by the epoch a
ticket emerged) all take it and are parsed here, so "epoch 30" means the same
iteration everywhere.

A value of iterations alone is kept as an ``int`` in configs, so run
directories and flag files written before epochs were accepted still match.
"""
import dataclasses
import re

from lt_keras.errors import ConfigError

_PATTERN = re.compile(r"(?:(\d+(?:\.\d+)?)ep)?(?:(\d+)(?:it)?)?")
EXAMPLES = "500, 500it, 30ep, 2ep100it"


@dataclasses.dataclass(frozen=True)
class Duration:
    epochs: float = 0.0
    iterations: int = 0

    @classmethod
    def parse(cls, value, field) -> "Duration":
        """A Duration from ``value`` (an int of iterations or a string); errors name the config ``field``."""
        if isinstance(value, Duration):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(field, f"must be >= 0, got {value}.")
            return cls(0.0, value)
        text = str(value).strip().lower()
        match = _PATTERN.fullmatch(text) if isinstance(value, str) else None
        if not text or match is None:
            raise ConfigError(field, f"{value!r} is not a number of iterations or epochs (e.g. {EXAMPLES}).")
        epochs, iterations = match.groups()
        return cls(float(epochs or 0.0), int(iterations or 0))

    def steps(self, steps_per_epoch: int) -> int:
        """Iterations, with ``steps_per_epoch`` iterations an epoch (fractions of epochs round half to even)."""
        return int(round(self.epochs * steps_per_epoch)) + self.iterations

    @property
    def value(self):
        """The canonical config value: an int of iterations, or a string such as ``"30ep"`` / ``"2ep100it"``."""
        if not self.epochs:
            return self.iterations
        return f"{self.epochs:g}ep" + (f"{self.iterations}it" if self.iterations else "")


def canonical(value, field):
    """``value``'s canonical form (``Duration.value``); None stays None."""
    return None if value is None else Duration.parse(value, field).value


def iterations(value, field, steps_per_epoch=None):
    """``value`` in iterations (None stays None); one in epochs needs ``steps_per_epoch``."""
    if value is None:
        return None
    duration = Duration.parse(value, field)
    if duration.epochs and steps_per_epoch is None:
        raise ConfigError(field, f"{value!r} is in epochs, and here the steps per epoch are unknown: give it in "
                          "iterations (or resolve the config with its dataset's size first).")
    return duration.steps(steps_per_epoch or 0)
