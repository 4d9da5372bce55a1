-- The deployment in progress in an arena, found without reading the arena's
-- history: only running and paused deployments are in this index, so the
-- lookup costs the same at 100 deployments and at 20,000.
CREATE INDEX deployments_in_progress ON deployments (arena, seq) WHERE state IN ('running', 'paused');
