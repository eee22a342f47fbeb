-- Orders that stopped on a permanent error (issue 9, point 6): a constraint violation or data
-- the store cannot read, in a step that moves money or holds. The order's workflow stays open
-- and waits for ops, instead of retrying forever in silence or failing where nobody looks.
-- `raised` counts how often the order came back here; `resolved_at` is set when ops ask for a
-- retry (`POST /v1/admin/orders/{order_id}/retry`) and cleared again if the retry stops too.
CREATE TABLE needs_attention (
    order_id    TEXT PRIMARY KEY,
    code        TEXT NOT NULL,
    message     TEXT NOT NULL,
    raised      BIGINT NOT NULL DEFAULT 1 CHECK (raised >= 1),
    raised_at   BIGINT NOT NULL,
    resolved_at BIGINT
);
