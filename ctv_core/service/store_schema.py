"""The case index's tables (SQLite) and the upgrade of an index of an earlier schema.

Schema 2 adds to the series table the series' own folder under incoming/, whether an association
sending it ended without release, why it is incomplete, and when its current round of receiving
began (:mod:`.series_records`).
"""

from __future__ import annotations

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY, created TEXT NOT NULL, source TEXT NOT NULL, sender TEXT NOT NULL DEFAULT '',
    study_uid TEXT NOT NULL DEFAULT '', series_uid TEXT NOT NULL DEFAULT '', description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', approved_version INTEGER);
CREATE TABLE IF NOT EXISTS versions (
    case_id TEXT NOT NULL, number INTEGER NOT NULL, kind TEXT NOT NULL, created TEXT NOT NULL,
    author TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (case_id, number));
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL, version INTEGER NOT NULL,
    kind TEXT NOT NULL, queue TEXT NOT NULL DEFAULT 'station', model TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT 'auto',
    formats TEXT NOT NULL DEFAULT 'rtstruct', status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, started TEXT, finished TEXT,
    stage TEXT NOT NULL DEFAULT '', progress REAL NOT NULL DEFAULT 0, cancel INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS series (
    uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, sender TEXT NOT NULL, host TEXT NOT NULL,
    first_received REAL NOT NULL, last_received REAL NOT NULL, instances INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, case_id TEXT, folder TEXT NOT NULL DEFAULT '', interrupted INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT '', opened REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL, sop_class TEXT NOT NULL, path TEXT NOT NULL,
    received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL, version INTEGER NOT NULL,
    file TEXT NOT NULL, destination TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '', created TEXT NOT NULL, sent TEXT,
    UNIQUE (case_id, version, file, destination));
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL, version INTEGER NOT NULL, approved TEXT NOT NULL,
    approved_by TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', model_sha256 TEXT NOT NULL DEFAULT '',
    record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS approvals_case ON approvals (case_id);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, next_attempt);
CREATE INDEX IF NOT EXISTS series_state ON series (state);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid);
"""
#: Schema 1 -> 2: the series' own folder under incoming/ (never its UID), whether an association sending it
#: ended without release, why it is incomplete, when its current round of receiving began.
UPGRADE_1_TO_2 = (
    "ALTER TABLE series ADD COLUMN folder TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE series ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE series ADD COLUMN note TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE series ADD COLUMN opened REAL NOT NULL DEFAULT 0",
    "UPDATE series SET folder = lower(hex(randomblob(8))), opened = first_received",
    "CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid)",
    "UPDATE meta SET value = '2' WHERE key = 'schema'",
)
#: Schema 2 -> 3: the approvals table (created by :data:`SCHEMA`, which every start runs; an index of schema 2 has
#: no approval to carry over).
UPGRADE_2_TO_3 = (
    "UPDATE meta SET value = '3' WHERE key = 'schema'",
)
#: Upgrades by the schema they start from; each leaves the index at the next schema.
UPGRADES = {"1": UPGRADE_1_TO_2, "2": UPGRADE_2_TO_3}
