"""Writes for the runner's hot path, their SQL built once per process from the models' metadata.

Before a bracket's order goes out, the runner writes its intent (the Bracket row and its three
Order rows) together with its own fenced move to ENTERING_POSITION and the transition rows.
Through the ORM that is five statements of about 0.3 ms of query compilation each, on top of the
round trips. Here:

- ``insert_rows`` inserts instances of one model in one statement;
- ``write_guarded`` makes a conditional UPDATE and the inserts that go with it. On PostgreSQL this
  is ONE prepared statement (data-modifying CTEs); elsewhere the same writes in one transaction;
- ``write_all`` makes UPDATEs of saved instances, INSERTs and, optionally, a conditional UPDATE
  with its inserts, all in ONE statement on PostgreSQL (the runner's close: the legs, the trade,
  the bracket closed, the run's moves).

Each value is prepared by its field exactly as the ORM does (``pre_save`` fills ``auto_now``,
then ``get_db_prep_save``). Only plain concrete fields and an auto primary key are supported
(what those models have); anything else is refused rather than written wrongly. Like
``bulk_create``, no ``post_save`` signal is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import IntegrityError, connection, models, transaction


@cache
def _insert_sql(model: type[models.Model], rows: int, vendor: str) -> tuple[str, tuple]:
    """The INSERT of ``rows`` instances (``vendor``: one cache entry per database kind)."""
    fields = _plain_fields(model)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    opts = model._meta
    table, values, pk = quote(opts.db_table), ", ".join([row] * rows), quote(opts.pk.column)
    sql = f"INSERT INTO {table} ({columns}) VALUES {values} RETURNING {pk}"
    return sql, fields


def insert_rows(objs: list[models.Model]) -> None:
    """INSERT ``objs`` (unsaved instances of one model) in one statement; sets their pks."""
    if not objs:
        return
    model = type(objs[0])
    if any(type(obj) is not model or obj.pk is not None for obj in objs):
        raise TypeError("insert_rows takes unsaved instances of one model")
    sql, fields = _insert_sql(model, len(objs), connection.vendor)
    params = _values(objs, fields)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()]
    if len(ids) != len(objs):  # pragma: no cover - the database broke its own contract
        raise RuntimeError(f"{model._meta.label}: {len(ids)} ids for {len(objs)} rows")
    _saved(objs, ids)


@dataclass(frozen=True, slots=True)
class GuardedUpdate:
    """``UPDATE model SET set WHERE where`` (equalities) that must match exactly one row."""

    model: type[models.Model]
    set: dict[str, Any]
    where: dict[str, Any]


def write_guarded(
    guard: GuardedUpdate,
    rows: list[models.Model],
    parent: models.Model,
    children: list[models.Model],
    link: str,
) -> bool:
    """If ``guard`` matches its row: apply it and INSERT ``rows``, ``parent`` and ``children``
    (each child's ``link`` foreign key set to the parent). Returns False, having written
    nothing, when the guard matches no row.

    On PostgreSQL this is ONE statement (data-modifying CTEs: one round trip, atomic by
    itself); elsewhere the same writes in one transaction. All instances are unsaved; their
    pks are set.
    """
    if connection.vendor != "postgresql":
        return _write_guarded_generic(guard, rows, parent, children, link)
    shape = (
        guard.model,
        tuple(guard.set),
        tuple(guard.where),
        type(rows[0]) if rows else None,
        len(rows),
        type(parent),
        type(children[0]),
        len(children),
        link,
    )
    sql, row_fields, parent_fields, child_fields = _guarded_sql(*shape)  # type: ignore[arg-type]
    opts = guard.model._meta
    params: list[Any] = [
        opts.get_field(name).get_db_prep_save(value, connection)
        for name, value in guard.set.items()
    ]
    params += [
        opts.get_field(name).get_db_prep_save(value, connection)
        for name, value in guard.where.items()
    ]
    for objs, fields in ((rows, row_fields), ([parent], parent_fields), (children, child_fields)):
        params += _values(objs, fields)
    found = _execute_prepared(sql, params)  # (kind, parent pk, pk) in insertion order
    if not found:
        return False
    if len(found) != len(children) + len(rows):  # pragma: no cover - broken contract
        raise RuntimeError(f"guarded write: {len(found)} ids for {len(children) + len(rows)}")
    parent_pk = found[0][1]
    _saved([parent], [parent_pk])
    _saved(rows, [pk for kind, _, pk in found if kind == "r"])
    _saved(children, [pk for kind, _, pk in found if kind == "c"])
    _link(children, link, parent_pk)
    return True


def _execute_prepared(sql: str, params: list[Any]) -> list[tuple]:
    """Run ``sql`` as a server-side prepared statement on Django's own connection (same
    transaction state), so PostgreSQL need not parse the long statement on every trade (the
    saving measured here was small, about 0.1 ms). Errors come out as Django's database
    errors."""
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall()


def apply_guarded(guard: GuardedUpdate, rows: list[models.Model]) -> bool:
    """If ``guard`` matches its row: apply it and INSERT ``rows`` (one transaction). False,
    having written nothing, when it matches no row."""
    with transaction.atomic(savepoint=False):  # within a caller's: no savepoint round trips
        matched = guard.model._base_manager.filter(**guard.where).update(**guard.set)
        if matched == 0:
            return False
        if matched != 1:
            raise RuntimeError(f"guarded write: the guard matched {matched} rows")
        insert_rows(rows)
    return True


def _write_guarded_generic(
    guard: GuardedUpdate,
    rows: list[models.Model],
    parent: models.Model,
    children: list[models.Model],
    link: str,
) -> bool:
    with transaction.atomic():
        if not apply_guarded(guard, rows):
            return False
        insert_rows([parent])
        _link(children, link, parent.pk)
        insert_rows(children)
    return True


def _values(objs: list[models.Model], fields: tuple) -> list[Any]:
    """Each field's value of each object, prepared for the database as the ORM's INSERT does."""
    return [
        field.get_db_prep_save(field.pre_save(obj, True), connection)
        for obj in objs
        for field in fields
    ]


def _link(children: list[models.Model], link: str, parent_pk: Any) -> None:
    for child in children:
        setattr(child, child._meta.get_field(link).attname, parent_pk)


def _saved(objs: list[models.Model], pks: list[Any]) -> None:
    for obj, pk in zip(objs, pks, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = connection.alias


def _plain_fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    opts = model._meta
    if not isinstance(opts.pk, models.AutoField | models.BigAutoField):
        raise TypeError(f"{opts.label}: fastsql needs an auto primary key")
    fields = tuple(f for f in opts.concrete_fields if not f.primary_key)
    if any(getattr(f, "generated", False) for f in fields):
        raise TypeError(f"{opts.label}: fastsql does not write generated fields")
    return fields


@cache
def _guarded_sql(
    guard_model: type[models.Model],
    set_names: tuple[str, ...],
    where_names: tuple[str, ...],
    row_model: type[models.Model] | None,
    row_count: int,
    parent_model: type[models.Model],
    child_model: type[models.Model],
    child_count: int,
    link: str,
) -> tuple[str, tuple, tuple, tuple]:
    """The one PostgreSQL statement of ``write_guarded`` for this shape; every value is a
    bound parameter with an explicit cast to its column's type."""
    quote = connection.ops.quote_name

    def column(model: type[models.Model], name: str) -> str:
        return quote(model._meta.get_field(name).column)

    typed = _typed

    def values(fields: tuple, count: int) -> str:
        rows = (f"({n}, " + ", ".join(typed(f) for f in fields) + ")" for n in range(count))
        return "VALUES " + ", ".join(rows)

    def names(fields: tuple) -> str:
        return ", ".join(quote(f.column) for f in fields)

    g_opts = guard_model._meta
    sets = ", ".join(f"{column(guard_model, n)} = %s" for n in set_names)
    wheres = " AND ".join(f"{column(guard_model, n)} = %s" for n in where_names)
    parts = [f"g AS (UPDATE {quote(g_opts.db_table)} SET {sets} WHERE {wheres} RETURNING 1)"]
    row_fields: tuple = ()
    if row_model is not None and row_count:
        row_fields = _plain_fields(row_model)
        r_opts = row_model._meta
        aliases = ", ".join(f"v{i}" for i in range(len(row_fields)))
        parts.append(
            f"r AS (INSERT INTO {quote(r_opts.db_table)} ({names(row_fields)}) "
            f"SELECT {aliases} FROM ({values(row_fields, row_count)}) AS v(n, {aliases}) "
            f"WHERE EXISTS (SELECT 1 FROM g) ORDER BY n RETURNING {quote(r_opts.pk.column)})"
        )
    parent_fields = _plain_fields(parent_model)
    p_opts = parent_model._meta
    parent_values = ", ".join(typed(f) for f in parent_fields)
    parts.append(
        f"p AS (INSERT INTO {quote(p_opts.db_table)} ({names(parent_fields)}) "
        f"SELECT {parent_values} WHERE EXISTS (SELECT 1 FROM g) "
        f"RETURNING {quote(p_opts.pk.column)})"
    )
    link_field = child_model._meta.get_field(link)
    child_fields = tuple(f for f in _plain_fields(child_model) if f is not link_field)
    c_opts = child_model._meta
    aliases = ", ".join(f"v{i}" for i in range(len(child_fields)))
    parts.append(
        f"c AS (INSERT INTO {quote(c_opts.db_table)} ({quote(link_field.column)}, "
        f"{names(child_fields)}) SELECT p.{quote(p_opts.pk.column)}, {aliases} "
        f"FROM p, ({values(child_fields, child_count)}) AS v(n, {aliases}) ORDER BY n "
        f"RETURNING {quote(c_opts.pk.column)})"
    )
    parent_pk = f"(SELECT {quote(p_opts.pk.column)} FROM p)"
    selects = []
    if row_fields:
        selects.append(f"SELECT 'r', {parent_pk}, {quote(row_model._meta.pk.column)} FROM r")
    selects.append(f"SELECT 'c', {parent_pk}, {quote(c_opts.pk.column)} FROM c")
    sql = "WITH " + ", ".join(parts) + " " + " UNION ALL ".join(selects)
    return sql, row_fields, parent_fields, child_fields


# --- several writes in one statement ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Update:
    """UPDATE ``fields`` of a saved instance, by its primary key (its ``auto_now`` fields are
    set to now too, as ``save(update_fields=...)`` does)."""

    obj: models.Model
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Insert:
    """INSERT an unsaved instance; ``skip_conflict``: when a unique constraint already holds
    such a row, nothing is inserted and its pk stays None."""

    obj: models.Model
    skip_conflict: bool = False


def write_all(
    updates: list[Update],
    inserts: list[Insert],
    guard: GuardedUpdate | None = None,
    guarded: list[models.Model] | tuple = (),
) -> bool:
    """``updates`` and ``inserts``, and ``guard`` with the ``guarded`` rows (unsaved, of one
    model) inserted only if it matches its row. On PostgreSQL ONE statement (atomic by
    itself); elsewhere one transaction. Returns whether the guard held (True without one);
    the inserted instances get their pks. No ``post_save`` signal is sent."""
    updates = [Update(u.obj, _with_auto_now(type(u.obj), u.fields)) for u in updates]
    if not (updates or inserts or guard is not None):
        return True
    if connection.vendor != "postgresql":
        return _write_all_generic(updates, inserts, guard, list(guarded))
    shape = (
        tuple((type(u.obj), u.fields) for u in updates),
        tuple((type(i.obj), i.skip_conflict) for i in inserts),
        None if guard is None else (guard.model, tuple(guard.set), tuple(guard.where)),
        type(guarded[0]) if guarded else None,
        len(guarded),
    )
    sql, guarded_fields = _all_sql(*shape)
    params: list[Any] = []
    for update in updates:
        opts = update.obj._meta
        params += [
            opts.get_field(name).get_db_prep_save(
                opts.get_field(name).pre_save(update.obj, False), connection
            )
            for name in update.fields
        ]
        params.append(update.obj.pk)
    for insert in inserts:
        params += _values([insert.obj], _plain_fields(type(insert.obj)))
    if guard is not None:
        opts = guard.model._meta
        params += [
            opts.get_field(name).get_db_prep_save(value, connection)
            for name, value in guard.set.items()
        ]
        params += [
            opts.get_field(name).get_db_prep_save(value, connection)
            for name, value in guard.where.items()
        ]
        params += _values(list(guarded), guarded_fields)
    found = _execute_prepared(sql, params)  # (kind, index, pk)
    held = guard is None
    rows: list[Any] = []
    for kind, index, pk in found:
        if kind == "i":
            _saved([inserts[index].obj], [pk])
        elif kind == "g":
            held = True
        else:
            rows.append(pk)
    if held and guarded:
        _saved(list(guarded), rows)
    return held


def _with_auto_now(model: type[models.Model], fields: tuple[str, ...]) -> tuple[str, ...]:
    auto = tuple(
        f.name
        for f in model._meta.concrete_fields
        if getattr(f, "auto_now", False) and f.name not in fields
    )
    return (*fields, *auto)


def _write_all_generic(
    updates: list[Update],
    inserts: list[Insert],
    guard: GuardedUpdate | None,
    guarded: list[models.Model],
) -> bool:
    with transaction.atomic():
        for update in updates:
            values = {
                name: update.obj._meta.get_field(name).pre_save(update.obj, False)
                for name in update.fields
            }
            type(update.obj)._base_manager.filter(pk=update.obj.pk).update(**values)
        for insert in inserts:
            if not insert.skip_conflict:
                insert_rows([insert.obj])
                continue
            try:
                with transaction.atomic():
                    insert_rows([insert.obj])
            except IntegrityError:
                insert.obj.pk = None
        return guard is None or apply_guarded(guard, guarded)


@cache
def _all_sql(
    updates: tuple[tuple[type[models.Model], tuple[str, ...]], ...],
    inserts: tuple[tuple[type[models.Model], bool], ...],
    guard: tuple[type[models.Model], tuple[str, ...], tuple[str, ...]] | None,
    guarded_model: type[models.Model] | None,
    guarded_count: int,
) -> tuple[str, tuple]:
    """The one PostgreSQL statement of ``write_all`` for this shape."""
    quote = connection.ops.quote_name
    parts: list[str] = []
    selects: list[str] = []
    for n, (model, names) in enumerate(updates):
        opts = model._meta
        sets = ", ".join(
            f"{quote(opts.get_field(name).column)} = {_typed(opts.get_field(name))}"
            for name in names
        )
        parts.append(
            f"u{n} AS (UPDATE {quote(opts.db_table)} SET {sets} "
            f"WHERE {quote(opts.pk.column)} = %s RETURNING 1)"
        )
    for n, (model, skip_conflict) in enumerate(inserts):
        opts, fields = model._meta, _plain_fields(model)
        conflict = " ON CONFLICT DO NOTHING" if skip_conflict else ""
        parts.append(
            f"i{n} AS (INSERT INTO {quote(opts.db_table)} "
            f"({', '.join(quote(f.column) for f in fields)}) "
            f"VALUES ({', '.join(_typed(f) for f in fields)}){conflict} "
            f"RETURNING {quote(opts.pk.column)} AS pk)"
        )
        selects.append(f"SELECT 'i', {n}, pk FROM i{n}")
    guarded_fields: tuple = ()
    if guard is not None:
        model, set_names, where_names = guard
        opts = model._meta
        column = lambda name: quote(opts.get_field(name).column)  # noqa: E731
        sets = ", ".join(f"{column(n)} = %s" for n in set_names)
        wheres = " AND ".join(f"{column(n)} = %s" for n in where_names)
        parts.append(f"g AS (UPDATE {quote(opts.db_table)} SET {sets} WHERE {wheres} RETURNING 1)")
        selects.append("SELECT 'g', 0, NULL::bigint FROM g")
        if guarded_model is not None and guarded_count:
            guarded_fields = _plain_fields(guarded_model)
            r_opts = guarded_model._meta
            aliases = ", ".join(f"v{i}" for i in range(len(guarded_fields)))
            rows = ", ".join(
                f"({n}, " + ", ".join(_typed(f) for f in guarded_fields) + ")"
                for n in range(guarded_count)
            )
            parts.append(
                f"r AS (INSERT INTO {quote(r_opts.db_table)} "
                f"({', '.join(quote(f.column) for f in guarded_fields)}) "
                f"SELECT {aliases} FROM (VALUES {rows}) AS v(n, {aliases}) "
                f"WHERE EXISTS (SELECT 1 FROM g) ORDER BY n "
                f"RETURNING {quote(r_opts.pk.column)} AS pk)"
            )
            selects.append("SELECT 'r', 0, pk FROM r")
    if not selects:
        selects.append("SELECT 'none', 0, NULL::bigint WHERE false")
    sql = "WITH " + ", ".join(parts) + " " + " UNION ALL ".join(selects)
    return sql, guarded_fields


def _typed(field: models.Field) -> str:
    """A bound parameter cast to its column's type without the modifier: ``::varchar(8)``
    would silently cut a longer value and ``::numeric(20,8)`` round it; the column's own check
    must refuse instead."""
    base = re.sub(r"\(.*\)", "", field.cast_db_type(connection)).strip()
    return f"%s::{base}"
