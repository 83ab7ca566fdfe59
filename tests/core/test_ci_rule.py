"""One definition of "in CI": there, a missing service or client fails instead of skipping."""

from __future__ import annotations

import socket

import pytest

from tests.harness import absent, in_ci, require_service


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True", "yes", "YES", " yes "])
def test_every_spelling_of_ci_counts(value: str) -> None:
    assert in_ci({"CI": value})


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
def test_unset_or_false_ci_does_not_count(value: str) -> None:
    assert not in_ci({"CI": value})
    assert not in_ci({})


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_in_ci_a_missing_service_or_client_fails(monkeypatch: pytest.MonkeyPatch,
                                                 value: str) -> None:
    monkeypatch.setenv("CI", value)
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        with pytest.raises(pytest.fail.Exception, match="not a skip"):
            require_service("Nothing", "127.0.0.1", closed.getsockname()[1])
    with pytest.raises(pytest.fail.Exception, match="node is not installed"):
        absent("node is not installed")


def test_outside_ci_a_missing_client_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="node is not installed"):
        absent("node is not installed")
