ALTER TABLE order_items DROP COLUMN restocked;
ALTER TABLE holds DROP COLUMN returned_amount;
DROP TABLE order_returns;
DROP TABLE order_refunds;
