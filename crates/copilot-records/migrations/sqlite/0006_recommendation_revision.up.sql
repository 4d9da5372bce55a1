-- A counter every change to what recommendations are computed from bumps:
-- update records (any write) and a shop's platforms or API version. Service
-- instances cache answers per shop and recompute when it moves, whichever
-- instance (or ingestor, or person) made the change.
CREATE TABLE revisions (
    name     TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO revisions (name, revision) VALUES ('recommendations', 1);

CREATE TRIGGER update_records_revise_insert AFTER INSERT ON update_records
BEGIN
    UPDATE revisions SET revision = revision + 1 WHERE name = 'recommendations';
END;
CREATE TRIGGER update_records_revise_update AFTER UPDATE ON update_records
BEGIN
    UPDATE revisions SET revision = revision + 1 WHERE name = 'recommendations';
END;
CREATE TRIGGER update_records_revise_delete AFTER DELETE ON update_records
BEGIN
    UPDATE revisions SET revision = revision + 1 WHERE name = 'recommendations';
END;
CREATE TRIGGER shops_revise_insert AFTER INSERT ON shops
BEGIN
    UPDATE revisions SET revision = revision + 1 WHERE name = 'recommendations';
END;
CREATE TRIGGER shops_revise_update AFTER UPDATE ON shops
WHEN OLD.platforms IS NOT NEW.platforms OR OLD.api_version IS NOT NEW.api_version
BEGIN
    UPDATE revisions SET revision = revision + 1 WHERE name = 'recommendations';
END;
CREATE TRIGGER shops_revise_delete AFTER DELETE ON shops
BEGIN
    UPDATE revisions SET revision = revision + 1 WHERE name = 'recommendations';
END;
