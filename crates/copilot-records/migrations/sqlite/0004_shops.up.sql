-- Merchants and the platforms they advertise on; maintained from webhooks.
CREATE TABLE shops (
    shop          TEXT PRIMARY KEY,
    platforms     TEXT NOT NULL DEFAULT '[]',
    api_version   TEXT,
    installed     BOOLEAN NOT NULL DEFAULT TRUE,
    last_event_at TEXT,
    updated_at    TEXT NOT NULL
);
