"""Invoice lifecycle, lines, totals and limits over the real stripe SDK."""

from __future__ import annotations

import pytest
import stripe


@pytest.fixture
def customer(client):
    return client.customers.create(params={"email": "bill@example.com"})


def _draft(client, customer, **extra):
    return client.invoices.create(params={"customer": customer.id, "auto_advance": False, **extra})


def test_invoice_lifecycle_draft_add_lines_finalize_pay_with_right_totals(client, customer):
    inv = _draft(client, customer, metadata={"tally_invoice_id": "42"}, description="Usage")
    assert inv.id.startswith("in_") and inv.status == "draft" and inv.currency == "usd"
    assert inv.total == 0 and inv.metadata["tally_invoice_id"] == "42" and inv.number is None

    inv = client.invoices.add_lines(inv.id, params={"lines": [
        {"amount": 7500, "description": "Seats", "period": {"start": 1700000000, "end": 1700086400},
         "metadata": {"tally_line_id": "L1"}},
        {"price_data": {"currency": "usd", "product_data": {"name": "Tokens"}, "unit_amount_decimal": "0.5"},
         "quantity": 3},  # 1.5 cents -> 2
    ]})
    assert [line.amount for line in inv.lines.data] == [7500, 2]
    assert inv.lines.data[0].metadata["tally_line_id"] == "L1"
    assert inv.lines.data[0].period.start == 1700000000
    assert inv.subtotal == inv.total == inv.amount_due == inv.amount_remaining == 7502
    assert inv.amount_paid == 0

    inv = client.invoices.finalize_invoice(inv.id, params={"auto_advance": False})
    assert inv.status == "open" and inv.number and inv.status_transitions.finalized_at
    assert inv.amount_due == 7502

    inv = client.invoices.pay(inv.id)
    assert inv.status == "paid" and inv.amount_paid == 7502 and inv.amount_remaining == 0
    assert inv.status_transitions.paid_at is not None
    assert client.invoices.retrieve(inv.id).status == "paid"


@pytest.mark.parametrize(("unit", "qty", "expected"), [
    ("0.5", 3, 2),          # 1.5 rounds half up
    ("0.49", 1, 0),
    ("0.125", 7, 1),        # 0.875
    ("0.0015", 1000, 2),    # 1.5
    ("12.345", 10, 123),    # 123.45
    ("0.25", 10, 3),        # 2.5 rounds half up (not banker's)
])
def test_price_data_line_amount_is_quantity_times_unit_decimal_rounded_half_up(
        client, customer, unit, qty, expected):
    inv = _draft(client, customer)
    inv = client.invoices.add_lines(inv.id, params={"lines": [
        {"price_data": {"currency": "usd", "product_data": {"name": "x"}, "unit_amount_decimal": unit},
         "quantity": qty}]})
    assert inv.lines.data[0].amount == expected and inv.total == expected


def test_invoice_inlines_ten_lines_and_lines_endpoint_paginates_all(client, customer):
    inv = _draft(client, customer)
    inv = client.invoices.add_lines(inv.id, params={"lines": [
        {"amount": i + 1, "description": f"line {i}"} for i in range(25)]})
    assert len(inv.lines.data) == 10 and inv.lines.has_more is True and inv.total == sum(range(1, 26))

    seen, after = [], None
    while True:
        params = {"limit": 10, **({"starting_after": after} if after else {})}
        page = client.invoices.line_items.list(inv.id, params=params)
        seen += [line.description for line in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert seen == [f"line {i}" for i in range(25)]


def test_251st_line_is_rejected_and_that_request_adds_none_of_its_lines(client, emu, customer):
    inv = _draft(client, customer)
    client.invoices.add_lines(inv.id, params={"lines": [{"amount": 1, "description": "a"}] * 200})
    client.invoices.add_lines(inv.id, params={"lines": [{"amount": 1, "description": "b"}] * 49})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.add_lines(inv.id, params={"lines": [{"amount": 1, "description": "c"}] * 2})
    assert exc.value.http_status == 400 and "250" in exc.value.user_message
    got = client.invoices.retrieve(inv.id)
    assert got.lines.total_count == 249 and got.total == 249
    # exactly up to the limit still works
    got = client.invoices.add_lines(inv.id, params={"lines": [{"amount": 1, "description": "d"}]})
    assert got.lines.total_count == 250 and len(emu.state.invoice_lines[inv.id]) == 250


def test_add_lines_with_one_invalid_line_adds_none(client, customer):
    inv = _draft(client, customer)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.add_lines(inv.id, params={"lines": [
            {"amount": 100, "description": "ok"},
            {"price_data": {"currency": "eur", "product_data": {"name": "x"}, "unit_amount": 5}}]})
    assert "currency" in exc.value.param
    assert client.invoices.retrieve(inv.id).lines.total_count == 0


def test_lines_cannot_be_added_to_a_finalized_invoice(client, customer):
    inv = _draft(client, customer)
    client.invoices.finalize_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.add_lines(inv.id, params={"lines": [{"amount": 1, "description": "late"}]})
    assert exc.value.code == "invoice_not_editable"


def test_invalid_status_transitions_are_rejected_with_400(client, customer):
    inv = _draft(client, customer)
    client.invoices.add_lines(inv.id, params={"lines": [{"amount": 500, "description": "x"}]})
    with pytest.raises(stripe.InvalidRequestError, match="finalize"):
        client.invoices.pay(inv.id)  # draft -> paid
    with pytest.raises(stripe.InvalidRequestError, match="void"):
        client.invoices.void_invoice(inv.id)  # draft -> void
    client.invoices.finalize_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError, match="already finalized"):
        client.invoices.finalize_invoice(inv.id)
    client.invoices.pay(inv.id)
    with pytest.raises(stripe.InvalidRequestError, match="already paid"):
        client.invoices.pay(inv.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.invoices.void_invoice(inv.id)
    assert client.invoices.retrieve(inv.id).status == "paid"


def test_open_invoice_can_be_voided(client, customer):
    inv = _draft(client, customer)
    client.invoices.add_lines(inv.id, params={"lines": [{"amount": 500, "description": "x"}]})
    client.invoices.finalize_invoice(inv.id)
    inv = client.invoices.void_invoice(inv.id)
    assert inv.status == "void" and inv.status_transitions.voided_at is not None


def test_zero_total_invoice_goes_straight_to_paid_on_finalize(client, customer):
    inv = client.invoices.finalize_invoice(_draft(client, customer).id)
    assert inv.status == "paid" and inv.amount_due == 0 and inv.status_transitions.paid_at


def test_invoice_requires_an_existing_customer(client, emu):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.create(params={"customer": "cus_missing"})
    assert exc.value.param == "customer" and exc.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.create(params={})
    assert exc.value.param == "customer"
    assert emu.state.invoices == {}


def test_send_invoice_needs_days_until_due(client, customer):
    with pytest.raises(stripe.InvalidRequestError):
        client.invoices.create(params={"customer": customer.id, "collection_method": "send_invoice"})
    inv = client.invoices.create(params={"customer": customer.id, "collection_method": "send_invoice",
                                         "days_until_due": 30})
    assert inv.collection_method == "send_invoice" and inv.due_date == inv.created + 30 * 86400


def test_draft_update_merges_metadata_and_description(client, customer):
    inv = _draft(client, customer, metadata={"a": "1", "b": "2"})
    inv = client.invoices.update(inv.id, params={"metadata": {"b": "", "c": "3"}, "description": "new"})
    assert inv.metadata.to_dict() == {"a": "1", "c": "3"} and inv.description == "new"


def test_invoices_list_filters_by_customer_and_status_and_search_finds_metadata(client, customer, emu):
    other = client.customers.create(params={})
    a = _draft(client, customer, metadata={"tally_invoice_id": "A"})
    b = _draft(client, customer, metadata={"tally_invoice_id": "B"})
    _draft(client, other)
    client.invoices.finalize_invoice(b.id)  # zero total -> paid

    mine = client.invoices.list(params={"customer": customer.id})
    assert [i.id for i in mine.data] == [b.id, a.id]
    drafts = client.invoices.list(params={"customer": customer.id, "status": "draft"})
    assert [i.id for i in drafts.data] == [a.id]
    emu.advance_clock(emu.state.search_lag_seconds)  # search lags behind writes
    found = client.invoices.search(params={"query": "metadata['tally_invoice_id']:'B'"})
    assert [i.id for i in found.data] == [b.id]


def test_invoice_items_attach_to_a_draft_invoice_as_lines(client, customer):
    inv = _draft(client, customer)
    item = client.invoice_items.create(params={"customer": customer.id, "invoice": inv.id, "amount": 1234,
                                               "currency": "usd", "description": "one-off",
                                               "metadata": {"k": "v"}})
    assert item.id.startswith("ii_") and item.invoice == inv.id and item.amount == 1234
    got = client.invoices.retrieve(inv.id)
    assert got.total == 1234 and got.lines.data[0].description == "one-off"
    listed = client.invoice_items.list(params={"invoice": inv.id})
    assert [i.id for i in listed.data] == [item.id]
