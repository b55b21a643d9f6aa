"""The one exception type the kit raises for bad input.

`GmregError` is a `ValueError`, so the Python API keeps its promise ("bad input raises ValueError"), and the CLI
catches exactly this type to print one clean line instead of a traceback.
"""


class GmregError(ValueError):
    """Bad input or state the user can fix; the message says how."""


class DataNotFoundError(GmregError, FileNotFoundError):
    """Dataset files are missing (offline); the message says how to get them."""


class TrainingDiverged(GmregError, FloatingPointError):
    """The training loss became NaN or Inf."""
