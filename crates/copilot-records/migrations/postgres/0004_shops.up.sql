-- Merchants and the platforms they advertise on; maintained from webhooks.
CREATE TABLE shops (
    shop          TEXT PRIMARY KEY,
    platforms     JSONB NOT NULL DEFAULT '[]',
    api_version   TEXT,
    installed     BOOLEAN NOT NULL DEFAULT TRUE,
    last_event_at TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL
);
