-- A request to stop the rollout that holds an arena's lease (`copilot abort`
-- from another process, `down --force`): JSON {action, by, reason}, read by
-- the holder between its steps.
ALTER TABLE locks ADD COLUMN cancel TEXT;
