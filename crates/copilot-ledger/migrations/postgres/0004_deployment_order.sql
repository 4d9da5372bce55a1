-- The order deployments were recorded in, assigned by the ledger itself. The
-- clock a command runs with may be pinned (COPILOT_NOW) or skewed between
-- machines sharing a ledger; what happened first is what was inserted first.
CREATE SEQUENCE deployments_seq;
ALTER TABLE deployments ADD COLUMN seq BIGINT;
UPDATE deployments d SET seq = o.n
  FROM (SELECT id, row_number() OVER (ORDER BY started_at, id) AS n FROM deployments) o
 WHERE o.id = d.id;
SELECT setval('deployments_seq', COALESCE((SELECT MAX(seq) FROM deployments), 0) + 1, false);
ALTER TABLE deployments ALTER COLUMN seq SET DEFAULT nextval('deployments_seq');
ALTER TABLE deployments ALTER COLUMN seq SET NOT NULL;
ALTER SEQUENCE deployments_seq OWNED BY deployments.seq;
CREATE INDEX deployments_by_seq ON deployments (seq);
CREATE INDEX deployments_by_arena_seq ON deployments (arena, seq);
