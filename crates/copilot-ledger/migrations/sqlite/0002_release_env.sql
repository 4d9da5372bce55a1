-- Configuration a release carries (non-secret variables), applied when it runs.
ALTER TABLE releases ADD COLUMN env TEXT NOT NULL DEFAULT '{}';
