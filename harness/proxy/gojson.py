"""Go's encoding/json, as far as the Toxiproxy API needs it, so that our answers and our
complaints read like the real server's.

Decoding follows ``json.Decoder.Decode`` into a Go struct: the first JSON value of the body
counts (trailing bytes are ignored), an empty body is ``EOF``, unknown fields are ignored,
``null`` leaves a field at its default, field names match case-insensitively, and a value of
the wrong kind is ``json: cannot unmarshal <kind> into Go struct field <Struct>.<field> of
type <type>``. Encoding is compact, keeps non-ASCII text as UTF-8 and escapes ``<``, ``>``
and ``&`` as Go does.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

from harness.proxy.errors import BAD_REQUEST_BODY, ApiError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38
_DECODER = json.JSONDecoder(parse_constant=lambda name: _reject_constant(name))


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _ConstantError(name)


class TooLarge(Exception):
    """``decode(..., complete=False)``: the prefix read ends inside the first JSON value, so
    what Go would make of the body depends on bytes beyond the API's limit."""


def decode(body: bytes, complete: bool = True) -> object:
    """The first JSON value in ``body``; BAD_REQUEST_BODY with Go's reason when there is none.

    ``complete=False``: ``body`` is only the first bytes of a longer body. Go's decoder reads
    no further than the end of the first value (or the first syntax error), so when either
    lies inside ``body`` the answer is the one the whole body would get; otherwise TooLarge.
    """
    text = body.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    try:
        if start == len(text):
            raise BAD_REQUEST_BODY.joined("EOF")
        try:
            value, end = _DECODER.raw_decode(text, start)
        except _ConstantError as exc:
            raise BAD_REQUEST_BODY.joined(
                f"invalid character '{str(exc)[:1]}' looking for beginning of value") from None
        except json.JSONDecodeError as exc:
            raise BAD_REQUEST_BODY.joined(_reason(text, exc)) from None
        except RecursionError:
            raise BAD_REQUEST_BODY.joined("exceeded max depth") from None
    except ApiError as exc:
        if not complete and exc.message.endswith(("EOF", "exceeded max depth")):
            raise TooLarge() from None
        raise
    if not complete and end >= len(text):   # a number or literal may go on past the cut
        raise TooLarge()
    return value


def _reason(text: str, exc: json.JSONDecodeError) -> str:
    """Go's words (encoding/json scanner.go) for what Python's decoder found at ``exc.pos``."""
    pos, msg = exc.pos, exc.msg
    if pos >= len(text) or msg.startswith("Unterminated string"):
        return "unexpected EOF"   # Python reports an open string where it starts
    char = text[pos]
    if msg.startswith("Invalid control character"):
        return f"invalid character {_quote_char(char)} in string literal"
    if msg.startswith("Invalid \\escape"):
        if pos + 1 >= len(text):
            return "unexpected EOF"
        return f"invalid character {_quote_char(text[pos + 1])} in string escape code"
    if msg.startswith("Invalid \\uXXXX escape"):
        for digit in text[pos + 1:pos + 5]:
            if digit not in "0123456789abcdefABCDEF":
                return f"invalid character {_quote_char(digit)} in \\u hexadecimal character escape"
        return "unexpected EOF"
    if msg.startswith("Expecting value"):
        for word in ("true", "false", "null"):
            if char == word[0]:
                for index, want in enumerate(word[1:], start=pos + 1):
                    if index >= len(text):
                        return "unexpected EOF"
                    if text[index] != want:
                        return (f"invalid character {_quote_char(text[index])} in literal "
                                f"{word} (expecting '{want}')")
        if char == "-":
            if pos + 1 >= len(text):
                return "unexpected EOF"
            return f"invalid character {_quote_char(text[pos + 1])} in numeric literal"
    if msg.startswith("Expecting ',' delimiter") and _innermost(text, pos) == "{":
        return f"invalid character {_quote_char(char)} after object key:value pair"
    return f"invalid character {_quote_char(char)} {_context(msg)}"


def _innermost(text: str, pos: int) -> str:
    """The bracket (``{`` or ``[``) open at ``pos``, or "" at the top level."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _quote_char(char: str) -> str:
    return "'\\''" if char == "'" else f"'{char}'" if char.isprintable() else repr(char)


def _context(msg: str) -> str:
    if msg.startswith("Expecting property name"):
        return "looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return "after object key"
    if msg.startswith("Expecting ',' delimiter"):
        return "after array element"
    return "looking for beginning of value"


def kind(value: object) -> str:
    """The JSON kind of a decoded value, in Go's words."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def mismatch(value: object, where: str, go_type: str) -> ApiError:
    """BAD_REQUEST_BODY for a value of the wrong kind at ``where`` (``Struct.field``)."""
    what = kind(value)
    if what == "number":
        what = f"number {value}"
    into = f"Go struct field {where}" if where else "Go value"
    return BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {what} into {into} of type {go_type}")


def lookup(obj: Mapping[str, object], key: str) -> object:
    """The value of field ``key`` in ``obj``; None when absent or null.

    Go (encoding/json decode.go, ``decodeState.object``) matches each key of the object to a
    field exactly or case-insensitively and decodes the values in order, so the last
    matching key wins, except that ``null`` leaves the field as it was."""
    folded = key.casefold()
    found: object = None
    for name, value in obj.items():
        if value is not None and (name == key or name.casefold() == folded):
            found = value
    return found


def object_of(value: object, go_type: str) -> dict[str, object]:
    """``value`` as a JSON object, or Go's complaint about decoding it into ``go_type``."""
    if not isinstance(value, dict):
        raise mismatch(value, "", go_type)
    return value


def string(obj: Mapping[str, object], key: str, where: str, default: str = "") -> str:
    """A string field; ``default`` when absent or null."""
    value = lookup(obj, key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise mismatch(value, f"{where}.{key}", "string")
    return value


def boolean(obj: Mapping[str, object], key: str, where: str, default: bool) -> bool:
    """A bool field; ``default`` when absent or null."""
    value = lookup(obj, key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise mismatch(value, f"{where}.{key}", "bool")
    return value


def int64(value: object, where: str, go_type: str = "int64") -> int:
    """An integer field's value: a JSON number without fraction that fits in 64 bits."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise mismatch(value, where, go_type)
    if not INT64_MIN <= value <= INT64_MAX:
        raise mismatch(value, where, go_type)
    return value


def float32(value: object, where: str) -> float:
    """A float32 field's value, rounded as Go stores it and kept as the shortest decimal
    that names the same float32 (so it prints as Go prints it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise mismatch(value, where, "float32")
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise mismatch(value, where, "float32")
    try:
        single = struct.unpack("f", struct.pack("f", float(value)))[0]
    except (OverflowError, struct.error):
        raise mismatch(value, where, "float32") from None
    for digits in range(1, 10):
        text = f"{single:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            return float(text)
    return float(single)


def number(value: float) -> float | int:
    """A float as Go prints it: integral values without a fraction (``1``, not ``1.0``)."""
    return int(value) if value.is_integer() else value


def dumps(value: object) -> bytes:
    """Compact JSON, UTF-8, with Go's HTML-safe escapes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text.encode("utf-8")
