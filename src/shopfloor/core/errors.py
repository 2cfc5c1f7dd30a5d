"""Errors every layer raises; the API turns them into HTTP status codes."""

from __future__ import annotations


class ShopfloorError(Exception):
    """Base of every error Shopfloor raises on purpose."""

    status_code = 500


class BadInput(ShopfloorError):
    """The caller sent something malformed; ``field`` names what was wrong."""

    status_code = 422

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class Malformed(BadInput):
    """The body could not be parsed at all (bad JSON, not Arrow)."""

    status_code = 400


class PayloadTooLarge(BadInput):
    status_code = 413


class NotFound(ShopfloorError):
    status_code = 404


class Conflict(ShopfloorError):
    status_code = 409


class Unauthorized(ShopfloorError):
    status_code = 401


class Forbidden(ShopfloorError):
    status_code = 403


class StorageError(ShopfloorError):
    """The storage layer failed; nothing of the failed write was acknowledged."""

    status_code = 503
