"""The safe expression language of rules: a typed whitelist of Python syntax over signals.

Nothing is ever passed to ``eval``: the source is parsed with :func:`ast.parse` (mode
``"eval"``), every node is checked against a whitelist and typed (``num`` or ``bool``), and
the tree is turned into a closure of numpy calls. Each signal name is bound to a float64
array; all arrays of one evaluation have the same length, so one call evaluates a whole
batch of aligned rows.

Accepted: numbers, ``True``/``False``, signal names (``temp``) or ``sig("press-01/temp")``
for names that are not identifiers, ``+ - * / % **``, unary ``-``/``+``, comparisons (chains
allowed), ``and``/``or``/``not``, ``a if cond else b`` and the functions ``abs``, ``min``,
``max``, ``sqrt``, ``clamp(x, lo, hi)``. Errors name the 1-based column of the offending node.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from shopfloor.core.errors import BadInput
from shopfloor.core.kinds import DataType

__all__ = ["ExprType", "Expression", "compile_expr"]

ExprType = Literal["num", "bool"]
Array = npt.NDArray[np.float64] | npt.NDArray[np.bool_]
# What a compiled node returns: an array, or a Python scalar for constant subtrees.
Value = npt.NDArray[np.float64] | npt.NDArray[np.bool_] | float | bool
Env = Mapping[str, npt.NDArray[np.float64]]
Node = Callable[[Env], Value]

MAX_SOURCE: Final = 2_000
MAX_NODES: Final = 500
_FUNCS: Final = {"abs": (1, 1), "min": (2, 16), "max": (2, 16), "sqrt": (1, 1), "clamp": (3, 3)}
_RESERVED: Final = {*_FUNCS, "sig"}

_ARITH: Final[dict[type[ast.operator], Callable[[Value, Value], Value]]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.Mod: np.mod,
    ast.Pow: np.power,
}
_CMP: Final[dict[type[ast.cmpop], Callable[[Value, Value], Value]]] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}
_ORDERING: Final = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


@dataclass(frozen=True)
class Expression:
    """A compiled expression: its signal names, result type and vectorised evaluator."""

    source: str
    names: frozenset[str]
    type: ExprType
    _fn: Node

    def evaluate(self, env: Env, n: int) -> Array:
        """Evaluate over ``n`` aligned rows; every name in ``names`` must be in ``env``."""
        with np.errstate(all="ignore"):  # x/0 gives inf or nan, as a reading would
            out = self._fn(env)
        if self.type == "bool":
            return np.broadcast_to(np.asarray(out, dtype=np.bool_), (n,))
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,))


def compile_expr(
    source: str,
    known: Mapping[str, DataType] | Collection[str] | None = None,
    *,
    expect: ExprType | None = None,
    field: str = "expression",
) -> Expression:
    """Parse, check and compile ``source``; raise BadInput with the position of any error.

    ``known``: the signal names the expression may use (with their data types, so a bool
    signal is typed ``bool``); None accepts any name. ``expect``: the required result type.
    """
    if len(source) > MAX_SOURCE:
        raise BadInput(f"expression longer than {MAX_SOURCE} characters", field)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        where = _pos(exc.lineno or 1, (exc.offset or 1) - 1)
        raise BadInput(f"syntax error at {where}: {exc.msg}", field) from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise BadInput(f"expression has more than {MAX_NODES} parts", field)
    types: dict[str, DataType] | None
    if known is None:
        types = None
    elif isinstance(known, Mapping):
        types = dict(known)
    else:
        types = dict.fromkeys(known, DataType.FLOAT)
    comp = _Compiler(types, field)
    fn, typ = comp.node(tree.body)
    if expect is not None and typ != expect:
        raise BadInput(
            f"{_at(tree.body)}: expression gives a {_word(typ)}, a {_word(expect)} is needed", field
        )
    return Expression(source, frozenset(comp.names), typ, fn)


def _pos(line: int, col0: int) -> str:
    return f"column {col0 + 1}" if line == 1 else f"line {line} column {col0 + 1}"


def _at(node: ast.AST) -> str:
    return _pos(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))


def _word(t: ExprType) -> str:
    return "number" if t == "num" else "true/false value"


class _Compiler:
    def __init__(self, known: dict[str, DataType] | None, field: str) -> None:
        self.known = known
        self.field = field
        self.names: set[str] = set()

    def fail(self, node: ast.AST, what: str) -> BadInput:
        return BadInput(f"{_at(node)}: {what}", self.field)

    def need(self, node: ast.AST, typ: ExprType, want: ExprType, role: str) -> None:
        if typ != want:
            raise self.fail(node, f"type error: {role} needs a {_word(want)}, got a {_word(typ)}")

    def node(self, n: ast.expr) -> tuple[Node, ExprType]:
        if isinstance(n, ast.Constant):
            return self.constant(n)
        if isinstance(n, ast.Name):
            return self.name(n, n.id)
        if isinstance(n, ast.BinOp):
            return self.binop(n)
        if isinstance(n, ast.UnaryOp):
            return self.unary(n)
        if isinstance(n, ast.Compare):
            return self.compare(n)
        if isinstance(n, ast.BoolOp):
            return self.boolop(n)
        if isinstance(n, ast.IfExp):
            return self.ifexp(n)
        if isinstance(n, ast.Call):
            return self.call(n)
        raise self.fail(n, f"{_describe(n)} is not allowed in a rule expression")

    def constant(self, n: ast.Constant) -> tuple[Node, ExprType]:
        v = n.value
        if isinstance(v, bool):
            b = bool(v)
            return (lambda env: b), "bool"
        if isinstance(v, int | float) and not isinstance(v, complex):
            f = float(v)
            return (lambda env: f), "num"
        if isinstance(v, str):
            raise self.fail(n, 'a string is only allowed as the argument of sig("...")')
        raise self.fail(n, f"constant {v!r} is not allowed")

    def name(self, n: ast.expr, name: str) -> tuple[Node, ExprType]:
        if name.startswith("__") or (isinstance(n, ast.Name) and name.startswith("_")):
            raise self.fail(n, f"name {name!r} is not allowed (leading underscore)")
        if isinstance(n, ast.Name) and name in _RESERVED:
            raise self.fail(n, f"function {name!r} must be called, e.g. {name}(...)")
        if isinstance(n, ast.Name) and name in ("None", "inf", "nan"):
            raise self.fail(n, f"{name} is not allowed")
        typ: ExprType = "num"
        if self.known is not None:
            if name not in self.known:
                raise self.fail(n, f"unknown signal {name!r}")
            dt = self.known[name]
            if dt == DataType.STRING:
                raise self.fail(n, f"signal {name!r} holds strings; rules work on numbers")
            typ = "bool" if dt == DataType.BOOL else "num"
        self.names.add(name)
        if typ == "bool":
            # nonzero is true; nan (no value yet) is false, as every comparison with it
            return (lambda env: np.abs(env[name]) > 0), "bool"
        return (lambda env: env[name]), "num"

    def binop(self, n: ast.BinOp) -> tuple[Node, ExprType]:
        op = _ARITH.get(type(n.op))
        if op is None:
            raise self.fail(n, f"operator {type(n.op).__name__} is not allowed")
        (a, ta), (b, tb) = self.node(n.left), self.node(n.right)
        self.need(n.left, ta, "num", "arithmetic")
        self.need(n.right, tb, "num", "arithmetic")
        return (lambda env: op(a(env), b(env))), "num"

    def unary(self, n: ast.UnaryOp) -> tuple[Node, ExprType]:
        a, ta = self.node(n.operand)
        if isinstance(n.op, ast.Not):
            self.need(n.operand, ta, "bool", "'not'")
            return (lambda env: np.logical_not(a(env))), "bool"
        if isinstance(n.op, ast.USub | ast.UAdd):
            self.need(n.operand, ta, "num", "unary minus/plus")
            if isinstance(n.op, ast.UAdd):
                return a, "num"
            return (lambda env: np.negative(a(env))), "num"
        raise self.fail(n, f"operator {type(n.op).__name__} is not allowed")

    def compare(self, n: ast.Compare) -> tuple[Node, ExprType]:
        parts = [self.node(x) for x in (n.left, *n.comparators)]
        exprs = [n.left, *n.comparators]
        steps: list[tuple[Callable[[Value, Value], Value], Node, Node]] = []
        for i, op in enumerate(n.ops):
            fn = _CMP.get(type(op))
            if fn is None:
                raise self.fail(n, f"comparison {type(op).__name__} is not allowed")
            (a, ta), (b, tb) = parts[i], parts[i + 1]
            if isinstance(op, _ORDERING):
                self.need(exprs[i], ta, "num", "an ordering comparison (< <= > >=)")
                self.need(exprs[i + 1], tb, "num", "an ordering comparison (< <= > >=)")
            elif ta != tb:
                raise self.fail(
                    exprs[i + 1], f"type error: == / != between a {_word(ta)} and a {_word(tb)}"
                )
            steps.append((fn, a, b))

        def run(env: Env) -> Value:
            out: Value = True
            for fn, a, b in steps:
                out = np.logical_and(out, fn(a(env), b(env)))
            return out

        return run, "bool"

    def boolop(self, n: ast.BoolOp) -> tuple[Node, ExprType]:
        parts = [self.node(x) for x in n.values]
        for x, (_, t) in zip(n.values, parts, strict=True):
            self.need(x, t, "bool", "'and' / 'or'")
        fns = [f for f, _ in parts]
        combine = np.logical_and if isinstance(n.op, ast.And) else np.logical_or

        def run(env: Env) -> Value:
            out = fns[0](env)
            for f in fns[1:]:
                out = combine(out, f(env))
            return out

        return run, "bool"

    def ifexp(self, n: ast.IfExp) -> tuple[Node, ExprType]:
        (c, tc), (a, ta), (b, tb) = self.node(n.test), self.node(n.body), self.node(n.orelse)
        self.need(n.test, tc, "bool", "the condition of 'if'")
        if ta != tb:
            raise self.fail(n.orelse, f"type error: 'if' gives a {_word(ta)} or a {_word(tb)}")
        return (lambda env: np.where(c(env), a(env), b(env))), ta

    def call(self, n: ast.Call) -> tuple[Node, ExprType]:
        if not isinstance(n.func, ast.Name):
            raise self.fail(n.func, f"calling {_describe(n.func)} is not allowed")
        fname = n.func.id
        if n.keywords:
            raise self.fail(n.keywords[0].value, f"{fname}() takes no keyword arguments")
        if fname == "sig":
            if (
                len(n.args) != 1
                or not isinstance(n.args[0], ast.Constant)
                or not isinstance(n.args[0].value, str)
            ):
                raise self.fail(n, 'sig() takes one quoted signal name, e.g. sig("press-01/temp")')
            text = n.args[0].value
            if not text:
                raise self.fail(n.args[0], "sig() needs a non-empty signal name")
            return self.name(n, text)
        if fname not in _FUNCS:
            raise self.fail(n.func, f"unknown function {fname!r}; use one of {', '.join(_FUNCS)}")
        lo, hi = _FUNCS[fname]
        if not lo <= len(n.args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.fail(n, f"{fname}() takes {want} arguments, got {len(n.args)}")
        for a in n.args:
            if isinstance(a, ast.Starred):
                raise self.fail(a, "*arguments are not allowed")
        args = [self.node(a) for a in n.args]
        for a, (_, t) in zip(n.args, args, strict=True):
            self.need(a, t, "num", f"{fname}()")
        fs = [f for f, _ in args]
        if fname == "abs":
            f0 = fs[0]
            return (lambda env: np.abs(f0(env))), "num"
        if fname == "sqrt":
            f0 = fs[0]
            return (lambda env: np.sqrt(f0(env))), "num"
        if fname == "clamp":
            fx, flo, fhi = fs
            return (lambda env: np.minimum(np.maximum(fx(env), flo(env)), fhi(env))), "num"
        red = np.minimum if fname == "min" else np.maximum

        def reduce(env: Env) -> Value:
            out = fs[0](env)
            for f in fs[1:]:
                out = red(out, f(env))
            return out

        return reduce, "num"


def _describe(n: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access (a.b)",
        ast.Subscript: "a subscript (a[i])",
        ast.Lambda: "a lambda",
        ast.ListComp: "a list comprehension",
        ast.SetComp: "a set comprehension",
        ast.DictComp: "a dict comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.List: "a list",
        ast.Tuple: "a tuple",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.JoinedStr: "an f-string",
        ast.NamedExpr: "an assignment (:=)",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.Starred: "*unpacking",
        ast.Slice: "a slice",
    }
    return names.get(type(n), type(n).__name__)
