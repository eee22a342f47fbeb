-- Disputes (issue 14, point 6): a `charge.disputed` provider event, recorded once per payment
-- (the key) with what was done about it, in the transaction that does it. Digital lines have
-- their entitlements revoked (`revoked_entitlements` counts them); an order with physical
-- lines, or a payment orderflow cannot tie to an order, is flagged for ops. The order keeps its
-- status and its money: the provider takes the disputed amount back, not orderflow.
CREATE TABLE disputes (
    payment_id           TEXT PRIMARY KEY,
    order_id             TEXT NOT NULL,
    amount               BIGINT NOT NULL CHECK (amount > 0),
    currency             TEXT NOT NULL,
    event_id             TEXT NOT NULL,
    revoked_entitlements BIGINT NOT NULL CHECK (revoked_entitlements >= 0),
    flagged_for_ops      BIGINT NOT NULL CHECK (flagged_for_ops IN (0, 1)),
    detail               TEXT NOT NULL,
    recorded_at          BIGINT NOT NULL
);
CREATE INDEX disputes_by_order ON disputes (order_id);
