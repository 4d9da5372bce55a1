DROP INDEX webhook_deliveries_by_status;
DROP TABLE webhook_deliveries;
