-- The platform's own name for what a step started (machine ids, a deploy id,
-- a task definition revision), written before the step waits on it: a
-- command killed while waiting resumes waiting on the same operation, and a
-- rollback finds the revision an older release ran as.
ALTER TABLE deployment_steps ADD COLUMN handle TEXT;
