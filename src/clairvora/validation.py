"""Declarative input shapes: parse JSON bodies and query strings into plain
values, or raise a 400 problem naming the field. The same shapes give the
OpenAPI document its schemas, so the contract and the checks cannot drift.

This is also the one place that refuses what cannot be stored or encoded:
- text with a lone UTF-16 surrogate (`"\\ud800"` in the JSON text: Python's
  json reads it, but it has no UTF-8 form, so D1 would store mangled bytes,
  AES-GCM could not seal it and a reply echoing it would not be UTF-8; I-JSON,
  RFC 7493, forbids it too), NUL and the other control characters;
- numbers that are not exact integers D1 can bind: floats (1e999 is read as
  float('inf'), NaN/Infinity are refused by the JSON reader) and integers
  beyond +-(2**53 - 2) (Pyodide hands larger ones to D1 as BigInt, refused).
Every Str/Int checks this whatever its own bounds, and auth.py uses
`exact_integer` for the token's time claims."""

import re
from collections.abc import Mapping
from typing import Any

from .errors import bad_request

MAX_SAFE_INTEGER = 2**53 - 1
# The largest magnitude D1 binds exactly (db.check_param: |x| < 2**53 - 1).
MAX_BINDABLE_INTEGER = MAX_SAFE_INTEGER - 1
MAX_JSON_DEPTH = 8
MAX_ECHOED_NAME_CHARS = 64
# What Str.parse refuses, said in the OpenAPI document too (tab and newline are allowed).
NO_CONTROL_CHARS_PATTERN = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f]*$"


def exact_integer(value: Any) -> bool:
    """A JSON integer D1 can bind: an int (not a bool, not a float such as 1e999 or 1.0)
    within +-MAX_BINDABLE_INTEGER."""
    return type(value) is int and -MAX_BINDABLE_INTEGER <= value <= MAX_BINDABLE_INTEGER


def encodable(text: str) -> bool:
    """Whether `text` has a UTF-8 form (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def echo_name(name: str) -> str:
    """A client-chosen name (an unknown field) made safe to echo in a problem:
    lone surrogates as \\uXXXX text, and at most MAX_ECHOED_NAME_CHARS characters."""
    safe = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= MAX_ECHOED_NAME_CHARS else safe[:MAX_ECHOED_NAME_CHARS] + "..."


class Field:
    nullable: bool = False
    description: str = ""

    def parse(self, value: Any, name: str) -> Any:
        raise NotImplementedError

    def parse_query(self, raw: str, name: str) -> Any:
        return self.parse(raw, name)

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def _schema(self, base: dict[str, Any]) -> dict[str, Any]:
        if self.nullable:
            base = {**base, "type": [base["type"], "null"]} if "type" in base else {"anyOf": [base, {"type": "null"}]}
        if self.description:
            base["description"] = self.description
        return base


class Str(Field):
    def __init__(
        self,
        *,
        min_len: int = 0,
        max_len: int,
        choices: tuple[str, ...] | None = None,
        pattern: str | None = None,
        nullable: bool = False,
        description: str = "",
    ) -> None:
        assert 0 <= min_len <= max_len <= 100_000
        self.min_len, self.max_len, self.choices = min_len, max_len, choices
        # A pattern is checked here AND published in the document, so the contract says it.
        # Anchored and matched whole (Python's `$` would also match before a final newline).
        assert pattern is None or (pattern.startswith("^") and pattern.endswith("$")), pattern
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.nullable, self.description = nullable, description

    def parse(self, value: Any, name: str) -> Any:
        if value is None and self.nullable:
            return None
        if not isinstance(value, str):
            raise bad_request(f"'{name}' must be a string.", name)
        if not encodable(value):
            raise bad_request(f"'{name}' is not valid Unicode text (a lone UTF-16 surrogate).", name)
        if any(ord(c) < 32 and c not in "\n\t" for c in value) or "\x7f" in value:
            raise bad_request(f"'{name}' contains control characters.", name)
        if not self.min_len <= len(value) <= self.max_len:
            raise bad_request(f"'{name}' must be {self.min_len} to {self.max_len} characters.", name)
        if self.choices is not None and value not in self.choices:
            raise bad_request(f"'{name}' must be one of: {', '.join(self.choices)}.", name)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise bad_request(f"'{name}' does not have the expected form.", name)
        return value

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "string", "minLength": self.min_len, "maxLength": self.max_len}
        if self.choices is not None:
            s["enum"] = list(self.choices)
        elif self.pattern is not None:
            s["pattern"] = self.pattern.pattern
        else:
            s["pattern"] = NO_CONTROL_CHARS_PATTERN
        return self._schema(s)


class Int(Field):
    def __init__(self, *, low: int, high: int, nullable: bool = False, description: str = "") -> None:
        assert -MAX_BINDABLE_INTEGER <= low <= high <= MAX_BINDABLE_INTEGER
        self.low, self.high, self.nullable, self.description = low, high, nullable, description

    def parse(self, value: Any, name: str) -> Any:
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"'{name}' must be an integer.", name)
        if not exact_integer(value):  # whatever the shape's own bounds say
            raise bad_request(f"'{name}' is beyond the integers this API stores.", name)
        if not self.low <= value <= self.high:
            raise bad_request(f"'{name}' must be between {self.low} and {self.high}.", name)
        return value

    def parse_query(self, raw: str, name: str) -> Any:
        text = raw.strip()
        if not text or len(text) > 16 or not (text.isdigit() or (text[0] == "-" and text[1:].isdigit())):
            raise bad_request(f"'{name}' must be an integer.", name)
        return self.parse(int(text), name)

    def schema(self) -> dict[str, Any]:
        return self._schema({"type": "integer", "minimum": self.low, "maximum": self.high})


class ListOf(Field):
    def __init__(
        self, item: Field, *, min_items: int = 0, max_items: int, unique: bool = True, description: str = ""
    ) -> None:
        assert 0 <= min_items <= max_items <= 100
        self.item, self.min_items, self.max_items, self.unique = item, min_items, max_items, unique
        self.description = description

    def parse(self, value: Any, name: str) -> Any:
        if not isinstance(value, list):
            raise bad_request(f"'{name}' must be a list.", name)
        if not self.min_items <= len(value) <= self.max_items:
            raise bad_request(f"'{name}' must hold {self.min_items} to {self.max_items} items.", name)
        items = [self.item.parse(v, f"{name}[{i}]") for i, v in enumerate(value)]
        if self.unique and len(set(map(repr, items))) != len(items):
            raise bad_request(f"'{name}' must not repeat items.", name)
        return items

    def parse_query(self, raw: str, name: str) -> Any:
        return self.parse([p for p in raw.split(",") if p != ""], name)

    def schema(self) -> dict[str, Any]:
        return self._schema(
            {
                "type": "array",
                "items": self.item.schema(),
                "minItems": self.min_items,
                "maxItems": self.max_items,
                "uniqueItems": self.unique,
            }
        )


class Obj(Field):
    def __init__(
        self,
        fields: Mapping[str, Field],
        *,
        required: tuple[str, ...] = (),
        min_fields: int = 0,
        nullable: bool = False,
        description: str = "",
    ) -> None:
        assert set(required) <= set(fields)
        self.fields, self.required, self.min_fields = dict(fields), required, min_fields
        self.nullable, self.description = nullable, description

    def parse(self, value: Any, name: str = "body") -> Any:
        if value is None and self.nullable:
            return None
        if not isinstance(value, dict):
            raise bad_request(f"'{name}' must be a JSON object.", name)
        prefix = "" if name == "body" else f"{name}."
        for key in value:
            if key not in self.fields:
                unknown = f"{prefix}{echo_name(key)}"
                raise bad_request(f"Unknown field '{unknown}'.", unknown)
        for key in self.required:
            if key not in value:
                raise bad_request(f"'{prefix}{key}' is required.", f"{prefix}{key}")
        if len(value) < self.min_fields:
            raise bad_request(f"Send at least {self.min_fields} field(s).", name)
        return {key: self.fields[key].parse(v, f"{prefix}{key}") for key, v in value.items()}

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "type": "object",
            "properties": {k: f.schema() for k, f in self.fields.items()},
            "additionalProperties": False,
        }
        if self.required:
            s["required"] = list(self.required)
        if self.min_fields:
            s["minProperties"] = self.min_fields
        return self._schema(s)


_JSON_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET_RE = re.compile(r"[\[\]{}]")


def page_query(*, cursor_max_chars: int, max_page: int, default_page: int, cursor_min_chars: int = 1) -> Obj:
    """The query of a keyset-paged list: `cursor` (an earlier reply's next_cursor) and `limit`."""
    assert 1 <= default_page <= max_page <= 100
    return Obj(
        {
            "cursor": Str(
                min_len=cursor_min_chars, max_len=cursor_max_chars, description="next_cursor from the previous page"
            ),
            "limit": Int(low=1, high=max_page, description=f"page size, default {default_page}"),
        }
    )


def text_nesting_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text opens more than `limit` nested arrays/objects, checked
    on the text BEFORE parsing: json.loads recurses in C, and a few thousand
    levels overflow Pyodide's WebAssembly stack, a fatal error for the isolate."""
    depth = 0
    for bracket in _JSON_BRACKET_RE.findall(_JSON_STRING_RE.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a decoded JSON value, stopping once past `limit`."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def parse_query(query: Mapping[str, list[str]], shape: Obj) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in query.items():
        if key not in shape.fields:
            raise bad_request(f"Unknown query parameter '{echo_name(key)}'.", echo_name(key))
        if len(values) != 1:
            raise bad_request(f"Query parameter '{key}' given more than once.", key)
        out[key] = shape.fields[key].parse_query(values[0], key)
    for key in shape.required:
        if key not in out:
            raise bad_request(f"Query parameter '{key}' is required.", key)
    return out


class RawBody:
    """A request body that is not JSON (an image upload): the media types it
    may carry (for the OpenAPI document; the handler checks the bytes) and its
    own size limit, which replaces the app-wide MAX_BODY_BYTES for that route."""

    def __init__(self, *, media_types: tuple[str, ...], max_bytes: int, description: str = "") -> None:
        assert media_types and 1 <= max_bytes <= 16 * 1024 * 1024
        self.media_types, self.max_bytes, self.description = media_types, max_bytes, description

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "binary", "minLength": 1, "maxLength": self.max_bytes}
