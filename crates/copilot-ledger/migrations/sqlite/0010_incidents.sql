-- Incidents (seed 004's communication fields) and what happened to each:
-- who said what when, and the times seed 003's rollback targets are
-- measured by (start, detection, decision, traffic back).
CREATE TABLE incidents (
    id                     TEXT PRIMARY KEY,
    arena                  TEXT NOT NULL,
    -- 1, 2 or 3.
    severity               INTEGER NOT NULL,
    -- investigating, identified, resolved.
    status                 TEXT NOT NULL,
    impact                 TEXT NOT NULL,
    resolution             TEXT,
    eta                    TEXT,
    -- manual (opened by a person) or analysis (by an automatic rollback).
    source                 TEXT NOT NULL,
    -- The release serving when it was opened, and the deployment it is about.
    release_id             TEXT REFERENCES releases (id),
    deployment_id          TEXT,
    -- The rollback that took traffic back, once there is one.
    rollback_deployment_id TEXT,
    -- When impact began, when it was detected, when the decision to roll
    -- back was taken, when traffic was back on the good release.
    started_at             TEXT NOT NULL,
    detected_at            TEXT NOT NULL,
    decision_due_at        TEXT,
    decided_at             TEXT,
    mitigated_at           TEXT,
    resolved_at            TEXT,
    opened_by              TEXT NOT NULL,
    -- What the automatic rollback measured (analysis), JSON.
    evidence               TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX incidents_by_arena ON incidents (arena, status);

CREATE TABLE incident_updates (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    status      TEXT NOT NULL,
    resolution  TEXT,
    eta         TEXT,
    note        TEXT
);
CREATE INDEX incident_updates_by_incident ON incident_updates (incident_id, id);
