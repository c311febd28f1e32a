"""The schema: each migration a script applied once, counted in `PRAGMA user_version`, so a
file written by any older release is brought up to date when it is opened. A script is
applied whole by SQLite's own parser (`executescript`), in one transaction with its
version number."""

from __future__ import annotations

import sqlite3

PRAGMAS = """
    PRAGMA journal_mode = WAL;
    -- NORMAL loses nothing on a process crash, only on power loss (DESIGN cost notes).
    PRAGMA synchronous = NORMAL;
    PRAGMA foreign_keys = ON;
    PRAGMA busy_timeout = 5000;
"""
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE builds (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        ref TEXT NOT NULL,
        sha TEXT NOT NULL,
        event TEXT NOT NULL,
        pr INTEGER,
        message TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL DEFAULT '',
        fork INTEGER NOT NULL DEFAULT 0,
        github TEXT,
        trigger_key TEXT UNIQUE,
        pipeline TEXT NOT NULL,
        error TEXT,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX builds_repo_ref ON builds (repo, ref, id);
    CREATE INDEX builds_state ON builds (state, id);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        build_id INTEGER NOT NULL REFERENCES builds (id),
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        host TEXT,
        slot INTEGER,
        attempt INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        reason TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        log_expired INTEGER NOT NULL DEFAULT 0,
        queued_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_build ON jobs (build_id);
    CREATE INDEX jobs_active ON jobs (state) WHERE state IN ('queued', 'running');
    CREATE INDEX jobs_log_kept ON jobs (finished_at) WHERE log_expired = 0;
    CREATE TABLE attempts (
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        number INTEGER NOT NULL,
        host TEXT NOT NULL,
        slot INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT,
        reason TEXT,
        PRIMARY KEY (job_id, number)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
    CREATE TABLE hosts (name TEXT PRIMARY KEY, drained INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE repos (name TEXT PRIMARY KEY, poll_error TEXT, polled_at TEXT);
    CREATE TABLE heads (
        repo TEXT NOT NULL, ref TEXT NOT NULL, sha TEXT NOT NULL, PRIMARY KEY (repo, ref)
    );
    """,
    # A repo's page lists its newest builds and each ref's newest build; at 100k builds
    # sorting or grouping them all took tens of milliseconds a page.
    """
    CREATE INDEX builds_repo ON builds (repo, id);
    CREATE TABLE refs (
        repo TEXT NOT NULL, ref TEXT NOT NULL, build_id INTEGER NOT NULL REFERENCES builds (id),
        PRIMARY KEY (repo, ref)
    );
    CREATE INDEX refs_newest ON refs (repo, build_id);
    INSERT INTO refs SELECT repo, ref, MAX(id) FROM builds GROUP BY repo, ref;
    """,
    # What jobs leave behind: artifacts, and test outcomes compared with the base branch's.
    """
    ALTER TABLE builds ADD COLUMN base_ref TEXT;
    -- Kept beside the tests rows, so finding the base branch's newest job with results
    -- skips the jobs without any instead of counting rows for each.
    ALTER TABLE jobs ADD COLUMN test_count INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE artifacts (
        job_id INTEGER NOT NULL REFERENCES jobs (id), path TEXT NOT NULL,
        size INTEGER NOT NULL, PRIMARY KEY (job_id, path)
    );
    CREATE TABLE tests (
        job_id INTEGER NOT NULL REFERENCES jobs (id), name TEXT NOT NULL,
        outcome TEXT NOT NULL, message TEXT NOT NULL
    );
    CREATE INDEX tests_job ON tests (job_id);
    CREATE INDEX tests_name ON tests (name, job_id);
    """,
    # SPEC §5a: whether a build's code is trusted, and a fork's wait for approval.
    """
    ALTER TABLE builds ADD COLUMN untrusted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE builds ADD COLUMN approval TEXT;
    UPDATE builds SET untrusted = fork;
    """,
    # Hardening: kills owed to hosts, status texts as they were at their transition, and
    # login sessions that a logout really ends.
    """
    ALTER TABLE attempts ADD COLUMN kill_pending INTEGER NOT NULL DEFAULT 0;
    UPDATE attempts SET kill_pending = 1 WHERE outcome = 'requeued'
        AND job_id IN (SELECT id FROM jobs WHERE state IN ('queued', 'running'));
    CREATE INDEX attempts_kill ON attempts (host) WHERE kill_pending = 1;
    -- What a status says beside its state (a host, a reason, a queue position).
    ALTER TABLE outbox ADD COLUMN detail TEXT;
    CREATE TABLE sessions (key TEXT PRIMARY KEY, expires_at TEXT NOT NULL);
    """,
    # The build page and the lists people browse: which build a rebuild repeats, how long
    # each test took, and indexes that keep the ETA, the filtered lists and the tests page
    # to a few index pages at 100k builds instead of a scan.
    """
    ALTER TABLE builds ADD COLUMN rebuild_of INTEGER REFERENCES builds (id);
    CREATE INDEX builds_rebuilds ON builds (rebuild_of) WHERE rebuild_of IS NOT NULL;
    CREATE INDEX builds_passed ON builds (repo, ref, id) WHERE state = 'passed';
    CREATE INDEX builds_event ON builds (event, id);
    CREATE INDEX builds_ref ON builds (ref, id);
    ALTER TABLE tests ADD COLUMN duration REAL NOT NULL DEFAULT 0;
    CREATE INDEX tests_failing ON tests (job_id) WHERE outcome IN ('failed', 'errored');
    CREATE INDEX tests_slowest ON tests (job_id, duration);
    """,
    # The time slot a scheduled build is for, so the next start knows the last one it
    # built without taking it back out of a trigger key. The keys are `cron NUL repo NUL
    # slot`, and the slot is a fixed-width ISO time: its last 24 bytes (as a blob: SQLite's
    # text functions stop at a NUL).
    """
    ALTER TABLE builds ADD COLUMN cron_slot TEXT;
    UPDATE builds SET cron_slot = CAST(substr(CAST(trigger_key AS BLOB), -24) AS TEXT)
        WHERE event = 'cron' AND trigger_key IS NOT NULL;
    CREATE INDEX builds_cron ON builds (repo, id) WHERE cron_slot IS NOT NULL;
    """,
)


def migrate(conn: sqlite3.Connection) -> None:
    """Set the connection's pragmas and apply the migrations the file has not had yet."""
    conn.executescript(PRAGMAS)
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
