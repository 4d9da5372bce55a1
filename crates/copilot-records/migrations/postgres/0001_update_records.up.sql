-- Normalized search/social platform updates, one row per incident or post.
CREATE TABLE update_records (
    id             TEXT PRIMARY KEY,
    source         TEXT NOT NULL,
    platform       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    title          TEXT NOT NULL,
    url            TEXT,
    summary        TEXT,
    published_at   TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    started_at     TIMESTAMPTZ,
    ended_at       TIMESTAMPTZ,
    status         TEXT NOT NULL,
    severity       TEXT NOT NULL,
    surfaces       JSONB NOT NULL DEFAULT '[]',
    raw_hash       TEXT NOT NULL,
    revision       INTEGER NOT NULL DEFAULT 1,
    fetched_at     TIMESTAMPTZ NOT NULL,
    parser_version TEXT NOT NULL
);
CREATE INDEX update_records_by_kind ON update_records (kind, updated_at);
CREATE INDEX update_records_by_updated ON update_records (updated_at);
