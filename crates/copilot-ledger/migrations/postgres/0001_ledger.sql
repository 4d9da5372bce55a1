-- The copilot ledger (PostgreSQL): releases, deployments and their steps,
-- gate runs with evidence, approvals, locks and the audit log.

CREATE TABLE releases (
    id          TEXT PRIMARY KEY,
    version     TEXT NOT NULL UNIQUE,
    image       TEXT NOT NULL,
    digest      TEXT,
    git_sha     TEXT,
    config_hash TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE deployments (
    id                  TEXT PRIMARY KEY,
    arena               TEXT NOT NULL,
    release_id          TEXT NOT NULL REFERENCES releases (id),
    previous_release_id TEXT REFERENCES releases (id),
    kind                TEXT NOT NULL,
    strategy            TEXT NOT NULL,
    source_arena        TEXT,
    state               TEXT NOT NULL,
    reason              TEXT,
    created_by          TEXT NOT NULL,
    started_at          TIMESTAMPTZ NOT NULL,
    finished_at         TIMESTAMPTZ
);
CREATE INDEX deployments_by_arena ON deployments (arena, started_at);

CREATE TABLE deployment_steps (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    seq           INTEGER NOT NULL,
    name          TEXT NOT NULL,
    state         TEXT NOT NULL,
    intent        JSONB NOT NULL,
    outcome       JSONB,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    PRIMARY KEY (deployment_id, seq)
);

CREATE TABLE traffic (
    arena         TEXT PRIMARY KEY,
    split         JSONB NOT NULL,
    deployment_id TEXT REFERENCES deployments (id),
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE gate_runs (
    id            TEXT PRIMARY KEY,
    arena         TEXT NOT NULL,
    release_id    TEXT REFERENCES releases (id),
    deployment_id TEXT REFERENCES deployments (id),
    phase         TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX gate_runs_by_arena ON gate_runs (arena, started_at);

CREATE TABLE gate_results (
    gate_run_id TEXT NOT NULL REFERENCES gate_runs (id),
    gate        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    summary     TEXT NOT NULL,
    evidence    JSONB NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (gate_run_id, gate)
);

CREATE TABLE approvals (
    id         TEXT PRIMARY KEY,
    arena      TEXT NOT NULL,
    release_id TEXT NOT NULL REFERENCES releases (id),
    approver   TEXT NOT NULL,
    note       TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX approvals_by_release ON approvals (arena, release_id);

CREATE TABLE locks (
    arena         TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    token         TEXT NOT NULL,
    owner         TEXT NOT NULL,
    host          TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    acquired_at   TIMESTAMPTZ NOT NULL,
    renewed_at    TIMESTAMPTZ NOT NULL,
    -- Milliseconds since the epoch; NULL holds until `copilot unlock`.
    expires_at_ms BIGINT
);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    arena   TEXT,
    subject TEXT,
    reason  TEXT,
    detail  JSONB NOT NULL DEFAULT '{}'
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
