DROP TABLE event_delivery_attempts;
DROP TABLE event_deliveries;
DROP TABLE outbox_events;
DROP TABLE event_subscriptions;
ALTER TABLE orders DROP COLUMN event_seq;
