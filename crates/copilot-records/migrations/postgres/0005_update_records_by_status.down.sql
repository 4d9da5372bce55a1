DROP INDEX update_records_by_status;
