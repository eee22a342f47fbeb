"""The walkthrough's first order, through a client generated from orderflow's OpenAPI document.

`examples/python-client/run` generates the package `orderflow_client` with
openapi-python-client and runs this file; nothing here is written by hand against the wire
format: bodies, enums and answers are the generated types. Fails (non-zero exit) if any step
answers other than the document says it should.

Usage: python first_order.py BASE_URL ADMIN_TOKEN USER_TOKEN USER_ID
"""

import sys
import time
import uuid

import httpx

from orderflow_client import AuthenticatedClient
from orderflow_client.api.admin import credit_points, credit_wallet, create_coupon, put_sku, ship_order
from orderflow_client.api.orders import create_order, get_order, order_events
from orderflow_client.api.payments import pay_order
from orderflow_client.models import (
    CreateCoupon,
    CreateCouponKind,
    CreateOrder,
    CreditPoints,
    CreditWallet,
    ErrorBody,
    Item,
    Order,
    PutSku,
)


def expect(answer, kind, step):
    """The answer of one step, which must be the documented success type."""
    if not isinstance(answer, kind):
        detail = answer.error.code if isinstance(answer, ErrorBody) else answer
        sys.exit(f"{step}: expected {kind.__name__}, got {detail}")
    return answer


def main(base, admin_token, user_token, user):
    admin = AuthenticatedClient(base_url=base, token=admin_token)
    alice = AuthenticatedClient(base_url=base, token=user_token)
    sku = f"book-{uuid.uuid4().hex[:8]}"

    # Set up: a SKU, a wallet, points and a coupon.
    put_sku.sync(sku, client=admin, body=PutSku(price=1500, stock=10))
    credit_wallet.sync(user, client=admin, body=CreditWallet(amount=1000))
    credit_points.sync(user, client=admin, body=CreditPoints(points=300))
    coupon = create_coupon.sync(
        client=admin, body=CreateCoupon(user_id=user, kind=CreateCouponKind.AMOUNT, amount=500)
    )

    # 1. Create the order: two books, the coupon, 200 points and 300 from the wallet.
    order = expect(
        create_order.sync(
            client=alice,
            idempotency_key=f"walkthrough-{sku}",
            body=CreateOrder(
                items=[Item(sku=sku, quantity=2)],
                coupon_id=coupon.coupon_id,
                points=200,
                wallet_amount=300,
            ),
        ),
        Order,
        "create the order",
    )
    print(f"order {order.order_id}: {order.status}, payable {order.payable_amount}")
    assert order.status == "pending_payment" and order.payable_amount == 2000, order

    # 2. Pay it: open a checkout session, pay as the customer would at the provider's page.
    session = pay_order.sync(order.order_id, client=alice)
    httpx.post(session.pay_url).raise_for_status()
    # Paid first; then fulfilment opens the shipment that an admin can ship.
    for _ in range(200):
        order = expect(get_order.sync(order.order_id, client=alice), Order, "read the order")
        if order.status == "paid" and order.shipment_status == "pending":
            break
        time.sleep(0.1)
    print(f"order {order.order_id}: {order.status}, shipment {order.shipment_status}")
    assert order.status == "paid" and order.shipment_status == "pending", order

    # 3. Ship it.
    order = expect(ship_order.sync(order.order_id, client=admin), Order, "ship the order")
    events = order_events.sync(order.order_id, client=alice)
    print(f"order {order.order_id}: {order.status}; events: {', '.join(e.to for e in events.events)}")
    assert order.status == "fulfilled", order


if __name__ == "__main__":
    main(*sys.argv[1:5])
