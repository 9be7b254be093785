"""The reader a unit runs on its own machine (`idguard offline fetch` / `check`): a directory holding
the signed set, its deltas, the public keys and the local log of offline checks.

    DIR/keys.json         the public keys (GET /api/v1/offline/keys), {key_id: base64}
    DIR/snapshot.bin      the snapshot, as signed by idguard
    DIR/deltas/NNNNNN.bin the deltas applied since, in order, as signed
    DIR/state.json        version, generation, as_of (when idguard last vouched for the version)
    DIR/checks.jsonl      offline checks not yet uploaded (id numbers in full: mode 0600)
    DIR/rejected.jsonl    uploaded checks idguard refused, with its reasons

Every file is verified when it arrives and again whenever the set is loaded: a snapshot or delta
whose signature does not verify under a listed key, or a delta that does not start at the set's
version, is refused (sets.BadFile) and nothing is changed. No database, no web framework; HTTP
through the standard library (or an injected transport, for tests).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idguard.core.clock import today_cst
from idguard.offline import sets, signing

# (method, url, headers, body) -> (status, headers with lower-case names, body)
Transport = Callable[[str, str, Mapping[str, str], bytes | None], tuple[int, Mapping[str, str], bytes]]
UPLOAD_BATCH = 1000
MAX_DELTA_FILES = 1000  # past this many deltas, the next fetch takes a fresh snapshot
TIMEOUT_SECONDS = 60


class FetchError(Exception):
    """idguard could not be reached, or answered with an error."""


def http_transport(
    method: str, url: str, headers: Mapping[str, str], body: bytes | None
) -> tuple[int, Mapping[str, str], bytes]:
    """HTTP(S) through urllib."""
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"idguard is not reachable: {exc}") from None


@dataclass(frozen=True, slots=True)
class Answer:
    valid: bool
    version: int
    age_seconds: float
    check_id: str


@dataclass(frozen=True, slots=True)
class FetchReport:
    kind: str  # "snapshot" or "delta"
    version: int
    changes: int  # cards in the delta (0 for a snapshot)
    uploaded: int
    rejected: int
    size: int


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _problem(status: int, body: bytes) -> str:
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"idguard answered {status}" + (f": {detail}" if detail else "")


class Reader:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.deltas = directory / "deltas"

    # --- local state ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time in the directory (a check while a fetch runs waits for it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def keys(self) -> dict[str, str]:
        path = self.dir / "keys.json"
        if not path.exists():
            raise sets.BadFile(f"no keys in {self.dir}: run `idguard offline fetch` first")
        keys = json.loads(path.read_text())
        return {str(k): str(v) for k, v in keys.items()}

    def _delta_files(self) -> list[Path]:
        return sorted(self.deltas.glob("*.bin")) if self.deltas.exists() else []

    def load(self) -> sets.OfflineSet:
        """The set as kept here, every file verified again; sets.BadFile if any fails."""
        path = self.dir / "snapshot.bin"
        if not path.exists():
            raise sets.BadFile(f"no offline set in {self.dir}: run `idguard offline fetch` first")
        keys = self.keys()
        magic, header, body = signing.verify_file(path.read_bytes(), keys)
        if magic != sets.SNAPSHOT_MAGIC:
            raise sets.BadFile("snapshot.bin is not a snapshot")
        current = sets.OfflineSet.from_snapshot(header, body)
        for delta in self._delta_files():
            magic, header, body = signing.verify_file(delta.read_bytes(), keys)
            if magic != sets.DELTA_MAGIC:
                raise sets.BadFile(f"{delta.name} is not a delta")
            current.apply(header, body)
        state = self._state()
        if state is not None and state.get("version") == current.version and "as_of" in state:
            # A fetch that brought no change leaves no file, only the (verified) time it was
            # vouched for.
            current.as_of = max(current.as_of, dt.datetime.fromisoformat(str(state["as_of"])))
        return current

    def _state(self) -> dict[str, Any] | None:
        path = self.dir / "state.json"
        return dict(json.loads(path.read_text())) if path.exists() else None

    def _save_state(self, current: sets.OfflineSet) -> None:
        state = {
            "version": current.version,
            "generation": current.generation,
            "as_of": current.as_of.isoformat(),
        }
        _atomic_write(self.dir / "state.json", json.dumps(state).encode())

    # --- checks -------------------------------------------------------------------------------

    def check(
        self,
        id_number: str,
        chip_serial: str,
        expires_on: dt.date | None,
        *,
        now: dt.datetime,
        purpose: str | None = None,
        operator: str = "offline-reader",
        current: sets.OfflineSet | None = None,
    ) -> Answer:
        """Answer from the set and append the check to the local log (uploaded by `fetch`)."""
        current = current or self.load()
        valid = current.check(id_number, chip_serial, expires_on, today_cst(now))
        check_id = str(uuid.uuid4())
        entry = {
            "check_id": check_id,
            "at": now.astimezone(dt.UTC).isoformat(),
            "id_number": id_number.strip().upper(),
            "result": "valid" if valid else "invalid",
            "version": current.version,
            "operator": operator,
            "purpose": purpose,
            # Identifies the card on upload, so a lost card presented here opens an incident.
            "chip_serial": chip_serial.strip(),
        }
        with self._locked():
            path = self.dir / "checks.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as log:
                log.write(json.dumps(entry, ensure_ascii=False) + "\n")
                log.flush()
                os.fsync(log.fileno())
        age = max(0.0, (now - current.as_of).total_seconds())
        return Answer(valid, current.version, age, check_id)

    # --- fetching -----------------------------------------------------------------------------

    def fetch(self, base_url: str, api_key: str, *, transport: Transport = http_transport) -> FetchReport:
        """Bring the set up to date (a snapshot the first time, or after a 410; deltas after),
        verifying every file, then upload the local check log."""
        base = base_url.rstrip("/")
        auth = {"Authorization": f"Bearer {api_key}"}
        with self._locked():
            status, _, body = transport("GET", f"{base}/api/v1/offline/keys", {}, None)
            if status != 200:
                raise FetchError(_problem(status, body))
            listed = {k["key_id"]: k["public_key"] for k in json.loads(body)["keys"]}
            _atomic_write(self.dir / "keys.json", json.dumps(listed).encode())
            report = self._fetch_delta(base, auth, transport, listed)
            if report is None:
                report = self._fetch_snapshot(base, auth, transport, listed)
                # A snapshot may trail the registry (idguard rebuilds it now and then): the
                # deltas since its version make it current at once.
                caught_up = self._fetch_delta(base, auth, transport, listed)
                if caught_up is not None:
                    report = FetchReport(
                        "snapshot", caught_up.version, caught_up.changes, 0, 0, report.size + caught_up.size
                    )
        uploaded, rejected = self.upload(base, api_key, transport=transport)
        return FetchReport(report.kind, report.version, report.changes, uploaded, rejected, report.size)

    def _fetch_delta(
        self, base: str, auth: Mapping[str, str], transport: Transport, keys: Mapping[str, str]
    ) -> FetchReport | None:
        if not (self.dir / "snapshot.bin").exists() or len(self._delta_files()) >= MAX_DELTA_FILES:
            return None
        try:
            current = self.load()
        except (sets.BadFile, ValueError, OSError):
            return None  # what is kept no longer verifies (e.g. its key was retired): start again
        query = urllib.parse.urlencode({"after": current.version})
        status, _, body = transport("GET", f"{base}/api/v1/offline/deltas?{query}", auth, None)
        if status == 410:
            return None
        if status != 200:
            raise FetchError(_problem(status, body))
        magic, header, payload = signing.verify_file(body, keys)
        if magic != sets.DELTA_MAGIC:
            raise sets.BadFile("the answer is not a delta")
        if header.get("generation") != current.generation:
            return None  # idguard started a new generation (a new salt): take its snapshot
        current.apply(header, payload)  # refuses a delta that does not follow the set's version
        if header["changes"]:
            self.deltas.mkdir(exist_ok=True)
            _atomic_write(self.deltas / f"{len(self._delta_files()) + 1:06d}.bin", body)
        self._save_state(current)
        return FetchReport("delta", current.version, int(header["changes"]), 0, 0, len(body))

    def _fetch_snapshot(
        self, base: str, auth: Mapping[str, str], transport: Transport, keys: Mapping[str, str]
    ) -> FetchReport:
        status, headers, body = transport("GET", f"{base}/api/v1/offline/snapshot", auth, None)
        if status != 200:
            raise FetchError(_problem(status, body))
        magic, header, payload = signing.verify_file(body, keys)
        if magic != sets.SNAPSHOT_MAGIC:
            raise sets.BadFile("the answer is not a snapshot")
        current = sets.OfflineSet.from_snapshot(header, payload)
        if headers.get("x-offline-version") != str(current.version):
            raise sets.BadFile("X-Offline-Version does not match the snapshot's signed version")
        _atomic_write(self.dir / "snapshot.bin", body)
        for old in self._delta_files():
            old.unlink()
        self._save_state(current)
        return FetchReport("snapshot", current.version, 0, 0, 0, len(body))

    def upload(
        self, base_url: str, api_key: str, *, transport: Transport = http_transport
    ) -> tuple[int, int]:
        """Upload the local check log (POST /api/v1/offline/checks) and keep only what was not
        taken: (recorded or already recorded, rejected). Rejected checks move to rejected.jsonl."""
        base = base_url.rstrip("/")
        path = self.dir / "checks.jsonl"
        done = rejected = 0
        with self._locked():
            if not path.exists():
                return 0, 0
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            while lines:
                batch = lines[:UPLOAD_BATCH]
                items = [json.loads(line) for line in batch]
                body = json.dumps({"items": items}).encode()
                status, _, answer = transport(
                    "POST",
                    f"{base}/api/v1/offline/checks",
                    {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
                    body,
                )
                if status != 200:
                    raise FetchError(_problem(status, answer))
                refused = []
                for item, result in zip(items, json.loads(answer)["results"], strict=True):
                    if result["status"] == "rejected":
                        refused.append(json.dumps({**item, "errors": result["errors"]}, ensure_ascii=False))
                    else:
                        done += 1
                if refused:
                    rejected += len(refused)
                    with open(self.dir / "rejected.jsonl", "a") as out:
                        out.write("\n".join(refused) + "\n")
                lines = lines[len(batch) :]
                _atomic_write(path, "".join(line + "\n" for line in lines).encode())
        return done, rejected
