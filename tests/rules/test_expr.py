"""The safe expression language: what compiles, what it computes, what is rejected and where."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.core.errors import BadInput
from shopfloor.core.kinds import DataType
from shopfloor.rules.expr import compile_expr

KNOWN = {
    "temp": DataType.FLOAT,
    "press": DataType.FLOAT,
    "on": DataType.BOOL,
    "press-01/temp": DataType.FLOAT,
}
ENV = {
    "temp": np.array([10.0, 50.0, 90.0]),
    "press": np.array([1.0, 2.0, 0.0]),
    "on": np.array([1.0, 0.0, 1.0]),
    "press-01/temp": np.array([3.0, 4.0, 5.0]),
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("temp + press * 2", [12.0, 54.0, 90.0]),
        ("-temp % 7", [4.0, 6.0, 1.0]),
        ("press ** 2 / 2", [0.5, 2.0, 0.0]),
        ("abs(press - 1.5)", [0.5, 0.5, 1.5]),
        ("min(temp, 40, press * 30)", [10.0, 40.0, 0.0]),
        ("max(temp, 40)", [40.0, 50.0, 90.0]),
        ("sqrt(press * 8)", [np.sqrt(8), 4.0, 0.0]),
        ("clamp(temp, 20, 60)", [20.0, 50.0, 60.0]),
        ('sig("press-01/temp") * 10', [30.0, 40.0, 50.0]),
        ("temp if on else -1", [10.0, -1.0, 90.0]),
        ("temp / press", [10.0, 25.0, np.inf]),
        ("7", [7.0, 7.0, 7.0]),
    ],
)
def test_numeric_results(source: str, expected: list[float]) -> None:
    e = compile_expr(source, KNOWN)
    assert e.type == "num"
    np.testing.assert_allclose(e.evaluate(ENV, 3), expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("temp > 40", [False, True, True]),
        ("20 < temp <= 50", [False, True, False]),
        ("temp > 40 and on", [False, False, True]),
        ("not on or press == 0", [False, True, True]),
        ("on == True", [True, False, True]),
        ("temp != 50", [True, False, True]),
        ("True", [True, True, True]),
    ],
)
def test_bool_results(source: str, expected: list[bool]) -> None:
    e = compile_expr(source, KNOWN, expect="bool")
    assert e.type == "bool"
    assert e.evaluate(ENV, 3).tolist() == expected


def test_names_are_collected() -> None:
    e = compile_expr('temp > 1 and sig("press-01/temp") < press', KNOWN)
    assert e.names == {"temp", "press", "press-01/temp"}


def test_any_name_without_known() -> None:
    assert compile_expr("x + y").names == {"x", "y"}


@pytest.mark.parametrize(
    ("source", "column", "words"),
    [
        ("temp.real", 1, "attribute access"),
        ("temp + press[0]", 8, "subscript"),
        ("(lambda: 1)()", 2, "lambda"),
        ("[x for x in temp]", 1, "comprehension"),
        ("temp + open(1)", 8, "unknown function 'open'"),
        ("__import__('os')", 1, "unknown function '__import__'"),
        ("temp + __class__", 8, "leading underscore"),
        ("temp > 'hot'", 8, "string"),
        ("temp + bogus", 8, "unknown signal 'bogus'"),
        ('sig("nope") > 1', 1, "unknown signal 'nope'"),
        ("sig(temp) > 1", 1, "sig() takes one quoted"),
        ("abs(temp, 1)", 1, "abs() takes 1 arguments"),
        ("clamp(temp, 1)", 1, "clamp() takes 3"),
        ("temp + abs", 8, "must be called"),
        ("(temp > 1) + 2", 2, "type error: arithmetic"),
        ("on < 1", 1, "type error: an ordering"),
        ("temp and on", 1, "type error: 'and'"),
        ("not temp", 5, "type error: 'not'"),
        ("temp if press else 1", 9, "condition of 'if'"),
        ("temp if on else on", 17, "type error: 'if'"),
        ("temp == on", 9, "type error: =="),
        ("temp // 2", 1, "FloorDiv"),
        ("temp @ press", 1, "MatMult"),
        ("f'{temp}'", 1, "f-string"),
        ("temp if (x := 1) else 0", 10, "assignment"),
        ("max(1, *temp)", 8, "*arguments"),
        ("abs(x=temp)", 7, "keyword"),
    ],
)
def test_rejected_with_column(source: str, column: int, words: str) -> None:
    with pytest.raises(BadInput) as err:
        compile_expr(source, KNOWN)
    assert f"column {column}:" in err.value.message, err.value.message
    assert words in err.value.message
    assert err.value.field == "expression"


@pytest.mark.parametrize(
    ("source", "column"),
    [("temp > > 1", 8), ("(temp", 1), ("temp = 1", 6), ("temp +* 2", 7)],
)
def test_syntax_error_position(source: str, column: int) -> None:
    with pytest.raises(BadInput, match=rf"syntax error at column {column}"):
        compile_expr(source, KNOWN)


def test_statements_are_syntax_errors() -> None:
    # mode="eval": an import is not even an expression
    with pytest.raises(BadInput, match="syntax error"):
        compile_expr("import os", KNOWN)


def test_expected_type_is_enforced() -> None:
    with pytest.raises(BadInput, match=r"column 1: expression gives a number"):
        compile_expr("temp + 1", KNOWN, expect="bool")


def test_string_signal_rejected() -> None:
    with pytest.raises(BadInput, match="holds strings"):
        compile_expr("label > 1", {"label": DataType.STRING})


def test_second_line_position() -> None:
    with pytest.raises(BadInput, match=r"line 2 column 5: unknown signal 'nope'"):
        compile_expr("(temp >\n1 + nope)", KNOWN)


def test_field_name_is_passed_on() -> None:
    with pytest.raises(BadInput) as err:
        compile_expr("x.y", field="conditions[2]")
    assert err.value.field == "conditions[2]"


def test_too_long_rejected() -> None:
    with pytest.raises(BadInput, match="longer than"):
        compile_expr("1 + " * 600 + "1")
