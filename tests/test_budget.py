import math

import pytest

from evaluators.budget import format_budget, parse_budget
from nas.errors import UserError


@pytest.mark.parametrize("text, ms", [
    ("15ms", 15.0), ("2.5 ms", 2.5), ("800us", 0.8), ("800\u00b5s", 0.8), ("800\u03bcs", 0.8),
    ("0.02s", 20.0), ("15MS", 15.0), ("3 S", 3000.0), (" 7ms ", 7.0), (".5ms", 0.5), ("1e1ms", 10.0),
])
def test_parse_budget_accepts_durations_with_units(text, ms):
    assert math.isclose(parse_budget(text), ms)


@pytest.mark.parametrize("text, message", [
    ("15", "in what unit"), ("0ms", "positive"), ("-5ms", "positive"), ("0us", "positive"),
    ("15min", "unknown unit"), ("15 hours", "unknown unit"), ("fast", "not a duration"), ("", "not a duration"),
    ("inf ms", "not a duration"), ("nan ms", "not a duration"), ("1e999ms", "finite"), ("15 ms ms", "not a duration"),
])
def test_parse_budget_refuses_ambiguous_or_bad_input(text, message):
    with pytest.raises(UserError, match=message):
        parse_budget(text)


def test_bare_number_message_suggests_the_fix():
    with pytest.raises(UserError, match="use 15ms"):
        parse_budget("15")


@pytest.mark.parametrize("ms, text", [(15.0, "15ms"), (2.5, "2.5ms"), (0.8, "800us"), (1500.0, "1.5s"), (0.05, "50us")])
def test_format_budget_is_short_and_round_trips(ms, text):
    assert format_budget(ms) == text
    assert math.isclose(parse_budget(format_budget(ms)), ms)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_format_budget_refuses_non_positive(bad):
    with pytest.raises(ValueError):
        format_budget(bad)
