-- Indexes for what status, history, rollback and the gates ask, so each
-- answers in time independent of the ledger's size.
-- The release live in an arena and the deployment in progress there.
CREATE INDEX deployments_by_arena_state ON deployments (arena, state, seq);
-- The deployments of a release in an arena (the handle of its last launch).
CREATE INDEX deployments_by_arena_release ON deployments (arena, release_id, seq);
-- Deployments by when they started (time-range questions across arenas).
CREATE INDEX deployments_by_started ON deployments (started_at);
-- Gate runs newest first across arenas, and those of a deployment.
CREATE INDEX gate_runs_by_started ON gate_runs (started_at, id);
CREATE INDEX gate_runs_by_deployment ON gate_runs (deployment_id);
-- A gate's earlier results in a window (queue-health over its window).
CREATE INDEX gate_results_by_gate ON gate_results (gate, started_at);
-- The audit log of one arena, newest first.
CREATE INDEX audit_log_by_arena ON audit_log (arena, id);
