"""Store integrity (issue 13): the writer lock follows the resolved path (D2); a corrupt,
empty or foreign file is refused, never initialised (D3); every command answers an unusable
store with one line (D4); ``routewise check`` and ``routewise backup``, on real files and
real subprocesses (a sidecar under load included)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_server_subprocess import CONTEXTS, Daemon

import routewise as rw
from routewise.client import Client
from routewise.state import DecisionRecord, FeedbackRecord, SQLiteStore
from routewise.state.integrity import NotAStore, StoreCorrupt
from routewise.state.lock import StoreInUse
from routewise.state.prefix import LogPrefix

EXE = shutil.which("routewise")
ARMS = rw.make_arms(["openai:gpt-5.4", "ollama:llama3"])
PAGE = 4096


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "routewise.cli", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEWISE_")}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, cwd=cwd, env={**env, "COLUMNS": "200"}
    )


def make_store(path: Path, n: int = 400, **kwargs: object) -> Path:
    """A store with ``n`` decide+feedback pairs and one snapshot (taken at close; nothing is
    ever deleted, so every page of the file is in use)."""
    ctl = rw.Controller(arms=ARMS, store=path, seed=0, snapshot_every=10**6, **kwargs)  # type: ignore[arg-type]
    for i in range(n):
        d = ctl.decide({"task": ["qa", "extraction"][i % 2], "n": i % 17})
        ok = d.arm.backend == "ollama:llama3" or i % 3 == 0
        ctl.feedback(d.decision_id, rw.Outcome(valid=ok, latency_ms=300.0, cost_usd=0.001))
    ctl.close()
    return path


def corrupt(path: Path, where: str = "middle") -> None:
    """Overwrite pages with garbage: 8 pages in the middle, or page 2 (the first table)."""
    start = (path.stat().st_size // 2) // PAGE * PAGE if where == "middle" else PAGE
    with path.open("r+b") as fh:
        fh.seek(start)
        fh.write(b"\xde\xad\xbe\xef" * (8 * PAGE // 4))


def files(d: Path) -> list[str]:
    """The files in ``d``, without the empty ``-wal``/``-shm`` a read-only SQLite connection
    leaves next to a WAL database (it may not delete them)."""
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(("-wal", "-shm")))


# ----------------------------------------------------------------------------- D2
def test_a_symlink_to_a_store_in_use_is_refused(tmp_path: Path) -> None:
    """D2: the lock is keyed on the resolved path, so a second name of the same database (a
    symlink, a path through '..') finds the writer; before, it started a second writer whose
    decides failed with 'UNIQUE constraint failed: decisions.seq'."""
    db = make_store(tmp_path / "real.db", n=20)
    link = tmp_path / "link.db"
    link.symlink_to(db)
    (tmp_path / "sub").mkdir()
    with rw.Controller(store=db) as writer:
        for other in (link, tmp_path / "sub" / ".." / "link.db"):
            with pytest.raises(StoreInUse, match="is in use by pid"):
                rw.Controller(store=other)
        writer.decide({"task": "qa"})
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("link.db.", "link.db-"))]
    with rw.Controller(store=link) as writer:  # the other way round; its files are the real ones
        assert "real.db.lock" in files(tmp_path) and "link.db.lock" not in files(tmp_path)
        with pytest.raises(StoreInUse):
            SQLiteStore(db)
        writer.decide({"task": "qa"})
    assert files(tmp_path) == ["link.db", "real.db", "sub"]  # closed: one file, the real one
    with rw.Controller(store=db, read_only=True) as ro:
        assert ro.status().decisions == 22


def test_serve_on_a_symlink_to_a_store_in_use_is_refused(tmp_path: Path) -> None:
    db = make_store(tmp_path / "real.db", n=5)
    (tmp_path / "link.db").symlink_to(db)
    with rw.Controller(store=db):
        res = run("serve", "--port", "0", "--db", "link.db", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "'link.db' is in use by pid" in res.stderr and "Traceback" not in res.stderr


# ----------------------------------------------------------------------------- D3
@pytest.mark.parametrize("where", ["middle", "page2"])
def test_a_corrupt_store_is_refused_with_a_clear_error(tmp_path: Path, where: str) -> None:
    db = make_store(tmp_path / "x.db")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    conn.close()
    corrupt(db, where)
    damaged = db.read_bytes()
    for read_only in (False, True):
        with pytest.raises(StoreCorrupt) as err:
            rw.Controller(store=db, read_only=read_only)
        msg = str(err.value)
        assert msg.startswith(f"store {str(db)!r} is corrupt: ") and err.value.problems
        assert "restore a backup (made with `routewise backup`)" in msg
        assert f"routewise check --db {db}" in msg
        assert isinstance(err.value, rw.StateError)
    assert db.read_bytes() == damaged  # refused before anything was written to it
    assert not [n for n in files(tmp_path) if n.endswith((".lock", ".acklog"))]


def test_integrity_check_false_skips_the_check(tmp_path: Path) -> None:
    db = make_store(tmp_path / "x.db", n=50)
    store = SQLiteStore(db, read_only=True)
    assert store.check_seconds is not None and store.check_seconds >= 0.0
    store.close()
    store = SQLiteStore(db, read_only=True, integrity_check=False)
    assert store.check_seconds is None
    store.close()
    assert SQLiteStore(tmp_path / "new.db").check_seconds is None  # a new store: nothing to check


def test_an_empty_file_is_refused_not_initialised(tmp_path: Path) -> None:
    """D3: an existing 0-byte file was silently made a new store (with the demo arms, under
    ``routewise serve``)."""
    db = tmp_path / "empty.db"
    db.touch()
    for read_only in (False, True):
        with pytest.raises(NotAStore, match=r"exists but is empty \(0 bytes\).*delete it"):
            rw.Controller(arms=ARMS, store=db, read_only=read_only)
    assert db.stat().st_size == 0 and files(tmp_path) == ["empty.db"]


def test_a_foreign_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    before = db.read_bytes()
    for read_only in (False, True):
        with pytest.raises(NotAStore, match=r"is an SQLite database but not a routewise store"):
            rw.Controller(arms=ARMS, store=db, read_only=read_only)
    assert db.read_bytes() == before and files(tmp_path) == ["app.db"]
    other = tmp_path / "text.db"
    other.write_text("not a database\n" * 500)
    with pytest.raises(NotAStore, match="is not an SQLite database"):
        rw.Controller(arms=ARMS, store=other)


def test_serve_refuses_a_corrupt_or_foreign_store_with_exit_code_3(tmp_path: Path) -> None:
    db = make_store(tmp_path / "x.db")
    corrupt(db)
    (tmp_path / "empty.db").touch()
    for name in ("x.db", "empty.db"):
        res = run("serve", "--port", "0", "--db", name, cwd=tmp_path)
        assert res.returncode == 3, res.stdout + res.stderr
        assert res.stderr.startswith(f"error: store '{name}' ")
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert "serve.listening" not in res.stdout
    assert (tmp_path / "empty.db").stat().st_size == 0


def test_serve_logs_the_check_and_no_check_skips_it(tmp_path: Path) -> None:
    make_store(tmp_path / "x.db", n=50)
    d = Daemon(tmp_path, "--db", "x.db")
    assert d.stop(signal.SIGTERM) == 0
    checked = [e for e in d.events() if e["event"] == "store.checked"]
    assert len(checked) == 1 and checked[0]["check"] == "quick_check"
    assert isinstance(checked[0]["seconds"], float) and checked[0]["seconds"] >= 0.0
    d = Daemon(tmp_path, "--db", "x.db", "--no-check")
    assert d.stop(signal.SIGTERM) == 0
    events = [e["event"] for e in d.events()]
    assert "store.check_skipped" in events and "store.checked" not in events


# ----------------------------------------------------------------------------- D4
@pytest.fixture()
def unusable(tmp_path: Path) -> dict[str, Path]:
    """One file of each kind a command may be pointed at by mistake."""
    base = make_store(tmp_path / "base.db")
    out = {}
    for where in ("middle", "page2"):
        out[f"corrupt-{where}"] = p = tmp_path / f"corrupt-{where}.db"
        shutil.copy(base, p)
        corrupt(p, where)
    out["empty"] = tmp_path / "empty.db"
    out["empty"].touch()
    out["foreign"] = tmp_path / "foreign.db"
    with sqlite3.connect(out["foreign"]) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    out["text"] = tmp_path / "text.db"
    out["text"].write_text("hello\n" * 1000)
    return out


READ_COMMANDS = [
    ("policy", "--json"),
    ("policy",),
    ("status", "--json"),
    ("export-trace", "-"),
    ("health",),
    ("events",),
    ("experiment", "status", "exp"),
    ("backup", "--out", "copy.db"),
]


def test_every_command_answers_an_unusable_store_with_one_line(
    unusable: dict[str, Path], tmp_path: Path
) -> None:
    """D4: ``routewise policy --db <corrupt.db> --json`` printed a traceback. Now every
    command that reads a store prints one ``error:`` line and exits 3 (a missing file: 2)."""
    jobs = [(kind, cmd) for kind in ("corrupt-page2", "empty") for cmd in READ_COMMANDS]
    jobs += [(kind, READ_COMMANDS[0]) for kind in ("corrupt-middle", "foreign", "text")]
    jobs += [("missing", cmd) for cmd in READ_COMMANDS[:2]]

    def one(job: tuple[str, tuple[str, ...]]) -> tuple[str, tuple[str, ...], object]:
        kind, cmd = job
        db = unusable[kind] if kind != "missing" else tmp_path / "missing.db"
        return kind, cmd, run(*cmd, "--db", str(db), cwd=tmp_path)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, jobs))
    for kind, cmd, res in results:
        assert isinstance(res, subprocess.CompletedProcess)
        where = f"{kind} {' '.join(cmd)}: rc={res.returncode} {res.stdout[-300:]} {res.stderr}"
        assert res.returncode == (2 if kind == "missing" else 3), where
        assert "Traceback" not in res.stderr + res.stdout, where
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), where
    assert not (tmp_path / "copy.db").exists()
    res = run("replay", str(unusable["corrupt-middle"]), "-p", "uniform")
    assert res.returncode == 3 and "is corrupt" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------- routewise check
def check(db: Path | str, *extra: str) -> tuple[int, dict[str, object]]:
    res = run("check", "--db", str(db), "--json", *extra)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


def test_check_passes_on_a_healthy_store_and_fails_on_a_corrupt_copy(tmp_path: Path) -> None:
    db = make_store(tmp_path / "x.db", n=300, policy="linucb")
    ctl = rw.Controller(store=db, snapshot_every=100)  # more traffic: snapshots before the end
    for i in range(250):
        d = ctl.decide({"task": "qa", "n": i % 5})
        ctl.feedback(d.decision_id, rw.Outcome(valid=i % 4 != 0, latency_ms=90.0, cost_usd=0.0))
    ctl.pin("ollama:llama3/direct_emit")
    ctl.store.sync()  # the last records acknowledged in the acklog, not in the tables yet
    rc, report = check(db)  # next to the live writer
    assert rc == 0, report
    by = {c["check"]: c for c in report["checks"]}  # type: ignore[union-attr]
    assert list(by) == ["sqlite integrity", "acklog", "snapshot", "replay = snapshot"]
    assert all(c["ok"] for c in by.values())
    assert "PRAGMA integrity_check: ok" in by["sqlite integrity"]["detail"]
    assert "row(s) not in the tables yet" in by["acklog"]["detail"]
    assert "exactly" in by["replay = snapshot"]["detail"]
    ctl.close()
    res = run("check", "--db", str(db))  # the table
    assert res.returncode == 0 and "routewise check" in res.stdout and "pass" in res.stdout

    bad = tmp_path / "bad.db"
    shutil.copy(db, bad)
    corrupt(bad)
    rc, report = check(bad)
    assert rc == 1 and report["ok"] is False
    first = report["checks"][0]  # type: ignore[index]
    assert first["check"] == "sqlite integrity" and first["ok"] is False
    assert "PRAGMA integrity_check: " in first["detail"]


def test_check_finds_a_snapshot_the_log_does_not_reproduce(tmp_path: Path) -> None:
    db = make_store(tmp_path / "x.db", n=200)
    with sqlite3.connect(db) as conn:
        seq, text = conn.execute("SELECT seq, state FROM snapshots").fetchone()
        state = json.loads(text)
        arm = next(iter(state["stats"]))
        state["stats"][arm]["feedbacks"] += 1000  # a count the log does not back
        conn.execute("UPDATE snapshots SET state = ? WHERE seq = ?", (json.dumps(state), seq))
    conn.close()
    rc, report = check(db)
    assert rc == 1
    last = report["checks"][-1]  # type: ignore[index]
    assert last["check"] == "replay = snapshot" and last["ok"] is False
    assert "stats" in last["detail"]


_KILLED_WRITER = """
import os, sys
from routewise.state import DecisionRecord, FeedbackRecord, SQLiteStore
store = SQLiteStore(sys.argv[1], batch_size=10_000, checkpoint_interval_s=3600)
for i in range(1, 7, 2):  # three acklog lines (one per feedback), never committed
    store.log_decision(DecisionRecord(f"d{i}", i, 1.0, {"n": i}, "a:x/direct_emit", 1.0, [1.0], "uniform"))
    store.log_feedback(FeedbackRecord(f"d{i}", i + 1, 2.0, None, 0.5, defaulted=True))
os.kill(os.getpid(), 9)
"""


def test_check_reports_the_acklog(tmp_path: Path) -> None:
    """A writer killed with records only in its acklog: they are counted. A torn *last* line
    is an interrupted write (passes); a bad line before an intact one is an acknowledged
    record lost (fails)."""
    db = tmp_path / "x.db"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(db)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    acklog = Path(str(db) + ".acklog")
    data = acklog.read_bytes()
    rc, report = check(db)
    ack = report["checks"][1]  # type: ignore[index]
    assert rc == 0 and ack["check"] == "acklog" and ack["ok"] is True, report
    assert ack["detail"].startswith("3 line(s), 0 torn; 6 row(s) not in the tables yet")
    acklog.write_bytes(data[:-5])  # the last write cut short
    rc, report = check(db)
    ack = report["checks"][1]  # type: ignore[index]
    assert rc == 0 and ack["ok"] is True, report
    assert "1 torn (the last" in ack["detail"] and "4 row(s) not in the tables" in ack["detail"]
    lines = data.split(b"\n")
    lines[1] = lines[1][:-3] + b"xx]"  # the first line damaged, the later ones intact
    acklog.write_bytes(b"\n".join(lines))
    rc, report = check(db)
    ack = report["checks"][1]  # type: ignore[index]
    assert rc == 1 and ack["ok"] is False and "unreadable" in ack["detail"]


def test_check_on_a_postgresql_store(tmp_path: Path, pg_url: str) -> None:
    """A PostgreSQL store gets the schema and replay checks (the integrity of its pages is
    the server's)."""
    ctl = rw.Controller(arms=ARMS, store=pg_url, seed=0, snapshot_every=50)
    for i in range(120):
        d = ctl.decide({"task": ["qa", "ex"][i % 2]})
        ctl.feedback(d.decision_id, rw.Outcome(valid=i % 3 != 0, latency_ms=50.0, cost_usd=0.0))
    ctl.close()
    rc, report = check(pg_url)
    names = [c["check"] for c in report["checks"]]  # type: ignore[union-attr]
    assert rc == 0 and names == ["schema", "snapshot", "replay = snapshot"], report
    res = run("backup", "--db", pg_url, "--out", str(tmp_path / "c.db"))
    assert res.returncode == 2 and "pg_dump" in res.stderr


# ------------------------------------------------------------------ routewise backup
def test_backup_includes_records_only_in_the_acklog(tmp_path: Path) -> None:
    """A live writer that has acknowledged records (acklog) but not committed them: the
    backup, taken without its lock, holds them."""
    db = tmp_path / "src.db"
    make_store(db, n=30)
    store = SQLiteStore(db, batch_size=10_000, checkpoint_interval_s=3600)
    for i in range(61, 81, 2):
        store.log_decision(
            DecisionRecord(f"x{i}", i, 1.0, {"n": i}, "a:x/direct_emit", 1.0, [1.0], "uniform")
        )
        store.log_feedback(FeedbackRecord(f"x{i}", i + 1, 2.0, None, 0.5, defaulted=True))
    try:
        res = run("backup", "--db", str(db), "--out", str(tmp_path / "copy.db"))
        assert res.returncode == 0, res.stderr
        assert "(20 rows from the acklog)" in res.stdout and "up to seq 80" in res.stdout
    finally:
        store.close()
    copy = SQLiteStore(tmp_path / "copy.db", read_only=True)
    try:
        assert copy.max_seq() == 80 and copy.get_feedback("x79") is not None
    finally:
        copy.close()
    assert files(tmp_path) == ["copy.db", "src.db"]


def test_backup_refusals(tmp_path: Path) -> None:
    db = make_store(tmp_path / "src.db", n=10)
    out = tmp_path / "copy.db"
    assert run("backup", "--db", str(db), "--out", str(out)).returncode == 0
    first = out.read_bytes()
    res = run("backup", "--db", str(db), "--out", str(out))
    assert res.returncode == 2 and "exists (copy.db); give --force" in res.stderr
    (tmp_path / "link.db").symlink_to(db)
    res = run("backup", "--db", str(tmp_path / "link.db"), "--out", str(db), "--force")
    assert res.returncode == 2 and "is the store itself" in res.stderr
    with rw.Controller(store=out):  # a writer has the target open
        res = run("backup", "--db", str(db), "--out", str(out), "--force")
    assert res.returncode == 2 and "in use by pid" in res.stderr
    Path(str(out) + ".acklog").write_bytes(b"\nstale")  # a previous store's leftover
    res = run("backup", "--db", str(db), "--out", str(out), "--force")
    assert res.returncode == 0 and not Path(str(out) + ".acklog").exists()
    assert len(out.read_bytes()) == len(first)
    assert files(tmp_path) == ["copy.db", "link.db", "src.db"]


def _load(url: str, stop: threading.Event, acked: list[tuple[float, str]]) -> None:
    """decide+feedback pairs until ``stop``; each acknowledged decision with its time."""
    with Client(url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            try:
                d = client.decide(CONTEXTS[i % len(CONTEXTS)], request_id=f"l{i}")
                acked.append((time.monotonic(), d.decision_id))
                if i % 5 != 4:
                    ok = d.arm.backend != "ollama:devstral-2" or i % 3 == 0
                    client.feedback(
                        d.decision_id, rw.Outcome(valid=ok, latency_ms=200.0, cost_usd=0.0)
                    )
            except httpx.TransportError:
                return
            i += 1


def test_a_backup_under_load_is_a_consistent_prefix(tmp_path: Path) -> None:
    """``routewise backup`` while a real sidecar learns from decide+feedback pairs: the copy
    passes ``routewise check``, holds every decision acknowledged before the backup started,
    its log is a prefix of the source's, and it ranks the arms exactly as the source's log
    cut at the copy's last record does."""
    src, copy = tmp_path / "src.db", tmp_path / "copy.db"
    make_store(src, n=50)
    d = Daemon(tmp_path, "--db", str(src), env={"ROUTEWISE_SNAPSHOT_EVERY": "150"})
    stop = threading.Event()
    acked: list[tuple[float, str]] = []
    loaders = [threading.Thread(target=_load, args=(d.url, stop, acked)) for _ in range(3)]
    try:
        for t in loaders:
            t.start()
        while len(acked) < 300:
            time.sleep(0.02)
        started = time.monotonic()
        res = run("backup", "--db", str(src), "--out", str(copy))
        n_during = len(acked)
        while len(acked) < n_during + 200:  # the source keeps learning after the backup
            time.sleep(0.02)
    finally:
        stop.set()
        for t in loaders:
            t.join(timeout=30)
        assert d.stop(signal.SIGTERM) == 0
    assert res.returncode == 0, res.stderr
    assert "backed up" in res.stdout and "bytes in" in res.stdout
    rc, report = check(copy)
    assert rc == 0, report
    replay = report["checks"][-1]  # type: ignore[index]
    assert replay["check"] == "replay = snapshot" and replay["ok"] is True  # snapshots under load
    before = {did for t, did in acked if t < started}
    src_store = SQLiteStore(src, read_only=True)
    bk_store = SQLiteStore(copy, read_only=True)
    try:
        top = bk_store.max_seq()
        assert 0 < top < src_store.max_seq()
        assert all(bk_store.get_decision(did) is not None for did in before)
        assert list(bk_store.events_since(0)) == list(LogPrefix(src_store, top).events_since(0))
        with (
            rw.Controller(store=copy, read_only=True) as from_backup,
            rw.Controller(store=LogPrefix(src_store, top, snapshots=False), read_only=True) as ref,
        ):
            for ctx in [None, *CONTEXTS]:
                assert from_backup.best_policy(ctx) == ref.best_policy(ctx)
    finally:
        src_store.close()
        bk_store.close()
