"""Errors a user can act on.

Every error raised for bad input derives from ``MSSDError`` so the CLI can print it as one line
(``mssd: error: <message>``) and exit 2, while genuine bugs keep their traceback.
"""


class MSSDError(Exception):
    """Base class for user-facing errors: the message alone must tell the user what to fix."""


class ConfigError(MSSDError):
    """A config file, override or value is wrong. The message names the key path (and file:line)."""


class DataFormatError(MSSDError):
    """A dataset file is malformed. The message is ``FILE:LINE: what is wrong``."""


class NonFiniteLossError(MSSDError):
    """Training produced a NaN/inf loss. Never retried: the same config would diverge again."""
