-- Reverts 20261121000001_orders: drops every table it created, in reverse order.
DROP TABLE payments;
DROP TABLE ledger;
DROP TABLE holds;
DROP TABLE order_events;
DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE points_accounts;
DROP TABLE wallets;
DROP TABLE coupons;
DROP TABLE skus;
