"""The rules of thread names, client message ids, page bounds and titles (``_core/_threads.py``)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netra_actors._core._threads import (
    DEFAULT_THREAD,
    TITLE_CHARS,
    check_cursor,
    check_limit,
    check_message_id,
    check_thread,
    is_thread_name,
    title_of,
)
from netra_actors._exceptions import CommandError

ALPHABET = string.ascii_letters + string.digits + "._:-"


@given(st.text(alphabet=ALPHABET, min_size=1, max_size=128))
def test_every_name_of_the_alphabet_up_to_128_is_a_thread(name: str) -> None:
    assert is_thread_name(name)
    assert check_thread(name) == name
    assert check_message_id(name) == name


@given(st.text(max_size=200))
def test_a_name_is_a_thread_exactly_when_the_rule_says(name: str) -> None:
    model = 1 <= len(name) <= 128 and all(c in ALPHABET for c in name)
    assert is_thread_name(name) is model
    if not model:
        with pytest.raises(CommandError, match="thread"):
            check_thread(name)


@pytest.mark.parametrize("value", [5, b"main", ["main"], True, "x" * 129, "", "é", "a/b", "a\n"])
def test_other_values_are_refused(value: object) -> None:
    assert not is_thread_name(value)
    with pytest.raises(CommandError):
        check_thread(value)
    with pytest.raises(CommandError, match="message_id"):
        check_message_id(value)


def test_none_is_the_default() -> None:
    assert check_thread(None) == DEFAULT_THREAD == "main"
    assert check_message_id(None) is None
    assert check_limit(None, default=7, most=9) == 7
    assert check_cursor(None, "before") is None


@pytest.mark.parametrize("value", [0, 10, -1, True, 2.0, "3"])
def test_limits_and_cursors_are_checked(value: object) -> None:
    with pytest.raises(CommandError, match="limit"):
        check_limit(value, default=5, most=9)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        with pytest.raises(CommandError, match="before_seq"):
            check_cursor(value, "before_seq")


@given(st.text(max_size=400))
def test_a_title_is_the_first_line_cut_short(text: str) -> None:
    title = title_of(text)
    assert len(title) <= TITLE_CHARS
    assert "\n" not in title
    first = text.strip().split("\n", 1)[0].strip()
    if len(first) <= TITLE_CHARS:
        assert title == first
    else:
        assert title.endswith("…")
        assert first.startswith(title[:-1])
