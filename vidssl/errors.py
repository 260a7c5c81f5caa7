"""Exceptions with messages that name the file, line or key at fault."""


class VidsslError(Exception):
    """Base class of every error vidssl raises on purpose."""


class DataError(VidsslError):
    """A dataset file, list entry or layout is unusable. The message names the file."""


class DecodeError(DataError):
    """A video (or frame folder) could not be decoded. The message names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigError(VidsslError):
    """A configuration key or value is invalid. The message names the key (and the file)."""
