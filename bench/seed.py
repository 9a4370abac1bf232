"""Seeding a benchmark fleet fast: a few template devices through the real services, then clones of them.

Each template is made the way production makes a device: ``device_create``, ``target_state_update`` with its
sensors, and one real agent report through ``state_report_apply`` (so it has a current state, deployed rows,
history, events and a closed drift episode). Every clone copies all of a template's rows, found from the model
graph (every model reachable from ``Device`` through foreign keys, plus the device's events), with every concrete
field copied generically from ``Model._meta.concrete_fields``. Only three things are set by name:

- ``Device.name`` and ``Device.api_key_digest`` (a fresh key per clone; the plain key goes to the load generator's
  file under ``var/bench/``, never to the database);
- ``DeviceCurrentState.digest``, recomputed for the clone's own report (the body the load generator sends).

Every UUID found anywhere in a template's rows (UUID columns, text, JSON: the device uuid, sensor ids, event ids,
correlation ids) is replaced by a fresh one per clone, consistently across all of the clone's rows; foreign keys
are remapped to the clone's new rows. A new unique column that is neither a UUID nor a foreign key makes seeding
stop and name it, rather than produce clones that collide.
"""

import functools
import json
import random
import re
import uuid as uuid_lib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client
from django.urls import reverse

from devices.keys import key_digest, key_generate
from devices.models import Device, DeviceCurrentState
from devices.selectors import device_for_key
from devices.services import device_create
from events.choices import EventSourceChoices
from events.context import audit_context
from events.models import Event
from events.services import DEVICE_AGGREGATE
from reconciliation.agent_protocol import body_inflate, json_parse, reports_parse
from reconciliation.services.reports import state_report_apply
from reconciliation.services.targets import target_state_update
from simulator.agent import sensor_specs

from . import fleet, reports

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_CONST, _FK, _UUID, _TEXT, _JSON = range(5)


class Link(NamedTuple):
    """A model hanging off ``Device``: its rows are those whose foreign key ``attname`` points at ``parent``'s."""

    model: type[models.Model]
    parent: type[models.Model]
    attname: str


def device_models() -> list[Link]:
    """Every model hanging off ``Device`` through foreign keys, each after the model it points to."""
    found: list[Link] = []
    seen: set[type[models.Model]] = {Device}
    queue: list[type[models.Model]] = [Device]
    while queue:
        parent = queue.pop(0)
        for rel in parent._meta.related_objects:
            child = rel.field.model  # the model whose foreign key points at ``parent``
            if rel.many_to_many or child in seen or child._meta.proxy or not child._meta.managed:
                continue
            seen.add(child)
            found.append(Link(child, parent, rel.field.attname))
            queue.append(child)
    return found


def _attnames(model: type[models.Model]) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


@dataclass
class Table:
    """One model's rows of a template, compiled into what each clone must rewrite."""

    model: type[models.Model]
    rows: list[dict]  # attname -> value, as read
    # Per row: (attname, kind, payload), the payload being what the kind needs (``_row_plan``).
    plans: list[list[tuple[str, int, Any]]] = field(default_factory=list)


@dataclass
class Blueprint:
    template: Device
    api_key: str
    tables: list[Table]
    uuids: list[str]  # every UUID in the template's rows
    entries: list[str]  # the template's report entries (variants 0 and 1) as JSON text
    generation: int = 0  # the agent generation its devices speak as (bench.fleet)


def _uuids_in(value, found: set[str]) -> bool:
    if isinstance(value, uuid_lib.UUID):
        found.add(str(value))
        return True
    if isinstance(value, str):
        hits = UUID_RE.findall(value)
        found.update(hits)
        return bool(hits)
    if isinstance(value, dict | list):
        return _uuids_in(orjson.dumps(value).decode(), found)
    return False


def blueprint_load(
    template: Device, api_key: str, *, overridden: set[tuple[type[models.Model], str]], generation: int = 0
) -> Blueprint:
    """Read every row of ``template`` and decide, field by field, what a clone rewrites."""
    tables = _template_tables(template)
    cloned = {table.model for table in tables}
    uuids: set[str] = set()
    for table in tables:
        _unique_fields_check(table.model, overridden)
        table.plans += [_row_plan(table.model, row, cloned, uuids) for row in table.rows]

    target = template.target_state
    sensors = target.config["sensors"]
    entries = [
        orjson.dumps(
            reports.report_entry(sensors=sensors, version=target.version, variant=v, generation=generation)
        ).decode()
        for v in reports.VARIANTS
    ]
    return Blueprint(template, api_key, tables, sorted(uuids), entries, generation)


def _template_tables(template: Device) -> list[Table]:
    """Every row of ``template``: the device's, each model's hanging off it (parents first), and its events."""
    tables: list[Table] = [Table(Device, list(Device.objects.filter(pk=template.pk).values(*_attnames(Device))))]
    pks: dict[type[models.Model], list] = {Device: [template.pk]}
    for model, parent, attname in device_models():
        parents = pks.get(parent, [])
        rows = list(
            model._default_manager.filter(**{f"{attname}__in": parents}).order_by("pk").values(*_attnames(model))
        )
        pks[model] = [row[model._meta.pk.attname] for row in rows]
        tables.append(Table(model, rows))
    events = Event.objects.filter(aggregate_type=DEVICE_AGGREGATE, aggregate_id=str(template.uuid))
    tables.append(Table(Event, list(events.order_by("sequence").values(*_attnames(Event)))))
    return tables


def _unique_fields_check(model: type[models.Model], overridden: set[tuple[type[models.Model], str]]) -> None:
    """Refuse a unique column the cloner cannot give each clone its own value of (neither a UUID nor a foreign key,
    nor set by name)."""
    for f in model._meta.concrete_fields:
        plain_unique = f.unique and not f.primary_key and not f.is_relation
        if plain_unique and not isinstance(f, models.UUIDField) and (model, f.name) not in overridden:
            raise ValueError(
                f"{model._meta.label}.{f.name} is unique but neither a UUID nor a foreign key: the benchmark's "
                "cloner does not know how to give each clone its own value (see bench/seed.py)."
            )


def _row_plan(
    model: type[models.Model], row: dict, cloned: set[type[models.Model]], uuids: set[str]
) -> list[tuple[str, int, Any]]:
    """What a clone does with each field of ``row``: keep it, remap a foreign key (payload: the model it points
    to), or replace the UUIDs in a UUID, a text or a JSON value (payload: the value, JSON as text). Every UUID
    found is added to ``uuids``."""
    plan: list[tuple[str, int, Any]] = []
    for f in model._meta.concrete_fields:
        value = row[f.attname]
        if f.primary_key and isinstance(f, models.AutoField):
            continue  # the database numbers the clone
        if f.is_relation and f.related_model in cloned:
            plan.append((f.attname, _FK, f.related_model))
        elif isinstance(value, uuid_lib.UUID) and _uuids_in(value, uuids):
            plan.append((f.attname, _UUID, value))
        elif isinstance(value, str) and _uuids_in(value, uuids):
            plan.append((f.attname, _TEXT, value))
        elif isinstance(value, dict | list) and _uuids_in(value, uuids):
            plan.append((f.attname, _JSON, orjson.dumps(value).decode()))
        else:
            plan.append((f.attname, _CONST, value))
    return plan


@dataclass
class Clone:
    """One clone's identity and what the load generator needs to speak for it."""

    index: int
    name: str
    api_key: str
    mapping: dict[str, str]  # template uuid -> this clone's uuid
    uuid: str
    entries: list[bytes]  # its report entries, variants 0 and 1, as JSON (a fleet of 100,000 keeps them all)
    digests: list[str]  # their identity digests
    parts: dict  # the identity parts' digests of variant 0, as the server stores them
    pks: dict[type[models.Model], dict] = field(default_factory=dict)  # model -> template pk -> clone pk


def _sub(text: str, mapping: dict[str, str]) -> str:
    """``text`` with every UUID of ``mapping`` replaced: the template's text is split at its UUIDs once (the
    split is cached: every clone renames the same few texts)."""
    pieces = _uuid_split(text)
    out = [pieces[0]]
    for i in range(1, len(pieces), 2):
        out.append(mapping.get(pieces[i], pieces[i]))
        out.append(pieces[i + 1])
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _uuid_split(text: str) -> list[str]:
    """``text`` as [literal, uuid, literal, uuid, ..., literal]."""
    pieces, start = [], 0
    for match in UUID_RE.finditer(text):
        pieces += [text[start : match.start()], match.group(0)]
        start = match.end()
    pieces.append(text[start:])
    return pieces


def clone_prepare(blueprint: Blueprint, *, index: int, name: str, identity: bool = False) -> Clone:
    """A clone's uuids, key and report entries (``identity``: the template itself, nothing renamed)."""
    mapping = {u: u if identity else str(uuid_lib.uuid4()) for u in blueprint.uuids}
    texts = [_sub(text, mapping) for text in blueprint.entries]
    entries = [orjson.loads(text) for text in texts]
    return Clone(
        index=index,
        name=name,
        api_key=blueprint.api_key if identity else key_generate(),
        mapping=mapping,
        uuid=mapping[str(blueprint.template.uuid)],
        entries=[text.encode() for text in texts],
        digests=[reports.entry_digest(entry) for entry in entries],
        parts=reports.entry_parts(mapping[str(blueprint.template.uuid)], entries[0]),
    )


def _clone_rows(blueprint: Blueprint, clones: list[Clone]) -> None:
    """Insert every row of ``blueprint`` once per clone, table by table (parents first)."""
    for table in blueprint.tables:
        model = table.model
        pk_name = model._meta.pk.attname
        objects, owners = [], []
        for clone in clones:
            for row, plan in zip(table.rows, table.plans, strict=True):
                objects.append({**_cloned_values(row, plan, clone), **_overrides(model, clone)})
                owners.append((clone, row[pk_name]))
        for new_pk, (clone, old_pk) in zip(_insert(model, objects), owners, strict=True):
            clone.pks.setdefault(model, {})[old_pk] = new_pk


def _cloned_values(row: dict, plan: list[tuple[str, int, Any]], clone: Clone) -> dict[str, Any]:
    """The clone's values of a template row, by its plan (``_row_plan``)."""
    values: dict[str, Any] = {}
    for attname, kind, payload in plan:
        if kind == _CONST:
            values[attname] = payload
        elif kind == _FK:
            old = row[attname]
            values[attname] = None if old is None else clone.pks[payload][old]
        elif kind == _UUID:
            values[attname] = uuid_lib.UUID(clone.mapping[str(payload)])
        elif kind == _TEXT:
            values[attname] = _sub(payload, clone.mapping)
        else:
            values[attname] = _JsonText(_sub(payload, clone.mapping))
    return values


class _JsonText(str):
    """A JSON value already serialized (COPY takes the text; other backends get the parsed value)."""


_prepared: dict[tuple[int, int], tuple[object, object]] = {}  # (field, value) ids -> (value, database value)


def _insert(model: type[models.Model], rows: list[dict]) -> list:
    """Insert ``rows`` (attname -> value) and return their primary keys, in order.

    On PostgreSQL with COPY: ``bulk_create`` there sends rows as UNNEST arrays, and psycopg escapes every JSON
    value element by element in Python, several times slower than COPY for this much JSON. Values still go
    through each field's ``get_db_prep_save``, as ``bulk_create`` would; serial keys are drawn from the table's
    sequence first, so clones can point at their new parents.
    """
    if not rows:  # a model of which the templates have no rows (a sequence cannot hand out zero keys)
        return []
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: the ``connection`` proxy costs a lookup per use
    if db.vendor != "postgresql":
        return _insert_bulk(model, rows)
    meta = model._meta
    pk = meta.pk
    if isinstance(pk, models.AutoField):
        first = _serial_keys(db, meta.db_table, pk.column, len(rows))
        for new_pk, values in enumerate(rows, start=first):
            values[pk.attname] = new_pk
    fields = meta.concrete_fields
    quote = db.ops.quote_name
    statement = f"COPY {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) FROM STDIN"
    with db.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for values in rows:
            copy.write_row([_copy_value(db, f, values[f.attname]) for f in fields])
    return [values[pk.attname] for values in rows]


def _insert_bulk(model: type[models.Model], rows: list[dict]) -> list:
    """``_insert`` on a database without COPY: ``bulk_create``."""
    for values in rows:
        for attname, value in values.items():
            if isinstance(value, _JsonText):
                values[attname] = orjson.loads(str(value))  # orjson takes no str subclass
    objects = [model(**values) for values in rows]
    model._default_manager.bulk_create(objects, batch_size=1000)
    return [obj.pk for obj in objects]


def _serial_keys(db: BaseDatabaseWrapper, table: str, column: str, count: int) -> int:
    """Take ``count`` keys of the table's sequence in one block (seeding is the only writer); the first of them."""
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [table, column])
        (sequence,) = cursor.fetchone()
        cursor.execute("SELECT nextval(%s)", [sequence])
        (first,) = cursor.fetchone()
        cursor.execute("SELECT setval(%s, %s)", [sequence, first + count - 1])
    return first


def _copy_value(db: BaseDatabaseWrapper, field: models.Field, value: Any) -> Any:
    """A value as COPY takes it, prepared by its field; a value shared by every clone is prepared once."""
    if isinstance(value, _JsonText):
        return str(value)
    key = (id(field), id(value))
    cached = _prepared.get(key)
    if cached is None or cached[0] is not value:
        if isinstance(field, models.JSONField) and value is not None:
            database_value = json.dumps(field.get_prep_value(value), cls=field.encoder)
        else:
            database_value = field.get_db_prep_save(value, db)
        cached = _prepared[key] = (value, database_value)
    return cached[1]


def _overrides(model, clone: Clone) -> dict:
    if model is Device:
        return {"name": clone.name, "api_key_digest": key_digest(clone.api_key)}
    if model is DeviceCurrentState:
        return {"digest": clone.digests[0], "parts": _JsonText(orjson.dumps(clone.parts).decode())}
    return {}


OVERRIDDEN = {
    (Device, "name"),
    (Device, "api_key_digest"),
    (DeviceCurrentState, "digest"),
    (DeviceCurrentState, "parts"),
}


def template_create(*, name: str, layout_index: int, sensors: int, user, generation: int = 0) -> tuple[Device, str]:
    """A device as a fleet in steady state has it: made through the real services, its target fetched by its
    agent (one real poll), and one real report of what it runs (variant 0), fully in sync."""
    with audit_context(source=EventSourceChoices.COMMAND, actor="command:bench"):
        created = device_create(name=name, user=user)
        target_state_update(
            uuid=created.device.uuid, user=user, config={"sensors": sensor_specs(layout_index, sensors)}
        )
    poll = Client(HTTP_HOST="127.0.0.1").get(
        reverse("agent-state", kwargs={"uuid": created.device.uuid}), headers={"X-Device-API-Key": created.api_key}
    )
    if poll.status_code != 200:
        raise RuntimeError(f"template {name}: its agent's poll was answered {poll.status_code}")
    device = device_for_key(api_key=created.api_key)
    if device is None:
        raise RuntimeError(f"template {name}: its key does not authenticate it")
    target = device.target_state
    entry = reports.report_entry(
        sensors=target.config["sensors"], version=target.version, variant=0, generation=generation
    )
    body = reports.report_body(reports.gzip_member(reports.body_prefix(str(device.uuid), entry)), uptime=3600)
    raw = body_inflate(body, "gzip", limit=settings.SENSORSYNC_MAX_REPORT_BYTES)
    with audit_context(source=EventSourceChoices.AGENT):
        verdict = state_report_apply(device=device, report=reports_parse(json_parse(raw), device_uuid=device.uuid))
    if verdict.outcome != "applied" or verdict.result is None or not verdict.result.in_sync:
        raise RuntimeError(f"template {name}: its first report was not applied in sync ({verdict.outcome})")
    return Device.objects.select_related("target_state", "current_state").get(pk=device.pk), created.api_key


def templates_create(*, count: int, sensors: int, name: Callable[[int], str], user) -> list[Blueprint]:
    """``count`` template devices through the services, each read back as a blueprint to clone."""
    blueprints = []
    for t in range(count):
        generation = fleet.generation_of(t)
        device, key = template_create(name=name(t), layout_index=t, sensors=sensors, user=user, generation=generation)
        blueprints.append(blueprint_load(device, key, overridden=OVERRIDDEN, generation=generation))
    return blueprints


def templates_as_clones(blueprints: list[Blueprint]) -> list[Clone]:
    """The templates themselves, as members of the fleet (indexes 0..len-1)."""
    return [clone_prepare(bp, index=t, name=bp.template.name, identity=True) for t, bp in enumerate(blueprints)]


def clones_create(
    blueprints: list[Blueprint],
    indexes: range,
    *,
    name: Callable[[int], str],
    batch: int = 250,
    progress: Callable[[int], None] | None = None,
) -> list[Clone]:
    """One clone per index, of template ``index % len(blueprints)``, inserted ``batch`` devices per transaction."""
    clones: list[Clone] = []
    postgres = connection.vendor == "postgresql"
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")  # this session only: a crash just means seeding again
    try:
        for start in range(indexes.start, indexes.stop, batch):
            group: dict[int, list[Clone]] = {}
            for index in range(start, min(start + batch, indexes.stop)):
                t = index % len(blueprints)
                clone = clone_prepare(blueprints[t], index=index, name=name(index))
                group.setdefault(t, []).append(clone)
                clones.append(clone)
            with transaction.atomic():
                for t, members in group.items():
                    _clone_rows(blueprints[t], members)
            for members in group.values():
                for clone in members:
                    clone.pks = {}  # only the batch's own rows point at them
            if progress is not None:
                progress(len(clones))
    finally:
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO DEFAULT")
    return clones


def clones_verify(clones: list[Clone], *, sample: int, rng: random.Random) -> list[str]:
    """Problems found on a random sample: the read model is the projection of the stored states, the device's
    event sequence is gapless from 1 (SPEC section 2), the stored digest is the one of the report the load
    generator sends, and the key authenticates the device. Empty when all is well."""
    from reconciliation.selectors import read_model_diff

    problems: list[str] = []
    for clone in rng.sample(clones, min(sample, len(clones))):
        device = Device.objects.select_related("target_state", "current_state").get(uuid=clone.uuid)
        problems += read_model_diff(device=device)
        events = Event.objects.filter(aggregate_type=DEVICE_AGGREGATE, aggregate_id=clone.uuid).order_by("sequence")
        sequences = list(events.values_list("sequence", flat=True))
        if not sequences or sequences != list(range(1, len(sequences) + 1)):
            problems.append(f"{clone.uuid}: its event sequences are not 1..n: {sequences[:10]}")
        if device.current_state.digest != clone.digests[0]:
            problems.append(f"{clone.uuid}: stored digest is not the digest of the report the load generator sends")
        if device_for_key(api_key=clone.api_key) != device:
            problems.append(f"{clone.uuid}: its key does not authenticate it")
    return problems
