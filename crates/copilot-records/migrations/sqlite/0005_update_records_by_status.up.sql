-- Ongoing updates are read on every recommendation request.
CREATE INDEX update_records_by_status ON update_records (status, kind);
