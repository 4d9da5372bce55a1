-- Every accepted Shopify webhook, keyed by event id so redeliveries are not enqueued twice.
CREATE TABLE webhook_deliveries (
    event_id     TEXT PRIMARY KEY,
    webhook_id   TEXT NOT NULL,
    topic        TEXT NOT NULL,
    shop         TEXT NOT NULL,
    api_version  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL,
    job_id       TEXT,
    received_at  TEXT NOT NULL,
    processed_at TEXT
);
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries (status, received_at);
