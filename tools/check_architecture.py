"""Architecture rules that import-linter cannot express, run by `make lint`.

One unit of work: a transaction is begun or committed only in `src/idguard/uow.py` (and in the
Alembic environment, which owns the migrations' transaction). Everything else — routes, the CLI,
background workers, the demo loader, tests — goes through `idguard.uow`. A `.commit()`,
`.begin()` or `.begin_nested()` call anywhere else (but `uow.commit(...)` itself) fails the lint with its file and line.

    python tools/check_architecture.py [PATH ...]    # default: src tests
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

TRANSACTION_CALLS = frozenset({"commit", "begin", "begin_nested"})
ALLOWED = frozenset({Path("src/idguard/uow.py"), Path("src/idguard/db/migrations/env.py")})


def violations(path: Path, source: str) -> Iterator[str]:
    """`path:line: message` for every transaction call in `source`."""
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in TRANSACTION_CALLS
            and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "uow")
        ):
            yield (
                f"{path}:{node.lineno}: .{node.func.attr}() outside idguard/uow.py — "
                "use uow.transaction, uow.connection or UnitOfWork"
            )


def check(roots: list[Path]) -> list[str]:
    found: list[str] = []
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            if path in ALLOWED:
                continue
            found.extend(violations(path, path.read_text()))
    return found


def main(argv: list[str]) -> int:
    found = check([Path(a) for a in argv] or [Path("src"), Path("tests")])
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} transaction call(s) outside the unit of work", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
