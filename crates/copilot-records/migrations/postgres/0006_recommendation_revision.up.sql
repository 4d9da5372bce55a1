-- A counter every change to what recommendations are computed from bumps:
-- update records (any write) and a shop's platforms or API version. Service
-- instances cache answers per shop and recompute when it moves, whichever
-- instance (or ingestor, or person) made the change.
CREATE TABLE revisions (
    name     TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO revisions (name, revision) VALUES ('recommendations', 1);

CREATE FUNCTION revise_recommendations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE revisions SET revision = revision + 1 WHERE name = 'recommendations';
    RETURN NULL;
END;
$$;

-- Once per statement: an ingestion batch bumps it per record it writes, a
-- bulk load once.
CREATE TRIGGER update_records_revise AFTER INSERT OR UPDATE OR DELETE ON update_records
    FOR EACH STATEMENT EXECUTE FUNCTION revise_recommendations();
CREATE TRIGGER shops_revise_insert_delete AFTER INSERT OR DELETE ON shops
    FOR EACH STATEMENT EXECUTE FUNCTION revise_recommendations();
CREATE TRIGGER shops_revise_update AFTER UPDATE ON shops
    FOR EACH ROW WHEN (OLD.platforms IS DISTINCT FROM NEW.platforms OR OLD.api_version IS DISTINCT FROM NEW.api_version)
    EXECUTE FUNCTION revise_recommendations();
