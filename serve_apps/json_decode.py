"""A JSON batch's items decoded by msgspec, with the answers pydantic would give.

pydantic (``BatchRequest`` then ``ScoreRequest`` per item) spent three quarters of a
1,000-window JSON batch's time before scoring: it parses the body into Python objects,
then walks every item and every reading again to check it. msgspec parses and checks in
one pass, in C, into the same Python values: a reading must be a JSON number (a string
or a boolean is no reading), one that overflows a double is refused, NaN and Infinity are
no JSON, and the lists, fields and types are those of :class:`ScoreRequest`.

msgspec only ever says yes: an item that it takes and whose id and class pass the very
validators ``ScoreRequest`` runs is decoded here. Anything else (an item msgspec refuses,
an id or a class those validators refuse) goes through pydantic itself, item by item, so
that its error is pydantic's word for word; and a body that is no batch at all (or that
msgspec cannot split into items) returns None, for the caller to decode with pydantic
alone. Validation is pydantic's, never looser: this module only skips the second walk
for items msgspec has already proved fine.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pydantic_core
from pydantic import TypeAdapter, ValidationError

from pumpfleet.errors import InputError
from pumpfleet.readings import check_pump_id
from serve_apps.errors import InvalidFields
from serve_apps.schemas import MAX_BATCH, MAX_WINDOW, BatchRequest, ClassName, ScoreRequest

Readings = dict[str, list[float | None]]
Problem = tuple[list[Any], str]


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    """:class:`ScoreRequest` as msgspec reads it: a str is a JSON string, a float a JSON
    number that fits a double (an integer too, as pydantic's strict float takes it), a
    bool true or false."""

    pump_id: str
    pump_class: str
    readings: dict[
        str, Annotated[list[float | None], msgspec.Meta(min_length=1, max_length=MAX_WINDOW)]
    ]
    explain: bool = False


Many = msgspec.Meta(min_length=1, max_length=MAX_BATCH)


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[_Item], Many]


class _RawBatch(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[msgspec.Raw], Many]


_BATCH = msgspec.json.Decoder(_Batch)
_RAW_BATCH = msgspec.json.Decoder(_RawBatch)
_ITEM = msgspec.json.Decoder(_Item)
_CLASS = TypeAdapter(ClassName)
_CLASSES: set[str] = set()  # class names ScoreRequest's own validator took


def _class_ok(name: str) -> bool:
    """Whether ``pump_class`` passes ScoreRequest's validator (pydantic's pattern, not
    Python's ``re``: they differ on a trailing newline), remembered per name."""
    if name in _CLASSES:
        return True
    try:
        _CLASS.validate_python(name)
    except ValidationError:
        return False
    if len(_CLASSES) >= 1024:
        _CLASSES.clear()
    _CLASSES.add(name)
    return True


def _pump_id_ok(value: str) -> bool:
    try:
        check_pump_id(value)
    except InputError:
        return False
    return True


def single(body: bytes) -> tuple[str, str, Readings] | None:
    """A ``/v1/score`` body's pump id, class and readings, where msgspec proves it valid
    (as :func:`decode` proves a batch's item) and it asks for no explanation; None for
    any other body, which the route decodes with pydantic (and answers its errors)."""
    try:
        item = _ITEM.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if item.explain or not (_pump_id_ok(item.pump_id) and _class_ok(item.pump_class)):
        return None
    return item.pump_id, item.pump_class, item.readings


class NotABatch(Exception):
    """msgspec could not split the body into items: pydantic decides."""


def _by_pydantic(raw: bytes) -> ScoreRequest | Problem:
    """One item through pydantic, as the pydantic path sees it (parsed as any JSON, then
    validated): its fields, or its first error."""
    try:
        value = pydantic_core.from_json(raw)
    except ValueError:
        raise NotABatch from None
    if not isinstance(value, dict):  # pydantic refuses the batch itself for this
        raise NotABatch
    try:
        req = ScoreRequest.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        return list(first["loc"]), first["msg"]
    return req


Decoded = tuple[list[str | None], list[str | None], list[Readings | None], dict[int, Problem]]


def decode(body: bytes) -> Decoded | None:
    """A JSON batch's ids, classes, readings and each bad item's error (by index), as
    pydantic would decode them; None if the body is not one msgspec can split into
    items (the caller decodes it with pydantic, which says what is wrong). The usual
    batch, all of whose items are fine, is decoded in one call."""
    try:
        items = _BATCH.decode(body).items
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _item_by_item(body)
    ids = [x.pump_id for x in items]
    classes = [x.pump_class for x in items]
    if not (all(map(_pump_id_ok, ids)) and all(map(_class_ok, set(classes)))):
        return _item_by_item(body)
    return ids, classes, [x.readings for x in items], {}  # type: ignore[return-value]


def _item_by_item(body: bytes) -> Decoded | None:
    """:func:`decode` of a batch with a bad item: each item by msgspec, and those it
    refuses by pydantic."""
    try:
        raw_items = _RAW_BATCH.decode(body).items
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    n = len(raw_items)
    ids: list[str | None] = [None] * n
    classes: list[str | None] = [None] * n
    readings: list[Readings | None] = [None] * n
    errors: dict[int, Problem] = {}
    decode_item = _ITEM.decode
    try:
        for i, raw in enumerate(raw_items):
            try:
                item = decode_item(raw)
            except (msgspec.ValidationError, msgspec.DecodeError):
                item = None
            if item is not None and _pump_id_ok(item.pump_id) and _class_ok(item.pump_class):
                ids[i], classes[i], readings[i] = item.pump_id, item.pump_class, item.readings
                continue
            found = _by_pydantic(bytes(raw))
            if isinstance(found, ScoreRequest):
                ids[i], classes[i], readings[i] = found.pump_id, found.pump_class, found.readings
            else:
                errors[i] = found
    except NotABatch:
        return None
    return ids, classes, readings, errors


def decode_pydantic(body: bytes) -> Decoded:
    """:func:`decode` by pydantic alone: the batch (InvalidFields naming every problem,
    as FastAPI's own answers do), then each item (its first error, by index)."""
    try:
        batch = BatchRequest.model_validate_json(body)
    except ValidationError as e:
        raise InvalidFields([(x["loc"], x["msg"]) for x in e.errors()]) from None
    n = len(batch.items)
    ids: list[str | None] = [None] * n
    classes: list[str | None] = [None] * n
    readings: list[Readings | None] = [None] * n
    errors: dict[int, Problem] = {}
    for i, raw in enumerate(batch.items):
        try:
            req = ScoreRequest.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            errors[i] = (list(first["loc"]), first["msg"])
            continue
        ids[i], classes[i], readings[i] = req.pump_id, req.pump_class, req.readings
    return ids, classes, readings, errors
