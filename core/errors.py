"""Pond's one exception tree. Every error a person can cause derives from
`PondError` and carries a stable `code`; the CLI prints the message and exits
non-zero, the REST layer maps the code to an HTTP status in one table."""

from __future__ import annotations


class PondError(Exception):
    """Root of every error Pond raises on purpose. `code` is stable for callers."""

    code = "pond_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(PondError):
    """The caller gave something Pond cannot use; the message says what to change."""

    code = "invalid_input"


class NotFound(PondError):
    """A named dataset, model, version, user… does not exist."""

    code = "not_found"


class AlreadyExists(PondError):
    code = "already_exists"


class PermissionDenied(PondError):
    """The acting user's role does not allow the action."""

    code = "permission_denied"


class AuthenticationFailed(PondError):
    code = "authentication_failed"


class IllegalTransition(PondError):
    """A state change that the entity's lifecycle does not allow."""

    code = "illegal_transition"


class Conflict(PondError):
    """Someone else changed the same thing first; the caller may retry."""

    code = "conflict"


class Busy(PondError):
    """Another run holds the resource (a job lock, the workspace) right now."""

    code = "busy"


class TamperedArtifact(PondError):
    """A stored file no longer matches the sha256 recorded for it."""

    code = "tampered_artifact"


class SchemaOutdated(PondError):
    """The workspace was written by an older Pond and must be migrated first."""

    code = "schema_outdated"


class QueryRefused(PondError):
    """A user's SQL tried to do something the explorer does not allow."""

    code = "query_refused"


class QueryTimeout(PondError):
    code = "query_timeout"
