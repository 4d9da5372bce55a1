-- Feature flags per arena, read through a five-minute cache.
CREATE TABLE feature_flags (
    arena      TEXT NOT NULL,
    name       TEXT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (arena, name)
);
