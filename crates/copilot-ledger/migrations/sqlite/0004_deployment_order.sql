-- The order deployments were recorded in, assigned by the ledger itself. The
-- clock a command runs with may be pinned (COPILOT_NOW) or skewed between
-- machines sharing a ledger; what happened first is what was inserted first.
ALTER TABLE deployments ADD COLUMN seq INTEGER;
UPDATE deployments SET seq = rowid;
CREATE TRIGGER deployments_seq AFTER INSERT ON deployments
BEGIN
    UPDATE deployments SET seq = NEW.rowid WHERE rowid = NEW.rowid;
END;
CREATE INDEX deployments_by_seq ON deployments (seq);
CREATE INDEX deployments_by_arena_seq ON deployments (arena, seq);
