"""The errors rosetta raises. Each message names the place and the fix."""


class RosettaError(Exception):
    """Base of every error rosetta raises on purpose (the CLI turns these into exit status 2)."""


class SpecError(RosettaError, ValueError):
    """A model, loss, optimizer or training spec is invalid.

    ``where`` is the node path or JSON path, ``op`` the op involved (if any).
    """

    def __init__(self, message: str, where: str | None = None, op: str | None = None):
        self.where = where
        self.op = op
        self.detail = message
        prefix = ""
        if where:
            prefix = f"{where}"
            if op:
                prefix += f" ({op})"
            prefix += ": "
        super().__init__(prefix + message)


class BackendUnavailable(RosettaError):
    """A backend is unknown, not installed, or lacks the requested device or dtype."""


class DataError(RosettaError):
    """A dataset name, data file or batch is invalid."""


class CheckpointError(RosettaError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""
