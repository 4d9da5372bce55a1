DROP INDEX update_records_by_updated;
DROP INDEX update_records_by_kind;
DROP TABLE update_records;
