"""Errors of the commands that use a trained model; `hotlap` prints them without a traceback.

They live here, apart from the modules that raise them, so the CLI can catch them without
importing torch or the simulator.
"""


class CommandError(RuntimeError):
    """A command cannot do what was asked; the message names the option, file or value and what to do."""


class EvaluationError(CommandError):
    """Evaluation settings that cannot run."""


class VideoError(CommandError):
    """The video cannot be written (missing extra, unknown format)."""


class ExportError(CommandError):
    """The export cannot be made (unknown format, missing extra)."""
