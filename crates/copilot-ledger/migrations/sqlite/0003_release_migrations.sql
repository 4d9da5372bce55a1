-- The schema migrations a release was built with (NULL: not recorded), so a
-- rollback can say which applied migrations the older release does not know.
ALTER TABLE releases ADD COLUMN migrations TEXT;
