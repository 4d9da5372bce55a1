-- Preview arenas: one instance of a preview arena per pull request, as
-- `copilot preview up` created it. A row is written before anything is
-- created on the platform, so whatever a failed `up` left behind is still
-- known, and `preview gc` removes only what a row says copilot created.
CREATE TABLE previews (
    -- The arena instance (`preview-pr-7`).
    name           TEXT PRIMARY KEY,
    -- The arena definition it is an instance of (`preview`).
    arena          TEXT NOT NULL,
    pr             BIGINT NOT NULL,
    -- The platform name (`copilot-pr-7`) and what the instance was made
    -- with (the local router's port), JSON.
    platform_name  TEXT NOT NULL,
    settings       TEXT NOT NULL,
    release_id     TEXT REFERENCES releases (id),
    url            TEXT,
    -- up, removing (claimed by one remover), removed.
    state          TEXT NOT NULL,
    claimed_by     TEXT,
    removed_reason TEXT,
    created_by     TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    removed_at     TIMESTAMPTZ
);
CREATE INDEX previews_by_pr ON previews (arena, pr);

-- What copilot tells GitHub, in order: deployments, their statuses, pull
-- request comments, check runs. Each is written before it is sent; what
-- GitHub did not take (down, rate limiting) stays pending and is sent, in
-- order, by the next command that reaches it.
CREATE TABLE github_outbox (
    id            BIGSERIAL PRIMARY KEY,
    repository    TEXT NOT NULL,
    -- deployment, status, comment, check-run.
    kind          TEXT NOT NULL,
    -- The copilot deployment it is about, the arena and the release.
    deployment_id TEXT,
    arena         TEXT,
    release_id    TEXT,
    payload       TEXT NOT NULL,
    -- pending, sent, refused (GitHub answered 4xx: never sent again).
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    -- What GitHub answered that later items need (the deployment's id).
    result        TEXT,
    -- The process sending it now, and until when its claim holds (by the
    -- real clock): an item is sent by one process at a time.
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    sent_at       TIMESTAMPTZ
);
CREATE INDEX github_outbox_pending ON github_outbox (repository, state, id);
CREATE INDEX github_outbox_deployments ON github_outbox (repository, kind, arena, release_id);
