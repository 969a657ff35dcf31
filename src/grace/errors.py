"""User-facing errors: one line that names the file and the entry at fault."""

from __future__ import annotations


class GraceError(Exception):
    """An error caused by the user's input or configuration; the CLI prints it as one line."""


class InputError(GraceError):
    """Bad input data: a missing or corrupt file, malformed JSON, duplicate ids, empty texts."""

    def __init__(self, message: str, *, path: object | None = None, entry: object | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if entry is not None:
            where.append(f"entry {entry}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path = path
        self.entry = entry
