"""Schemathesis hooks for orderflow's contract run (`scripts/contract`).

Two things Schemathesis cannot know from the document alone:

- How to sign a webhook. `Payment-Signature` is `t=<unix>,v1=<hex HMAC-SHA256(secret,
  "<t>.<raw body>")>` (the document's `payment_signature` scheme). `PaymentSignature` signs
  every generated body with PAYMENT_WEBHOOK_SECRET, so the webhook is fuzzed past its
  signature check like any other operation. Schemathesis still probes it unsigned and wrongly
  signed (the `ignored_auth` check), and must get 401 then.

- Which refusals of a schema-valid request are allowed. A request the document allows can
  still be refused for the state of the shop: not enough stock, an unknown SKU, a coupon
  already used, a code taken. Those answers are 422 with their own codes. What must never
  happen is an *input* refusal of a request the document allows: a 400, or a 422 whose code
  starts with `invalid_`. `schemathesis.toml` lets `positive_data_acceptance` take 422, and
  `schema_valid_input_is_never_refused_as_invalid` below holds the line it gives up, code by
  code.

- Which SKU exists. An order for a random SKU is refused (`unknown_sku`), so nothing would
  ever reach pay, cancel or ship. `orders_name_the_stocked_sku` rewrites the order bodies that
  Schemathesis generates as valid (positive mode only) to one line of CONTRACT_SKU, which
  `scripts/contract` stocks first, without a coupon, points or wallet funds that a random user
  does not have; and it keeps the fuzzer's PUTs off that SKU. Schema-invalid bodies go out as
  generated.

Only the standard library and Schemathesis. This file must never relax a check by status
alone: it names the codes it allows.
"""

import hashlib
import hmac
import json
import os
import time
from urllib.parse import unquote, urlsplit

import schemathesis
from schemathesis import GenerationMode

SECRET = os.environ.get("PAYMENT_WEBHOOK_SECRET", "whsec_orderflow_dev")
SKU = os.environ.get("CONTRACT_SKU", "contract-sku")
ORDER_PATHS = ("/v1/orders", "/v1/admin/orders")


def raw_body(body):
    """The bytes Schemathesis sends for a JSON body (the `requests` serialization)."""
    if body is None:
        return b"null"
    if isinstance(body, bytes):
        return body
    return json.dumps(body, allow_nan=False).encode("utf-8")


def signature(secret, timestamp, body):
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@schemathesis.auth().apply_to(path="/v1/payments/webhook")
class PaymentSignature:
    """Signs each webhook body as the payment provider does."""

    def get(self, case, ctx):
        return SECRET

    def set(self, case, data, ctx):
        try:
            body = raw_body(case.body)
        except (TypeError, ValueError):
            return  # not JSON at all: sent unsigned, and refused for that
        case.headers = case.headers or {}
        case.headers["Payment-Signature"] = signature(data, int(time.time()), body)


@schemathesis.check
def schema_valid_input_is_never_refused_as_invalid(ctx, response, case):
    """A request generated from the document (positive mode) is never refused as bad input."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return None
    if response.status_code not in (400, 422):
        return None
    # Every path parameter's pattern is printable ASCII (`^[!-~]+$`); a value outside it
    # (Schemathesis has been seen sending U+FFFD in one) was not generated from the document.
    for value in (case.path_parameters or {}).values():
        if isinstance(value, str) and not all("!" <= ch <= "~" for ch in value):
            return None
    # ... nor one that reached the wire as something else (U+FFFD has been seen in the sent
    # path while the case's own value looked printable).
    sent = urlsplit(response.request.url).path
    if not all("!" <= ch <= "~" for ch in unquote(sent)):
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{response.status_code} without the error shape: {response.text[:200]}")
    if response.status_code == 400 or code.startswith("invalid_"):
        raise AssertionError(
            f"a request the document allows was refused as bad input: {response.status_code} {code}: "
            f"{response.json()['error'].get('message', '')}"
        )
    return None


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """orders_name_the_stocked_sku: a valid order body orders what the shop has, and the
    fuzzer never rewrites that SKU's price or stock (it learns the name from the answers)."""
    if case.method.upper() == "PUT" and (case.path_parameters or {}).get("sku") == SKU:
        case.path_parameters["sku"] = SKU + "-fuzzed"
        return
    if case.method.upper() != "POST" or case.path not in ORDER_PATHS:
        return
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("items"), list) or not body["items"]:
        return
    first = body["items"][0]
    quantity = first.get("quantity", 1) if isinstance(first, dict) else 1
    body["items"] = [{"sku": SKU, "quantity": quantity}]
    for funded in ("coupon_id", "points", "wallet_amount"):
        body.pop(funded, None)
    if case.path == "/v1/orders":
        body.pop("user_id", None)
