"""Errors a user can act on: each is reported as one line, without a traceback."""


class KdlabError(Exception):
    """Base class for errors caused by the user's input or files, not by a bug."""


class ConfigError(KdlabError):
    """params.yaml holds an unknown key, a wrong type or an out-of-range value."""


class DataError(KdlabError):
    """A dataset is missing, incomplete or does not match its checksums."""


class CheckpointError(KdlabError):
    """A checkpoint is missing, corrupt or was written for something else."""
