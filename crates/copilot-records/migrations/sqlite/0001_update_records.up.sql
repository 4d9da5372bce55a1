-- Normalized search/social platform updates, one row per incident or post.
CREATE TABLE update_records (
    id             TEXT PRIMARY KEY,
    source         TEXT NOT NULL,
    platform       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    title          TEXT NOT NULL,
    url            TEXT,
    summary        TEXT,
    published_at   TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    started_at     TEXT,
    ended_at       TEXT,
    status         TEXT NOT NULL,
    severity       TEXT NOT NULL,
    surfaces       TEXT NOT NULL DEFAULT '[]',
    raw_hash       TEXT NOT NULL,
    revision       INTEGER NOT NULL DEFAULT 1,
    fetched_at     TEXT NOT NULL,
    parser_version TEXT NOT NULL
);
CREATE INDEX update_records_by_kind ON update_records (kind, updated_at);
CREATE INDEX update_records_by_updated ON update_records (updated_at);
