"""Error classification and fingerprints: types before messages, word boundaries, stable hashes."""

from __future__ import annotations

import asyncio
import builtins
import errno
import json
import re
import socket
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

import pytest

from mahavishnu_dlq import classifier as classifier_module
from mahavishnu_dlq.classifier import (
    ClassifierRule,
    ErrorClassifier,
    http_status,
)
from mahavishnu_dlq.errors import ConfigurationError, JobNotFoundError
from mahavishnu_dlq.models import ErrorCategory
from tests.unit.classifier_support import (
    HTTPError,
    HttpxReadTimeout,
    NetworkFirstError,
    Outer,
    RateLimitedValueError,
    RequestsHTTPError,
    RequestsRequestException,
    RequestsTimeout,
    StepTimeoutError,
    StorageError,
    ValidationFirstError,
    caught,
    chained,
    named_exception,
    pydantic_error,
    with_attrs,
)

TRANSIENT = ErrorCategory.TRANSIENT
NETWORK = ErrorCategory.NETWORK
RESOURCE = ErrorCategory.RESOURCE
PERMISSION = ErrorCategory.PERMISSION
VALIDATION = ErrorCategory.VALIDATION
PERMANENT = ErrorCategory.PERMANENT

CLASSIFIER = ErrorClassifier()

# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(TimeoutError(), NETWORK, id="empty-TimeoutError"),
        pytest.param(asyncio.TimeoutError(), NETWORK, id="asyncio.TimeoutError"),
        pytest.param(
            StepTimeoutError("step 3 exceeded its budget"), NETWORK, id="TimeoutError-subclass"
        ),
        pytest.param(ConnectionError(), NETWORK, id="ConnectionError"),
        pytest.param(ConnectionRefusedError(), NETWORK, id="ConnectionRefusedError"),
        pytest.param(ConnectionResetError(), NETWORK, id="ConnectionResetError"),
        pytest.param(BrokenPipeError(), NETWORK, id="BrokenPipeError"),
        pytest.param(socket.gaierror(-2, "Name or service not known"), NETWORK, id="gaierror"),
        pytest.param(OSError(errno.ECONNREFUSED, "x"), NETWORK, id="errno-ECONNREFUSED"),
        pytest.param(OSError(errno.EHOSTUNREACH, "x"), NETWORK, id="errno-EHOSTUNREACH"),
        pytest.param(OSError(errno.ENETUNREACH, "x"), NETWORK, id="errno-ENETUNREACH"),
        pytest.param(OSError(errno.ETIMEDOUT, "x"), NETWORK, id="errno-ETIMEDOUT"),
        pytest.param(OSError(errno.ENOSPC, "write failed"), RESOURCE, id="errno-ENOSPC"),
        pytest.param(OSError(errno.EMFILE, "x"), RESOURCE, id="errno-EMFILE"),
        pytest.param(OSError(errno.ENFILE, "x"), RESOURCE, id="errno-ENFILE"),
        pytest.param(OSError(errno.ENOMEM, "x"), RESOURCE, id="errno-ENOMEM"),
        pytest.param(OSError(errno.EDQUOT, "x"), RESOURCE, id="errno-EDQUOT"),
        pytest.param(OSError(errno.EACCES, "x"), PERMISSION, id="errno-EACCES"),
        pytest.param(OSError(errno.EPERM, "x"), PERMISSION, id="errno-EPERM"),
        pytest.param(OSError(errno.EAGAIN, "x"), TRANSIENT, id="errno-EAGAIN"),
        pytest.param(OSError(errno.ENOENT, "x"), PERMANENT, id="errno-ENOENT"),
        pytest.param(OSError("the disk is fine"), PERMANENT, id="OSError-without-errno"),
        pytest.param(MemoryError(), RESOURCE, id="MemoryError"),
        pytest.param(PermissionError(), PERMISSION, id="empty-PermissionError"),
        pytest.param(ValueError("bad"), VALIDATION, id="ValueError"),
        pytest.param(TypeError("bad"), VALIDATION, id="TypeError"),
        pytest.param(KeyError("x"), VALIDATION, id="KeyError"),
        pytest.param(
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            VALIDATION,
            id="UnicodeDecodeError",
        ),
        pytest.param(json.JSONDecodeError("Expecting value", "", 0), VALIDATION, id="JSON"),
        pytest.param(pydantic_error(), VALIDATION, id="pydantic-ValidationError"),
        pytest.param(ConfigurationError("bad", field="x"), VALIDATION, id="DLQ-ValueError"),
        pytest.param(JobNotFoundError("j-1"), PERMANENT, id="LookupError-is-not-KeyError"),
        pytest.param(RuntimeError("boom"), PERMANENT, id="RuntimeError"),
        pytest.param(NotImplementedError(), PERMANENT, id="NotImplementedError"),
        pytest.param(Exception(), PERMANENT, id="empty-Exception"),
        pytest.param(SystemExit(200), PERMANENT, id="SystemExit-code-is-not-HTTP"),
        pytest.param(NetworkFirstError(), NETWORK, id="mro-ConnectionError-first"),
        pytest.param(ValidationFirstError(), VALIDATION, id="mro-ValueError-first"),
        pytest.param(StorageError(errno.ENOSPC, "x"), RESOURCE, id="mro-OSError-errno-first"),
        pytest.param(StorageError("x"), VALIDATION, id="mro-continues-after-OSError"),
        pytest.param(HttpxReadTimeout(), NETWORK, id="httpx-by-name"),
        pytest.param(RequestsTimeout(), NETWORK, id="requests-by-name"),
        pytest.param(RequestsRequestException(), PERMANENT, id="requests-base-unknown"),
    ],
)
def test_classify_by_type(error: BaseException, expected: ErrorCategory) -> None:
    assert CLASSIFIER.classify(error) is expected


def test_type_beats_a_misleading_message() -> None:
    assert CLASSIFIER.classify(ValueError("connection refused")) is VALIDATION
    assert CLASSIFIER.classify(ConnectionError("invalid frame")) is NETWORK
    assert CLASSIFIER.classify(MemoryError("permission denied")) is RESOURCE


def test_errno_and_status_are_read_per_instance_not_cached_per_type() -> None:
    assert CLASSIFIER.classify(OSError(errno.ENOSPC, "x")) is RESOURCE
    assert CLASSIFIER.classify(OSError(errno.EHOSTUNREACH, "x")) is NETWORK
    assert CLASSIFIER.classify(OSError(errno.ENOSPC, "x")) is RESOURCE
    assert CLASSIFIER.classify(HTTPError(status_code=503)) is TRANSIENT
    assert CLASSIFIER.classify(HTTPError(status_code=404)) is VALIDATION
    assert CLASSIFIER.classify(HTTPError(status_code=403)) is PERMISSION


def test_type_cache_is_bounded() -> None:
    for number in range(classifier_module._CACHE_SIZE + 10):
        CLASSIFIER.classify(named_exception("generated", f"Error{number}")())
    assert 0 < len(classifier_module._type_facts_cache) <= classifier_module._CACHE_SIZE


# --------------------------------------------------------------------------- HTTP status


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(with_attrs(Exception(), status_code=503), 503, id="status_code"),
        pytest.param(with_attrs(Exception(), status=429), 429, id="status"),
        pytest.param(with_attrs(Exception(), code=404), 404, id="code"),
        pytest.param(with_attrs(Exception(), status=HTTPStatus.BAD_GATEWAY), 502, id="HTTPStatus"),
        pytest.param(
            with_attrs(Exception(), response=SimpleNamespace(status_code=502)), 502, id="response"
        ),
        pytest.param(
            with_attrs(Exception(), response=SimpleNamespace(status=500)), 500, id="aiohttp-like"
        ),
        pytest.param(
            with_attrs(
                Exception(), response={"ResponseMetadata": {"HTTPStatusCode": 503}, "Error": {}}
            ),
            503,
            id="botocore-like",
        ),
        pytest.param(
            with_attrs(Exception(), status_code="N/A", status=504), 504, id="skips-non-int"
        ),
        pytest.param(with_attrs(Exception(), status_code=True), None, id="bool"),
        pytest.param(with_attrs(Exception(), status_code=42), None, id="too-small"),
        pytest.param(with_attrs(Exception(), status_code=1000), None, id="too-large"),
        pytest.param(with_attrs(Exception(), status_code="503"), None, id="str"),
        pytest.param(with_attrs(Exception(), response=None), None, id="response-None"),
        pytest.param(
            with_attrs(Exception(), response=SimpleNamespace(text="x")), None, id="no-status"
        ),
        pytest.param(with_attrs(Exception(), response={"Error": {}}), None, id="mapping-no-meta"),
        pytest.param(SystemExit(404), None, id="SystemExit"),
        pytest.param(Exception("503"), None, id="none"),
    ],
)
def test_http_status(error: BaseException, expected: int | None) -> None:
    assert http_status(error) == expected


def test_http_status_survives_a_broken_property() -> None:
    class BrokenStatusError(Exception):
        @property
        def status_code(self) -> int:
            raise RuntimeError("no response yet")

    assert http_status(BrokenStatusError()) is None
    assert CLASSIFIER.classify(BrokenStatusError("fine")) is PERMANENT


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        *[(status, TRANSIENT) for status in (408, 425, 429, 500, 502, 503, 504, 507, 599)],
        *[(status, PERMISSION) for status in (401, 403, 407)],
        *[(status, VALIDATION) for status in (400, 404, 409, 410, 413, 418, 422)],
        *[(status, PERMANENT) for status in (200, 302)],
    ],
)
def test_classify_by_status(status: int, expected: ErrorCategory) -> None:
    assert CLASSIFIER.classify(HTTPError("request failed", status_code=status)) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(RateLimitedValueError("slow down", 429), TRANSIENT, id="over-ValueError"),
        pytest.param(HTTPError("invalid payload", status_code=503), TRANSIENT, id="over-keywords"),
        pytest.param(with_attrs(RuntimeError("x"), code=404), VALIDATION, id="over-RuntimeError"),
        pytest.param(RequestsHTTPError("x"), PERMANENT, id="no-status"),
        pytest.param(
            with_attrs(RequestsHTTPError("x"), response=SimpleNamespace(status_code=503)),
            TRANSIENT,
            id="requests-like",
        ),
        pytest.param(HTTPError(status_code=200), PERMANENT, id="2xx-says-nothing"),
    ],
)
def test_status_wins_over_type_and_message(error: BaseException, expected: ErrorCategory) -> None:
    assert CLASSIFIER.classify(error) is expected


# --------------------------------------------------------------------------- cause chain


def test_cause_chain_gives_the_type_when_the_top_does_not() -> None:
    error = chained(RuntimeError("workflow failed"), ConnectionError())
    assert CLASSIFIER.classify(error) is NETWORK


def test_implicit_context_is_followed() -> None:
    error = chained(RuntimeError("workflow failed"), MemoryError(), explicit=False)
    assert CLASSIFIER.classify(error) is RESOURCE


def test_suppressed_context_is_not_followed() -> None:
    def fail() -> None:
        try:
            raise ConnectionError
        except ConnectionError:
            raise RuntimeError("workflow failed") from None

    assert CLASSIFIER.classify(caught(fail)) is PERMANENT


def test_top_type_wins_over_the_cause() -> None:
    error = chained(ValueError("bad response"), ConnectionError())
    assert CLASSIFIER.classify(error) is VALIDATION


def test_status_in_the_cause() -> None:
    error = chained(RuntimeError("step failed"), HTTPError(status_code=503))
    assert CLASSIFIER.classify(error) is TRANSIENT


def test_cause_type_wins_over_top_keywords() -> None:
    error = chained(RuntimeError("invalid state after retry"), TimeoutError())
    assert CLASSIFIER.classify(error) is NETWORK


def test_keywords_of_the_cause() -> None:
    error = chained(RuntimeError("step failed"), Exception("rate limit exceeded"))
    assert CLASSIFIER.classify(error) is TRANSIENT


def deep_chain(depth: int) -> BaseException:
    error: BaseException = ConnectionError()
    for level in range(depth):
        wrapper = RuntimeError(f"level {level}")
        wrapper.__cause__ = error
        error = wrapper
    return error


def test_chain_depth_is_bounded() -> None:
    assert CLASSIFIER.classify(deep_chain(3)) is NETWORK
    assert CLASSIFIER.classify(deep_chain(50)) is PERMANENT


def test_cyclic_chain_terminates() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__ = second
    second.__cause__ = first
    assert CLASSIFIER.classify(first) is PERMANENT


def test_exception_group_members_are_classified() -> None:
    group_type: Any = getattr(builtins, "ExceptionGroup", None)
    if group_type is None:
        pytest.skip("ExceptionGroup is built in from Python 3.11")
    group = group_type("unhandled errors in a TaskGroup", [RuntimeError("x"), ConnectionError()])
    assert CLASSIFIER.classify(group) is NETWORK


# --------------------------------------------------------------------------- message keywords

KEYWORD_CASES = [
    # transient
    ("Rate limit exceeded", TRANSIENT),
    ("You have been rate-limited", TRANSIENT),
    ("RateLimitError: slow down", TRANSIENT),
    ("429 Too Many Requests", TRANSIENT),
    ("ThrottlingException: Rate exceeded", TRANSIENT),
    ("Request throttled", TRANSIENT),
    ("Resource temporarily unavailable", TRANSIENT),
    ("503 Service Unavailable", TRANSIENT),
    ("ServiceUnavailable", TRANSIENT),
    ("server overloaded, try again", TRANSIENT),
    ("please retry later", TRANSIENT),
    ("Deadlock found when trying to get lock", TRANSIENT),
    # network
    ("Connection refused", NETWORK),
    ("connection reset by peer", NETWORK),
    ("ConnectionResetError: [Errno 104]", NETWORK),
    ("Lost connection to MySQL server", NETWORK),
    ("could not connect to server", NETWORK),
    ("Read timed out.", NETWORK),
    ("request timeout", NETWORK),
    ("TimeoutError", NETWORK),
    ("Host unreachable", NETWORK),
    ("DNS lookup failed", NETWORK),
    ("socket closed", NETWORK),
    ("Network is down", NETWORK),
    ("Broken pipe", NETWORK),
    ("getaddrinfo ENOTFOUND api.example.com", NETWORK),
    ("connect ECONNREFUSED 127.0.0.1:5432", NETWORK),
    # resource
    ("Quota exceeded for project", RESOURCE),
    ("QuotaExceededError", RESOURCE),
    ("CUDA out of memory", RESOURCE),
    ("disk full", RESOURCE),
    ("No space left on device", RESOURCE),
    ("RESOURCE_EXHAUSTED", RESOURCE),
    ("Too many open files", RESOURCE),
    ("container killed: memory limit reached", RESOURCE),
    ("OOMKilled", RESOURCE),
    # permission
    ("Permission denied", PERMISSION),
    ("Access denied for user", PERMISSION),
    ("AccessDeniedException", PERMISSION),
    ("request denied", PERMISSION),
    ("403 Forbidden", PERMISSION),
    ("unauthorized", PERMISSION),
    ("unauthorised", PERMISSION),
    ("not authorized to perform this action", PERMISSION),
    ("Operation not permitted", PERMISSION),
    ("invalid credentials", PERMISSION),
    ("authentication failed for user", PERMISSION),
    # validation
    ("Invalid value for 'amount'", VALIDATION),
    ("malformed JSON", VALIDATION),
    ("required field 'name'", VALIDATION),
    ("missing required parameter", VALIDATION),
    ("name is required", VALIDATION),
    ("amount must be positive", VALIDATION),
    ("schema mismatch", VALIDATION),
    ("ValidationError: 2 errors", VALIDATION),
    ("'x' is not a valid UUID", VALIDATION),
    ("unexpected type for field", VALIDATION),
    ("failed to parse response", VALIDATION),
    ("unsupported format", VALIDATION),
    # priority between categories
    ("Request denied: rate limit exceeded", TRANSIENT),
    ("Quota exceeded, please try again later", TRANSIENT),
    ("Invalid response: connection reset", NETWORK),
    ("Access denied: invalid token", PERMISSION),
    ("socket: permission denied", PERMISSION),
    ("timeout_seconds must be positive", VALIDATION),
    # the traps of substring matching
    ("namespace not found", PERMANENT),
    ("information missing", PERMANENT),
    ("reformatted output", PERMANENT),
    ("The connectionless protocol", PERMANENT),
    ("a contemporary design", PERMANENT),
    ("quotation marks are balanced", PERMANENT),
    ("cache entry invalidated", PERMANENT),
    ("reconnected after a failover", PERMANENT),
    ("the time outside office hours", PERMANENT),
    ("workflow failed", PERMANENT),
    ("", PERMANENT),
]


@pytest.mark.parametrize(("message", "expected"), KEYWORD_CASES)
def test_keywords_on_exceptions(message: str, expected: ErrorCategory) -> None:
    assert CLASSIFIER.classify(Exception(message)) is expected


@pytest.mark.parametrize(("message", "expected"), KEYWORD_CASES)
def test_keywords_on_strings(message: str, expected: ErrorCategory) -> None:
    assert CLASSIFIER.classify(message) is expected


def test_keywords_are_case_insensitive() -> None:
    assert CLASSIFIER.classify("CONNECTION REFUSED") is NETWORK
    assert CLASSIFIER.classify("connection refused") is NETWORK


def test_keywords_only_read_the_start_of_huge_messages() -> None:
    padding = "x " * classifier_module._KEYWORD_SCAN_CHARS
    assert CLASSIFIER.classify("rate limited " + padding) is TRANSIENT
    assert CLASSIFIER.classify(padding + " rate limited") is PERMANENT


def test_keywords_can_be_turned_off() -> None:
    classifier = ErrorClassifier(use_keywords=False)
    assert classifier.use_keywords is False
    assert classifier.classify(Exception("rate limit exceeded")) is PERMANENT
    assert classifier.classify("rate limit exceeded") is PERMANENT
    assert classifier.classify(TimeoutError()) is NETWORK


# --------------------------------------------------------------------------- rules


def test_rules_override_types() -> None:
    classifier = ErrorClassifier([ClassifierRule(PERMANENT, exception_type=TimeoutError)])
    assert classifier.classify(TimeoutError()) is PERMANENT
    assert classifier.classify(StepTimeoutError()) is PERMANENT
    assert classifier.classify(ConnectionError()) is NETWORK


def test_rules_override_status_and_keywords() -> None:
    classifier = ErrorClassifier([ClassifierRule(RESOURCE, pattern=r"tenant \d+ is full")])
    assert classifier.classify(HTTPError("Tenant 42 is full", status_code=503)) is RESOURCE
    assert classifier.classify("invalid: tenant 7 is full") is RESOURCE


def test_first_matching_rule_wins() -> None:
    rules = [
        ClassifierRule(TRANSIENT, pattern="lock"),
        ClassifierRule(PERMANENT, pattern="lock"),
    ]
    assert ErrorClassifier(rules).classify(RuntimeError("lock held")) is TRANSIENT
    assert ErrorClassifier(rules[::-1]).classify(RuntimeError("lock held")) is PERMANENT


@pytest.mark.parametrize(
    ("exception_type", "error", "matches"),
    [
        pytest.param(ConnectionError, ConnectionRefusedError(), True, id="class-subclass"),
        pytest.param(ConnectionError, OSError(), False, id="class-base"),
        pytest.param("TimeoutError", TimeoutError(), True, id="bare"),
        pytest.param("builtins.TimeoutError", TimeoutError(), True, id="builtins-qualified"),
        pytest.param("TimeoutError", StepTimeoutError(), True, id="bare-base-in-mro"),
        pytest.param("StepTimeoutError", StepTimeoutError(), True, id="bare-own"),
        pytest.param(
            f"{StepTimeoutError.__module__}.StepTimeoutError",
            StepTimeoutError(),
            True,
            id="qualified-own",
        ),
        pytest.param("other.module.StepTimeoutError", StepTimeoutError(), False, id="wrong-module"),
        pytest.param("OSError", ConnectionRefusedError(), True, id="bare-far-base"),
        pytest.param("ValueError", TimeoutError(), False, id="bare-unrelated"),
        pytest.param("Outer.InnerError", Outer.InnerError(), True, id="nested-qualname"),
        pytest.param(
            f"{Outer.__module__}.Outer.InnerError", Outer.InnerError(), True, id="nested-full"
        ),
        pytest.param("InnerError", Outer.InnerError(), True, id="nested-bare"),
        pytest.param("httpx.ReadTimeout", HttpxReadTimeout(), True, id="package-prefix"),
        pytest.param("httpx.TimeoutException", HttpxReadTimeout(), True, id="package-base"),
        pytest.param("httpx._exceptions.ReadTimeout", HttpxReadTimeout(), True, id="full"),
        pytest.param("requests.Timeout", RequestsTimeout(), True, id="requests-prefix"),
        pytest.param("httpx.Timeout", RequestsTimeout(), False, id="other-package"),
        pytest.param("requests.ReadTimeout", HttpxReadTimeout(), False, id="other-package-2"),
    ],
)
def test_rule_exception_types(
    exception_type: str | type[BaseException], error: BaseException, matches: bool
) -> None:
    rule = ClassifierRule(RESOURCE, exception_type=exception_type)
    assert rule.matches(error) is matches
    expected = RESOURCE if matches else ErrorClassifier().classify(error)
    assert ErrorClassifier([rule]).classify(error) is expected


def test_rule_with_type_and_pattern_needs_both() -> None:
    rule = ClassifierRule(TRANSIENT, exception_type=RuntimeError, pattern=r"lock \w+ busy")
    assert rule.matches(RuntimeError("LOCK orders BUSY"))
    assert not rule.matches(RuntimeError("lock"))
    assert not rule.matches(ValueError("lock orders busy"))
    assert not rule.matches("lock orders busy")


def test_string_errors_only_meet_pattern_rules() -> None:
    classifier = ErrorClassifier(
        [
            ClassifierRule(PERMANENT, exception_type="TimeoutError"),
            ClassifierRule(RESOURCE, pattern="bucket"),
        ]
    )
    assert classifier.classify("timed out") is NETWORK
    assert classifier.classify("Bucket is full") is RESOURCE


def test_rules_see_the_cause_chain() -> None:
    classifier = ErrorClassifier([ClassifierRule(PERMANENT, exception_type=ConnectionError)])
    error = chained(RuntimeError("workflow failed"), ConnectionError())
    assert classifier.classify(error) is PERMANENT


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="needs an exception_type, a pattern or both"):
        ClassifierRule(NETWORK)
    with pytest.raises(ValueError, match=re.escape("invalid pattern '(unclosed'")):
        ClassifierRule(NETWORK, pattern="(unclosed")
    with pytest.raises(ValueError, match="must not be empty"):
        ClassifierRule(NETWORK, pattern="")
    with pytest.raises(ValueError, match="non-empty name"):
        ClassifierRule(NETWORK, exception_type="")
    with pytest.raises(ValueError, match="exception class"):
        ClassifierRule(NETWORK, exception_type=int)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown error category"):
        ClassifierRule("flaky", pattern="x")  # type: ignore[arg-type]


def test_rule_category_from_settings_strings() -> None:
    assert ClassifierRule("network", pattern="x").category is NETWORK  # type: ignore[arg-type]
    assert ClassifierRule("NETWORK", pattern="x").category is NETWORK  # type: ignore[arg-type]


def test_rules_are_values() -> None:
    rule = ClassifierRule(NETWORK, exception_type="TimeoutError", pattern="x")
    same = ClassifierRule(NETWORK, exception_type="TimeoutError", pattern="x")
    assert rule == same
    assert hash(rule) == hash(same)
    assert "pattern='x'" in repr(rule)
    assert "_regex" not in repr(rule)
    classifier = ErrorClassifier([rule])
    assert classifier.rules == (rule,)
    assert "TimeoutError" in repr(classifier)
