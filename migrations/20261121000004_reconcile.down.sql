-- Reverts 20261121000004_reconcile.
DROP TABLE reconcile_log;
