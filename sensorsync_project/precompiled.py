"""Hot-path queries whose SQL is compiled once per thread and database instead of on every request.

The agent's hot paths are one indexed SELECT each, yet compiling that queryset (select_related + defer) cost
0.7 ms of the 1.7 ms the lookup took, more than the whole framework-ceiling view. ``CompiledLookup`` compiles the
queryset once with a marker in place of the looked-up value, then per call runs the cached SQL with the value and
builds the instances exactly as Django's ``ModelIterable`` does (converters, ``from_db``, related populators).
``CompiledLookup.rows`` does the same for a ``values_list()`` queryset: the rows as tuples, converters applied.
It relies on Django's compiler internals, which is why the project pins Django below 5.3 and the agent test suite
covers every lookup made through it.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators

_MARKER = "\x00sensorsync-compiled-lookup-marker\x00"


@dataclass(frozen=True)
class _Plan:
    sql: str
    params: tuple
    value_index: int
    compiler: Any
    converters: dict
    model: type[Model] | None  # None for a values_list() queryset
    start: int
    end: int
    init_list: list[str]
    populators: list


class CompiledLookup:
    def __init__(self, build: Callable[[Any], QuerySet]) -> None:
        """``build(value)`` returns the queryset for one value; it must filter on that value exactly once."""
        self._build = build
        self._local = threading.local()

    def _plan(self, using: str) -> _Plan:
        plans = self._local.__dict__.setdefault("plans", {})
        plan = plans.get(using)
        if plan is None:
            queryset = self._build(_MARKER).using(using)
            compiler = queryset.query.get_compiler(using=using)
            sql, params = compiler.as_sql()
            select, klass_info = compiler.select, compiler.klass_info
            converters = compiler.get_converters([column[0] for column in select])
            params = tuple(params)
            value_index = params.index(_MARKER)
            if queryset.query.values_select:  # values_list(): tuples, no instances
                plan = _Plan(sql, params, value_index, compiler, converters, None, 0, len(select), [], [])
            else:
                start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
                plan = _Plan(
                    sql=sql,
                    params=params,
                    value_index=value_index,
                    compiler=compiler,
                    converters=converters,
                    model=klass_info["model"],
                    start=start,
                    end=end,
                    init_list=[column[0].target.attname for column in select[start:end]],
                    populators=get_related_populators(klass_info, select, using),
                )
            plans[using] = plan
        return plan

    def _fetch(self, plan: _Plan, value, using: str, *, many: bool) -> list:
        params = list(plan.params)
        params[plan.value_index] = value
        with connections[using].cursor() as cursor:
            cursor.execute(plan.sql, params)
            found = cursor.fetchall() if many else [row for row in [cursor.fetchone()] if row is not None]
        if plan.converters and found:
            found = [tuple(row) for row in plan.compiler.apply_converters(found, plan.converters)]
        return found

    def get(self, value, *, using: str = "default") -> Model | None:
        """The one instance the value selects, or None (for a queryset of model instances)."""
        plan = self._plan(using)
        found = self._fetch(plan, value, using, many=False)
        if not found:
            return None
        row = found[0]
        obj = plan.model.from_db(using, plan.init_list, row[plan.start : plan.end])
        for populator in plan.populators:
            populator.populate(row, obj)
        return obj

    def rows(self, value, *, using: str = "default") -> list[tuple]:
        """Every row the value selects, as tuples (for a ``values_list()`` queryset)."""
        plan = self._plan(using)
        if plan.model is not None:
            raise TypeError("rows() is for values_list() querysets; use get() for model instances")
        return self._fetch(plan, value, using, many=True)
