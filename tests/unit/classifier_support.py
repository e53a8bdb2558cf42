"""Exceptions the classifier tests raise: user-defined types that stand for those of
HTTP clients, drivers and frameworks, and how they are caught."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from mahavishnu_dlq.classifier import (
    ErrorClassifier,
)
from mahavishnu_dlq.models import ErrorCategory

TRANSIENT = ErrorCategory.TRANSIENT
NETWORK = ErrorCategory.NETWORK
RESOURCE = ErrorCategory.RESOURCE
PERMISSION = ErrorCategory.PERMISSION
VALIDATION = ErrorCategory.VALIDATION
PERMANENT = ErrorCategory.PERMANENT

CLASSIFIER = ErrorClassifier()


class StepTimeoutError(TimeoutError):
    """A user's own timeout: a subclass is classified like its base."""


class HTTPError(Exception):
    """An HTTP client error deriving from a generic base, carrying a status code."""

    def __init__(self, message: str = "", *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RateLimitedValueError(ValueError):
    """A client library that derives its errors from ValueError."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class NetworkFirstError(ConnectionError, ValueError):
    """MRO: ConnectionError comes before ValueError."""


class ValidationFirstError(ValueError, ConnectionError):
    """MRO: ValueError comes before ConnectionError."""


class StorageError(OSError, ValueError):
    """An OSError whose errno decides when it has one, ValueError otherwise."""


class Outer:
    class InnerError(Exception):
        """A nested class, named by its qualified name."""


def named_exception(module: str, name: str, *bases: type[BaseException]) -> type[BaseException]:
    """A class that looks like it was defined in ``module`` (no import of it needed)."""
    return type(name, bases or (Exception,), {"__module__": module, "__qualname__": name})


# Stand-ins for client-library exceptions, matched by name like the real ones.
HttpxTimeoutException = named_exception("httpx._exceptions", "TimeoutException")
HttpxReadTimeout = named_exception("httpx._exceptions", "ReadTimeout", HttpxTimeoutException)
RequestsRequestException = named_exception("requests.exceptions", "RequestException", OSError)
RequestsTimeout = named_exception("requests.exceptions", "Timeout", RequestsRequestException)
RequestsHTTPError = named_exception("requests.exceptions", "HTTPError", RequestsRequestException)


def with_attrs(exc: BaseException, **attrs: object) -> BaseException:
    for name, value in attrs.items():
        setattr(exc, name, value)
    return exc


def pydantic_error() -> ValidationError:
    class Order(BaseModel):
        quantity: int

    try:
        Order.model_validate({"quantity": "many"})
    except ValidationError as exc:
        return exc
    raise AssertionError("pydantic accepted an invalid order")


def caught(func: Callable[[], object]) -> BaseException:
    """The exception ``func`` raises, with its traceback."""
    try:
        func()
    except BaseException as exc:
        return exc
    raise AssertionError(f"{func!r} did not raise")


def chained(top: BaseException, cause: BaseException, *, explicit: bool = True) -> BaseException:
    """``top`` raised while handling ``cause`` (``raise top from cause`` when explicit)."""

    def fail() -> None:
        try:
            raise cause
        except BaseException as inner:
            if explicit:
                raise top from inner
            raise top  # noqa: B904 - implicit chaining (__context__) is what is tested

    return caught(fail)
