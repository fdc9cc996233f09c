"""Exceptions. Every error the C library reports arrives as SparseFlowError with its status and
the library's message; argument errors caught in Python use the same type and statuses."""

import enum


class Status(enum.IntEnum):
    """Mirrors sf_status in include/sparseflow/sparseflow.h."""

    OK = 0
    INVALID_ARGUMENT = 1
    UNSUPPORTED_SHAPE = 2
    IO = 3
    FORMAT = 4
    OUT_OF_MEMORY = 5
    CUDA = 6
    NO_DEVICE = 7
    NOT_FOUND = 8
    INTERNAL = 9


class SparseFlowError(Exception):
    """An error from SparseFlow: .status (a Status, or the raw int for an unknown value) and
    .message (what was expected, what was found, what to do)."""

    def __init__(self, status, message):
        try:
            status = Status(status)
        except ValueError:
            pass
        self.status = status
        self.message = message
        super().__init__(message)

    def __str__(self):
        name = self.status.name if isinstance(self.status, Status) else str(self.status)
        return f"{self.message} [{name}]"


class LibraryNotFoundError(SparseFlowError, OSError):
    """libsparseflow.so could not be found or loaded; the message says where it looked."""

    def __init__(self, message):
        SparseFlowError.__init__(self, Status.NOT_FOUND, message)
