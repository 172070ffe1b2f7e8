"""Errors a user can act on: binaries print them without a traceback."""


class LtKerasError(Exception):
    """Bad input, missing files or an inconsistent run directory."""


class MaskError(LtKerasError, ValueError):
    """A mask whose keys, shapes or values do not fit."""


class DataError(LtKerasError):
    """A dataset that cannot be found or read."""


class DivergedError(LtKerasError):
    """Training produced a non-finite or exploding loss, or non-finite weights: nothing is kept as a result."""


class ConfigError(LtKerasError, ValueError):
    """A setting out of range, named by its config field; the binaries print it as the flag ``--<field>``."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class RunDirError(ConfigError):
    """A run directory that cannot be used: missing, locked, or holding a different configuration."""

    def __init__(self, message):
        super().__init__("output_dir", message)
