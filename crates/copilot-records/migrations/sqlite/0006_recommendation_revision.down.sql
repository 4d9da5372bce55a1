DROP TRIGGER shops_revise_delete;
DROP TRIGGER shops_revise_update;
DROP TRIGGER shops_revise_insert;
DROP TRIGGER update_records_revise_delete;
DROP TRIGGER update_records_revise_update;
DROP TRIGGER update_records_revise_insert;
DROP TABLE revisions;
