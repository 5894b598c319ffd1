"""Errors the engine raises for problems the user can fix.

Every :class:`MRISuperResError` carries a one-line message that says what is wrong and what to do.
The CLI prints it without a traceback (unless ``--debug``) and exits with a non-zero status.
"""


class MRISuperResError(Exception):
    """A problem with the user's input, model or output path, explained in one line."""


class InputError(MRISuperResError):
    """The input volume cannot be used (missing, unreadable, wrong dimensionality, invalid values)."""


class ModelError(MRISuperResError):
    """The model file or name cannot be used (missing, corrupted, pickled, wrong scale)."""


class OutputError(MRISuperResError):
    """An output path cannot be written (exists without overwrite, folder not writable)."""


class CancelledError(MRISuperResError):
    """The user cancelled a running job; nothing was written."""


class InputWarning(UserWarning):
    """Something about an input the user should know, in one line (the result is still made)."""
