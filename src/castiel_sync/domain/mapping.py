"""Field mapping: external records <-> a shard's structured data, through named transforms.

Compile a list of :class:`~castiel_sync.domain.config.FieldMapping` once into a
:class:`MappingPlan`, then map many records::

    plan = compile_mappings(entity.field_mappings)
    outcome = plan.inbound(record)       # external record -> structured data
    outcome = plan.outbound(structured)  # structured data -> external payload

Inbound, a mapping reads ``external``, applies its transforms in order and writes
``castiel``; outbound it reads ``castiel``, applies each transform's *reverse* in reverse
order and writes ``external``. Mappings with direction ``inbound`` are skipped outbound
and vice versa.

Values:

- a source path that is absent is skipped (nothing written), unless a ``default``
  transform supplies a value; ``None`` is a value and is written (a cleared field);
- every transform but ``default`` passes ``None`` through untouched;
- a value a transform cannot convert gives a :class:`FieldError` and that field is left
  out of ``data`` (so the caller keeps what it had); the other fields are still mapped.

The transforms (``args`` keys in camelCase):

===========  ==================================================  =========================
name         inbound                                             outbound (reverse)
===========  ==================================================  =========================
trim         strip surrounding whitespace                        identity (lossy)
lower/upper  change case                                         identity (lossy)
number       text or number -> int when whole, else float;       identity
             ``"1,234.5"`` is refused unless
             ``thousandsSeparator: ","`` is given (no locale
             guessing); ``decimalSeparator`` likewise; a value
             a float cannot hold digit for digit is refused,
             never rounded
integer      like number, and refuses fractions                  identity
boolean      true/false/yes/no/1/0 (any case), booleans, 0/1;    identity, or the ``true``
             plus the ``true``/``false`` args when given         / ``false`` args
date         ISO 8601 date (or a midnight-UTC datetime) ->       ``format``: ``iso``
             ``YYYY-MM-DD``                                      (default), ``epoch_ms``,
                                                                 ``epoch_s`` or a strftime
                                                                 pattern
datetime     ISO 8601 (``Z``, ``+00:00``, ``+0000``,             ``format``: ``iso``
             fractions; naive = UTC), epoch numbers with an      (``...Z``), ``salesforce``
             epoch format -> UTC ``YYYY-MM-DDTHH:MM:SS[.f]Z``    (``.000+0000``),
                                                                 ``epoch_ms``, ``epoch_s``,
                                                                 or a strftime pattern
value_map    look up ``map``; an unknown value is an error       the inverted map; a map
             unless ``keepUnknown: true``                        that is not one-to-one is
                                                                 refused when compiled
                                                                 for outbound use
join         list of text -> text joined by ``separator``        split
             (default ``;``, as Salesforce multi-picklists)
split        text -> list (``""`` -> ``[]``)                     join
default      absent, ``None`` or ``""`` -> ``value``             identity
===========  ==================================================  =========================

Blank text (``""`` after trimming) counts as no value (``None``) for number, integer,
boolean, date and datetime.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from castiel_sync.domain.config import FieldMapping, TransformSpec
from castiel_sync.domain.hashing import canonical_datetime
from castiel_sync.domain.paths import MISSING, Path, PathError, compile_path

__all__ = [
    "FieldError",
    "MappingConfigError",
    "MappingOutcome",
    "MappingPlan",
    "Transform",
    "TransformError",
    "compile_mappings",
    "compile_transform",
    "map_inbound",
    "map_outbound",
]

Fn = Callable[[Any], Any]
PREVIEW_CHARS = 120


class TransformError(ValueError):
    """A transform cannot convert a value; the message says why."""


class MappingConfigError(ValueError):
    """A mapping or transform is misconfigured (bad args, clashing targets, a value map
    that cannot be reversed)."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field of one record that could not be mapped. ``field`` is the source path
    (external path inbound, castiel path outbound); ``value`` a truncated repr."""

    field: str
    value: str
    reason: str
    transform: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class MappingOutcome:
    data: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class Transform:
    """A compiled transform. ``reversible``: ``reverse(forward(x)) == x`` for every ``x``
    in canonical form (false for trim, lower, upper, default)."""

    name: str
    forward: Fn
    reverse: Fn
    reversible: bool
    fills_empty: bool = False  # sees absent and None values (only ``default``)


def _identity(value: Any) -> Any:
    return value


def preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _kind(value: Any) -> str:
    return type(value).__name__


# --- args ------------------------------------------------------------------------------


def _check_args(
    spec: TransformSpec, allowed: set[str], required: frozenset[str] = frozenset()
) -> None:
    unknown = set(spec.args) - allowed
    if unknown:
        raise MappingConfigError(
            f"{spec.name}: unknown args {sorted(unknown)} (allowed: {sorted(allowed) or 'none'})"
        )
    absent = required - set(spec.args)
    if absent:
        raise MappingConfigError(f"{spec.name}: missing args {sorted(absent)}")


def _text_arg(spec: TransformSpec, key: str, default: str | None) -> str | None:
    value = spec.args.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise MappingConfigError(f"{spec.name}: {key} must be non-empty text")
    return value


# --- text ------------------------------------------------------------------------------


def _text_op(name: str, op: Callable[[str], str]) -> Fn:
    def run(value: Any) -> Any:
        if isinstance(value, str):
            return op(value)
        raise TransformError(f"{name} needs text, got {_kind(value)}")

    return run


def _build_text(op: Callable[[str], str]) -> Callable[[TransformSpec, bool], Transform]:
    def build(spec: TransformSpec, need_reverse: bool) -> Transform:
        _check_args(spec, set())
        return Transform(spec.name, _text_op(spec.name, op), _identity, reversible=False)

    return build


# --- numbers ---------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT64 = 2**63
_SAFE = 2**53


def _from_float(value: float) -> int | float:
    if not math.isfinite(value):
        raise TransformError(f"{value!r} is not a finite number")
    if value.is_integer() and abs(value) < _SAFE:
        return int(value)
    return value


def _from_decimal(value: Decimal) -> int | float:
    if not value.is_finite():
        raise TransformError(f"{value} is not a finite number")
    if value and not -324 <= value.adjusted() <= 308:
        raise TransformError("out of the range of a JSON number")
    if value.adjusted() < 19 and value == value.to_integral_value():
        integral = int(value)
        if abs(integral) < _INT64:
            return integral
    as_float = float(value)
    if not math.isfinite(as_float) or Decimal(repr(as_float)) != value:
        raise TransformError("more digits than a JSON number keeps exactly; refusing to round")
    return as_float


def _build_number(whole: bool) -> Callable[[TransformSpec, bool], Transform]:
    def build(spec: TransformSpec, need_reverse: bool) -> Transform:
        _check_args(spec, {"thousandsSeparator", "decimalSeparator"})
        thousands = _text_arg(spec, "thousandsSeparator", None)
        decimal = _text_arg(spec, "decimalSeparator", ".")
        if thousands == decimal:
            raise MappingConfigError(f"{spec.name}: the two separators must differ")

        def parse(value: Any) -> Any:
            if isinstance(value, bool):
                raise TransformError("a boolean is not a number")
            if isinstance(value, int):
                if abs(value) >= _INT64:
                    raise TransformError("too large for a 64-bit integer")
                result: int | float = int(value)
            elif isinstance(value, float):
                result = _from_float(value)
            elif isinstance(value, Decimal):
                result = _from_decimal(value)
            elif isinstance(value, str):
                text = value.strip()
                if not text:
                    return None
                if thousands is not None:
                    text = text.replace(thousands, "")
                if decimal != ".":
                    if "." in text:
                        raise TransformError("unexpected '.' (decimalSeparator is set)")
                    text = text.replace(decimal, ".")  # type: ignore[arg-type]
                if not _NUMBER.fullmatch(text):
                    hint = " (set thousandsSeparator to accept grouping)" if "," in text else ""
                    raise TransformError(f"not a number{hint}")
                try:
                    result = _from_decimal(Decimal(text))
                except InvalidOperation as exc:  # pragma: no cover - the regex rules it out
                    raise TransformError("not a number") from exc
            else:
                raise TransformError(f"not a number: {_kind(value)}")
            if whole and not isinstance(result, int):
                raise TransformError("not a whole number")
            return result

        return Transform(spec.name, parse, _identity, reversible=True)

    return build


# --- boolean ---------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def _build_boolean(spec: TransformSpec, need_reverse: bool) -> Transform:
    _check_args(spec, {"true", "false"})
    if ("true" in spec.args) != ("false" in spec.args):
        raise MappingConfigError("boolean: give both 'true' and 'false', or neither")
    yes, no = spec.args.get("true"), spec.args.get("false")
    for arg in (yes, no):
        if isinstance(arg, bool) or (arg is not None and not isinstance(arg, str | int)):
            raise MappingConfigError("boolean: 'true'/'false' must be text or integers")
    if yes is not None and yes == no:
        raise MappingConfigError("boolean: 'true' and 'false' must differ")
    truthy = set(_TRUE) | ({str(yes).lower()} if yes is not None else set())
    falsy = set(_FALSE) | ({str(no).lower()} if no is not None else set())
    if truthy & falsy:
        raise MappingConfigError("boolean: 'true'/'false' clash with the standard spellings")

    def forward(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | str):
            text = str(value).strip().lower()
            if not text:
                return None
            if text in truthy:
                return True
            if text in falsy:
                return False
            raise TransformError("not a boolean")
        raise TransformError(f"not a boolean: {_kind(value)}")

    def reverse(value: Any) -> Any:
        if not isinstance(value, bool):
            raise TransformError(f"not a boolean: {_kind(value)}")
        return yes if value else no

    return Transform(spec.name, forward, reverse if yes is not None else _identity, True)


# --- dates and times -------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAMED_FORMATS = {"iso", "salesforce", "epoch_ms", "epoch_s"}


def _format_arg(spec: TransformSpec, allowed: set[str]) -> str:
    fmt = spec.args.get("format", "iso")
    if not isinstance(fmt, str) or (fmt not in allowed and "%" not in fmt):
        raise MappingConfigError(
            f"{spec.name}: format must be one of {sorted(allowed)} or a strftime pattern"
        )
    return fmt


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _from_epoch(value: Any, fmt: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TransformError(f"not an epoch number: {_kind(value)}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else repr(value))
        micros = number * (1000 if fmt == "epoch_ms" else 1_000_000)
        if not micros.is_finite():
            raise TransformError("not a finite epoch number")
        return _EPOCH + timedelta(microseconds=int(micros.to_integral_value()))
    except (InvalidOperation, OverflowError, ValueError) as exc:
        raise TransformError("not an epoch number") from exc


def _parse_moment(value: Any, fmt: str) -> datetime | None:
    """Any accepted input as an aware UTC datetime (None for blank text)."""
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if fmt.startswith("epoch") and not isinstance(value, str | datetime | date):
        return _from_epoch(value, fmt)
    if not isinstance(value, str):
        raise TransformError(f"not a date or time: {_kind(value)}")
    text = value.strip()
    if not text:
        return None
    if "%" in fmt:
        try:
            return _aware(datetime.strptime(text, fmt))  # a naive result is UTC
        except ValueError:
            pass
    if fmt.startswith("epoch") and _NUMBER.fullmatch(text):
        return _from_epoch(text, fmt)
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError as exc:
        raise TransformError("not an ISO 8601 date or time") from exc


def _render_datetime(moment: datetime, fmt: str) -> Any:
    if fmt == "iso":
        return canonical_datetime(moment)
    if fmt == "salesforce":
        return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "+0000"
    if fmt.startswith("epoch"):
        delta = moment - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if fmt == "epoch_ms":
            return micros // 1000 if micros % 1000 == 0 else micros / 1000
        return micros // 1_000_000 if micros % 1_000_000 == 0 else micros / 1_000_000
    return moment.strftime(fmt)


def _build_datetime(spec: TransformSpec, need_reverse: bool) -> Transform:
    _check_args(spec, {"format"})
    fmt = _format_arg(spec, _NAMED_FORMATS)

    def forward(value: Any) -> Any:
        moment = _parse_moment(value, fmt)
        return None if moment is None else canonical_datetime(moment)

    def reverse(value: Any) -> Any:
        moment = _parse_moment(value, "iso")
        return None if moment is None else _render_datetime(moment, fmt)

    return Transform(spec.name, forward, reverse, reversible=True)


def _build_date(spec: TransformSpec, need_reverse: bool) -> Transform:
    _check_args(spec, {"format"})
    fmt = _format_arg(spec, {"iso", "epoch_ms", "epoch_s"})

    def forward(value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, str) and "%" not in fmt:
            text = value.strip()
            if not text:
                return None
            try:
                return date.fromisoformat(text).isoformat()
            except ValueError:
                pass
        moment = _parse_moment(value, fmt)
        if moment is None:
            return None
        if moment.time() != time(0):
            raise TransformError("a date and time, not a date (only midnight UTC converts)")
        return moment.date().isoformat()

    def reverse(value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            day = value
        elif isinstance(value, str):
            try:
                day = date.fromisoformat(value.strip())
            except ValueError as exc:
                raise TransformError("not an ISO 8601 date") from exc
        else:
            raise TransformError(f"not a date: {_kind(value)}")
        if fmt == "iso":
            return day.isoformat()
        return _render_datetime(datetime(day.year, day.month, day.day, tzinfo=UTC), fmt)

    return Transform(spec.name, forward, reverse, reversible=True)


# --- value_map -------------------------------------------------------------------------


def _hkey(value: Any) -> tuple[bool, Any]:
    return (isinstance(value, bool), value)


def _map_key(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return None


def _build_value_map(spec: TransformSpec, need_reverse: bool) -> Transform:
    _check_args(spec, {"map", "keepUnknown"}, frozenset({"map"}))
    table = spec.args["map"]
    keep = spec.args.get("keepUnknown", False)
    if not isinstance(keep, bool):
        raise MappingConfigError("value_map: keepUnknown must be true or false")
    if not isinstance(table, dict) or not table:
        raise MappingConfigError("value_map: map must be a non-empty object")
    for target in table.values():
        if target is not None and not isinstance(target, str | int | float | bool):
            raise MappingConfigError("value_map: map values must be text, numbers or booleans")
    inverse: dict[tuple[bool, Any], str] = {}
    clashes: list[str] = []
    for source, target in table.items():
        if _hkey(target) in inverse:
            clashes.append(f"{inverse[_hkey(target)]!r} and {source!r} -> {target!r}")
        inverse.setdefault(_hkey(target), source)
    if clashes and need_reverse:
        raise MappingConfigError(
            "value_map cannot be reversed for outbound use: "
            + "; ".join(clashes)
            + " (make it one-to-one, or set the mapping's direction to inbound)"
        )

    def forward(value: Any) -> Any:
        key = _map_key(value)
        if key is not None and key in table:
            return table[key]
        if keep:
            return value
        raise TransformError("no entry in the value map")

    def reverse(value: Any) -> Any:
        try:
            return inverse[_hkey(value)]
        except (KeyError, TypeError):
            if keep:
                return value
            raise TransformError("no entry in the value map") from None

    return Transform(spec.name, forward, reverse, reversible=not clashes)


# --- join / split ----------------------------------------------------------------------


def _joiner(name: str, sep: str) -> Fn:
    def run(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TransformError(f"{name} needs a list, got {_kind(value)}")
        for position, item in enumerate(value):
            if not isinstance(item, str):
                raise TransformError(f"item {position} is {_kind(item)}, not text")
        return sep.join(value)

    return run


def _splitter(name: str, sep: str) -> Fn:
    def run(value: Any) -> Any:
        if not isinstance(value, str):
            raise TransformError(f"{name} needs text, got {_kind(value)}")
        return value.split(sep) if value else []

    return run


def _build_join(spec: TransformSpec, need_reverse: bool) -> Transform:
    _check_args(spec, {"separator"})
    sep = _text_arg(spec, "separator", ";")
    assert sep is not None
    return Transform(spec.name, _joiner("join", sep), _splitter("join", sep), reversible=True)


def _build_split(spec: TransformSpec, need_reverse: bool) -> Transform:
    _check_args(spec, {"separator"})
    sep = _text_arg(spec, "separator", ";")
    assert sep is not None
    return Transform(spec.name, _splitter("split", sep), _joiner("split", sep), reversible=True)


# --- default ---------------------------------------------------------------------------


def _build_default(spec: TransformSpec, need_reverse: bool) -> Transform:
    _check_args(spec, {"value"}, frozenset({"value"}))
    fallback = spec.args["value"]

    def forward(value: Any) -> Any:
        if value is MISSING or value is None or value == "":
            return fallback
        return value

    return Transform(spec.name, forward, _identity, reversible=False, fills_empty=True)


_BUILDERS: dict[str, Callable[[TransformSpec, bool], Transform]] = {
    "trim": _build_text(str.strip),
    "lower": _build_text(str.lower),
    "upper": _build_text(str.upper),
    "number": _build_number(whole=False),
    "integer": _build_number(whole=True),
    "boolean": _build_boolean,
    "date": _build_date,
    "datetime": _build_datetime,
    "value_map": _build_value_map,
    "join": _build_join,
    "split": _build_split,
    "default": _build_default,
}


def compile_transform(spec: TransformSpec, *, need_reverse: bool = True) -> Transform:
    """Validate ``spec.args`` and build the transform. ``need_reverse``: the mapping is
    used outbound, so the reverse must be exact (a value map must be one-to-one)."""
    return _BUILDERS[spec.name](spec, need_reverse)


# --- plans -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    source: Path
    target: Path
    fns: tuple[tuple[str, Fn, bool], ...]  # (name, fn, sees empty values)
    fills_missing: bool


def _step(source: str, target: str, transforms: list[Transform], forward: bool) -> _Step:
    chain = transforms if forward else list(reversed(transforms))
    fns = tuple((t.name, t.forward if forward else t.reverse, t.fills_empty) for t in chain)
    # Only forward ``default`` fills a missing value; its reverse is the identity.
    fills = forward and any(t.fills_empty for t in chain)
    return _Step(compile_path(source), compile_path(target), fns, fills)


def _check_targets(steps: list[_Step], side: str) -> None:
    seen: dict[tuple[str, ...], str] = {}
    for step in steps:
        parts = step.target.parts
        for other_parts, other in seen.items():
            shorter = min(len(parts), len(other_parts))
            if parts[:shorter] == other_parts[:shorter]:
                raise MappingConfigError(
                    f"two mappings write overlapping {side} paths: {other!r} and "
                    f"{step.target.text!r}"
                )
        seen[parts] = step.target.text


def _run(steps: tuple[_Step, ...], record: dict[str, Any]) -> MappingOutcome:
    out: dict[str, Any] = {}
    errors: list[FieldError] = []
    for step in steps:
        value = step.source.get(record)
        if value is MISSING and not step.fills_missing:
            continue
        name = None
        try:
            for name, fn, sees_empty in step.fns:  # noqa: B007 - the except clause reports it
                if (value is None or value is MISSING) and not sees_empty:
                    continue
                value = fn(value)
            if value is MISSING:
                continue
            name = None
            step.target.set(out, value)
        except (TransformError, PathError, TypeError, ValueError, ArithmeticError) as exc:
            source_value = step.source.get(record)
            errors.append(FieldError(step.source.text, preview(source_value), str(exc), name))
    return MappingOutcome(out, errors)


class MappingPlan:
    """Compiled field mappings of one entity. Build with :func:`compile_mappings`."""

    __slots__ = ("_in", "_out", "castiel_fields", "external_fields", "mappings", "reversible")

    def __init__(self, mappings: Iterable[FieldMapping]) -> None:
        self.mappings: tuple[FieldMapping, ...] = tuple(mappings)
        inbound: list[_Step] = []
        outbound: list[_Step] = []
        reversible = True
        for mapping in self.mappings:
            try:
                transforms = [
                    compile_transform(spec, need_reverse=mapping.direction != "inbound")
                    for spec in mapping.transforms
                ]
                if mapping.direction != "outbound":
                    inbound.append(_step(mapping.external, mapping.castiel, transforms, True))
                if mapping.direction != "inbound":
                    outbound.append(_step(mapping.castiel, mapping.external, transforms, False))
            except PathError as exc:
                raise MappingConfigError(str(exc)) from exc
            if mapping.direction == "both":
                reversible = reversible and all(t.reversible for t in transforms)
        _check_targets(inbound, "castiel")
        _check_targets(outbound, "external")
        self._in = tuple(inbound)
        self._out = tuple(outbound)
        #: castiel paths an inbound mapping writes: the fields merge and hashing look at
        self.castiel_fields: tuple[str, ...] = tuple(s.target.text for s in inbound)
        #: external paths an outbound mapping writes
        self.external_fields: tuple[str, ...] = tuple(s.target.text for s in outbound)
        #: every two-way mapping's transforms are exact inverses on canonical values
        self.reversible = reversible

    def inbound(self, record: dict[str, Any]) -> MappingOutcome:
        """An external record -> structured data for the shard."""
        return _run(self._in, record)

    def outbound(self, data: dict[str, Any]) -> MappingOutcome:
        """A shard's structured data -> the external payload."""
        return _run(self._out, data)


def compile_mappings(mappings: Iterable[FieldMapping]) -> MappingPlan:
    """Validate and compile mappings once; raises :class:`MappingConfigError`."""
    return MappingPlan(mappings)


def map_inbound(record: dict[str, Any], mappings: Iterable[FieldMapping]) -> MappingOutcome:
    """One-off inbound mapping; compile a plan instead when mapping many records."""
    return compile_mappings(mappings).inbound(record)


def map_outbound(structured: dict[str, Any], mappings: Iterable[FieldMapping]) -> MappingOutcome:
    """One-off outbound mapping; compile a plan instead when mapping many records."""
    return compile_mappings(mappings).outbound(structured)
