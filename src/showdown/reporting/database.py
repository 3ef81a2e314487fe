"""The results database: every finished run in an embedded SQLite file.

A run is recorded in one transaction once it has finished, so a run killed half-way leaves no row behind,
and the runs recorded before it stay intact. `check_database` opens it when the run starts, so a damaged or
foreign file fails then, in one line, not after the training.

Several writers may record at once (the shards of a job array finishing together): the database is in WAL mode
(readers never block the writer) and a writer that finds it locked waits up to BUSY_SECONDS for its turn instead
of failing. A run's transaction starts as a writer (BEGIN IMMEDIATE), so waiting for the lock is all it can meet.
WAL needs the writers on one machine (it shares memory between them): shards on several machines record with
--no-record, and their merge records once.
"""
from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path

from showdown.errors import DiskError, ShowdownError, flag_or_keyword, sqlite_disk_error
from showdown.fileio import check_writable, disk_writes
from showdown.reporting.run_records import EntryRecord, load_run

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, created TEXT NOT NULL, run_dir TEXT NOT NULL UNIQUE, dataset TEXT,
    fingerprint TEXT, config TEXT NOT NULL, environment TEXT NOT NULL, dataset_info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    folder TEXT NOT NULL, model TEXT NOT NULL, strategy TEXT NOT NULL, seed INTEGER,
    accuracy REAL, loss REAL, macro_f1 REAL, weighted_f1 REAL, train_seconds REAL,
    metrics TEXT NOT NULL, history TEXT NOT NULL, bench TEXT);
CREATE TABLE IF NOT EXISTS per_class (
    entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE, class TEXT NOT NULL,
    precision REAL, recall REAL, f1 REAL, support INTEGER);
CREATE TABLE IF NOT EXISTS predictions (
    entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE, item INTEGER NOT NULL,
    path TEXT, true_class TEXT, pred_class TEXT, confidence REAL);
"""


def default_db() -> Path:
    """$SHOWDOWN_DB, else showdown.db in the user's data folder ($XDG_DATA_HOME or ~/.local/share)."""
    if os.environ.get("SHOWDOWN_DB"):
        return Path(os.environ["SHOWDOWN_DB"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "showdown" / "showdown.db"


def database_path(db: str | Path | None) -> Path:
    """The database `--db` names, else the default one."""
    return Path(db) if db else default_db()


BUSY_SECONDS = 60  # a run's insert takes well under a second; a minute covers a queue of shards finishing at once


def other_database() -> str:
    """How to record elsewhere or not at all, as the user gives options."""
    return flag_or_keyword("give --db another file, or run with --no-record",
                           "give db= another file, or record=False")


def other_in(config_file: Path) -> str:
    """How to record elsewhere or not at all under --resume, which takes no other option: in the run's config."""
    return f"or set db: to another file (or record: false) in {config_file}"


def connect(path: str | Path | None = None, other: str = "") -> sqlite3.Connection:
    """`other`: how to record elsewhere or not at all, said by its error (default: other_database())."""
    other = other or other_database()
    path = database_path(path)
    with disk_writes(path.parent, "the folder of the results database"):
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level="IMMEDIATE")
        conn.execute("PRAGMA journal_mode = WAL")  # kept in the file: set once, then a no-op
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        if "unable to open" in str(exc):  # also what SQLite says of a folder that takes no journal file (WAL's)
            try:
                check_writable(path.parent, "the folder of the results database")
            except DiskError as disk:
                raise DiskError(f"{disk}; {disk.cure}, {other}", cure=disk.cure) from exc
        raise _database_error(path, exc, other) from exc
    conn.row_factory = sqlite3.Row
    return conn


def _database_error(path: Path, exc: sqlite3.DatabaseError, other: str = "") -> ShowdownError:
    """`other`: how to record elsewhere or not at all (the flags or keywords, or under --resume the run's
    config.yaml; default: other_database())."""
    other = other or other_database()
    if "locked" in str(exc).lower():  # another writer held it past the busy timeout: nothing is wrong with the file
        return DiskError(f"the results database {path} is locked: another process has been writing it for over "
                         f"{BUSY_SECONDS} s; try again once it is done, {other}", cure="try again once it is done")
    disk = sqlite_disk_error(exc, path, "the results database")
    if disk is None:
        return ShowdownError(f"cannot use the results database {path} ({exc}); move the file aside, {other}")
    return DiskError(f"{disk}; {disk.cure}, {other}", cure=disk.cure)


def check_database(path: str | Path | None = None, other: str = "") -> None:
    """Open the results database (created when new), check its integrity, that its tables are showdown's and that
    it takes a write (a read-only file would fail only once the run has finished). `other`: as for
    _database_error."""
    path = database_path(path)
    with closing(connect(path, other)) as conn:
        try:
            _check_intact(conn)
            for table, wanted in _COLUMNS.items():
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if not wanted <= have:
                    raise sqlite3.DatabaseError(f"its table {table} is not showdown's (no {', '.join(wanted - have)})")
            conn.execute("BEGIN IMMEDIATE")  # waits its turn behind another writer, as a run's insert does
            try:  # the version written as it is, then rolled back: the file is left as it was
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                conn.execute(f"PRAGMA user_version = {int(version)}")
            finally:
                conn.rollback()
        except sqlite3.DatabaseError as exc:
            raise _database_error(path, exc, other) from exc


def _check_intact(conn: sqlite3.Connection) -> None:
    (verdict,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    if verdict != "ok":
        raise sqlite3.DatabaseError(f"damaged: {verdict}")


@contextmanager
def _reading(db: str | Path | None) -> Iterator[sqlite3.Connection]:
    """The database for a command that reads it, checked as a run checks it (a damaged page reads as garbage,
    not always as an error); an error while reading is one line."""
    path = database_path(db)
    try:
        conn = _open_read_only(path)
    except sqlite3.DatabaseError as exc:  # not a database at all, or one that cannot be opened
        raise _database_error(path, exc) from exc
    with closing(conn):
        try:
            _check_intact(conn)
            yield conn
        except sqlite3.DatabaseError as exc:
            raise _database_error(path, exc) from exc


def _open_read_only(path: Path) -> sqlite3.Connection:
    """The database as a reader opens it: nothing written, so it reads on a read-only mount or from a folder that
    is not the user's. A WAL database there whose shared-memory file cannot be made beside it, and that has no
    write-ahead log waiting (nothing recorded but not yet in the file), is read as immutable."""
    posix = path.absolute().as_posix()  # an empty authority (file:///...), also for a share's //server/path
    uri = "file://" + ("" if posix.startswith("/") else "/") + urllib.parse.quote(posix, safe="/:")
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" not in str(exc) or path.with_name(path.name + "-wal").exists():
            raise
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def _schema_columns() -> dict[str, set[str]]:
    """The columns of each table SCHEMA makes, read off an in-memory database made with it."""
    with closing(sqlite3.connect(":memory:")) as memory:
        memory.executescript(SCHEMA)
        tables = [row[0] for row in memory.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: {row[1] for row in memory.execute(f"PRAGMA table_info({table})")} for table in tables}


_COLUMNS = _schema_columns()


def _text(value: str) -> str:
    """File names that are not valid UTF-8 are stored escaped (SQLite text must be UTF-8)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def record_run(run_dir: str | Path, db: str | Path | None = None, other: str = "") -> int:
    """Store a finished run folder (again: a re-recorded folder replaces its old rows); returns its id. `other`:
    as for connect."""
    records = load_run(run_dir)
    path = database_path(db)
    try:
        return _insert_run(run_dir, records, path, other)
    except sqlite3.DatabaseError as exc:  # a full disk, mid-transaction: nothing of the run is stored
        raise _database_error(path, exc, other) from exc


def _insert_run(run_dir: str | Path, records: list[EntryRecord], path: Path, other: str) -> int:
    first = records[0]
    folder = str(Path(run_dir).resolve())
    with closing(connect(path, other)) as conn, conn:  # one transaction: all of the run or none of it
        # recorded again (a resumed or merged-again folder): its rows are replaced under the ID it was given
        earlier = conn.execute("SELECT id FROM runs WHERE run_dir = ?", (folder,)).fetchone()
        conn.execute("DELETE FROM runs WHERE run_dir = ?", (folder,))
        run_id = conn.execute(
            "INSERT INTO runs (id, created, run_dir, dataset, fingerprint, config, environment, dataset_info) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (earlier[0] if earlier else None, datetime.now().isoformat(timespec="seconds"), folder,
             first.dataset.get("name"), first.dataset.get("fingerprint"), json.dumps(first.config),
             json.dumps(first.environment), _text(json.dumps(first.dataset))),
        ).lastrowid
        for record in records:
            m = record.metrics
            entry_id = conn.execute(
                "INSERT INTO entries (run_id, folder, model, strategy, seed, accuracy, loss, macro_f1, weighted_f1, "
                "train_seconds, metrics, history, bench) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, record.folder, record.model, record.strategy, record.seed, m["accuracy"], m["loss"],
                 m["macro_f1"], m["weighted_f1"], m.get("train_seconds"), _text(json.dumps(m)),
                 json.dumps(record.history), json.dumps(record.bench) if record.bench else None),
            ).lastrowid
            conn.executemany(
                "INSERT INTO per_class VALUES (?, ?, ?, ?, ?, ?)",
                [(entry_id, _text(name), v["precision"], v["recall"], v["f1"], v["support"])
                 for name, v in m["per_class"].items()])
            conn.executemany(
                "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
                [(entry_id, i, _text(p["path"]), _text(p["true"]), _text(p["pred"]), p["confidence"])
                 for i, p in enumerate(record.predictions)])
    return run_id


def list_runs(db: str | Path | None = None) -> list[dict]:
    if not database_path(db).exists():  # nothing recorded yet: nothing made by a command that reads
        return []
    with _reading(db) as conn:
        # the best (model, strategy) by its mean over the seeds (--repeats), as the report ranks them
        best = ("FROM entries WHERE run_id = r.id GROUP BY model, strategy "
                "ORDER BY ROUND(AVG(accuracy), 12) DESC, model || ' / ' || strategy LIMIT 1")  # ties as the report
        rows = conn.execute(
            "SELECT r.id, r.created, r.dataset, r.run_dir, COUNT(e.id) AS entries, "
            f"(SELECT AVG(accuracy) {best}) AS best_accuracy, (SELECT model || ' / ' || strategy {best}) AS best "
            "FROM runs r LEFT JOIN entries e ON e.run_id = r.id GROUP BY r.id ORDER BY r.id").fetchall()
    return [dict(row) for row in rows]


def load_entries(run_ids: list[int], db: str | Path | None = None) -> list[EntryRecord]:
    """The recorded entries of these runs, as records the report understands."""
    path = database_path(db)
    if not path.exists():  # said, not made: a command that reads creates no database
        raise ShowdownError(f"no run {run_ids[0]}: no results database at {path} (runs are recorded there by "
                            "`showdown run`)")
    records = []
    with _reading(db) as conn:
        for run_id in run_ids:
            run = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if run is None:
                known = ", ".join(str(r[0]) for r in conn.execute("SELECT id FROM runs ORDER BY id")) or "none"
                raise ShowdownError(f"no run {run_id} in the results database (runs: {known})")
            for entry in conn.execute("SELECT * FROM entries WHERE run_id = ? ORDER BY id", (run_id,)):
                predictions = [dict(path=p["path"], true=p["true_class"], pred=p["pred_class"],
                                    confidence=p["confidence"])
                               for p in conn.execute("SELECT * FROM predictions WHERE entry_id = ? ORDER BY item",
                                                     (entry["id"],))]
                records.append(EntryRecord(
                    run=f"run {run_id}", folder=entry["folder"], metrics=json.loads(entry["metrics"]),
                    history=json.loads(entry["history"]), predictions=predictions, config=json.loads(run["config"]),
                    environment=json.loads(run["environment"]), dataset=json.loads(run["dataset_info"]),
                    bench=json.loads(entry["bench"]) if entry["bench"] else None, run_id=run_id))
    return records
