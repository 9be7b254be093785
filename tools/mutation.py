"""Mutation testing of the rule and permission modules with cosmic-ray (`make mutation`).

For each module: copy the tree to a temporary directory (cosmic-ray rewrites the file it mutates
in place, so it never touches the checkout), write a cosmic-ray config whose test command runs
that module's fast unit tests against the COPY (its `src` first on PYTHONPATH, ahead of the
editable install; checked before any mutant runs), `cosmic-ray init` + `exec`, and report:
mutants, killed, survived, score, and every survivor as file:line and the mutation.

    .venv/bin/python tools/mutation.py                    # every module, the working tree
    .venv/bin/python tools/mutation.py -m grants -m rules # some modules
    .venv/bin/python tools/mutation.py --rev HEAD         # the committed tree (new test files
                                                          # of the module's list come from the
                                                          # working tree)

cosmic-ray drives each run (its operators, its session, its in-place mutation and timeout); its
test command is a small client of a fork server started per module, which has pytest and
hypothesis imported once and forks a child per mutant that imports idguard (from the copy) and
runs the tests: a fraction of a second per mutant instead of an interpreter start and imports.

Score: killed / (mutants - the ones listed in EQUIVALENT, each with its reason); exit status 1
when a module scores below --min-score (default 90). Not run ("skipped"): mutations inside type
annotations (postponed, never evaluated), the bare `*` of a parameter list (parso reads it as a
multiplication) and, unless --all-operators, binary-operator replacements outside
BINARY_REPLACEMENTS. Minutes per module: not part of CI; see docs/testing.md.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)


@dataclass(frozen=True)
class Module:
    path: str
    tests: tuple[str, ...]


# The rule and permission modules, each with the fast unit tests that cover it (seconds per
# mutant). Slower suites that also reach these modules (the HTTP authorization table, the
# lifecycle state machine, the verification fast-path properties) are left out on purpose.
MODULES: dict[str, Module] = {
    "grants": Module(
        "src/idguard/core/grants.py",
        ("tests/unit/test_mutation_survivors_grants.py",),
    ),
    "rules": Module(
        "src/idguard/verification/rules.py",
        ("tests/unit/test_mutation_survivors_rules.py",),
    ),
    "idnumber": Module(
        "src/idguard/core/idnumber.py",
        ("tests/unit/test_mutation_survivors_idnumber.py", "tests/unit/core/test_idnumber.py"),
    ),
    "index": Module(
        "src/idguard/verification/index.py",
        ("tests/unit/test_mutation_survivors_index.py", "tests/unit/verification/test_index_answers.py"),
    ),
    "lifecycle": Module(
        "src/idguard/registry/lifecycle.py",
        (
            "tests/unit/registry/test_lifecycle_survivors.py",
            "tests/unit/registry/test_transitions.py",
            "tests/unit/registry/test_lifecycle.py",
        ),
    ),
}

# Surviving mutants judged equivalent (no test can tell them from the code, or only outside every
# value the code is given), with the reason: (module, the mutated line, why). Matched on the
# mutated line, so a change to the code brings the mutant back to be judged again. They are not
# counted in the score; docs/testing.md explains them by kind.
_ENUM_IS = "enum members: `is` and `==` (`is not` and `!=`) agree"
_HASH_WIDTH = (
    "a narrower or wider hash field only changes the odds of two names (chips) colliding; hashes are"
    " per-process random, so no test can pick a colliding pair"
)
_DEAD = "_DATES_MASK is never read (dead constant; gone from the working tree's index.py)"
_ONE_CARD = (
    "a number with one card stored as a 1-tuple instead of an int: the several-cards loop answers"
    " as the one-card path (tests/unit/verification/test_fast_paths.py holds them to each other)"
)
_VALID_LAST = (
    "'valid' sorts after every other status value, so only VALID is >= VALID and every other"
    " status is < VALID: the same as `is` / `is not`"
)
EQUIVALENT: tuple[tuple[str, str, str], ...] = (
    (
        "idnumber",
        'end = entry[ 0:].split("]")[0].split("-")[1]',
        "the year after the dash is the same with or without the leading '['",
    ),
    (
        "idnumber",
        'if i != len(text) and text[i] == "%":',
        "_percent_byte is only asked for positions 0..len(text): != len is < len",
    ),
    (
        "idnumber",
        "except stdnum_errorsCosmicRayTestingExceptionValidationError as exc:  # pragma: no cover - other stdnum faults",
        "unreachable: after the length and shape checks stdnum raises only the two faults caught above",
    ),
    (
        "idnumber",
        "break",
        "_region_in_use_since: the only empty entry is the one an empty county list gives, alone: break is continue",
    ),
    ("idnumber", "@dataclass(frozen=True, slots=False)", "slots change the memory layout only"),
    (
        "idnumber",
        "while i != n:",
        "i moves by 1, or by 3 over a whole %XX inside the text, so it reaches n exactly: != n is < n",
    ),
    (
        "idnumber",
        "@dataclass(frozen=False, slots=True)",
        "an IdNumber is returned by parse and only read: never assigned, never hashed",
    ),
    (
        "idnumber",
        "if not _region_in_use_since(raw[: 7], born.year):",
        "numdb finds a region by prefix: a 7th character (the first of the birth year) finds the same county",
    ),
    (
        "idnumber",
        "sex = Sex.MALE if int(number[16]) % 2 >= 1 else Sex.FEMALE",
        "x % 2 is 0 or 1: >= 1 is == 1",
    ),
    (
        "idnumber",
        "return False",
        "_region_in_use_since's `return True` for a county entry without dates: stdnum accepts such a county"
        " for every birth year, so parse never asks (the other `return True` is killed by the tests)",
    ),
    (
        "idnumber",
        "if not end or int(end) > year:",
        "asked only when stdnum refused the county for the birth year (outside [start, end], ends included):"
        " there > and >= agree",
    ),
    (
        "idnumber",
        "if len(digits) >= 2 and digits[0] in _HEX and digits[1] in _HEX:",
        "`digits` is a slice of at most 2 characters: >= 2 is == 2",
    ),
    (
        "grants",
        "@dataclass(frozen=True, slots=False)",
        "slots change the memory layout only; frozen still refuses",
    ),
    (
        "index",
        "_EPOCH = dt.date( 1899, 1, 1).toordinal()",
        "every stored and asked day shifts alike; only dates before 1900 differ, and no card has one",
    ),
    (
        "index",
        "_DAY_BITS = 19",
        "19 bits of days still reach the year 3335; a card expires at most 20 years after issue",
    ),
    (
        "index",
        "_CHIP_SHIFT = 108",
        "leaves an unused bit between the name and chip hashes; every read uses the same shift",
    ),
    ("index", "_H64 = (1 << 64) - 2", _HASH_WIDTH),
    ("index", "_H64 = (1 << 63) - 1", _HASH_WIDTH),
    ("index", "_H32 = (1 << 32) - 2", _HASH_WIDTH),
    ("index", "_H32 = ( 2 << 32) - 1", _HASH_WIDTH),
    ("index", "_H32 = ( 0 << 32) - 1", _HASH_WIDTH + " (-1: the whole hash, the chip field is the top one)"),
    ("index", "_H32 = (1 >> 32) - 1", _HASH_WIDTH + " (-1: the whole hash, the chip field is the top one)"),
    ("index", "_H32 = (1 << 33) - 1", _HASH_WIDTH),
    ("index", "_H32 = (1 << 31) - 1", _HASH_WIDTH),
    *(
        ("index", line, _DEAD)
        for line in (
            "_DATES_MASK = (1 << _NAME_SHIFT) - 7  # bits 3-42: both dates",
            "_DATES_MASK = (1 >> _NAME_SHIFT) - 8  # bits 3-42: both dates",
            "_DATES_MASK = ( 2 << _NAME_SHIFT) - 8  # bits 3-42: both dates",
            "_DATES_MASK = (1 << _NAME_SHIFT) - 9  # bits 3-42: both dates",
            "_DATES_MASK = ( 0 << _NAME_SHIFT) - 8  # bits 3-42: both dates",
            "_DATES_MASK = (1 << _NAME_SHIFT) + 8  # bits 3-42: both dates",
        )
    ),
    (
        "index",
        "@dataclass(frozen=False, slots=True)",
        "CardFacts are packed on upsert, never kept, changed or hashed",
    ),
    ("index", "@dataclass(frozen=True, slots=False)", "slots change the memory layout only"),
    ("index", "status = card.status if card.status != CardStatus.EXPIRED else CardStatus.VALID", _ENUM_IS),
    (
        "index",
        "if len(kept) is len(existing):",
        "small ints are one object in CPython; a number never has 257 cards",
    ),
    ("index", "if len(kept) >= len(existing):", "`kept` is a subset of `existing`: >= is =="),
    (
        "index",
        "self._entries[card.id_number] = merged[ -1] if len(merged) == 1 else merged",
        "one element: [-1] is [0]",
    ),
    (
        "index",
        "self._entries[card.id_number] = merged[0] if len(merged) <= 1 else merged",
        "`merged` is never empty: <= 1 is == 1",
    ),
    ("index", "self._entries[card.id_number] = merged[0] if len(merged) < 1 else merged", _ONE_CARD),
    ("index", "self._entries[card.id_number] = merged[0] if len(merged) == 0 else merged", _ONE_CARD),
    ("index", "if code <= 0:", "a status code is 0-5, never negative"),
    (
        "lifecycle",
        "if stored >= CardStatus.VALID and expires_on is not None and today > expires_on:",
        _VALID_LAST,
    ),
    (
        "lifecycle",
        "if stored == CardStatus.VALID and expires_on is not None and today > expires_on:",
        _ENUM_IS,
    ),
    ("lifecycle", "@dataclass(frozen=True, slots=False)", "slots change the memory layout only"),
    (
        "lifecycle",
        "fingerprints_registered: bool = True",
        "the default is never used: the one CardView built in src (registry/lookups.py) passes it",
    ),
    ("lifecycle", "if status != CardStatus.VALID:", _ENUM_IS),
    ("lifecycle", "if status < CardStatus.VALID:", _VALID_LAST),
    (
        "lifecycle",
        "EventKind.DESTROYED: {s: CardStatus.DESTROYED for s in _STORED if s != CardStatus.DESTROYED},",
        _ENUM_IS,
    ),
    ("lifecycle", "return [c for c in cards if c.status == CardStatus.VALID]", _ENUM_IS),
    ("lifecycle", "return [c for c in cards if c.status >= CardStatus.VALID]", _VALID_LAST),
    ("lifecycle", "if kind == IssueKind.FIRST:", _ENUM_IS),
    ("lifecycle", "if disposition != FoundDisposition.HELD:", _ENUM_IS),
    (
        "lifecycle",
        "@dataclass(frozen=False, slots=True)",
        "a CardView is built per request (registry/lookups.py view) and only read: never assigned, never hashed",
    ),
    (
        "lifecycle",
        "_STORED = tuple(s for s in CardStatus if s != CardStatus.EXPIRED)  # EXPIRED is derived, never stored",
        _ENUM_IS,
    ),
    (
        "lifecycle",
        "EventKind.SUPERSEDED: {s: CardStatus.SUPERSEDED if s == CardStatus.VALID else s for s in _STORED},",
        _ENUM_IS,
    ),
    (
        "lifecycle",
        "EventKind.SUPERSEDED: {s: CardStatus.SUPERSEDED if s >= CardStatus.VALID else s for s in _STORED},",
        _VALID_LAST,
    ),
    (
        "lifecycle",
        "EventKind.DESTROYED: {s: CardStatus.DESTROYED for s in _STORED if s > CardStatus.DESTROYED},",
        "'destroyed' sorts before every other stored status: > DESTROYED is `is not` DESTROYED",
    ),
)

# cosmic-ray replaces each binary operator by every other one (ten mutants per `+`, `|`, `<<`...);
# nearly all are killed by the first test that touches the line, and they would be most of the
# run. By default one natural replacement each (--all-operators for all of them): the ones a slip
# of the hand makes. Comparisons, boolean operators, `not`, numbers, `break`/`continue`,
# decorators and exceptions: every cosmic-ray mutant.
BINARY_REPLACEMENTS = frozenset(
    {
        ("Add", "Sub"),
        ("Sub", "Add"),
        ("Mul", "Div"),
        ("Div", "Mul"),
        ("FloorDiv", "Div"),
        ("Mod", "FloorDiv"),
        ("Pow", "Mul"),
        ("LShift", "RShift"),
        ("RShift", "LShift"),
        ("BitOr", "BitAnd"),
        ("BitAnd", "BitOr"),
        ("BitXor", "BitOr"),
    }
)

# What a copy needs to run the unit tests.
COPIED = ("src", "tests", "pyproject.toml")


@dataclass
class Survivor:
    where: str
    operator: str
    change: str
    equivalent: str | None = None  # why, when the mutant is a listed equivalent one


@dataclass
class Outcome:
    name: str
    mutants: int = 0
    killed: int = 0
    survived: int = 0
    incompetent: int = 0
    skipped: int = 0
    seconds: float = 0.0
    tests: tuple[str, ...] = ()
    survivors: list[Survivor] = field(default_factory=list)
    equivalent: list[Survivor] = field(default_factory=list)
    error: str | None = None
    imported_from: str = ""

    @property
    def score(self) -> float:
        """Killed over the mutants not listed as equivalent (incompetent ones count as killed:
        the mutant broke the module's import)."""
        judged = self.killed + self.incompetent + self.survived
        return 100.0 * (self.killed + self.incompetent) / judged if judged else 0.0


def git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True).stdout  # noqa: S603, S607


def make_copy(dest: Path, rev: str | None, module: Module, *, committed_tests_only: bool = False) -> None:
    """The tree to mutate: the working tree (tracked and untracked, not ignored) or `rev`."""
    dest.mkdir(parents=True)
    if rev is None:
        names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *COPIED)
        for name in sorted({n for n in names.decode().split("\0") if n}):
            source = ROOT / name
            if source.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
        return
    archive = git("archive", "--format=tar", rev, "--", *COPIED)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)  # noqa: S603, S607
    if committed_tests_only:
        return
    # New test files (not yet in `rev`) of the module's list come from the working tree.
    for test in module.tests:
        if not (dest / test).exists() and (ROOT / test).is_file():
            (dest / test).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / test, dest / test)


def pytest_args(tests: tuple[str, ...]) -> list[str]:
    """pytest on the copy: no plugin autoload and no conftest (the unit tests need neither),
    hypothesis with a fixed seed (a mutant is killed or not, the same every run), stop at the
    first failure."""
    return [
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "hypothesis.extra.pytestplugin",
        "--noconftest",
        "--hypothesis-seed=0",
        *tests,
    ]


def copy_env(copy: Path) -> dict[str, str]:
    """The copy's src first on the path, ahead of the editable install's .pth entry."""
    return {
        **os.environ,
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        # One str hash for every run: a mutant of the index's hash fields is killed or not the same
        # way each time (the tests themselves hold for any seed).
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": f"{copy / 'src'}{os.pathsep}{copy}",
    }


# -- the fork server: one per module copy, one forked child per request ------------------------

# Imported once by the server (everything heavy the unit tests use, never idguard).
PRELOADED = (
    "hypothesis",
    "hypothesis.strategies",
    "stdnum.cn.ric",
)  # not a pytest plugin: it would not be rewritten

_CLIENT = """\
import socket, sys

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
answer = b""
while chunk := s.recv(4096):
    answer += chunk
sys.stdout.write(answer.decode(errors="replace"))
sys.exit(int(answer.split()[-1]) if answer.strip() else 99)
"""


def client_command(sock: Path, request: str = "test") -> list[str]:
    """The test command cosmic-ray runs per mutant: ask the server, exit with the tests' status
    (no answer, e.g. a child killed by its alarm: 99, a kill). Python without site: milliseconds."""
    client = sock.parent / "mutation_client.py"
    if not client.exists():
        client.write_text(_CLIENT)
    return [str(PYTHON), "-S", str(client), str(sock), request]


def serve(sock: Path, copy: Path, tests: tuple[str, ...], timeout: int, max_examples: int) -> None:
    """Import the test tooling once, then per request fork a child that runs the tests (or, for
    `probe`, tells where idguard is imported from). idguard itself is never imported here, so
    every child imports the file as cosmic-ray left it on disk."""
    import importlib

    import pytest
    from stdnum import numdb

    for name in PRELOADED:
        importlib.import_module(name)
    numdb.get("cn/loc")  # the region table, parsed once
    if max_examples:
        cap_examples(max_examples)
    if "idguard" in sys.modules:
        raise RuntimeError("the fork server must not import idguard: the children would not see the mutant")
    os.chdir(copy)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.listen(4)
    log = copy / "mutation-child.log"
    while True:
        conn, _ = server.accept()
        request = conn.makefile("rb").readline().decode().strip()
        if request.startswith("timeout "):  # set once the baseline through the server is known
            timeout = int(request.split()[1])
            conn.sendall(b"0\n")
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 70
            try:
                signal.alarm(timeout)
                sys.dont_write_bytecode = True  # a mutant's bytecode must never be cached
                if request == "probe":
                    import idguard

                    conn.sendall(f"{idguard.__file__}\n0\n".encode())
                    os._exit(0)
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = int(pytest.main(pytest_args(tests)))
                conn.sendall(f"{code}\n".encode())
            except BaseException:  # the child must never return into the server's loop
                traceback.print_exc()
            finally:
                os._exit(code)
        conn.close()
        os.waitpid(pid, 0)


def cap_examples(cap: int) -> None:
    """At most `cap` examples per property test, whatever the test's own settings ask: a mutant
    that survives 100 examples (fixed seed) is reported, it is not hidden; a run stays minutes."""
    import hypothesis

    original = hypothesis.settings.__init__

    def capped(
        self: hypothesis.settings, parent: hypothesis.settings | None = None, **kwargs: object
    ) -> None:
        examples = kwargs.get("max_examples")
        if isinstance(examples, int) and examples > cap:
            kwargs["max_examples"] = cap
        original(self, parent, **kwargs)  # type: ignore[arg-type]

    hypothesis.settings.__init__ = capped  # type: ignore[method-assign]


def start_server(
    copy: Path, tests: tuple[str, ...], timeout: int, max_examples: int
) -> tuple[subprocess.Popen[bytes], Path]:
    sock = copy / "mutation.sock"
    command = [str(PYTHON), str(Path(__file__).resolve()), "--serve", str(sock), "--copy", str(copy)]
    command += ["--timeout", str(timeout), "--max-examples", str(max_examples), "--", *tests]
    server = subprocess.Popen(command, env=copy_env(copy), cwd=copy)  # noqa: S603
    deadline = time.monotonic() + 120
    while not sock.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the mutation fork server did not start")
        time.sleep(0.1)
    return server, sock


def check_import_path(copy: Path, sock: Path) -> str:
    """A child of the server imports idguard from the copy, not from the checkout."""
    answer = subprocess.run(client_command(sock, "probe"), check=True, capture_output=True, text=True)  # noqa: S603
    found = answer.stdout.split()[0]
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"the tests would import idguard from {found}, not from the copy {copy}")
    return found


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) of every annotation, as (line, column in characters) like cosmic-ray's."""
    lines = source.splitlines()

    def column(line: int, offset: int) -> int:
        return len(lines[line - 1].encode()[:offset].decode())

    spans = []
    for node in ast.walk(ast.parse(source)):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.AnnAssign | ast.arg):
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations.append(node.returns)
        for a in annotations:
            if a is not None and a.end_lineno is not None and a.end_col_offset is not None:
                start = (a.lineno, column(a.lineno, a.col_offset))
                spans.append((start, (a.end_lineno, column(a.end_lineno, a.end_col_offset))))
    return spans


def skip_unrun(session: Path, source: str, all_operators: bool) -> None:
    """Mark as skipped the mutants not run: inside an annotation (never evaluated, postponed
    annotations), the `*` that makes parameters keyword-only (both equivalent by construction)
    and, unless `all_operators`, the binary-operator replacements outside BINARY_REPLACEMENTS."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(source) if "from __future__ import annotations" in source else []
    lines = source.splitlines()
    with use_db(str(session), mode=WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            (mutation,) = item.mutations
            start = tuple(mutation.start_pos)
            line, column = mutation.start_pos
            why = None
            if any(a <= start < b for a, b in spans):
                why = "inside an annotation"
            elif mutation.operator_name.startswith("core/ReplaceBinaryOperator_Mul_") and re.match(
                r"\*\s*[,)]", lines[line - 1][column:]
            ):
                # parso reads the bare `*` of a parameter list as a multiplication: `*` -> `/`
                # makes keyword-only parameters positional-or-keyword, which no caller (they
                # pass keywords) can tell.
                why = "the keyword-only marker of a parameter list"
            elif not all_operators and mutation.operator_name.startswith("core/ReplaceBinaryOperator_"):
                pair = tuple(mutation.operator_name.removeprefix("core/ReplaceBinaryOperator_").split("_"))
                if pair not in BINARY_REPLACEMENTS:
                    why = "binary operator replacement outside the default set"
            if why:
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=why))


def describe(source: str, operator_name: str, occurrence: int) -> str:
    """The mutation as the lines it changes, `- old | + new`."""
    import difflib

    import cosmic_ray.plugins
    from cosmic_ray.mutating import mutate_code

    mutated = mutate_code(source, cosmic_ray.plugins.get_operator(operator_name)(), occurrence)
    if mutated is None:
        return "(no change)"
    diff = difflib.unified_diff(source.splitlines(), mutated.splitlines(), n=0, lineterm="")
    return " | ".join(
        f"{line[0]} {line[1:].strip()}"
        for line in diff
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def collect(session: Path, module: Module, source: str, outcome: Outcome) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    with use_db(str(session), mode=WorkDB.Mode.open) as db:
        done = db.completed_work_items
        pending = len(db.pending_work_items)
    if pending:
        outcome.error = f"{pending} mutants were not run"
    for item, result in done:
        if result.worker_outcome in (WorkerOutcome.SKIPPED, WorkerOutcome.NO_TEST):
            outcome.skipped += 1
            continue
        outcome.mutants += 1
        if result.test_outcome is TestOutcome.INCOMPETENT:
            outcome.incompetent += 1
        elif result.test_outcome is TestOutcome.SURVIVED:
            (mutation,) = item.mutations
            change = describe(source, mutation.operator_name, mutation.occurrence)
            survivor = Survivor(
                where=f"{module.path}:{mutation.start_pos[0]}",
                operator=mutation.operator_name.removeprefix("core/"),
                change=change,
                equivalent=equivalent_reason(outcome.name, change),
            )
            if survivor.equivalent:
                outcome.equivalent.append(survivor)
            else:
                outcome.survived += 1
                outcome.survivors.append(survivor)
        else:
            outcome.killed += 1
    for survivors in (outcome.survivors, outcome.equivalent):
        survivors.sort(key=lambda s: (int(s.where.rsplit(":", 1)[1]), s.operator))


def equivalent_reason(module: str, change: str) -> str | None:
    """Why a surviving mutant is equivalent, if it is a listed one (matched on the mutated line:
    when the code changes, the mutant is judged again)."""
    mutated = change.rpartition("| + ")[2].strip()
    for name, line, reason in EQUIVALENT:
        if name == module and mutated == line:
            return reason
    return None


def run_module(
    name: str,
    module: Module,
    workdir: Path,
    rev: str | None,
    *,
    all_operators: bool,
    max_examples: int,
    committed_tests_only: bool,
) -> Outcome:
    started = time.monotonic()
    outcome = Outcome(name)
    copy = workdir / name
    make_copy(copy, rev, module, committed_tests_only=committed_tests_only)
    tests = tuple(t for t in module.tests if (copy / t).is_file())
    outcome.tests = tests
    cosmic = str(PYTHON.parent / "cosmic-ray")
    server = None
    try:
        # Checked-hash bytecode: the unmutated modules load compiled, a mutated one (its hash
        # differs) is compiled afresh, however fast cosmic-ray rewrites it.
        subprocess.run(  # noqa: S603
            [str(PYTHON), "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", "src", "tests"],
            cwd=copy,
            check=True,
            capture_output=True,
        )
        config = copy / "mutation.toml"
        session = copy / "mutation.sqlite"
        baseline = 0.0
        if tests:
            # The unmutated tests pass, run the ordinary way (this also caches the test modules'
            # assertion rewriting for the children).
            plain = [str(PYTHON), "-m", "pytest", *pytest_args(tests)]
            baseline_started = time.monotonic()
            env = copy_env(copy)
            base = subprocess.run(plain, cwd=copy, env=env, capture_output=True, text=True, check=False)  # noqa: S603
            baseline = time.monotonic() - baseline_started
            if base.returncode != 0:
                outcome.error = "the tests fail without a mutation:\n" + base.stdout[-3000:]
                return outcome
        timeout = int(3 * baseline + 15)  # until the baseline through the server is known
        server, sock = start_server(copy, tests, timeout, max_examples)
        outcome.imported_from = check_import_path(copy, sock)
        if tests:
            # ... and the unmutated tests pass through the server too (else every mutant would
            # count as killed). How long they take there sets the timeout: a mutant that makes
            # the tests loop is killed after three times that.
            served_started = time.monotonic()
            served = subprocess.run(client_command(sock), capture_output=True, text=True, check=False)  # noqa: S603
            if served.returncode != 0:
                log = (copy / "mutation-child.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the tests fail in the fork server without a mutation:\n{log}")
            timeout = int(3 * (time.monotonic() - served_started) + 10)
            subprocess.run(client_command(sock, f"timeout {timeout}"), check=True, capture_output=True)  # noqa: S603
        config.write_text(
            "[cosmic-ray]\n"
            f'module-path = "{copy / module.path}"\n'
            f"timeout = {timeout + 5}\n"
            "excluded-modules = []\n"
            f"test-command = {_toml_string(shlex.join(client_command(sock)))}\n"
            "\n[cosmic-ray.distributor]\n"
            'name = "local"\n'
        )
        subprocess.run([cosmic, "init", str(config), str(session)], cwd=copy, check=True, capture_output=True)  # noqa: S603
        skip_unrun(session, (copy / module.path).read_text(encoding="utf-8"), all_operators)
        if tests:
            execute = [cosmic, "exec", str(config), str(session)]
            subprocess.run(execute, cwd=copy, check=True, capture_output=True)  # noqa: S603
        else:
            _no_tests(session)
        collect(session, module, (copy / module.path).read_text(encoding="utf-8"), outcome)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        stderr = getattr(exc, "stderr", None)
        outcome.error = f"{exc}\n{stderr.decode() if isinstance(stderr, bytes) else stderr or ''}"
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        outcome.seconds = time.monotonic() - started
    return outcome


def _no_tests(session: Path) -> None:
    """No test file covers the module yet: every mutant survives (pytest would exit 5, which
    cosmic-ray would count as a kill)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    with use_db(str(session), mode=WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            db.set_result(
                item.job_id,
                WorkResult(worker_outcome=WorkerOutcome.NORMAL, test_outcome=TestOutcome.SURVIVED, diff=""),
            )


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def report(outcomes: list[Outcome], min_score: float) -> bool:
    """Score: killed / (mutants - listed equivalent ones), the usual mutation score."""
    ok = True
    print()
    header = f"{'module':<10} {'mutants':>7} {'killed':>6} {'survived':>8} {'equivalent':>10} {'skipped':>7}"
    print(f"{header} {'score':>7} {'time':>8}")
    for o in outcomes:
        print(
            f"{o.name:<10} {o.mutants:>7} {o.killed:>6} {o.survived:>8} {len(o.equivalent):>10} {o.skipped:>7}"
            f" {o.score:>6.1f}% {o.seconds / 60:>5.1f}min"
        )
    for o in outcomes:
        print(f"\n== {o.name}: {o.score:.1f}% ({', '.join(o.tests) or 'no test file'})")
        if o.imported_from:
            print(f"  idguard imported from {o.imported_from}")
        if o.incompetent:
            print(f"  {o.incompetent} incompetent mutants (the tests could not run) counted as killed")
        if o.error:
            print(f"ERROR: {o.error}")
            ok = False
        for s in o.survivors:
            print(f"  survived {s.where} {s.operator}: {s.change}")
        for s in o.equivalent:
            print(f"  equivalent {s.where} {s.operator}: {s.change}\n      ({s.equivalent})")
        if o.score < min_score:
            print(f"  below the minimum score {min_score:.0f}%")
            ok = False
    return ok


def report_kept(workdir: Path) -> list[Outcome]:
    """The outcomes of the sessions kept (--keep) under `workdir`, judged again (e.g. after
    EQUIVALENT changed) without running a mutant."""
    outcomes = []
    for name, module in MODULES.items():
        session = workdir / name / "mutation.sqlite"
        if session.exists():
            outcome = Outcome(name, tests=tuple(t for t in module.tests if (workdir / name / t).is_file()))
            collect(session, module, (workdir / name / module.path).read_text(encoding="utf-8"), outcome)
            outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-m", "--module", action="append", choices=sorted(MODULES), help="default: all")
    parser.add_argument(
        "--min-score", type=float, default=90.0, help="percent of mutants killed (default 90)"
    )
    parser.add_argument("--rev", help="mutate this commit instead of the working tree")
    parser.add_argument(
        "--committed-tests-only",
        action="store_true",
        help="with --rev: not even new test files from the working tree",
    )
    parser.add_argument("--jobs", type=int, default=1, help="modules run at once (default 1)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the run (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument(
        "--report", type=Path, help="report the sessions kept in this directory (runs nothing)"
    )
    parser.add_argument(
        "--all-operators",
        action="store_true",
        help="every binary-operator replacement (about twice the mutants)",
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=100,
        help="cap on each property test's examples (default 100; 0: none)",
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the fork server (internal)
    parser.add_argument("--copy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=int, default=60, help=argparse.SUPPRESS)
    parser.add_argument("tests", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.copy, tuple(args.tests), args.timeout, args.max_examples)
        return 0
    if args.nice:
        os.nice(args.nice)
    if args.report:
        return 0 if report(report_kept(args.report), args.min_score) else 1
    names = args.module or list(MODULES)
    workdir = Path(tempfile.mkdtemp(prefix="idguard-mutation-"))
    print(f"mutating {', '.join(names)} in copies under {workdir} ({args.rev or 'working tree'})", flush=True)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            options = {
                "all_operators": args.all_operators,
                "max_examples": args.max_examples,
                "committed_tests_only": args.committed_tests_only,
            }
            futures = [pool.submit(run_module, n, MODULES[n], workdir, args.rev, **options) for n in names]
            outcomes = []
            for future in futures:
                outcome = future.result()
                print(f"{outcome.name}: done in {outcome.seconds / 60:.1f} min", flush=True)
                outcomes.append(outcome)
    finally:
        if args.keep:
            print(f"copies kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report(outcomes, args.min_score) else 1


if __name__ == "__main__":
    sys.exit(main())
