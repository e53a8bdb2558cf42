"""Fingerprints: exception type names, messages with what varies masked, the user's
own frame, and stable hashes (classification: ``test_classifier``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mahavishnu_dlq import classifier as classifier_module
from mahavishnu_dlq import fingerprints
from mahavishnu_dlq.classifier import (
    ClassifierRule,
    ErrorClassifier,
    error_type_name,
    normalise_message,
)
from mahavishnu_dlq.errors import TaskNotFoundError
from mahavishnu_dlq.models import ErrorCategory
from tests.unit.classifier_support import (
    HttpxReadTimeout,
    Outer,
    StepTimeoutError,
    caught,
)

TRANSIENT = ErrorCategory.TRANSIENT
NETWORK = ErrorCategory.NETWORK
RESOURCE = ErrorCategory.RESOURCE
PERMISSION = ErrorCategory.PERMISSION
VALIDATION = ErrorCategory.VALIDATION
PERMANENT = ErrorCategory.PERMANENT

CLASSIFIER = ErrorClassifier()

# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutError(), "TimeoutError"),
        (KeyError("x"), "KeyError"),
        (StepTimeoutError(), f"{StepTimeoutError.__module__}.StepTimeoutError"),
        (Outer.InnerError(), f"{Outer.__module__}.Outer.InnerError"),
        (TaskNotFoundError("t"), "mahavishnu_dlq.errors.TaskNotFoundError"),
        (HttpxReadTimeout(), "httpx._exceptions.ReadTimeout"),
    ],
)
def test_error_type_name(error: BaseException, expected: str) -> None:
    assert error_type_name(error) == expected


# --------------------------------------------------------------------------- normalise_message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Task 3f2a9c1e-1111-2222-3333-444455556666 failed", "task <uuid> failed"),
        ("Task 3F2A9C1E-1111-2222-3333-444455556666 failed", "task <uuid> failed"),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 missing", "commit <hex> missing"),
        ("object at 0x7f3a2b", "object at <hex>"),
        ("deadbeef is a word, deadbeef1 an id", "deadbeef is a word, <hex> an id"),
        ("took 3.25s after 12 tries", "took <num>s after <num> tries"),
        ("order-123 and job_42", "order-<num> and job_<num>"),
        ("KeyError: 'customer_id'", "keyerror: <str>"),
        ('field "email" is bad', "field <str> is bad"),
        ("can't connect, won't retry", "can't connect, won't retry"),
        ("mail bob.smith+dlq@example.co.uk now", "mail <email> now"),
        (
            "GET https://api.example.com/v1/users?id=5&token=abc#frag failed",
            "get https://api.example.com/v<num>/users?<query> failed",
        ),
        ("at 2024-05-01T10:00:00.123+02:00 then", "at <time> then"),
        ("at 2024-05-01 10:00:00Z then", "at <time> then"),
        ("on 2024-05-01 only", "on <time> only"),
        ("request 01HZX3K5Q7V9W2B4N6M8P0R2T4 failed", "request <id> failed"),
        ("  Many\n\tspaces   here ", "many spaces here"),
        ("UPPER Case", "upper case"),
        ("", ""),
    ],
)
def test_normalise_message(message: str, expected: str) -> None:
    assert normalise_message(message) == expected


def test_normalise_message_truncates() -> None:
    assert len(normalise_message("word " * 1000)) == 500
    assert len(normalise_message("x" * 100_000)) == 500


@given(st.integers(), st.integers(), st.uuids(), st.uuids())
def test_normalise_masks_what_varies(first: int, second: int, id_a: Any, id_b: Any) -> None:
    template = "Order {} for tenant {} failed after {} ms"
    assert normalise_message(template.format(first, id_a, second)) == normalise_message(
        template.format(second, id_b, first)
    )


def _normalise_by_every_pattern(message: str) -> str:
    """The normalisation with every mask applied, none skipped (the reference)."""
    for regex, replacement, _ in fingerprints._MASKS:
        message = regex.sub(replacement, message)
    return message.strip().lower()[:500]


_MESSAGE_PARTS = st.sampled_from(
    [
        "https://api.example.com/v1/x?token=abc#frag",
        "HTTPS://HOST/P?Q=1",
        "bob.smith+tag@example.co.uk",
        "2026-11-26T17:04:21.123+01:00",
        "2026-11-26",
        "123e4567-e89b-12d3-a456-426614174000",
        "'quoted value'",
        '"double quoted"',
        "0xDEADBEEF",
        "0Xff",
        "deadbeef1234",
        "01HZX3K9Q7W2V5R8T6Y4N1M0PB",
        "-42",
        "3.14",
        "1,000,000",
        " \t\n ",
        "order",
        "\u017f",  # long s: case-folds to s under IGNORECASE
        "\u212a",  # Kelvin sign: case-folds to k
        "x-y",
        "@",
        "://",
    ]
)


@given(st.lists(st.one_of(_MESSAGE_PARTS, st.text(max_size=12)), max_size=8).map(" ".join))
def test_skipping_patterns_that_cannot_match_changes_no_fingerprint(message: str) -> None:
    # Stored fingerprints must stay stable across versions: the needles only skip
    # scans that could not have matched.
    assert normalise_message(message) == _normalise_by_every_pattern(message)


# --------------------------------------------------------------------------- fingerprints


class LookupFailedError(Exception):
    """A workflow's own error."""


def load_orders(order_id: int) -> None:
    raise LookupFailedError(f"order {order_id} not loaded after {order_id * 3} ms")


def load_invoices(order_id: int) -> None:
    raise LookupFailedError(f"order {order_id} not loaded after {order_id * 3} ms")


def fail_with(kind: type[Exception], message: str) -> None:
    raise kind(message)


def parse_payload(text: str) -> object:
    return json.loads(text)


def parse_other_payload(text: str) -> object:
    return json.loads(text)


def make_bad_rule() -> None:
    ClassifierRule(NETWORK, pattern="(")


HEX16 = re.compile(r"[0-9a-f]{16}")


def test_fingerprint_is_16_hex_chars() -> None:
    assert HEX16.fullmatch(CLASSIFIER.fingerprint(caught(lambda: load_orders(1))))
    assert HEX16.fullmatch(CLASSIFIER.fingerprint("boom"))


def test_same_failure_with_other_ids_has_the_same_fingerprint() -> None:
    first = CLASSIFIER.fingerprint(caught(lambda: load_orders(17)))
    second = CLASSIFIER.fingerprint(caught(lambda: load_orders(98_765)))
    assert first == second


def test_other_type_has_another_fingerprint() -> None:
    value = caught(lambda: fail_with(ValueError, "bad input 3"))
    type_ = caught(lambda: fail_with(TypeError, "bad input 3"))
    assert CLASSIFIER.fingerprint(value) != CLASSIFIER.fingerprint(type_)


def test_other_message_has_another_fingerprint() -> None:
    first = caught(lambda: fail_with(ValueError, "bad input"))
    second = caught(lambda: fail_with(ValueError, "bad output"))
    assert CLASSIFIER.fingerprint(first) != CLASSIFIER.fingerprint(second)


def test_other_frame_has_another_fingerprint() -> None:
    orders = caught(lambda: load_orders(1))
    invoices = caught(lambda: load_invoices(1))
    assert str(orders) == str(invoices)
    assert CLASSIFIER.fingerprint(orders) != CLASSIFIER.fingerprint(invoices)


def test_library_frames_are_skipped() -> None:
    first = caught(lambda: parse_payload("[1, 2"))
    second = caught(lambda: parse_payload("[10, 20, 30"))
    other = caught(lambda: parse_other_payload("[1, 2"))
    assert fingerprints.user_frame(first.__traceback__).endswith(":parse_payload")
    assert CLASSIFIER.fingerprint(first) == CLASSIFIER.fingerprint(second)
    assert CLASSIFIER.fingerprint(first) != CLASSIFIER.fingerprint(other)


def test_package_frames_are_skipped() -> None:
    error = caught(make_bad_rule)
    assert fingerprints.user_frame(error.__traceback__).endswith(":make_bad_rule")


def test_generated_code_is_judged_by_its_module() -> None:
    namespace: dict[str, Any] = {"__name__": "generated_workflows"}
    exec(compile("def run():\n    raise ValueError('x')\n", "<string>", "exec"), namespace)  # noqa: S102 - a literal
    error = caught(namespace["run"])
    assert fingerprints.user_frame(error.__traceback__) == "generated_workflows:run"


@pytest.mark.parametrize(
    ("filename", "is_user"),
    [
        (__file__, True),
        ("<string>", True),
        ("<frozen importlib._bootstrap>", False),
        (classifier_module.__file__, False),
        (json.__file__, False),
        (pytest.__file__, False),
        (os.path.join(os.sep, "opt", "app", "site-packages", "lib.py"), False),
        (os.path.join(os.sep, "usr", "lib", "python3", "dist-packages", "lib.py"), False),
        (os.path.join(os.sep, "srv", "workflows", "orders.py"), True),
    ],
)
def test_user_files(filename: str, is_user: bool) -> None:
    assert fingerprints._is_user_file(filename) is is_user


def test_no_traceback_means_no_frame() -> None:
    assert fingerprints.user_frame(None) == ""
    error = ValueError("bad input 3")
    assert CLASSIFIER.fingerprint(error) == CLASSIFIER.fingerprint(
        "bad input 7", error_type="ValueError"
    )


def test_string_fingerprints() -> None:
    assert CLASSIFIER.fingerprint("order 1 failed") == CLASSIFIER.fingerprint("Order 2  failed")
    assert CLASSIFIER.fingerprint("order 1 failed") == CLASSIFIER.fingerprint(
        "order 1 failed", error_type=""
    )
    assert CLASSIFIER.fingerprint("order 1 failed") != CLASSIFIER.fingerprint(
        "order 1 failed", error_type="ValueError"
    )
    assert CLASSIFIER.fingerprint("order 1 failed") != CLASSIFIER.fingerprint("order failed")


def test_error_type_overrides_the_name_of_an_exception() -> None:
    error = ValueError("x")
    assert CLASSIFIER.fingerprint(error, error_type="Custom") == CLASSIFIER.fingerprint(
        "x", error_type="Custom"
    )


def test_fingerprint_does_not_depend_on_rules() -> None:
    error = caught(lambda: load_orders(1))
    ruled = ErrorClassifier([ClassifierRule(NETWORK, pattern="order")])
    assert ruled.fingerprint(error) == CLASSIFIER.fingerprint(error)


def test_fingerprint_survives_a_broken_str() -> None:
    class UnprintableError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert HEX16.fullmatch(CLASSIFIER.fingerprint(UnprintableError()))
    assert CLASSIFIER.classify(UnprintableError()) is PERMANENT


#: Fingerprints are persisted: this value must not change between releases.
GOLDEN = ("Connection refused to 10.0.0.7:5432 (attempt 3)", "ConnectionRefusedError")
GOLDEN_FINGERPRINT = "e23dc94c954b7794"


def test_fingerprint_is_pinned() -> None:
    message, error_type = GOLDEN
    assert CLASSIFIER.fingerprint(message, error_type=error_type) == GOLDEN_FINGERPRINT


@pytest.mark.parametrize("hash_seed", ["0", "1", "random"])
def test_fingerprint_is_stable_across_processes(hash_seed: str) -> None:
    message, error_type = GOLDEN
    code = (
        "import sys\n"
        "from mahavishnu_dlq.classifier import ErrorClassifier\n"
        "print(ErrorClassifier().fingerprint(sys.argv[1], error_type=sys.argv[2]))\n"
        "print(ErrorClassifier().fingerprint(ValueError('bad input 9')))\n"
    )
    result = subprocess.run(  # noqa: S603 - runs this interpreter on a literal script
        [sys.executable, "-c", code, message, error_type],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
    )
    assert result.stdout.split() == [
        CLASSIFIER.fingerprint(message, error_type=error_type),
        CLASSIFIER.fingerprint(ValueError("bad input 1")),
    ]
