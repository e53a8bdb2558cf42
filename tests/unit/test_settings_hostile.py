"""Hostile settings: files, variables and arguments that must end in one ConfigurationError.

Nothing a settings file, an environment variable or a keyword argument holds may
end in a traceback, a hang or a shown password: a repeated key, nesting deeper
than the bound, an alias bomb, a 5000-digit integer, a file too big or not UTF-8,
JSON nested too deep, credentials in host URLs (moved to username/password when
settings load). The CLI reports each as one stderr line with exit status 2.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mahavishnu_dlq.cli.app import run_cli
from mahavishnu_dlq.credentials import MASK
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.models import ErrorCategory
from mahavishnu_dlq.settings import DLQSettings, problems
from mahavishnu_dlq.settings.sources import MAX_ENV_BYTES
from mahavishnu_dlq.settings.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from tests.unit.settings_support import (  # noqa: F401 - an autouse fixture
    ENCODED,
    PASSWORD,
    clean_environment,
    nested_dict,
    nested_list,
    one_line,
    refused,
    write,
)

# --- duplicate keys -----------------------------------------------------------------


def test_a_duplicate_top_level_key_names_the_key_the_file_and_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "max_size: 500\nenabled: true\nmax_size: 600\n")
    message = one_line(refused(path))
    assert str(path) in message
    assert "duplicate key 'max_size'" in message
    assert "line 3, column 1" in message
    assert "first at line 1, column 1" in message


def test_a_duplicate_nested_key_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        processor:
          concurrency: 4
          batch_size: 10
          concurrency: 8
        """,
    )
    message = one_line(refused(path))
    assert "duplicate key 'concurrency'" in message
    assert "line 5" in message
    assert "first at line 3" in message


def test_keys_that_construct_to_the_same_value_are_duplicates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        policies:
          by_workflow:
            1: {max_retries: 1}
            0x1: {max_retries: 2}
        """,
    )
    assert "duplicate key '0x1' (first at line 4" in refused(path)


def test_setting_names_differing_only_in_case_are_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, "max_size: 500\nMAX_SIZE: 600\n")
    message = refused(path)
    assert "duplicate key 'MAX_SIZE', the same setting as 'max_size'" in message
    assert "first at line 1" in message


def test_keys_differing_in_type_are_not_duplicates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        policies:
          by_workflow:
            "1": {max_retries: 1}
            nightly: {max_retries: 2}
        """,
    )
    settings = DLQSettings.load(path)
    assert set(settings.policies.by_workflow) == {"1", "nightly"}


# --- anchors, aliases, merge keys, and the alias bomb ---------------------------------


def test_ordinary_anchors_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        policies:
          by_category:
            network: &patient
              max_retries: 6
              jitter: full
            resource: *patient
          by_workflow:
            nightly: &nightly
              policy: linear
              max_retries: 2
            weekly:
              <<: *nightly
              max_retries: 5
        opensearch:
          hosts: [http://a:9200, http://b:9200]
        """,
    )
    settings = DLQSettings.load(path)
    policies = settings.policies
    resource = policies.by_category[ErrorCategory.RESOURCE]
    assert resource == policies.by_category[ErrorCategory.NETWORK]
    assert resource.max_retries == 6
    weekly = policies.by_workflow["weekly"]
    assert (weekly.policy, weekly.max_retries) == (policies.by_workflow["nightly"].policy, 5)
    assert settings.opensearch.hosts == ["http://a:9200", "http://b:9200"]


BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_an_alias_bomb_is_refused_without_being_expanded(tmp_path: Path) -> None:
    assert len(BOMB.encode()) < 600  # nine levels of nine: 9**9 strings once expanded
    message = one_line(refused(write(tmp_path, BOMB)))
    assert f"more than {MAX_NODES} YAML nodes once aliases are expanded" in message
    assert "line 5" in message  # e: 1 + 9 * 7381 nodes, the first level past the bound


def test_an_alias_bomb_where_settings_are_validated_is_refused(tmp_path: Path) -> None:
    anchors = ["&a [x, x, x, x, x, x, x, x, x]"] + [
        f"&{name} [{', '.join([f'*{previous}'] * 9)}]"
        for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    path = write(tmp_path, f"classifier:\n  rules: [{', '.join(anchors)}]\n")
    assert f"more than {MAX_NODES} YAML nodes" in refused(path)


def test_a_repeated_merge_key_is_a_duplicate(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        policies:
          by_workflow:
            a: &a {max_retries: 1}
            b: &b {policy: never}
            c:
              <<: *a
              <<: *b
        """,
    )
    assert "duplicate key '<<' (first at line 7" in refused(path)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "alerts: &loop [*loop]\n")
    assert "alias *loop is used inside its own anchor" in one_line(refused(path))


def test_a_large_document_without_aliases_is_bounded_too(tmp_path: Path) -> None:
    rules = "".join("    - {category: network, pattern: x}\n" for _ in range(MAX_NODES // 5))
    path = write(tmp_path, f"classifier:\n  rules:\n{rules}")
    assert f"more than {MAX_NODES} YAML nodes" in refused(path)


# --- nesting, numbers, size, encoding ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "alerts: " + "[" * 5000 + "]" * 5000 + "\n",
        "processor: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    ],
    ids=["sequences", "mappings"],
)
def test_5000_levels_of_nesting_are_refused(tmp_path: Path, text: str) -> None:
    message = one_line(refused(write(tmp_path, text)))
    assert f"nested deeper than {MAX_DEPTH} levels" in message
    assert "line 1" in message


def test_nesting_at_the_bound_is_read_and_one_past_it_refused(tmp_path: Path) -> None:
    inside = MAX_DEPTH - 1  # the top-level mapping is the first level
    path = write(tmp_path, "alerts: " + "[" * inside + "]" * inside + "\n")
    assert "alerts[0]: must be a mapping of settings" in refused(path)
    path = write(tmp_path, "alerts: " + "[" * (inside + 1) + "]" * (inside + 1) + "\n")
    assert f"nested deeper than {MAX_DEPTH} levels" in refused(path)


def test_nesting_through_an_alias_counts_the_anchor(tmp_path: Path) -> None:
    half = MAX_DEPTH // 2 + 1
    deep = "[" * half + "]" * half
    path = write(tmp_path, f"alerts: [&deep {deep}, {'[' * half}*deep{']' * half}]\n")
    message = refused(path)
    assert f"nested deeper than {MAX_DEPTH} levels" in message
    assert "column" in message


def test_a_5000_digit_integer_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "enabled: true\nmax_size: " + "9" * 5000 + "\n")
    message = one_line(refused(path))
    assert str(path) in message
    assert "line 2, column 11: cannot read this value" in message
    assert "4300 digits" in message


def test_a_huge_hexadecimal_integer_is_shown_by_its_size(tmp_path: Path) -> None:
    path = write(tmp_path, "max_size: 0x" + "f" * 5000 + "\n")
    message = refused(path)
    assert "max_size: must be between 100 and 100000, got <a whole number of 6021 digits>" in (
        message
    )


def test_a_date_that_does_not_exist_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "enabled: true\nprocessor:\n  worker_id: 2024-02-31\n")
    message = one_line(refused(path))
    assert "line 3, column 14: cannot read this value: day is out of range" in message


def test_a_file_larger_than_1_mib_is_refused(tmp_path: Path) -> None:
    setting = "max_size: 500\n"
    padding = "#" * (MAX_FILE_BYTES - len(setting) - 1) + "\n"
    assert DLQSettings.load(write(tmp_path, padding + setting)).max_size == 500  # at the bound
    path = write(tmp_path, "#" + padding + setting, name="big.yaml")
    message = one_line(refused(path))
    assert f"{str(path)!r} is larger than {MAX_FILE_BYTES} bytes (1 MiB)" in message


def test_a_file_that_is_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("enabled: true\nstore: caf\xe9\n".encode("latin-1"))
    message = one_line(refused(path))
    assert str(path) in message
    assert "not UTF-8 text, byte 0xe9 at line 2, column 11" in message


def test_a_control_character_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "enabled: true\nstore: mem\x07ory\n")
    message = one_line(refused(path))
    assert "line 2, column 11: unacceptable character #x0007" in message


def test_a_field_name_holding_escape_sequences_is_shown_escaped(tmp_path: Path) -> None:
    path = write(tmp_path, 'policies:\n  by_workflow:\n    "w\\e[2J": {max_retries: 99}\n')
    with pytest.raises(ConfigurationError) as info:
        DLQSettings.load(path)
    assert "\x1b" not in str(info.value)
    assert "policies.by_workflow.w\\x1b[2J.max_retries: must be between 0 and 10" in str(info.value)
    assert info.value.field == "policies.by_workflow.w\\x1b[2J.max_retries"


# --- environment variables ------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("OPENSEARCH__HOSTS", "[" * 100_000, "is 100000 bytes long; a setting takes at most "),
        ("ALERTS", "[" * 60_000, f"holds JSON nested deeper than {MAX_DEPTH} levels"),
        ("ALERTS", "[" * 3000 + "]" * 3000, f"holds JSON nested deeper than {MAX_DEPTH} levels"),
        (
            "PROCESSOR",
            '{"a": ' * 3000 + "1" + "}" * 3000,
            f"holds JSON nested deeper than {MAX_DEPTH} levels",
        ),
    ],
    ids=["too-long", "deep-open", "deep-closed", "deep-objects"],
)
def test_an_environment_variable_too_long_or_too_deep_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(f"MAHAVISHNU_DLQ_{variable}", value)
    message = refused()
    assert f"environment variable MAHAVISHNU_DLQ_{variable} {problem}" in message
    with pytest.raises(ConfigurationError, match=f"MAHAVISHNU_DLQ_{variable}"):
        DLQSettings()  # the plain constructor screens the environment too


def test_json_at_the_depth_bound_is_validated_and_brackets_in_strings_do_not_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_ALERTS", "[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert "alerts[0]: must be a mapping of settings" in refused()
    pattern = "\\[" * (MAX_DEPTH + 1)  # a literal "[", repeated: brackets in a JSON string
    rules = json.dumps([{"category": "network", "pattern": pattern}])
    monkeypatch.setenv("MAHAVISHNU_DLQ_ALERTS", "[]")
    monkeypatch.setenv("MAHAVISHNU_DLQ_CLASSIFIER__RULES", rules)
    assert DLQSettings.load().classifier.rules[0].pattern == pattern


def test_a_long_variable_the_settings_do_not_read_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_APP", "x" * (MAX_ENV_BYTES + 1))
    monkeypatch.setenv("MAHAVISHNU_DLQ_TEST_NOTHING", "[" * 1000)
    assert DLQSettings.load().max_size == 10000


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAX_SIZE", "9" * 5000, "max_size: unable to parse input string as an integer"),
        ("PROCESSOR", '{"concurrency": ' + "9" * 5000 + "}", "4300 digits"),
    ],
    ids=["plain", "in-json"],
)
def test_a_5000_digit_integer_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(f"MAHAVISHNU_DLQ_{variable}", value)
    message = refused()
    assert f"environment variable MAHAVISHNU_DLQ_{variable}" in message
    assert expected in message
    assert "set_int_max_str_digits" not in message


# --- keyword arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"alerts": nested_list(5000)},
        {"processor": nested_dict(5000)},
        {"opensearch": {"hosts": nested_list(5000)}},
        {"policies": {"by_workflow": nested_dict(5000)}},
    ],
    ids=["list", "mapping", "hosts", "workflows"],
)
def test_deeply_nested_keyword_arguments_are_refused(overrides: dict[str, Any]) -> None:
    (name,) = overrides
    message = refused(**overrides)
    assert f"keyword argument {name} is nested deeper than {MAX_DEPTH} levels" in message


def test_a_keyword_argument_containing_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert "keyword argument alerts is nested deeper" in refused(alerts=loop)


def test_shared_structure_in_keyword_arguments_is_never_expanded() -> None:
    bomb: list[Any] = ["lol"] * 9
    for _ in range(9):
        bomb = [bomb] * 9  # 9**10 strings if walked as a tree
    message = refused(alerts=bomb, opensearch={"hosts": bomb})
    assert "alerts[0]: must be a mapping of settings" in message
    assert "opensearch.hosts[0]: must be a string, got [[[[...]" in message


def test_a_huge_integer_keyword_argument_is_shown_by_its_size() -> None:
    message = refused(max_size=10**5000)
    assert "max_size: must be between 100 and 100000, got <a whole number of 5001 digits>" in (
        message
    )


class _Unwalkable(dict[str, Any]):
    """A mapping whose items cannot be listed: past every bound, a failure of its own."""

    def items(self) -> Any:
        raise RecursionError("maximum recursion depth exceeded")


def test_a_failure_past_every_bound_is_still_a_configuration_error() -> None:
    message = refused(processor=_Unwalkable())
    assert "the settings could not be read (RecursionError: maximum recursion depth" in message
    assert "check keyword argument processor" in message


def test_a_problem_that_cannot_be_described_is_still_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*_: Any) -> Any:
        raise RecursionError

    monkeypatch.setattr(problems, "_problem", fail)
    error = refused(max_size=5, processor={"concurrency": 0})
    assert "(2 problems)" in error
    assert "  - max_size: Input should be greater than or equal to 100" in error
    assert "  - processor.concurrency: Input should be greater than or equal to 1" in error


# --- through the CLI ----------------------------------------------------------------------


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """``run_cli(argv)`` in-process: ``(exit status, stdout, stderr)``; logging restored."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run_cli(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke
    root.handlers[:] = handlers
    root.setLevel(level)


def cli_refused(ran: tuple[int, str, str]) -> str:
    code, out, err = ran
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("max_size: 500\nmax_size: 600\n", "duplicate key 'max_size' (first at line 1"),
        (BOMB, f"more than {MAX_NODES} YAML nodes"),
        ("alerts: " + "[" * 5000 + "]" * 5000 + "\n", f"nested deeper than {MAX_DEPTH} levels"),
        ("max_size: " + "9" * 5000 + "\n", "line 1, column 11: cannot read this value"),
        ("#" * MAX_FILE_BYTES + "\n", "is larger than 1048576 bytes (1 MiB)"),
    ],
    ids=["duplicate", "bomb", "deep", "digits", "size"],
)
def test_config_validate_refuses_a_hostile_file_in_one_line(
    cli: Any, tmp_path: Path, text: str, needle: str
) -> None:
    path = write(tmp_path, text)
    line = cli_refused(cli("config", "validate", str(path)))
    assert needle in line
    assert str(path) in line


def test_config_validate_refuses_a_file_that_is_not_utf8(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"store: caf\xe9\n")
    assert "not UTF-8 text, byte 0xe9 at line 1" in cli_refused(
        cli("config", "validate", str(path))
    )


def test_config_show_and_validate_never_show_a_password(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, f"opensearch:\n  hosts: ['https://admin:{ENCODED}@node:99999']\n")
    line = cli_refused(cli("config", "validate", str(path)))
    assert "opensearch.hosts[0]: port must be a whole number between 1 and 65535" in line
    assert f"{MASK}@node:99999" in line
    line = cli_refused(cli("--config", str(path), "config", "show"))
    assert f"{path}, line 2" in line
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", json.dumps([f"u:{PASSWORD}@n:9200"]))
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD", "other")
    line = cli_refused(cli("config", "show"))
    assert "the password in hosts[0] differs from password" in line
    code, out, err = cli("config", "show", "--json")
    assert code == 2
    for text in (line, out, err):
        assert PASSWORD not in text
        assert ENCODED not in text
    monkeypatch.delenv("MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD")
    code, out, err = cli("config", "show", "--json")
    assert code == 0, err
    assert PASSWORD not in out + err
    opensearch = json.loads(out)["opensearch"]
    assert (opensearch["hosts"], opensearch["username"], opensearch["password"]) == (
        ["n:9200"],
        "u",
        MASK,
    )


def test_config_show_refuses_a_deep_environment_variable(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", "[" * 50_000)
    line = cli_refused(cli("config", "show"))
    assert "environment variable MAHAVISHNU_DLQ_OPENSEARCH__HOSTS holds JSON nested deeper" in line
