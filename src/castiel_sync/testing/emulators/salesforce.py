"""An emulator of the Salesforce REST API, its OAuth server, and its notifications.

Written from Salesforce's documentation, not from the adapter (each fact cites its page,
``developer.salesforce.com/docs/atlas.en-us.<guide>.meta/...``):

- OAuth 2.0 web server flow on ``/services/oauth2/authorize`` and ``/services/oauth2/token``
  (:func:`salesforce_oauth`): token responses carry ``access_token``, ``refresh_token``
  (authorization code grant only), ``instance_url``, ``id``
  (``https://login.salesforce.com/id/<orgId>/<userId>``), ``token_type``, ``issued_at``
  (epoch milliseconds), ``signature`` (Base64 HMAC-SHA256 of ``id + issued_at`` keyed by
  the client secret) and no ``expires_in``. A refresh returns no new refresh token unless
  the connected app rotates them. A dead refresh token gets
  ``{"error": "invalid_grant", "error_description": "expired access/refresh token"}``.
- ``GET /services/data/vXX.X/query/?q=`` and ``queryAll/`` run a real subset of SOQL:
  ``SELECT f, ... FROM Object [WHERE ...] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
  [LIMIT n] [OFFSET n]`` with ``=  !=  <>  <  <=  >  >=  LIKE  IN  NOT IN``, ``AND``/``OR``
  (parentheses required when mixed: soql_sosl sforce_api_calls_soql_select_logicaloperators),
  ``NOT``, string literals with the documented escapes (quotedstringescapes), unquoted
  dateTime/date literals (dateformats), numbers, ``TRUE``/``FALSE``/``NULL``. A malformed
  query is 400 ``MALFORMED_QUERY``; an unknown field ``INVALID_FIELD``; an unknown object
  ``INVALID_TYPE``; a literal of the wrong type ``INVALID_FIELD``.
- Results: ``totalSize``, ``done``, ``records`` (``attributes {type, url}``), and while
  not done ``nextRecordsUrl`` ``/services/data/vXX.X/query/<locator>-<offset>`` (also for
  queryAll: dome_queryall). ``Sforce-Query-Options: batchSize=`` is honoured within
  200..2000, default 2000 (headers_queryoptions); ``max_batch_size`` makes batches smaller
  still, which the docs allow.
- ``sobjects/{type}/`` POST -> 201 ``{"id", "errors": [], "success": true}``;
  ``sobjects/{type}/{id}`` GET (``?fields=``), PATCH -> 204, DELETE -> 204;
  ``sobjects/{type}/deleted/?start=&end=`` -> ``deletedRecords``, ``earliestDateAvailable``,
  ``latestDateCovered`` (resources_getdeleted); ``limits/``.
- Ids are 15-character case-sensitive ids with the key prefix of the object (001 Account,
  003 Contact, 006 Opportunity, 00T Task, 00U Event) plus the 3-character checksum suffix;
  either form is accepted in URLs and SOQL.
- ``SystemModstamp``, ``LastModifiedDate``, ``CreatedDate`` are maintained on every write
  (whole seconds, rendered ``2013-05-20T20:49:32.000+0000``); deletes go to the recycle
  bin (``IsDeleted``), visible to ``queryAll`` and getDeleted, 404 ``ENTITY_IS_DELETED`` to
  sObject rows.
- Errors are ``[{"message", "errorCode", "fields"?}]``; every API response has
  ``Sforce-Limit-Info: api-usage=N/M`` and past the limit requests get 403
  ``REQUEST_LIMIT_EXCEEDED`` (errorcodes, headers_api_usage).
- Notifications: :meth:`SalesforceEmulator.outbound_message` builds the SOAP
  ``notifications`` envelope of the outbound messaging WSDL and
  :meth:`SalesforceEmulator.send_outbound_message` delivers it and checks for the
  ``notificationsResponse``/``Ack``; :meth:`SalesforceEmulator.change_event` builds a Change
  Data Capture event (``ChangeEventHeader``) that :meth:`send_change_event` relays signed
  with Standard Webhooks, as a Pub/Sub relay would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Literal
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import httpx
import orjson
from defusedxml import ElementTree as SafeET
from standardwebhooks.webhooks import Webhook
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from castiel_sync.sdk import WebhookRequest
from castiel_sync.testing._kit import (
    FakeClock,
    ProviderEmulator,
    RecordStore,
    StoredRecord,
    send_webhook,
)
from castiel_sync.testing.oauth import OAuthClient, OAuthEmulator

DEFAULT_VERSION = "v62.0"
DEFAULT_BATCH = 2000
MIN_BATCH = 200
MAX_BATCH = 2000

# -- schema ------------------------------------------------------------------------------

FieldType = Literal[
    "id", "reference", "string", "textarea", "picklist", "email", "phone", "url",
    "int", "double", "currency", "percent", "boolean", "date", "datetime",
]  # fmt: skip
TEXT_TYPES = frozenset(
    {"id", "reference", "string", "textarea", "picklist", "email", "phone", "url"}
)
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})


@dataclass(frozen=True)
class SField:
    type: FieldType
    createable: bool = True
    updateable: bool = True


@dataclass(frozen=True)
class SObjectType:
    name: str
    key_prefix: str
    fields: dict[str, SField]
    required: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    def canonical(self, name: str) -> str | None:
        lowered = name.lower()
        for candidate in self.fields:
            if candidate.lower() == lowered:
                return candidate
        return None


_RO = SField("datetime", createable=False, updateable=False)
_SYSTEM: dict[str, SField] = {
    "Id": SField("id", createable=False, updateable=False),
    "IsDeleted": SField("boolean", createable=False, updateable=False),
    "CreatedDate": _RO,
    "CreatedById": SField("reference", createable=False, updateable=False),
    "LastModifiedDate": _RO,
    "LastModifiedById": SField("reference", createable=False, updateable=False),
    "SystemModstamp": _RO,
    "OwnerId": SField("reference"),
}


def _s(**types: str) -> dict[str, SField]:
    return {name: SField(kind) for name, kind in types.items()}  # type: ignore[arg-type]


SCHEMA: dict[str, SObjectType] = {
    t.name: t
    for t in (
        SObjectType(
            "Account",
            "001",
            {
                **_SYSTEM,
                **_s(
                    Name="string",
                    Type="picklist",
                    Industry="picklist",
                    Website="url",
                    Phone="phone",
                    Fax="phone",
                    Description="textarea",
                    NumberOfEmployees="int",
                    AnnualRevenue="currency",
                    BillingStreet="textarea",
                    BillingCity="string",
                    BillingState="string",
                    BillingPostalCode="string",
                    BillingCountry="string",
                    ShippingCity="string",
                    ParentId="reference",
                    AccountNumber="string",
                    Rating="picklist",
                ),
            },
            required=("Name",),
        ),
        SObjectType(
            "Contact",
            "003",
            {
                **_SYSTEM,
                **_s(
                    AccountId="reference",
                    FirstName="string",
                    LastName="string",
                    Email="email",
                    Phone="phone",
                    MobilePhone="phone",
                    Title="string",
                    Department="string",
                    Description="textarea",
                    MailingStreet="textarea",
                    MailingCity="string",
                    MailingState="string",
                    MailingPostalCode="string",
                    MailingCountry="string",
                    LeadSource="picklist",
                    Birthdate="date",
                ),
                "Name": SField("string", createable=False, updateable=False),
            },
            required=("LastName",),
        ),
        SObjectType(
            "Opportunity",
            "006",
            {
                **_SYSTEM,
                **_s(
                    AccountId="reference",
                    Name="string",
                    StageName="picklist",
                    Amount="currency",
                    CloseDate="date",
                    Probability="percent",
                    Type="picklist",
                    LeadSource="picklist",
                    NextStep="string",
                    Description="textarea",
                    ForecastCategoryName="picklist",
                ),
                "IsClosed": SField("boolean", createable=False, updateable=False),
                "IsWon": SField("boolean", createable=False, updateable=False),
            },
            required=("Name", "StageName", "CloseDate"),
        ),
        SObjectType(
            "Task",
            "00T",
            {
                **_SYSTEM,
                **_s(
                    Subject="string",
                    Status="picklist",
                    Priority="picklist",
                    ActivityDate="date",
                    Description="textarea",
                    WhoId="reference",
                    WhatId="reference",
                    TaskSubtype="picklist",
                ),
                "IsClosed": SField("boolean", createable=False, updateable=False),
                "IsArchived": SField("boolean", createable=False, updateable=False),
            },
            defaults={"Status": "Not Started", "Priority": "Normal"},
        ),
        SObjectType(
            "Event",
            "00U",
            {
                **_SYSTEM,
                **_s(
                    Subject="string",
                    StartDateTime="datetime",
                    EndDateTime="datetime",
                    ActivityDateTime="datetime",
                    DurationInMinutes="int",
                    IsAllDayEvent="boolean",
                    Location="string",
                    Description="textarea",
                    WhoId="reference",
                    WhatId="reference",
                ),
                "IsArchived": SField("boolean", createable=False, updateable=False),
            },
        ),
    )
}

# -- ids -----------------------------------------------------------------------------------

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"[A-Za-z0-9]{15}")
_ID18 = re.compile(r"[A-Za-z0-9]{18}")


def id18(id15: str) -> str:
    """The 18-character form: for each 5-character chunk, a bit per uppercase letter,
    mapped onto ``A-Z0-5`` (a case-insensitive checksum of the case-sensitive id)."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix += _SUFFIX[bits]
    return id15 + suffix


def normalize_id(value: str) -> str | None:
    """The 18-character id for a 15- or 18-character one; None when neither."""
    if _ID18.fullmatch(value):
        return id18(value[:15]) if id18(value[:15]).lower() == value.lower() else None
    if _ID15.fullmatch(value):
        return id18(value)
    return None


def _base62(number: int, width: int) -> str:
    out = ""
    for _ in range(width):
        number, digit = divmod(number, 62)
        out = _BASE62[digit] + out
    return out


# -- formatting ----------------------------------------------------------------------------


def stamp(value: datetime) -> datetime:
    """Salesforce keeps whole seconds (REST renders ``.000``)."""
    return value.astimezone(UTC).replace(microsecond=0)


def sf_datetime(value: datetime) -> str:
    return stamp(value).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def parse_param_datetime(value: str) -> datetime | None:
    text = value.strip().replace(" ", "+").replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


# -- SOQL ------------------------------------------------------------------------------


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<string>')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><>|!=|<=|>=|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
_STRING_ESCAPES = {
    "n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t",
    "b": "\b", "B": "\b", "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\",
}  # fmt: skip
_KEYWORDS = frozenset(
    "SELECT FROM WHERE AND OR NOT LIKE IN ORDER BY ASC DESC NULLS FIRST LAST LIMIT OFFSET "
    "TRUE FALSE NULL".split()
)


@dataclass(frozen=True)
class Tok:
    kind: str
    value: Any
    pos: int
    # For strings: the raw text between the quotes (LIKE keeps \% and \_ as escapes).
    raw: str = ""


def tokenize(text: str) -> list[Tok]:
    tokens: list[Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        if kind == "ws":
            pos = m.end()
            continue
        if kind == "string":
            value, raw, pos = _read_string(text, m.end())
            tokens.append(Tok("string", value, m.start(), raw))
            continue
        word = m.group()
        if kind == "ident" and word.upper() in _KEYWORDS:
            tokens.append(Tok("kw", word.upper(), m.start()))
        else:
            tokens.append(Tok(kind, word, m.start()))
        pos = m.end()
    tokens.append(Tok("eof", None, len(text)))
    return tokens


def _read_string(text: str, pos: int) -> tuple[str, str, int]:
    out: list[str] = []
    start = pos
    while pos < len(text):
        ch = text[pos]
        if ch == "'":
            return "".join(out), text[start:pos], pos + 1
        if ch == "\\":
            nxt = text[pos + 1 : pos + 2]
            if nxt in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[nxt])
                pos += 2
            elif nxt in ("%", "_"):
                out.append("\\" + nxt)  # only meaningful in LIKE; checked there
                pos += 2
            elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[pos + 2 : pos + 6]):
                out.append(chr(int(text[pos + 2 : pos + 6], 16)))
                pos += 6
            else:
                raise SoqlError(
                    "MALFORMED_QUERY", "Invalid string literal: backslash used in other context"
                )
            continue
        out.append(ch)
        pos += 1
    raise SoqlError("MALFORMED_QUERY", "unterminated string literal")


@dataclass
class Cmp:
    field: str
    op: str
    value: Any  # a python value, a list (IN), or a LIKE regex


@dataclass
class Logic:
    op: str  # AND | OR | NOT
    parts: list[Any]


@dataclass
class Query:
    sobject: SObjectType
    fields: list[str]
    where: Any | None
    order: list[tuple[str, bool, bool]]  # field, descending, nulls_last
    limit: int | None
    offset: int


class _Parser:
    def __init__(self, text: str, schema: Mapping[str, SObjectType]) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.schema = schema
        self.sobject: SObjectType | None = None

    def peek(self) -> Tok:
        return self.tokens[self.i]

    def take(self) -> Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect_kw(self, word: str) -> None:
        tok = self.take()
        if tok.kind != "kw" or tok.value != word:
            self.unexpected(tok)

    def unexpected(self, tok: Tok) -> None:
        shown = tok.raw if tok.kind == "string" else tok.value
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: {shown if shown else 'EOF'}")

    def is_kw(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "kw" and tok.value in words

    def parse(self) -> Query:
        self.expect_kw("SELECT")
        names: list[tuple[str, Tok]] = []
        while True:
            tok = self.take()
            if tok.kind != "ident":
                self.unexpected(tok)
            names.append((tok.value, tok))
            if self.peek().kind == "punct" and self.peek().value == ",":
                self.take()
                continue
            break
        self.expect_kw("FROM")
        obj = self.take()
        if obj.kind != "ident":
            self.unexpected(obj)
        sobject = next((t for n, t in self.schema.items() if n.lower() == obj.value.lower()), None)
        if sobject is None:
            raise SoqlError(
                "INVALID_TYPE",
                f"sObject type '{obj.value}' is not supported. If you are attempting to use a "
                "custom object, be sure to append the '__c' after the entity name.",
            )
        self.sobject = sobject
        fields = [self.field(name) for name, _ in names]
        where = None
        if self.is_kw("WHERE"):
            self.take()
            where = self.condition()
        order: list[tuple[str, bool, bool]] = []
        if self.is_kw("ORDER"):
            self.take()
            self.expect_kw("BY")
            while True:
                tok = self.take()
                if tok.kind != "ident":
                    self.unexpected(tok)
                name = self.field(tok.value)
                desc = False
                if self.is_kw("ASC", "DESC"):
                    desc = self.take().value == "DESC"
                nulls_last = desc  # default: NULLS FIRST ascending, NULLS LAST descending
                if self.is_kw("NULLS"):
                    self.take()
                    if not self.is_kw("FIRST", "LAST"):
                        self.unexpected(self.peek())
                    nulls_last = self.take().value == "LAST"
                order.append((name, desc, nulls_last))
                if self.peek().kind == "punct" and self.peek().value == ",":
                    self.take()
                    continue
                break
        limit = offset = None
        if self.is_kw("LIMIT"):
            self.take()
            limit = self.integer()
        if self.is_kw("OFFSET"):
            self.take()
            offset = self.integer()
        if self.peek().kind != "eof":
            self.unexpected(self.peek())
        return Query(sobject, fields, where, order, limit, offset or 0)

    def integer(self) -> int:
        tok = self.take()
        if tok.kind != "number" or not str(tok.value).isdigit():
            self.unexpected(tok)
        return int(tok.value)

    def field(self, name: str) -> str:
        assert self.sobject is not None
        if "." in name:
            raise SoqlError(
                "INVALID_FIELD",
                f"Didn't understand relationship '{name.split('.')[0]}' in field path.",
            )
        canonical = self.sobject.canonical(name)
        if canonical is None:
            raise SoqlError(
                "INVALID_FIELD",
                f"No such column '{name}' on entity '{self.sobject.name}'. If you are attempting "
                "to use a custom field, be sure to append the '__c' after the custom field name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
            )
        return canonical

    def condition(self) -> Any:
        parts = [self.term()]
        joiner: str | None = None
        while self.is_kw("AND", "OR"):
            word = self.take().value
            if joiner is not None and word != joiner:
                # "Parentheses are required whenever you mix the operators."
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: {word}")
            joiner = word
            parts.append(self.term())
        return parts[0] if joiner is None else Logic(joiner, parts)

    def term(self) -> Any:
        tok = self.peek()
        if tok.kind == "kw" and tok.value == "NOT":
            self.take()
            return Logic("NOT", [self.term()])
        if tok.kind == "punct" and tok.value == "(":
            self.take()
            inner = self.condition()
            close = self.take()
            if close.kind != "punct" or close.value != ")":
                self.unexpected(close)
            return inner
        return self.comparison()

    def comparison(self) -> Cmp:
        assert self.sobject is not None
        tok = self.take()
        if tok.kind != "ident":
            self.unexpected(tok)
        name = self.field(tok.value)
        kind = self.sobject.fields[name].type
        nxt = self.take()
        if nxt.kind == "op":
            op = "!=" if nxt.value == "<>" else nxt.value
            value = self.value(name, kind)
            if value is None and op not in ("=", "!="):
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: null after {op}")
            return Cmp(name, op, value)
        if nxt.kind == "kw" and nxt.value == "LIKE":
            lit = self.take()
            if lit.kind != "string":
                self.unexpected(lit)
            if kind not in TEXT_TYPES:
                raise SoqlError(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    f"invalid operator on {kind} field: LIKE",
                )
            return Cmp(name, "LIKE", _like_regex(lit.raw))
        negate = False
        if nxt.kind == "kw" and nxt.value == "NOT":
            negate = True
            nxt = self.take()
        if nxt.kind == "kw" and nxt.value == "IN":
            opening = self.take()
            if opening.kind != "punct" or opening.value != "(":
                self.unexpected(opening)
            values = [self.value(name, kind)]
            while self.peek().kind == "punct" and self.peek().value == ",":
                self.take()
                values.append(self.value(name, kind))
            close = self.take()
            if close.kind != "punct" or close.value != ")":
                self.unexpected(close)
            return Cmp(name, "NOT IN" if negate else "IN", values)
        self.unexpected(nxt)
        raise AssertionError  # pragma: no cover

    def value(self, name: str, kind: str) -> Any:
        tok = self.take()
        if tok.kind == "kw" and tok.value == "NULL":
            return None
        if kind in TEXT_TYPES:
            if tok.kind != "string":
                self.type_error(name, "string", quoted=True, tok=tok)
            return tok.value
        if kind in NUMBER_TYPES:
            if tok.kind != "number":
                self.type_error(name, "double" if kind != "int" else "int", quoted=False, tok=tok)
            return float(tok.value)
        if kind == "boolean":
            if tok.kind != "kw" or tok.value not in ("TRUE", "FALSE"):
                self.type_error(name, "boolean", quoted=False, tok=tok)
            return tok.value == "TRUE"
        if kind == "datetime":
            if tok.kind != "datetime":
                self.type_error(name, "dateTime", quoted=False, tok=tok)
            return stamp(datetime.fromisoformat(tok.value.replace("Z", "+00:00")))
        if kind == "date":
            if tok.kind != "date":
                self.type_error(name, "date", quoted=False, tok=tok)
            return date.fromisoformat(tok.value)
        self.unexpected(tok)  # pragma: no cover
        return None

    def type_error(self, name: str, kind: str, *, quoted: bool, tok: Tok) -> None:
        if tok.kind in ("eof", "punct", "op"):
            self.unexpected(tok)
        how = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
        raise SoqlError(
            "INVALID_FIELD",
            f"value of filter criterion for field '{name}' must be of type {kind} and {how}",
        )


def _like_regex(raw: str) -> re.Pattern[str]:
    """A LIKE pattern: ``%`` any run, ``_`` one character, ``\\%``/``\\_`` themselves;
    matched case-insensitively like the rest of SOQL text comparison."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            nxt = raw[i + 1 : i + 2]
            if nxt in ("%", "_"):
                out.append(re.escape(nxt))
            elif nxt in _STRING_ESCAPES:
                out.append(re.escape(_STRING_ESCAPES[nxt]))
            elif nxt == "u":
                out.append(re.escape(chr(int(raw[i + 2 : i + 6], 16))))
                i += 4
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def parse_soql(text: str, schema: Mapping[str, SObjectType] = SCHEMA) -> Query:
    return _Parser(text, schema).parse()


def _compare_key(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind in TEXT_TYPES and kind not in ("id", "reference"):
        return str(value).lower()
    if kind in ("id", "reference"):
        return normalize_id(str(value)) or str(value)
    if kind == "datetime":
        return stamp(value) if isinstance(value, datetime) else value
    if kind == "date" and isinstance(value, str):
        return date.fromisoformat(value)
    if kind in NUMBER_TYPES:
        return float(value)
    return value


def evaluate(node: Any, row: Mapping[str, Any], sobject: SObjectType) -> bool:
    if isinstance(node, Logic):
        if node.op == "NOT":
            return not evaluate(node.parts[0], row, sobject)
        results = (evaluate(p, row, sobject) for p in node.parts)
        return all(results) if node.op == "AND" else any(results)
    kind = sobject.fields[node.field].type
    actual = _compare_key(row.get(node.field), kind)
    if node.op == "LIKE":
        return actual is not None and node.value.fullmatch(str(row.get(node.field))) is not None
    if node.op in ("IN", "NOT IN"):
        wanted = {_compare_key(v, kind) for v in node.value}
        inside = actual in wanted
        return inside if node.op == "IN" else (actual is not None and not inside)
    expected = _compare_key(node.value, kind)
    if node.op == "=":
        return actual == expected
    if node.op == "!=":
        return actual != expected
    if actual is None or expected is None:
        return False
    return {
        "<": actual < expected,
        "<=": actual <= expected,
        ">": actual > expected,
        ">=": actual >= expected,
    }[node.op]


def order_rows(rows: list[dict[str, Any]], query: Query) -> list[dict[str, Any]]:
    ordered = list(rows)
    for name, desc, nulls_last in reversed(query.order):
        kind = query.sobject.fields[name].type
        present = [r for r in ordered if r.get(name) is not None]
        missing = [r for r in ordered if r.get(name) is None]

        def key(row: dict[str, Any], n: str = name, k: str = kind) -> Any:
            return _compare_key(row.get(n), k)

        present.sort(key=key, reverse=desc)
        ordered = present + missing if nulls_last else missing + present
    return ordered


# -- the emulator ------------------------------------------------------------------------


def salesforce_oauth(
    *,
    clock: FakeClock | None = None,
    instance_url: str = "https://acme.my.salesforce.emulator.test",
    org_id: str = "00D5e000000KQ2eEAG",
    user_id: str = "0055e000003ABCdAAO",
    login_url: str = "https://login.salesforce.emulator.test",
    rotate_refresh_tokens: bool = False,
) -> OAuthEmulator:
    """The kit's OAuth server shaped like Salesforce's (see the module docstring)."""

    server: OAuthEmulator | None = None

    def fields(grant_type: str, client: OAuthClient) -> dict[str, Any]:
        assert server is not None
        identity = f"{login_url}/id/{org_id}/{user_id}"
        issued_at = str(int(server.clock.now().timestamp() * 1000))
        digest = hmac.new(
            client.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
        ).digest()
        return {
            "instance_url": instance_url,
            "id": identity,
            "issued_at": issued_at,
            "signature": base64.b64encode(digest).decode(),
        }

    server = OAuthEmulator(
        clock=clock,
        base_url=login_url,
        authorize_path="/services/oauth2/authorize",
        token_path="/services/oauth2/token",  # noqa: S106 - a URL path
        rotate_refresh_tokens=rotate_refresh_tokens,
        reissue_refresh_token=False,
        require_pkce=False,
        extra_token_fields=fields,
        expires_in_field=False,
        invalid_refresh_description="expired access/refresh token",
    )
    return server


class _SObjectStore(RecordStore):
    """Records keyed by object name, with ids carrying the object's key prefix."""

    def __init__(self, emulator: SalesforceEmulator) -> None:
        super().__init__(emulator.clock)
        self.emulator = emulator

    def id_factory_for(self, entity: str) -> Callable[[], str]:
        return lambda: self.emulator.new_record_id(entity)


@dataclass
class _Locator:
    rows: list[dict[str, Any]]
    batch: int


@dataclass
class DeliveredMessage:
    """One outbound message delivery and whether the listener acknowledged it."""

    body: bytes
    status: int | None
    acknowledged: bool


class SalesforceEmulator(ProviderEmulator):
    """See the module docstring. ``SalesforceEmulator(oauth=salesforce_oauth(...))``."""

    name: ClassVar[str] = "salesforce"

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        oauth: OAuthEmulator | None = None,
        base_url: str = "https://acme.my.salesforce.emulator.test",
        org_id: str = "00D5e000000KQ2eEAG",
        api_limit: int = 100_000,
        max_batch_size: int | None = None,
        relay_secret: str | None = None,
        versions: Iterable[str] = ("v58.0", "v59.0", "v60.0", "v61.0", "v62.0", "v63.0"),
    ) -> None:
        self.org_id = org_id
        self.api_limit = api_limit
        self.api_usage = 0
        self.max_batch_size = max_batch_size
        self.versions = tuple(versions)
        self.schema = SCHEMA
        self._counters: dict[str, itertools.count[int]] = {}
        self._locators: dict[str, _Locator] = {}
        self.outbound_deliveries: list[DeliveredMessage] = []
        relay = relay_secret or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        super().__init__(clock=clock, oauth=oauth, base_url=base_url, webhook_secret=relay)
        self.store = _SObjectStore(self)
        # Deleted records older than this are purged from the delete log (getDeleted).
        self.earliest_date_available = stamp(self.clock.now())

    # -- kit hooks -------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        v = "/services/data/{version}"
        return [
            Route("/services/data/", self._versions, methods=["GET"]),
            Route(v + "/", self._api(self._resources), methods=["GET"]),
            Route(v + "/limits/", self._api(self._limits), methods=["GET"]),
            Route(v + "/limits", self._api(self._limits), methods=["GET"]),
            Route(v + "/query/", self._api(self._query), methods=["GET"]),
            Route(v + "/query", self._api(self._query), methods=["GET"]),
            Route(v + "/queryAll/", self._api(self._query_all), methods=["GET"]),
            Route(v + "/queryAll", self._api(self._query_all), methods=["GET"]),
            Route(v + "/query/{locator}", self._api(self._query_more), methods=["GET"]),
            Route(v + "/sobjects/{sobject}/deleted/", self._api(self._deleted), methods=["GET"]),
            Route(v + "/sobjects/{sobject}/deleted", self._api(self._deleted), methods=["GET"]),
            Route(v + "/sobjects/{sobject}/", self._api(self._create), methods=["POST"]),
            Route(v + "/sobjects/{sobject}", self._api(self._create), methods=["POST"]),
            Route(
                v + "/sobjects/{sobject}/{record_id}",
                self._api(self._row),
                methods=["GET", "PATCH", "DELETE"],
            ),
        ]

    def requires_auth(self, request: Request) -> bool:
        # Every REST resource needs a session except the version list.
        return request.url.path.rstrip("/") != "/services/data"

    def error_response(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> Response:
        error: dict[str, Any] = {"message": message, "errorCode": code}
        if fields is not None:
            error["fields"] = fields
        return JSONResponse([error], status_code=status)

    def expired_token_response(self) -> Response:
        # The documented body of an expired or invalid session (errorcodes.htm, 401).
        return self.error_response(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def rate_limited_response(self, retry_after: str | None, status: int) -> Response:
        response = self.error_response(
            status, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."
        )
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    def server_error_response(self, status: int) -> Response:
        if status == 503:
            return self.error_response(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable")
        return self.error_response(status, "UNKNOWN_EXCEPTION", "An unexpected error occurred.")

    def webhook_payload(self, entity: str, record: StoredRecord, action: str) -> Any | None:
        """A relayed Change Data Capture event for ``record`` (see :meth:`change_event`)."""
        change = {"created": "CREATE", "deleted": "DELETE"}.get(action, "UPDATE")
        fields = {} if change == "DELETE" else dict(record.data)
        return self.change_event(entity, [record.id], change, changed_fields=fields)

    def sign_webhook(self, body: bytes, secret: str, url: str) -> dict[str, str]:
        """Standard Webhooks headers, as the CDC relay signs each event it forwards."""
        msg_id = "msg_" + secrets.token_hex(12)
        when = self.clock.now()
        signature = Webhook(secret).sign(msg_id, when, body.decode())
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature,
        }

    # -- seeding and inspection -----------------------------------------------------------

    def new_record_id(self, sobject: str) -> str:
        kind = self._type(sobject)
        counter = self._counters.setdefault(kind.name, itertools.count(1))
        # 3 key prefix + 2 pod + 1 reserved + 9 sequence (base 62), then the checksum.
        return id18(f"{kind.key_prefix}5e0{_base62(next(counter) + 1000003, 9)}")

    def seed(self, sobject: str, data: Mapping[str, Any]) -> str:
        """Add a record as if a user had created it (no API call counted)."""
        kind = self._type(sobject)
        record_id = self.new_record_id(kind.name)
        values = {**kind.defaults}
        for name, value in data.items():
            canonical = kind.canonical(name)
            if canonical is None:
                raise KeyError(f"{kind.name} has no field {name}")
            values[canonical] = value
        self.store[kind.name].create(values, id=record_id)
        return record_id

    def touch(self, sobject: str, record_id: str, changes: Mapping[str, Any]) -> None:
        """Change a record as a user in Salesforce would (SystemModstamp moves)."""
        kind = self._type(sobject)
        self.store[kind.name].update(normalize_id(record_id) or record_id, dict(changes))

    def remove(self, sobject: str, record_id: str) -> None:
        kind = self._type(sobject)
        self.store[kind.name].delete(normalize_id(record_id) or record_id)

    def row(self, sobject: str, record_id: str, *, include_deleted: bool = True) -> dict[str, Any]:
        kind = self._type(sobject)
        stored = self.store[kind.name].get(
            normalize_id(record_id) or record_id, include_deleted=include_deleted
        )
        if stored is None:
            raise KeyError(record_id)
        return self._full_row(kind, stored)

    # -- notifications ------------------------------------------------------------------

    def outbound_message(
        self,
        sobject: str,
        record_ids: list[str],
        *,
        fields: list[str] | None = None,
        org_id: str | None = None,
        action_id: str = "04k5e000000CaRkAAK",
        session_id: str | None = None,
    ) -> bytes:
        """The SOAP envelope Salesforce POSTs for an outbound message (outbound messaging
        WSDL: notifications with OrganizationId, ActionId, SessionId, EnterpriseUrl,
        PartnerUrl and up to 100 Notification elements)."""
        kind = self._type(sobject)
        if not 1 <= len(record_ids) <= 100:
            raise ValueError("an outbound message carries 1 to 100 notifications")
        chosen = fields or ["Id", "Name", "SystemModstamp"]
        org = org_id or self.org_id
        base = f"{self.base_url}/services/Soap"
        session = (
            '<SessionId xsi:nil="true"/>'
            if session_id is None
            else f"<SessionId>{xml_escape(session_id)}</SessionId>"
        )
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">',
            "<soapenv:Body>",
            '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">',
            f"<OrganizationId>{org}</OrganizationId>",
            f"<ActionId>{action_id}</ActionId>",
            session,
            f"<EnterpriseUrl>{base}/c/62.0/{org[:15]}</EnterpriseUrl>",
            f"<PartnerUrl>{base}/u/62.0/{org[:15]}</PartnerUrl>",
        ]
        for index, record_id in enumerate(record_ids):
            row = self.row(kind.name, record_id)
            note_id = id18(f"04l5e0{_base62(index + 7000001, 9)}")
            parts.append(f"<Notification><Id>{note_id}</Id>")
            parts.append(
                f"<sObject xsi:type={quoteattr('sf:' + kind.name)} "
                'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
            )
            for name in chosen:
                canonical = kind.canonical(name) or name
                value = row.get(canonical)
                if value is None:
                    parts.append(f'<sf:{canonical} xsi:nil="true"/>')
                else:
                    text = _soap_value(value, kind.fields[canonical].type)
                    parts.append(f"<sf:{canonical}>{xml_escape(text)}</sf:{canonical}>")
            parts.append("</sObject></Notification>")
        parts.append("</notifications></soapenv:Body></soapenv:Envelope>")
        return "".join(parts).encode()

    async def send_outbound_message(
        self,
        target: str | Any,
        sobject: str,
        record_ids: list[str],
        *,
        url: str = "https://castiel.example/webhooks/salesforce",
        **kwargs: Any,
    ) -> DeliveredMessage:
        """POST an outbound message; acknowledged only by the WSDL's ``Ack`` true."""
        body = self.outbound_message(sobject, record_ids, **kwargs)
        delivery = WebhookRequest(
            method="POST",
            url=url,
            headers={"content-type": "text/xml; charset=utf-8", "soapaction": '""'},
            body=body,
        )
        try:
            response = await send_webhook(target, delivery)
        except httpx.HTTPError:
            result = DeliveredMessage(body, None, False)
        else:
            result = DeliveredMessage(body, response.status_code, _is_ack(response))
        self.outbound_deliveries.append(result)
        return result

    def change_event(
        self,
        sobject: str,
        record_ids: list[str],
        change_type: str = "UPDATE",
        *,
        changed_fields: Mapping[str, Any] | None = None,
        replay_id: int | None = None,
    ) -> dict[str, Any]:
        """A Change Data Capture event message (cdc_message_structure): ``data.payload``
        with ``ChangeEventHeader`` and the changed fields, ``data.event.replayId``,
        ``channel`` ``/data/<Object>ChangeEvent``."""
        kind = self._type(sobject)
        now = self.clock.now()
        header = {
            "entityName": kind.name,
            "recordIds": list(record_ids),
            "changeType": change_type,
            "changeOrigin": "com/salesforce/api/rest/62.0",
            "transactionKey": secrets.token_hex(4) + "-" + secrets.token_hex(2) + "-0000",
            "sequenceNumber": 1,
            "commitTimestamp": int(now.timestamp() * 1000),
            "commitNumber": next(self._counters.setdefault("__commit", itertools.count(1))),
            "commitUser": "0055e000003ABCdAAO",
            "changedFields": list(changed_fields or {}),
            "diffFields": [],
            "nulledFields": [k for k, v in (changed_fields or {}).items() if v is None],
        }
        payload: dict[str, Any] = {"ChangeEventHeader": header, **(changed_fields or {})}
        return {
            "data": {
                "schema": "8c2QCtWYc7XW4bFoA6-4vA",
                "payload": payload,
                "event": {"replayId": replay_id or header["commitNumber"]},
            },
            "channel": f"/data/{kind.name}ChangeEvent",
        }

    async def send_change_event(
        self, target: str | Any, event: Mapping[str, Any], **kwargs: Any
    ) -> httpx.Response:
        """Relay a change event to ``target`` signed with Standard Webhooks."""
        return await self.send_webhook(target, dict(event), **kwargs)

    # -- request plumbing ----------------------------------------------------------------

    def _type(self, sobject: str) -> SObjectType:
        for name, kind in self.schema.items():
            if name.lower() == sobject.lower():
                return kind
        raise KeyError(sobject)

    def _api(self, handler: Callable[[Request, str], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            version = request.path_params.get("version", "")
            if version not in self.versions:
                response = self.error_response(
                    404, "NOT_FOUND", "The requested resource does not exist"
                )
            else:
                self.api_usage += 1
                if self.api_usage > self.api_limit:
                    response = self.error_response(
                        403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."
                    )
                else:
                    try:
                        response = await handler(request, version)
                    except SoqlError as err:
                        response = self.error_response(400, err.code, err.message)
            response.headers["Sforce-Limit-Info"] = (
                f"api-usage={min(self.api_usage, self.api_limit + 1)}/{self.api_limit}"
            )
            return response

        return endpoint

    async def _versions(self, request: Request) -> Response:
        return JSONResponse(
            [{"label": "", "url": f"/services/data/{v}", "version": v[1:]} for v in self.versions]
        )

    async def _resources(self, request: Request, version: str) -> Response:
        root = f"/services/data/{version}"
        return JSONResponse(
            {name: f"{root}/{name}" for name in ("limits", "query", "queryAll", "sobjects")}
        )

    async def _limits(self, request: Request, version: str) -> Response:
        return JSONResponse(
            {
                "DailyApiRequests": {
                    "Max": self.api_limit,
                    "Remaining": max(0, self.api_limit - self.api_usage),
                }
            }
        )

    async def _query(self, request: Request, version: str) -> Response:
        return self._run(request, version, include_deleted=False)

    async def _query_all(self, request: Request, version: str) -> Response:
        return self._run(request, version, include_deleted=True)

    def _batch_size(self, request: Request, default: int = DEFAULT_BATCH) -> int:
        size = default
        options = request.headers.get("sforce-query-options", "")
        m = re.search(r"batchSize\s*=\s*(\d+)", options)
        if m:
            size = min(MAX_BATCH, max(MIN_BATCH, int(m.group(1))))
        if self.max_batch_size is not None:
            size = min(size, self.max_batch_size)
        return size

    def _run(self, request: Request, version: str, *, include_deleted: bool) -> Response:
        text = request.query_params.get("q")
        if not text:
            return self.error_response(400, "MALFORMED_QUERY", "A query string has to be specified")
        query = parse_soql(text, self.schema)
        kind = query.sobject
        rows = [
            self._full_row(kind, r)
            for r in self.store[kind.name].all(include_deleted=include_deleted)
        ]
        matched = [r for r in rows if query.where is None or evaluate(query.where, r, kind)]
        if query.order:
            matched = order_rows(matched, query)
        matched = matched[query.offset :]
        if query.limit is not None:
            matched = matched[: query.limit]
        projected = [self._project(kind, r, query.fields, version) for r in matched]
        return self._page(version, projected, 0, self._batch_size(request))

    def _page(self, version: str, rows: list[dict[str, Any]], offset: int, batch: int) -> Response:
        chunk = rows[offset : offset + batch]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + batch >= len(rows)}
        if not body["done"]:
            locator = next((k for k, v in self._locators.items() if v.rows is rows), None) or id18(
                f"01g5e0{_base62(len(self._locators) + 3000001, 9)}"
            )
            self._locators[locator] = _Locator(rows, batch)
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{offset + batch}"
        body["records"] = chunk
        return JSONResponse(body)

    async def _query_more(self, request: Request, version: str) -> Response:
        locator, _, position = request.path_params["locator"].partition("-")
        cursor = self._locators.get(locator)
        if cursor is None or not position.isdigit():
            return self.error_response(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(
            version, cursor.rows, int(position), self._batch_size(request, cursor.batch)
        )

    async def _deleted(self, request: Request, version: str) -> Response:
        kind = self._lookup(request.path_params["sobject"])
        if kind is None:
            return self._no_type(request.path_params["sobject"])
        start_raw, end_raw = request.query_params.get("start"), request.query_params.get("end")
        start = parse_param_datetime(start_raw) if start_raw else None
        end = parse_param_datetime(end_raw) if end_raw else None
        if start is None or end is None:
            return self.error_response(
                400, "MALFORMED_QUERY", "start and end must be valid dateTime values"
            )
        now = self.clock.now()
        # The seconds of start and end are ignored; results go back at most 15 days.
        start, end = start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
        if end < start or start < now - timedelta(days=15):
            return self.error_response(
                400,
                "INVALID_REPLICATION_DATE",
                "startDate must chronologically precede endDate"
                if end < start
                else "startDate cannot be more than 15 days ago",
            )
        covered = min(end, stamp(now).replace(second=0))
        deleted = [
            {"id": r.id, "deletedDate": sf_datetime(r.modified_at)}
            for r in self.store[kind.name].all(include_deleted=True)
            if r.deleted
            and start <= stamp(r.modified_at) < covered + timedelta(minutes=1)
            and stamp(r.modified_at) >= self.earliest_date_available
        ]
        return JSONResponse(
            {
                "deletedRecords": deleted,
                "earliestDateAvailable": sf_datetime(self.earliest_date_available),
                "latestDateCovered": sf_datetime(covered),
            }
        )

    async def _create(self, request: Request, version: str) -> Response:
        kind = self._lookup(request.path_params["sobject"])
        if kind is None:
            return self._no_type(request.path_params["sobject"])
        data = await self._json_body(request)
        if isinstance(data, Response):
            return data
        if any(k.lower() == "id" for k in data):
            # The documented error of dome_sobject_create.htm.
            return self.error_response(
                400, "INVALID_FIELD", "The Id field should not be specified in the sobject data."
            )
        checked = self._check_fields(kind, data, creating=True)
        if isinstance(checked, Response):
            return checked
        values = {**kind.defaults, **checked}
        missing = [f for f in kind.required if values.get(f) in (None, "")]
        if missing:
            return self.error_response(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                fields=missing,
            )
        record_id = self.new_record_id(kind.name)
        self.store[kind.name].create(values, id=record_id)
        return JSONResponse({"id": record_id, "success": True, "errors": []}, status_code=201)

    async def _row(self, request: Request, version: str) -> Response:
        kind = self._lookup(request.path_params["sobject"])
        if kind is None:
            return self._no_type(request.path_params["sobject"])
        record_id = normalize_id(request.path_params["record_id"])
        store = self.store[kind.name]
        stored = store.get(record_id, include_deleted=True) if record_id else None
        if stored is None or not record_id or not record_id.startswith(kind.key_prefix):
            return self.error_response(404, "NOT_FOUND", "The requested resource does not exist")
        if stored.deleted:
            return self.error_response(404, "ENTITY_IS_DELETED", "entity is deleted")
        if request.method == "GET":
            wanted = request.query_params.get("fields")
            names = list(kind.fields)
            if wanted:
                names = []
                for raw in wanted.split(","):
                    canonical = kind.canonical(raw.strip())
                    if canonical is None:
                        return self.error_response(
                            400,
                            "INVALID_FIELD",
                            f"No such column '{raw.strip()}' on sobject of type {kind.name}",
                        )
                    names.append(canonical)
            return JSONResponse(self._project(kind, self._full_row(kind, stored), names, version))
        if request.method == "DELETE":
            store.delete(record_id)
            return Response(status_code=204)
        data = await self._json_body(request)
        if isinstance(data, Response):
            return data
        checked = self._check_fields(kind, data, creating=False)
        if isinstance(checked, Response):
            return checked
        store.update(record_id, checked)
        return Response(status_code=204)

    # -- helpers ---------------------------------------------------------------------------

    def _lookup(self, sobject: str) -> SObjectType | None:
        try:
            return self._type(sobject)
        except KeyError:
            return None

    def _no_type(self, sobject: str) -> Response:
        return self.error_response(
            404, "NOT_FOUND", f"The requested resource does not exist: {sobject}"
        )

    async def _json_body(self, request: Request) -> dict[str, Any] | Response:
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return self.error_response(400, "JSON_PARSER_ERROR", "The request body is not JSON")
        if not isinstance(data, dict):
            return self.error_response(
                400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from the body"
            )
        return data

    def _check_fields(
        self, kind: SObjectType, data: Mapping[str, Any], *, creating: bool
    ) -> dict[str, Any] | Response:
        out: dict[str, Any] = {}
        locked: list[str] = []
        for name, value in data.items():
            canonical = kind.canonical(name)
            if canonical is None:
                return self.error_response(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {kind.name}",
                )
            spec = kind.fields[canonical]
            if not (spec.createable if creating else spec.updateable):
                locked.append(canonical)
                continue
            coerced = _coerce(value, spec.type)
            if coerced is _BAD:
                return self.error_response(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {spec.type} from value {value!r}",
                )
            out[canonical] = coerced
        if locked:
            verb = "create" if creating else "update"
            return self.error_response(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to {verb} fields: {', '.join(locked)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or "
                "permission set.",
                fields=locked,
            )
        return out

    def _full_row(self, kind: SObjectType, stored: StoredRecord) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(kind.fields)
        row.update(stored.data)
        row.update(
            {
                "Id": stored.id,
                "IsDeleted": stored.deleted,
                "CreatedDate": stamp(stored.created_at),
                "LastModifiedDate": stamp(stored.modified_at),
                "SystemModstamp": stamp(stored.modified_at),
                "CreatedById": "0055e000003ABCdAAO",
                "LastModifiedById": "0055e000003ABCdAAO",
                "OwnerId": stored.data.get("OwnerId") or "0055e000003ABCdAAO",
            }
        )
        if kind.name == "Contact":
            row["Name"] = " ".join(p for p in (row.get("FirstName"), row.get("LastName")) if p)
        if kind.name == "Opportunity":
            stage = str(row.get("StageName") or "")
            row["IsClosed"] = stage.startswith("Closed")
            row["IsWon"] = stage == "Closed Won"
        if kind.name == "Task":
            row["IsClosed"] = row.get("Status") == "Completed"
        if "IsArchived" in kind.fields:
            row["IsArchived"] = False
        return row

    def _project(
        self, kind: SObjectType, row: Mapping[str, Any], names: list[str], version: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {
                "type": kind.name,
                "url": f"/services/data/{version}/sobjects/{kind.name}/{row['Id']}",
            }
        }
        for name in names:
            out[name] = _json_value(row.get(name), kind.fields[name].type)
        return out


_BAD = object()


def _coerce(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind in TEXT_TYPES:
        return value if isinstance(value, str) else _BAD
    if kind in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _BAD
        return value if math.isfinite(value) else _BAD
    if kind == "boolean":
        return value if isinstance(value, bool) else _BAD
    if kind == "date":
        try:
            return date.fromisoformat(value) if isinstance(value, str) else _BAD
        except ValueError:
            return _BAD
    if kind == "datetime":
        parsed = parse_param_datetime(value) if isinstance(value, str) else None
        return stamp(parsed) if parsed else _BAD
    return value


def _json_value(value: Any, kind: str) -> Any:
    if isinstance(value, datetime):
        return sf_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if kind in NUMBER_TYPES and value is not None:
        return int(value) if kind == "int" else float(value)
    return value


def _soap_value(value: Any, kind: str) -> str:
    if isinstance(value, datetime):
        return stamp(value).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_ack(response: httpx.Response) -> bool:
    """True when the body is the WSDL's notificationsResponse with Ack true."""
    if response.status_code != 200:
        return False
    try:
        root = SafeET.fromstring(response.content)
    except Exception:
        return False
    ack = root.find(
        "{http://schemas.xmlsoap.org/soap/envelope/}Body/"
        "{http://soap.sforce.com/2005/09/outbound}notificationsResponse/"
        "{http://soap.sforce.com/2005/09/outbound}Ack"
    )
    return ack is not None and (ack.text or "").strip() == "true"
