"""The one place where tenant scoping happens.

Every repository is ``Repo(session, scope)``. Statements are built only through
:meth:`ScopedRepository._select`, :meth:`_update` and :meth:`_delete`, which add the
scope's criteria (``tenant_id == scope.tenant_id`` for a :class:`TenantScope`, nothing
for a :class:`SystemScope`), and rows are inserted only through :meth:`_add`, which
takes ``tenant_id`` from the scope. Repository modules never touch the session or
SQLAlchemy's statement constructors themselves; ``tests/store/test_store_scoping_lint.py``
checks that statically.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    Delete,
    Select,
    Update,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, UnaryExpression

from castiel_sync.domain.tenancy import Scope, SystemScope, TenantId, TenantScope
from castiel_sync.store.base import Base, UTCDateTime, json_dumps
from castiel_sync.store.errors import ConflictError, NotFoundError, ScopeError

RowT = TypeVar("RowT", bound=Base)
RepoT = TypeVar("RepoT", bound="ScopedRepository[Any]")

#: The helpers a repository method must build its statements with (the lint's allow-list).
SCOPING_HELPERS = frozenset({"_select", "_update", "_delete"})


class ScopedRepository(Generic[RowT]):
    """Generic base: scoping, lookups and insert, once."""

    model: ClassVar[type[Any]]
    object_type: ClassVar[str] = "object"
    #: The ``tenant_id`` a SystemScope writes (``"*"`` for system-wide rows such as the
    #: global limits or system audit entries); None: inserts need a TenantScope.
    system_tenant_id: ClassVar[str | None] = None

    def __init__(self, session: AsyncSession, scope: Scope) -> None:
        if not isinstance(scope, TenantScope | SystemScope):
            raise TypeError(f"a repository needs a TenantScope or a SystemScope, not {scope!r}")
        self._session = session
        self.scope: Scope = scope

    # -- scope --------------------------------------------------------------------------

    @property
    def is_system(self) -> bool:
        return isinstance(self.scope, SystemScope)

    def for_tenant(self, tenant_id: str) -> Self:
        """From a system scope, the same repository confined to one tenant."""
        self._require_system("for_tenant")
        return type(self)(self._session, TenantScope(TenantId(tenant_id)))

    def _sibling(self, repository: type[RepoT]) -> RepoT:
        """Another repository on the same session and scope."""
        return repository(self._session, self.scope)

    def _tenant_id(self, action: str) -> TenantId:
        """The scope's tenant; a SystemScope is refused (tenant-only methods)."""
        if isinstance(self.scope, TenantScope):
            return self.scope.tenant_id
        raise ScopeError(
            f"{type(self).__name__}.{action} needs a tenant scope; "
            "from a system scope use .for_tenant(tenant_id)"
        )

    def _require_system(self, action: str) -> None:
        if not isinstance(self.scope, SystemScope):
            raise ScopeError(f"{type(self).__name__}.{action} needs a system scope")

    def _criteria(self, model: type[Any], *, write: bool) -> list[ColumnElement[bool]]:
        """The scope's WHERE criteria for ``model``. Override for tables without
        ``tenant_id`` (the provider catalog) or with shared rows (global settings)."""
        if isinstance(self.scope, SystemScope):
            return []
        column = getattr(model, "tenant_id", None)
        if column is None:
            raise ScopeError(f"{model.__name__} has no tenant column and no scoping rule")
        return [column == self.scope.tenant_id]

    # -- statement builders: the only way a repository makes a statement -------------------

    def _select(
        self, *columns: Any, model: type[Any] | None = None, scope_index: bool = True
    ) -> Select[Any]:
        """``scope_index=False``: the statement has a far more selective indexed term
        (a key ``IN`` list); see :meth:`_scope_terms`."""
        target = model or self.model
        stmt = select(*columns) if columns else select(target)
        return stmt.where(*self._scope_terms(target, write=False, index=scope_index))

    def _update(self, model: type[Any] | None = None, *, scope_index: bool = True) -> Update:
        target = model or self.model
        return update(target).where(*self._scope_terms(target, write=True, index=scope_index))

    def _scope_terms(
        self, model: type[Any], *, write: bool, index: bool
    ) -> list[ColumnElement[bool]]:
        """The scope's criteria. With ``index=False`` on SQLite, each ``column = value``
        term becomes ``+column = value`` (SQLite's documented way to keep a term from
        choosing an index; the rows it filters are the same). Without ``ANALYZE``
        statistics SQLite's planner prefers the ``tenant_id`` index, which holds every
        row of the tenant, over a unique key probed with an ``IN`` list: at 100,000
        relationships a page's lookup scanned them all. PostgreSQL plans from its
        statistics and is left alone."""
        terms = self._criteria(model, write=write)
        if index or not terms or not self._is_sqlite():
            return terms
        return [_not_indexed(term) for term in terms]

    def _is_sqlite(self) -> bool:
        bind = self._session.bind
        return bind is not None and bind.dialect.name == "sqlite"

    def _delete(self, model: type[Any] | None = None) -> Delete:
        target = model or self.model
        return delete(target).where(*self._criteria(target, write=True))

    # -- execution ---------------------------------------------------------------------

    async def _execute(self, stmt: Any) -> Result[Any]:
        return await self._session.execute(stmt)

    async def _all(self, stmt: Select[Any]) -> list[Any]:
        return list((await self._session.execute(stmt)).scalars().all())

    async def _first(self, stmt: Select[Any]) -> Any | None:
        return (await self._session.execute(stmt.limit(1))).scalars().first()

    async def _one(self, stmt: Select[Any], object_id: object) -> Any:
        """The single row of ``stmt``, or NotFoundError naming ``object_id``."""
        row = (await self._session.execute(stmt)).scalars().first()
        if row is None:
            raise NotFoundError(self.object_type, object_id)
        return row

    async def _fresh(self, stmt: Select[Any], object_id: object) -> Any:
        """Like :meth:`_one`, reloading attributes the session may hold stale."""
        return await self._one(stmt.execution_options(populate_existing=True), object_id)

    async def _add(self, row: RowT, *, conflict: str) -> RowT:
        """Insert ``row`` with the scope's tenant. ``conflict`` is the safe message for a
        unique violation."""
        if hasattr(type(row), "tenant_id"):
            if self.is_system and self.system_tenant_id is not None:
                row.tenant_id = self.system_tenant_id  # type: ignore[attr-defined]
            else:
                row.tenant_id = self._tenant_id("create")  # type: ignore[attr-defined]
        self._session.add(row)
        await self._flush(conflict)
        return row

    async def _flush(self, conflict: str) -> None:
        try:
            await self._session.flush()
        except IntegrityError as exc:
            raise ConflictError(conflict) from exc

    # -- bulk writes (Core executemany; the sync engine's hot path) ----------------------

    async def _insert_many(
        self, rows: list[dict[str, Any]], model: type[Any] | None = None
    ) -> None:
        """Insert ``rows`` (column -> value dicts, every column given) in one executemany,
        each with the scope's tenant. Tenant scope only."""
        if not rows:
            return
        tenant = self._tenant_id("insert")
        for row in rows:
            row["tenant_id"] = tenant
        table = (model or self.model).__table__
        if self._is_sqlite():
            connection = await self._session.connection()
            prepared = prepared_sqlite_insert(table, rows, connection.dialect)
            if prepared is not None:
                await connection.exec_driver_sql(*prepared)
                return
        await self._session.execute(insert(table), rows)

    async def _update_many(
        self, rows: list[dict[str, Any]], model: type[Any] | None = None, *, key: str = "id"
    ) -> None:
        """``UPDATE ... WHERE <key> = row[key]`` and the scope's criteria (the same
        :meth:`_criteria` every other statement uses) for every row, in one executemany.
        Every row sets the same columns. Tenant scope only; a row may not set
        ``tenant_id`` (that would move it to another tenant)."""
        if not rows:
            return
        self._tenant_id("update")
        target = model or self.model
        table = target.__table__
        columns = [name for name in rows[0] if name != key]
        if "tenant_id" in columns:
            raise ScopeError(f"{type(self).__name__} bulk updates may not set tenant_id")
        stmt = (
            update(table)
            .where(
                table.c[key] == bindparam("k_" + key),
                *self._scope_terms(target, write=True, index=False),
            )
            .values({name: bindparam("v_" + name) for name in columns})
        )
        params = [{"k_" + key: r[key], **{"v_" + n: r[n] for n in columns}} for r in rows]
        await self._session.execute(stmt, params)

    def _forget(self, row: Any) -> None:
        """Detach a deleted row so it reads as it was."""
        self._session.expunge(row)


_UNARY_PLUS: operators.custom_op[Any] = operators.custom_op("+")


def _not_indexed(term: ColumnElement[bool]) -> ColumnElement[bool]:
    """``column = value`` as ``+column = value`` (SQLite only)."""
    if (
        isinstance(term, BinaryExpression)
        and term.operator is operators.eq
        and isinstance(term.left, ColumnElement)
    ):
        left = term.left
        plus = UnaryExpression(left, operator=_UNARY_PLUS, type_=left.type)
        return plus == term.right  # type: ignore[no-any-return]
    return term


def _sqlite_datetime(value: datetime | None) -> str | None:
    """What :class:`UTCDateTime` stores on SQLite (naive UTC, SQLAlchemy's text format)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    text = value.replace(tzinfo=None).isoformat(" ")
    return text if value.microsecond else text + ".000000"


def prepared_sqlite_insert(
    table: Any, rows: list[dict[str, Any]], dialect: Any
) -> tuple[str, list[tuple[Any, ...]]] | None:
    """The SQL and positional parameters of a bulk INSERT on SQLite, with JSON and UTC
    datetime values converted here (orjson; one ISO format), once per value, instead of
    through SQLAlchemy's per-row parameter building and type processors: the sync engine's
    hot path writes thousands of rows a second. The stored text is exactly what the column
    types store and read back. None (use the ordinary path) when a column has another
    bind processor.

    Per (table, columns) the statement is compiled once, together with a generated
    function that turns a row dict into the parameter tuple in the statement's order
    (one comprehension, no per-value loop)."""
    names = tuple(rows[0])
    key = (table.name, names)
    cached = _SQLITE_INSERTS.get(key)
    if cached is None:
        kinds: dict[str, str] = {}
        for name in names:
            column_type = table.c[name].type
            if isinstance(column_type, UTCDateTime):
                kinds[name] = "dt"
            elif isinstance(column_type, JSON):
                kinds[name] = "js"
            elif column_type.bind_processor(dialect) is None:
                kinds[name] = ""
            else:
                return None
        stmt = insert(table).values({name: bindparam(name) for name in names})
        compiled = stmt.compile(dialect=dialect)
        order = list(compiled.positiontup or ())
        if sorted(order) != sorted(names):
            return None
        values = ", ".join(
            f"{kinds[name]}(r[{name!r}])" if kinds[name] else f"r[{name!r}]" for name in order
        )
        source = f"def convert(rows, dt, js):\n    return [({values},) for r in rows]\n"
        namespace: dict[str, Any] = {}
        exec(source, namespace)  # noqa: S102 - generated from the table's own column names
        cached = (str(compiled), namespace["convert"])
        _SQLITE_INSERTS[key] = cached
    sql, convert = cached
    seen: dict[int, str | None] = {}  # a batch's rows mostly share one "now"

    def dt(value: datetime | None) -> str | None:
        if value is None:
            return None
        text = seen.get(id(value))  # the rows keep every value alive meanwhile
        if text is None:
            text = seen[id(value)] = _sqlite_datetime(value)
        return text

    return sql, convert(rows, dt, _json_text)


_SQLITE_INSERTS: dict[tuple[str, tuple[str, ...]], Any] = {}


def _json_text(value: Any) -> str:
    # None is JSON null, as SQLAlchemy's JSON type stores it (``none_as_null=False``).
    return json_dumps(value)
