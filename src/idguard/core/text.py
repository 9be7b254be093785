"""Text the registry can store: the one rule for every string a request carries.

PostgreSQL text cannot hold NUL (U+0000), and a lone UTF-16 surrogate (U+D800..U+DFFF, which
`json.loads` makes from an escape such as "\\ud800") cannot be encoded as UTF-8 at all: either
reaching the database is a 500. SQLite takes both, so the same request would succeed on one
database and fail on the other. Every string of a request (JSON body, form, query, path,
headers) is therefore held to this rule before routing (api/guard.py), whatever field it is.
"""

from __future__ import annotations

from collections.abc import Iterator

NUL_FAULT = "must not contain the NUL character (U+0000)"
SURROGATE_FAULT = "must not contain an unpaired surrogate (U+D800 to U+DFFF)"
INVALID_UTF8_FAULT = "must be UTF-8 text (percent-encoded bytes that are not UTF-8 were sent)"
KEY_FAULT = "a member name must not contain the NUL character or an unpaired surrogate"
MAX_FAULTS = 50  # a body with more bad strings is named by its first 50

Path = tuple[str | int, ...]


def fault(text: str) -> str | None:
    """Why `text` cannot be stored, or None. ASCII text costs one scan."""
    if "\x00" in text:
        return NUL_FAULT
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_FAULT
    return None


def faults(value: object, *, limit: int = MAX_FAULTS) -> list[tuple[Path, str]]:
    """Every string in a parsed JSON value (member names too) that `fault` refuses, as (path,
    why): the path of a member's value is its names and list positions from the top
    (`("finder", "name")`, `("items", 3, "operator")`); a bad member name is reported at the
    object holding it. At most `limit`, in document order. Iterative: a deeply nested value
    (json.loads accepts up to the recursion limit) is walked without recursion."""
    found: list[tuple[Path, str]] = []
    for path, text, is_key in _strings(value):
        why = fault(text)
        if why is not None:
            found.append((path, KEY_FAULT if is_key else why))
            if len(found) >= limit:
                break
    return found


def _strings(value: object) -> Iterator[tuple[Path, str, bool]]:
    """(path, text, is a member name) for every string, in document order."""
    stack: list[tuple[Path, object, bool]] = [((), value, False)]
    while stack:
        path, node, is_key = stack.pop()
        if isinstance(node, str):
            yield path, node, is_key
        elif isinstance(node, dict):
            children: list[tuple[Path, object, bool]] = []
            for key, child in node.items():
                if isinstance(key, str) and fault(key) is not None:
                    children.append((path, key, True))  # named at the object holding it
                else:
                    children.append(((*path, key), child, False))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend(((*path, i), child, False) for i, child in reversed(list(enumerate(node))))
