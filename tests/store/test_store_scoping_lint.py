"""A static check, in the manner of Polar's own lint, that no repository query skips
the tenant scope.

Repository modules (everything in ``store/repositories`` but ``_base.py``, which holds
the scoping itself and is tested directly) may not:

* import SQLAlchemy's statement constructors (``select``, ``update``, ``delete``,
  ``insert``, ``text``, ``exists``, ...) or reach the session, a connection or a table
  object (``_session``, ``__table__``, ...);
* execute a statement (``self._execute/_all/_first/_one/_fresh``) that was not built
  from a scoping helper (``self._select/_update/_delete``), directly, through a chain
  of ``.where(...)``/``.order_by(...)`` calls, through local variables assigned only
  from such statements, or through a method of the class that returns only such
  statements.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from castiel_sync.store.repositories import _base

REPOSITORIES = Path(_base.__file__).parent
HELPERS = frozenset({"_select", "_update", "_delete"})
EXECUTORS = frozenset({"_execute", "_all", "_first", "_one", "_fresh"})
FORBIDDEN_IMPORTS = frozenset(
    {
        "select",
        "update",
        "delete",
        "insert",
        "text",
        "exists",
        "union",
        "union_all",
        "lambda_stmt",
        "table",
        "Table",
        "TextClause",
        "create_engine",
    }
)
FORBIDDEN_ATTRIBUTES = frozenset(
    {"_session", "session", "sync_session", "__table__", "connection", "bind", "get_bind"}
)


def _assignments(func: ast.AST, name: str) -> list[ast.expr]:
    values: list[ast.expr] = []
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                values.append(node.value)
            elif any(
                isinstance(n, ast.Name) and n.id == name for t in node.targets for n in ast.walk(t)
            ):
                values.append(ast.Constant(None))  # unpacking: unknown origin
        elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
            target = node.target
            if isinstance(target, ast.Name) and target.id == name:
                values.append(node.value if node.value is not None else ast.Constant(None))
    return values


def _scoped(expr: ast.expr, func: ast.AST, factories: set[str], seen: set[str]) -> bool:
    """True if ``expr`` is a statement that comes from a scoping helper."""
    if isinstance(expr, ast.Call):
        callee = expr.func
        if isinstance(callee, ast.Attribute):
            if isinstance(callee.value, ast.Name) and callee.value.id == "self":
                return callee.attr in HELPERS or callee.attr in factories
            return _scoped(callee.value, func, factories, seen)  # stmt.where(...)
        return False
    if isinstance(expr, ast.Attribute):
        return _scoped(expr.value, func, factories, seen)
    if isinstance(expr, ast.Name):
        if expr.id in seen:
            return True  # stmt = stmt.where(...): decided by the other assignments
        values = _assignments(func, expr.id)
        return bool(values) and all(_scoped(v, func, factories, seen | {expr.id}) for v in values)
    return False


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _factories(tree: ast.AST) -> set[str]:
    """Methods whose every return value is a scoped statement (fixpoint)."""
    factories: set[str] = set()
    changed = True
    while changed:
        changed = False
        for func in _functions(tree):
            if func.name in factories:
                continue
            returns = [n.value for n in ast.walk(func) if isinstance(n, ast.Return) and n.value]
            if returns and all(_scoped(r, func, factories, set()) for r in returns):
                factories.add(func.name)
                changed = True
    return factories


def lint(source: str, filename: str = "<repo>") -> list[str]:
    """Every scoping violation in one repository module, as ``file:line: message``."""
    tree = ast.parse(source, filename)
    problems: list[str] = []

    def report(node: ast.AST, message: str) -> None:
        problems.append(f"{filename}:{getattr(node, 'lineno', 0)}: {message}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    report(node, f"import {alias.name}: use the scoping helpers")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            for alias in node.names:
                if alias.name in FORBIDDEN_IMPORTS or alias.name == "*":
                    report(node, f"imports sqlalchemy's {alias.name}: use the scoping helpers")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            report(node, f"reaches .{node.attr}: go through the repository base")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            dynamic_self = (
                node.func.id in {"getattr", "vars"}
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id == "self"
            )
            if dynamic_self or node.func.id in {"eval", "exec", "__import__"}:
                report(node, f"calls {node.func.id}(): not checkable")

    factories = _factories(tree)
    for func in _functions(tree):
        for node in ast.walk(func):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self"
                and node.func.attr in EXECUTORS
            ):
                continue
            if not node.args or not _scoped(node.args[0], func, factories, set()):
                report(node, f"{func.name}() executes a statement not built by a scoping helper")
    return problems


def repository_modules() -> list[Path]:
    return sorted(p for p in REPOSITORIES.glob("*.py") if p.name not in {"_base.py"})


def test_the_lint_knows_the_base_helpers() -> None:
    assert HELPERS == _base.SCOPING_HELPERS
    for name in HELPERS | EXECUTORS | {"_add"}:
        assert hasattr(_base.ScopedRepository, name)


@pytest.mark.parametrize("path", repository_modules(), ids=lambda p: p.name)
def test_every_repository_query_is_scoped(path: Path) -> None:
    assert lint(path.read_text(), path.name) == []


def test_the_repositories_are_all_checked() -> None:
    names = {p.name for p in repository_modules()}
    assert {"integrations.py", "providers.py", "connections.py", "audit.py"} <= names


GOOD = """
class Repo(ScopedRepository):
    async def a(self, x):
        return await self._one(self._select().where(M.id == x).order_by(M.id), x)

    async def b(self, x=None):
        stmt = self._select()
        if x:
            stmt = stmt.where(M.x == x)
        return await self._all(stmt)

    async def c(self, x):
        await self._execute(self._update().where(M.id == x).values(a=1))
        return await self._first(self._key(x))

    def _key(self, x):
        return self._select().where(M.key == x)
"""

BAD = {
    "import": "from sqlalchemy import select\n",
    "import-module": "import sqlalchemy as sa\n",
    "session": "class R:\n    async def a(self):\n        await self._session.execute(q)\n",
    "table": "class R:\n    async def a(self):\n        await self._all(M.__table__.select())\n",
    "param": "class R:\n    async def a(self, stmt):\n        return await self._all(stmt)\n",
    "mixed": (
        "class R:\n    async def a(self, other):\n        stmt = self._select()\n"
        "        if other:\n            stmt = other\n        return await self._all(stmt)\n"
    ),
    "factory": (
        "class R:\n    def _q(self, other):\n        return other\n"
        "    async def a(self):\n        return await self._all(self._q(1).where(M.x == 1))\n"
    ),
    "getattr": "class R:\n    async def a(self):\n        return getattr(self, '_sess' + 'ion')\n",
}


def test_the_lint_passes_scoped_code() -> None:
    assert lint(GOOD) == []


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_lint_catches_unscoped_code(case: str) -> None:
    assert lint(BAD[case]) != []
