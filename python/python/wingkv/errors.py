"""wingkv's errors as Python exceptions.

Every error a server or the client answers has a code (``wingkv._native.error_codes()``); a call
that fails raises ``{Code}Error`` from this module, a subclass of :class:`WingkvError` whose
``code`` attribute is the code's name. Where a builtin exception means the same, the class also
derives from it, so ``except ValueError`` catches ``InvalidArgumentError`` and ``except
TimeoutError`` catches ``wingkv.errors.TimeoutError``.
"""

import builtins


class WingkvError(Exception):
    """A wingkv error. ``code`` is its code's name (``"Busy"``, ``"TableNotFound"``, ...)."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class NotLeaderError(WingkvError):
    """The request reached a replica that is not the primary (the client retries these)."""


class NotFoundError(WingkvError, LookupError):
    """The table, partition or replica does not exist here."""


class TableNotFoundError(NotFoundError):
    """No table has this name."""


class InvalidArgumentError(WingkvError, ValueError):
    """The request is malformed or out of bounds."""


class AlreadyExistsError(WingkvError):
    """The thing to create exists already."""


class InvalidStateError(WingkvError):
    """The operation does not fit the current state (e.g. a bulk load is already running)."""


class BusyError(WingkvError):
    """The server is overloaded or the table is write-throttled to reject; retry later."""


class DiskFullError(WingkvError):
    """The server's disk is full."""


class OperationDisabledError(WingkvError):
    """The operation is disabled on this table."""


class PermissionDeniedError(WingkvError, PermissionError):
    """The caller may not do this."""


class UnauthenticatedError(WingkvError):
    """The caller did not authenticate."""


class TableDroppedError(NotFoundError):
    """The table was dropped."""


class WrongPartitionError(WingkvError):
    """The record does not belong to the addressed partition."""


class UnavailableError(WingkvError, ConnectionError):
    """No server could answer."""


class TimeoutError(WingkvError, builtins.TimeoutError):
    """The request did not finish within its deadline."""


class CorruptionError(WingkvError):
    """Stored or received data is corrupt."""


class StorageError(WingkvError):
    """The storage engine failed."""


class IoError(WingkvError, OSError):
    """A file or provider operation failed."""


class ConfigError(WingkvError, ValueError):
    """A configuration is invalid."""


class InternalError(WingkvError):
    """A bug: the server or client reached a state it should not."""


__all__ = [name for name, value in list(globals().items()) if isinstance(value, type) and issubclass(value, WingkvError)]
