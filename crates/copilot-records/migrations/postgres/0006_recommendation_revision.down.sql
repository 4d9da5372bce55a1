DROP TRIGGER shops_revise_update ON shops;
DROP TRIGGER shops_revise_insert_delete ON shops;
DROP TRIGGER update_records_revise ON update_records;
DROP FUNCTION revise_recommendations();
DROP TABLE revisions;
