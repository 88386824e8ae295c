"""What each gateway resource (customers, invoices, meters, Connect, Checkout) sends to Stripe and how it
reads the answers, request by request: the emulator over HTTP records every request's parameters, and no
database is involved. Fast (well under a
second each), so a mutation run (``make mutation-push``) can run them for every mutant of the gateway."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
import stripe

from gateways.stripe import StripeFailed, StripeGateway, StripeRejected, StripeUnreachable
from gateways.stripe.checkout import CheckoutSession, session_of
from gateways.stripe.connect import AccountState, account_state
from gateways.stripe.customers import ACCOUNT_KEY, CustomerMismatch
from gateways.stripe.invoices import MAX_LINES, LineItem
from gateways.stripe.meters import MeterEventDuplicate, MeterEventTooOld
from models.settings import EMULATOR_API_KEY, Settings


@pytest.fixture
def gw(emulator) -> StripeGateway:
    return StripeGateway(Settings(stripe_api_base=emulator.url, stripe_max_network_retries=0,
                                  stripe_timeout_seconds=5))


@pytest.fixture
def sdk(emulator) -> stripe.StripeClient:
    return stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator.url, "connect": emulator.url})


def sent(emulator, method: str, path: str) -> list[dict]:
    """The requests made to ``method path`` (oldest first), each with its decoded parameters."""
    return [r for r in emulator.requests() if r["method"] == method and r["path"] == path]


def line(ref: str, amount: str = "1.25", **kw) -> LineItem:
    values = dict(line_ref=ref, description=f"line {ref}", amount=Decimal(amount), quantity=Decimal("5"),
                  unit_price=Decimal("0.25"), period_start=1_790_000_000, period_end=1_792_000_000)
    return LineItem(**(values | kw))


# ---- customers ----------------------------------------------------------------------------------------
def test_a_customer_is_created_with_the_account_in_its_metadata_name_email_and_the_callers_key(gw, emulator):
    cid = gw.customers.create("acme", "ops@acme.test", "tally:acme:customer:a1")

    [post] = sent(emulator, "POST", "/v1/customers")
    assert post["idempotency_key"] == "tally:acme:customer:a1"
    assert post["params"] == {"metadata": {ACCOUNT_KEY: "acme"}, "name": "acme", "email": "ops@acme.test"}
    assert list(emulator.state.customers) == [cid]


def test_a_customer_without_email_is_created_without_the_email_parameter(gw, emulator):
    gw.customers.create("acme", None, "k1")
    gw.customers.create("globex", "", "k2")
    assert [p["params"] for p in sent(emulator, "POST", "/v1/customers")] == [
        {"metadata": {ACCOUNT_KEY: "acme"}, "name": "acme"},
        {"metadata": {ACCOUNT_KEY: "globex"}, "name": "globex"}]


def test_find_lists_customers_created_since_the_window_and_answers_the_oldest_of_the_account(gw, emulator, sdk):
    old = sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "acme"}}).id
    emulator.advance_clock(100)
    since = int(emulator.now())
    first = sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "acme"}}).id
    emulator.advance_clock(5)
    sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "acme"}})
    sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "globex"}})
    sdk.v1.customers.create(params={"metadata": {}})

    assert gw.customers.find("acme", created_since=since + 0.9) == first  # whole seconds, not rounded up
    assert gw.customers.find("acme", created_since=0) == old
    assert gw.customers.find("initech", created_since=0) is None
    assert [g["params"] for g in sent(emulator, "GET", "/v1/customers")][0] == {
        "created": {"gte": str(since)}, "limit": "100"}


def test_a_customer_found_is_remembered_as_checked(gw, emulator, sdk):
    cid = sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "acme"}}).id
    assert gw.customers.find("acme", created_since=0) == cid
    assert gw.customers.check_owner(cid, "acme", max_age=60) == cid
    assert sent(emulator, "GET", f"/v1/customers/{cid}") == []


def test_check_owner_asks_stripe_each_time_without_max_age(gw, emulator):
    cid = gw.customers.create("acme", None, "k1")
    assert gw.customers.check_owner(cid, "acme") == cid
    assert gw.customers.check_owner(cid, "acme") == cid
    assert len(sent(emulator, "GET", f"/v1/customers/{cid}")) == 2


def test_check_owner_with_max_age_answers_a_recent_check_of_the_same_account_from_memory(gw, emulator):
    cid = gw.customers.create("acme", None, "k1")  # created: checked now
    assert gw.customers.check_owner(cid, "acme", max_age=60) == cid
    assert sent(emulator, "GET", f"/v1/customers/{cid}") == []
    with pytest.raises(CustomerMismatch):  # another account is asked about in Stripe, and refused
        gw.customers.check_owner(cid, "globex", max_age=60)
    assert len(sent(emulator, "GET", f"/v1/customers/{cid}")) == 1


def test_check_owner_asks_again_once_the_check_is_older_than_max_age(gw, emulator, monkeypatch):
    import gateways.stripe.customers as customers_mod

    now = [1000.0]
    monkeypatch.setattr(customers_mod.time, "monotonic", lambda: now[0])
    cid = gw.customers.create("acme", None, "k1")
    now[0] += 59.9
    gw.customers.check_owner(cid, "acme", max_age=60)
    assert sent(emulator, "GET", f"/v1/customers/{cid}") == []
    now[0] += 0.1  # 60 s: no longer younger than max_age
    gw.customers.check_owner(cid, "acme", max_age=60)
    assert len(sent(emulator, "GET", f"/v1/customers/{cid}")) == 1


def test_a_mismatch_forgets_the_earlier_check(gw, emulator, sdk):
    cid = gw.customers.create("acme", None, "k1")
    sdk.v1.customers.update(cid, params={"metadata": {ACCOUNT_KEY: "globex"}})
    with pytest.raises(CustomerMismatch) as exc:
        gw.customers.check_owner(cid, "acme")
    assert (exc.value.customer_id, exc.value.account_id, exc.value.named) == (cid, "acme", "globex")
    sdk.v1.customers.update(cid, params={"metadata": {ACCOUNT_KEY: "acme"}})
    gw.customers.check_owner(cid, "acme", max_age=60)  # not answered from the forgotten check
    assert len(sent(emulator, "GET", f"/v1/customers/{cid}")) == 2


def test_a_deleted_or_missing_customer_names_no_account(gw, sdk):
    gone = sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "acme"}}).id
    sdk.v1.customers.delete(gone)
    for cid in (gone, "cus_never_made"):
        with pytest.raises(CustomerMismatch) as exc:
            gw.customers.check_owner(cid, "acme")
        assert exc.value.named is None and exc.value.http_status == 409


# ---- invoices -----------------------------------------------------------------------------------------
def test_an_invoice_is_created_as_a_draft_that_charges_automatically_and_names_our_invoice(gw, emulator):
    cid = gw.customers.create("acme", None, "k1")
    sid = gw.invoices.create(cid, "acme:2026-10", "acme", "2026-10", "tally:acme:2026-10:create:a1")

    [post] = sent(emulator, "POST", "/v1/invoices")
    assert post["idempotency_key"] == "tally:acme:2026-10:create:a1"
    assert post["params"] == {
        "customer": cid, "currency": "usd", "auto_advance": "false",
        "collection_method": "charge_automatically", "pending_invoice_items_behavior": "exclude",
        "description": "Tally usage 2026-10",
        "metadata": {"tally_invoice_id": "acme:2026-10", "tally_account_id": "acme", "tally_period": "2026-10"}}
    assert emulator.state.invoices[sid]["status"] == "draft"


def test_find_answers_the_customers_invoice_with_our_reference_or_none(gw, emulator):
    acme = gw.customers.create("acme", None, "k1")
    globex = gw.customers.create("globex", None, "k2")
    sep = gw.invoices.create(acme, "acme:2026-09", "acme", "2026-09", "k3")
    octo = gw.invoices.create(acme, "acme:2026-10", "acme", "2026-10", "k4")
    gw.invoices.create(globex, "globex:2026-11", "globex", "2026-11", "k5")

    assert gw.invoices.find(acme, "acme:2026-10") == octo
    assert gw.invoices.find(acme, "acme:2026-09") == sep
    assert gw.invoices.find(acme, "globex:2026-11") is None
    assert sent(emulator, "GET", "/v1/invoices")[0]["params"] == {"customer": acme, "limit": "100"}


def test_count_for_period_counts_every_customers_invoices_of_that_period(gw, emulator):
    acme = gw.customers.create("acme", None, "k1")
    globex = gw.customers.create("globex", None, "k2")
    gw.invoices.create(acme, "acme:2026-10", "acme", "2026-10", "k3")
    gw.invoices.create(globex, "globex:2026-10", "globex", "2026-10", "k4")
    gw.invoices.create(globex, "globex:2026-09", "globex", "2026-09", "k5")
    assert gw.invoices.count_for_period("2026-10") == 2
    assert gw.invoices.count_for_period("2026-08") == 0
    assert sent(emulator, "GET", "/v1/invoices")[0]["params"] == {"limit": "100"}


def test_lines_are_added_in_one_call_as_whole_cents_with_their_period_and_our_line_ids(gw, emulator):
    cid = gw.customers.create("acme", None, "k1")
    sid = gw.invoices.create(cid, "acme:2026-10", "acme", "2026-10", "k2")
    gw.invoices.add_lines(sid, [line("7", "1.25"), line("8", "0.10", quantity=Decimal("1000"),
                                                         unit_price=Decimal("0.0001"))], "k3")

    [post] = sent(emulator, "POST", f"/v1/invoices/{sid}/add_lines")
    assert post["idempotency_key"] == "k3"
    assert post["params"] == {"lines": [
        {"amount": "125", "description": "line 7", "period": {"start": "1790000000", "end": "1792000000"},
         "metadata": {"tally_line_id": "7", "quantity": "5", "unit_price": "0.25"}},
        {"amount": "10", "description": "line 8", "period": {"start": "1790000000", "end": "1792000000"},
         "metadata": {"tally_line_id": "8", "quantity": "1000", "unit_price": "0.0001"}}]}
    assert gw.invoices.line_refs(sid) == {"7", "8"}


def test_more_lines_than_stripe_allows_are_refused_before_any_call(gw, emulator):
    lines = [line(str(i)) for i in range(MAX_LINES + 1)]
    with pytest.raises(StripeRejected) as exc:
        gw.invoices.add_lines("in_x", lines, "k1")
    assert str(exc.value) == f"invoice has {MAX_LINES + 1} lines; Stripe allows at most {MAX_LINES}"
    assert emulator.requests() == []


def test_exactly_as_many_lines_as_stripe_allows_are_sent(gw, emulator):
    cid = gw.customers.create("acme", None, "k1")
    sid = gw.invoices.create(cid, "acme:2026-10", "acme", "2026-10", "k2")
    gw.invoices.add_lines(sid, [line(str(i)) for i in range(MAX_LINES)], "k3")
    assert len(gw.invoices.line_refs(sid)) == MAX_LINES  # every page of the lines read back
    assert sent(emulator, "GET", f"/v1/invoices/{sid}/lines")[0]["params"] == {"limit": "100"}


def test_line_refs_ignore_lines_without_our_line_id_and_are_empty_for_an_unknown_invoice(gw, sdk):
    cid = gw.customers.create("acme", None, "k1")
    sid = gw.invoices.create(cid, "acme:2026-10", "acme", "2026-10", "k2")
    assert gw.invoices.line_refs(sid) == set()
    sdk.raw_request("post", f"/v1/invoices/{sid}/add_lines", lines=[{"amount": 100, "description": "by hand"}])
    gw.invoices.add_lines(sid, [line("9")], "k3")
    assert gw.invoices.line_refs(sid) == {"9"}
    assert gw.invoices.line_refs("in_never_made") == set()


def test_finalize_sends_no_auto_advance_and_answers_the_new_status(gw, emulator):
    cid = gw.customers.create("acme", None, "k1")
    sid = gw.invoices.create(cid, "acme:2026-10", "acme", "2026-10", "k2")
    gw.invoices.add_lines(sid, [line("1")], "k3")
    assert gw.invoices.status(sid) == "draft"
    assert gw.invoices.finalize(sid, "tally:acme:2026-10:finalize:a1") == "open"
    [post] = sent(emulator, "POST", f"/v1/invoices/{sid}/finalize")
    assert (post["idempotency_key"], post["params"]) == ("tally:acme:2026-10:finalize:a1", {"auto_advance": "false"})
    assert gw.invoices.status(sid) == "open"
    assert gw.invoices.status("in_never_made") is None


# ---- the request path ---------------------------------------------------------------------------------
def test_a_rejected_write_is_a_rejection_named_after_the_operation_with_stripes_message(gw, emulator):
    with pytest.raises(StripeRejected) as exc:
        gw.invoices.create("cus_never_made", "acme:2026-10", "acme", "2026-10", "k1")
    assert str(exc.value).startswith("invoices.create: ") and "cus_never_made" in str(exc.value)
    assert exc.value.http_status == 400


def test_a_missing_parent_lists_nothing_and_other_list_failures_raise(gw, emulator):
    assert list(gw.core.each("invoices.lines.list", gw.core.client.v1.invoices.line_items.list,
                             "in_never_made", params={"limit": 100})) == []
    emulator.add_fault(method="GET", path="/v1/customers", kind="error_500")
    with pytest.raises(Exception) as exc:
        gw.customers.find("acme", created_since=0)
    assert str(exc.value).startswith("customers.list: Stripe error 500")


def test_every_request_is_counted_on_the_thread_that_made_it(gw):
    import threading

    assert gw.thread_calls() == 0
    cid = gw.customers.create("acme", None, "k1")
    gw.customers.check_owner(cid, "acme")
    assert gw.thread_calls() == 2
    other = []
    t = threading.Thread(target=lambda: (gw.customers.check_owner(cid, "acme"), other.append(gw.thread_calls())))
    t.start()
    t.join()
    assert other == [1] and gw.thread_calls() == 2


def test_a_429_is_resent_in_place_under_the_same_key_and_counted(gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="rate_limit_429", count=2, retry_after=0)
    cid = gw.customers.create("acme", None, "k1")
    posts = sent(emulator, "POST", "/v1/customers")
    assert [(p["status"], p["idempotency_key"]) for p in posts] == [(429, "k1"), (429, "k1"), (200, "k1")]
    assert list(emulator.state.customers) == [cid]
    assert gw.thread_calls() == 3


def test_still_rate_limited_after_every_resend_is_unreachable(gw, emulator, monkeypatch):
    import gateways.stripe.core as core

    monkeypatch.setattr(core, "MAX_429_RETRIES", 2)
    emulator.add_fault(method="POST", path="/v1/customers", kind="rate_limit_429", count=3, retry_after=0)
    with pytest.raises(StripeUnreachable) as exc:
        gw.customers.create("acme", None, "k1")
    assert exc.value.http_status == 429
    assert [p["status"] for p in sent(emulator, "POST", "/v1/customers")] == [429, 429, 429]
    assert emulator.state.customers == {}


def test_a_lost_response_is_unreachable(gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="drop_after_commit")
    with pytest.raises(StripeUnreachable) as exc:
        gw.customers.create("acme", None, "k1")
    assert str(exc.value).startswith("customers.create: no response from Stripe")


# ---- meters -------------------------------------------------------------------------------------------
def test_a_meter_sums_whole_values_per_customer_by_hour(gw, emulator):
    mid = gw.meters.create(event_name="executions", display_name="Executions", key="executions",
                           idempotency_key="tally:meter:executions:a1")
    [post] = sent(emulator, "POST", "/v1/billing/meters")
    assert post["idempotency_key"] == "tally:meter:executions:a1"
    assert post["params"] == {
        "display_name": "Executions", "event_name": "executions", "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "value_settings": {"event_payload_key": "value"}, "event_time_window": "hour"}
    assert gw.meters.find("executions") == mid
    assert gw.meters.find("tokens") is None
    assert sent(emulator, "GET", "/v1/billing/meters")[0]["params"] == {"status": "active", "limit": "100"}


def test_a_meter_event_carries_the_customer_and_value_and_answers_its_identifier(gw, emulator):
    gw.meters.create(event_name="executions", display_name="Executions", key="executions", idempotency_key="k0")
    cid = gw.customers.create("acme", None, "k1")
    ts = int(emulator.now())
    assert gw.meters.report(event_name="executions", customer_id=cid, value=42, identifier="acme:h1",
                            timestamp=ts, idempotency_key="k2") == "acme:h1"
    [post] = sent(emulator, "POST", "/v1/billing/meter_events")
    assert post["idempotency_key"] == "k2"
    assert post["params"] == {"event_name": "executions", "identifier": "acme:h1", "timestamp": str(ts),
                              "payload": {"stripe_customer_id": cid, "value": "42"}}


def test_a_repeated_identifier_is_a_duplicate_and_a_too_old_event_is_too_old(gw, emulator):
    gw.meters.create(event_name="executions", display_name="Executions", key="executions", idempotency_key="k0")
    cid = gw.customers.create("acme", None, "k1")
    ts = int(emulator.now())
    gw.meters.report(event_name="executions", customer_id=cid, value=1, identifier="acme:h1", timestamp=ts,
                     idempotency_key="k2")
    with pytest.raises(MeterEventDuplicate) as dup:
        gw.meters.report(event_name="executions", customer_id=cid, value=1, identifier="acme:h1", timestamp=ts,
                         idempotency_key="k3")
    assert dup.value.http_status == 400 and "acme:h1" in str(dup.value)
    with pytest.raises(MeterEventTooOld) as old:
        gw.meters.report(event_name="executions", customer_id=cid, value=1, identifier="acme:h0",
                         timestamp=ts - 40 * 86400, idempotency_key="k4")
    assert old.value.http_status == 400 and not isinstance(old.value, MeterEventDuplicate)
    assert isinstance(dup.value.__cause__, stripe.InvalidRequestError)
    assert isinstance(old.value.__cause__, stripe.InvalidRequestError)


def test_another_rejected_meter_event_is_neither_duplicate_nor_too_old(gw, emulator):
    with pytest.raises(StripeRejected) as exc:
        gw.meters.report(event_name="no-such-meter", customer_id="cus_x", value=1, identifier="acme:h1",
                         timestamp=int(emulator.now()), idempotency_key="k1")
    assert type(exc.value) is StripeRejected


def test_names_identifier_reads_a_400_naming_the_identifier_parameter_or_quoting_it():
    from gateways.stripe.meters import _names_identifier

    def rejected(status, message, param=None):
        err = StripeRejected(message, status)
        err.__cause__ = stripe.InvalidRequestError(message, param, http_status=status)
        return err

    assert _names_identifier(rejected(400, "exists", param="identifier"), "acme:h1")
    assert _names_identifier(rejected(400, "event acme:h1 exists"), "acme:h1")
    assert not _names_identifier(rejected(400, "bad value", param="value"), "acme:h1")
    assert not _names_identifier(rejected(404, "exists", param="identifier"), "acme:h1")
    assert not _names_identifier(rejected(402, "event acme:h1"), "acme:h1")


def test_a_meter_summary_is_the_rounded_sum_over_the_window_for_the_customer(gw, emulator):
    mid = gw.meters.create(event_name="executions", display_name="Executions", key="executions",
                           idempotency_key="k0")
    emulator.state.meter_settings["summary_lag_seconds"] = 0
    acme = gw.customers.create("acme", None, "k1")
    globex = gw.customers.create("globex", None, "k2")
    start = (int(emulator.now()) // 3600 - 2) * 3600
    for i, (cid, v) in enumerate([(acme, 3), (acme, 4), (globex, 100)]):
        gw.meters.report(event_name="executions", customer_id=cid, value=v, identifier=f"e{i}",
                         timestamp=start + 60 * i, idempotency_key=f"m{i}")
    assert gw.meters.summary(mid, acme, start, start + 3 * 3600) == 7
    assert gw.meters.summary(mid, globex, start, start + 3 * 3600) == 100
    [get] = [r for r in emulator.requests() if r["path"].endswith("/event_summaries")][:1]
    assert get["params"] == {"customer": acme, "start_time": str(start), "end_time": str(start + 3 * 3600),
                             "limit": "100"}


def test_meter_events_are_paced_under_the_workers_rate(emulator, monkeypatch):
    import gateways.stripe.core as core

    waits = []
    monkeypatch.setattr(core.time, "sleep", waits.append)
    gw = StripeGateway(Settings(stripe_api_base=emulator.url, stripe_max_network_retries=0,
                                meters_events_per_second=4))
    assert gw.meters.pacer.per_second == 4
    for i in range(3):
        with pytest.raises(StripeRejected):
            gw.meters.report(event_name="none", customer_id="cus_x", value=1, identifier=f"e{i}",
                             timestamp=int(emulator.now()), idempotency_key=f"k{i}")
    assert len(waits) == 2 and all(0.2 < w <= 0.5 for w in waits)


# ---- failures name the operation that met them ----------------------------------------------------------
@pytest.mark.parametrize("op, method, path, act", [
    ("customers.create", "POST", "/v1/customers", lambda gw: gw.customers.create("acme", None, "k")),
    ("customers.list", "GET", "/v1/customers", lambda gw: gw.customers.find("acme", 0)),
    ("customers.retrieve", "GET", "/v1/customers/cus_x", lambda gw: gw.customers.check_owner("cus_x", "acme")),
    ("invoices.create", "POST", "/v1/invoices", lambda gw: gw.invoices.create("cus_x", "r", "a", "2026-10", "k")),
    ("invoices.list", "GET", "/v1/invoices", lambda gw: gw.invoices.find("cus_x", "r")),
    ("invoices.list", "GET", "/v1/invoices", lambda gw: gw.invoices.count_for_period("2026-10")),
    ("invoices.add_lines", "POST", "/v1/invoices/in_x/add_lines",
     lambda gw: gw.invoices.add_lines("in_x", [line("1")], "k")),
    ("invoices.lines.list", "GET", "/v1/invoices/in_x/lines", lambda gw: gw.invoices.line_refs("in_x")),
    ("invoices.retrieve", "GET", "/v1/invoices/in_x", lambda gw: gw.invoices.status("in_x")),
    ("invoices.finalize", "POST", "/v1/invoices/in_x/finalize", lambda gw: gw.invoices.finalize("in_x", "k")),
    ("billing.meters.create", "POST", "/v1/billing/meters",
     lambda gw: gw.meters.create(event_name="e", display_name="E", key="e", idempotency_key="k")),
    ("billing.meters.list", "GET", "/v1/billing/meters", lambda gw: gw.meters.find("e")),
    ("billing.meter_events.create", "POST", "/v1/billing/meter_events",
     lambda gw: gw.meters.report(event_name="e", customer_id="cus_x", value=1, identifier="i", timestamp=1,
                                 idempotency_key="k")),
    ("billing.meters.event_summaries.list", "GET", "/v1/billing/meters/mtr_x/event_summaries",
     lambda gw: gw.meters.summary("mtr_x", "cus_x", 0, 3600)),
])
def test_a_stripe_failure_names_the_operation_that_met_it(gw, emulator, op, method, path, act):
    emulator.add_fault(method=method, path=path, kind="error_500")
    with pytest.raises(StripeFailed) as exc:
        act(gw)
    assert str(exc.value).startswith(f"{op}: Stripe error 500")


def test_a_too_old_meter_event_keeps_stripes_message(gw, emulator):
    gw.meters.create(event_name="executions", display_name="Executions", key="executions", idempotency_key="k0")
    with pytest.raises(MeterEventTooOld) as exc:
        gw.meters.report(event_name="executions", customer_id="cus_x", value=1, identifier="acme:h0",
                         timestamp=int(emulator.now()) - 40 * 86400, idempotency_key="k1")
    assert str(exc.value).startswith("billing.meter_events.create: ") and "too far in the past" in str(exc.value)


def test_a_rejection_whose_sdk_error_has_no_parameter_is_read_by_its_message():
    from gateways.stripe.meters import _names_identifier

    err = StripeRejected("op: Keys for idempotent requests can only be used with the same parameters", 400)
    err.__cause__ = stripe.IdempotencyError("Keys for idempotent requests ...", http_status=400)
    assert not _names_identifier(err, "acme:h1")
    err2 = StripeRejected("op: acme:h1 was sent before", 400)
    err2.__cause__ = stripe.IdempotencyError("acme:h1 was sent before", http_status=400)
    assert _names_identifier(err2, "acme:h1")


def test_a_meter_summary_adds_up_every_summary_stripe_lists():
    from gateways.stripe.meters import Meters

    class Core:
        client = SimpleNamespace(v1=SimpleNamespace(billing=SimpleNamespace(meters=SimpleNamespace(
            event_summaries=SimpleNamespace(list=None)))))

        def each(self, op, fn, *args, params):
            return iter([SimpleNamespace(aggregated_value=2.4), SimpleNamespace(aggregated_value=3.4)])

    assert Meters(Core()).summary("mtr", "cus", 0, 60) == 6  # 5.8, rounded


# ---- Connect --------------------------------------------------------------------------------------------
def test_a_creators_express_account_asks_for_transfers_and_names_the_creator(gw, emulator):
    acct = gw.connect.create_account("cr1", "cr1@example.test", "tally:cr1:account:a1")
    [post] = sent(emulator, "POST", "/v1/accounts")
    assert post["idempotency_key"] == "tally:cr1:account:a1"
    assert post["params"] == {"type": "express", "email": "cr1@example.test",
                              "capabilities": {"transfers": {"requested": "true"}},
                              "metadata": {"tally_creator_id": "cr1"}}
    assert acct in emulator.state.accounts


def test_find_account_answers_the_creators_account_or_none(gw, emulator):
    gw.connect.create_account("cr0", "a@example.test", "k0")
    acct = gw.connect.create_account("cr1", "b@example.test", "k1")
    assert gw.connect.find_account("cr1") == acct
    assert gw.connect.find_account("cr9") is None
    assert sent(emulator, "GET", "/v1/accounts")[0]["params"] == {"limit": "100"}


def test_an_accounts_state_is_read_from_stripe_and_a_missing_account_is_none(gw, emulator):
    acct = gw.connect.create_account("cr1", "b@example.test", "k1")
    assert gw.connect.retrieve_account(acct) == AccountState(acct, False, False, False, "pending")
    emulator.enable_account(acct)
    assert gw.connect.retrieve_account(acct) == AccountState(acct, True, True, True, "active")
    assert gw.connect.retrieve_account("acct_never_made") is None


def test_account_state_reads_a_webhook_dict_and_an_sdk_object_alike():
    payload = {"id": "acct_1", "charges_enabled": True, "payouts_enabled": False, "details_submitted": True,
               "capabilities": {"transfers": "active"}}
    assert account_state(payload) == AccountState("acct_1", True, False, True, "active")
    obj = SimpleNamespace(id="acct_2", charges_enabled=0, payouts_enabled=1, details_submitted=None,
                          capabilities=SimpleNamespace(transfers="pending"))
    assert account_state(obj) == AccountState("acct_2", False, True, False, "pending")
    assert account_state({"id": "acct_3"}) == AccountState("acct_3", False, False, False, "inactive")
    assert account_state(SimpleNamespace(id="acct_4")).transfers == "inactive"
    assert account_state({"id": "acct_5", "capabilities": {}}).transfers == "inactive"
    no_transfers = SimpleNamespace(id="acct_6", capabilities=SimpleNamespace())  # an SDK object without it
    assert account_state(no_transfers).transfers == "inactive"


def test_an_onboarding_link_is_made_for_the_account_with_both_urls(gw, emulator):
    acct = gw.connect.create_account("cr1", "b@example.test", "k1")
    url = gw.connect.onboarding_link(acct, "https://tally.test/refresh", "https://tally.test/done")
    assert url.startswith("https://") and acct in url
    [post] = sent(emulator, "POST", "/v1/account_links")
    assert post["params"] == {"account": acct, "type": "account_onboarding",
                              "refresh_url": "https://tally.test/refresh", "return_url": "https://tally.test/done"}


def test_a_transfer_carries_the_payout_as_group_and_metadata_in_whole_cents(gw, emulator):
    acct = gw.connect.create_account("cr1", "b@example.test", "k1")
    emulator.enable_account(acct)
    emulator.set_platform_balance(10**9)
    tr = gw.connect.create_transfer(payout_id="po1", destination=acct, amount=Decimal("12.35"),
                                    idempotency_key="tally:po1:transfer:a1")
    [post] = sent(emulator, "POST", "/v1/transfers")
    assert post["idempotency_key"] == "tally:po1:transfer:a1"
    assert post["params"] == {"amount": "1235", "currency": "usd", "destination": acct, "transfer_group": "po1",
                              "description": "Tally creator payout po1", "metadata": {"tally_payout_id": "po1"}}
    assert tr in emulator.state.transfers
    assert gw.connect.find_transfer("po1") == tr
    assert gw.connect.find_transfer("po2") is None
    assert sent(emulator, "GET", "/v1/transfers")[0]["params"] == {"transfer_group": "po1", "limit": "100"}


def test_find_transfer_ignores_a_transfer_of_the_group_that_names_another_payout(gw, emulator, sdk):
    acct = gw.connect.create_account("cr1", "b@example.test", "k1")
    emulator.enable_account(acct)
    emulator.set_platform_balance(10**9)
    sdk.v1.transfers.create(params={"amount": 100, "currency": "usd", "destination": acct, "transfer_group": "po1",
                                    "metadata": {"tally_payout_id": "other"}})
    assert gw.connect.find_transfer("po1") is None
    mine = gw.connect.create_transfer(payout_id="po1", destination=acct, amount=Decimal("1"), idempotency_key="k2")
    assert gw.connect.find_transfer("po1") == mine


def test_a_reversal_sends_cents_and_the_reason_cut_to_500_characters(gw, emulator):
    acct = gw.connect.create_account("cr1", "b@example.test", "k1")
    emulator.enable_account(acct)
    emulator.set_platform_balance(10**9)
    tr = gw.connect.create_transfer(payout_id="po1", destination=acct, amount=Decimal("5"), idempotency_key="k2")
    rev = gw.connect.reverse_transfer(tr, Decimal("1.50"), "r" * 501, "tally:po1:reverse:a1")
    [post] = sent(emulator, "POST", f"/v1/transfers/{tr}/reversals")
    assert post["idempotency_key"] == "tally:po1:reverse:a1"
    assert post["params"] == {"amount": "150", "metadata": {"tally_reason": "r" * 500}}
    assert rev.startswith("trr_")


@pytest.mark.parametrize("op, method, path, act", [
    ("accounts.create", "POST", "/v1/accounts", lambda gw: gw.connect.create_account("c", "e@x.test", "k")),
    ("accounts.list", "GET", "/v1/accounts", lambda gw: gw.connect.find_account("c")),
    ("accounts.retrieve", "GET", "/v1/accounts/acct_x", lambda gw: gw.connect.retrieve_account("acct_x")),
    ("transfers.create", "POST", "/v1/transfers",
     lambda gw: gw.connect.create_transfer(payout_id="p", destination="acct_x", amount=Decimal(1), idempotency_key="k")),
    ("transfers.list", "GET", "/v1/transfers", lambda gw: gw.connect.find_transfer("p")),
    ("transfers.reverse", "POST", "/v1/transfers/tr_x/reversals",
     lambda gw: gw.connect.reverse_transfer("tr_x", Decimal(1), "r", "k")),
    ("checkout.sessions.create", "POST", "/v1/checkout/sessions",
     lambda gw: gw.checkout.create_session(purchase_id="p", account_id="a", description="d", price=Decimal(1),
                                           success_url="https://s", cancel_url="https://c", customer=None,
                                           idempotency_key="k")),
    ("checkout.sessions.retrieve", "GET", "/v1/checkout/sessions/cs_x", lambda gw: gw.checkout.retrieve("cs_x")),
    ("checkout.sessions.list", "GET", "/v1/checkout/sessions", lambda gw: gw.checkout.find("p", 0)),
])
def test_a_connect_or_checkout_failure_names_the_operation_that_met_it(gw, emulator, op, method, path, act):
    emulator.add_fault(method=method, path=path, kind="error_500")
    with pytest.raises(StripeFailed) as exc:
        act(gw)
    assert str(exc.value).startswith(f"{op}: Stripe error 500")


# ---- Checkout -------------------------------------------------------------------------------------------
def session(gw, purchase: str = "pu1", customer: str | None = None, key: str = "k1") -> CheckoutSession:
    return gw.checkout.create_session(purchase_id=purchase, account_id="acme", description="100 credits",
                                      price=Decimal("9.99"), success_url="https://tally.test/ok",
                                      cancel_url="https://tally.test/cancel", customer=customer, idempotency_key=key)


def test_a_checkout_session_pays_one_package_in_cents_and_names_the_purchase_three_ways(gw, emulator):
    s = session(gw, key="tally:pu1:checkout:a1")
    [post] = sent(emulator, "POST", "/v1/checkout/sessions")
    assert post["idempotency_key"] == "tally:pu1:checkout:a1"
    assert post["params"] == {
        "mode": "payment", "client_reference_id": "pu1",
        "line_items": [{"quantity": "1", "price_data": {"currency": "usd", "unit_amount": "999",
                                                        "product_data": {"name": "100 credits"}}}],
        "success_url": "https://tally.test/ok", "cancel_url": "https://tally.test/cancel",
        "metadata": {"tally_purchase_id": "pu1", "tally_account_id": "acme"},
        "payment_intent_data": {"metadata": {"tally_purchase_id": "pu1"}}}
    assert (s.status, s.payment_status, s.purchase_id, s.payment_intent) == ("open", "unpaid", "pu1", None)
    assert s.id.startswith("cs_") and s.url and s.id in s.url


def test_a_checkout_session_for_a_known_customer_names_it(gw, emulator):
    cid = gw.customers.create("acme", None, "k0")
    session(gw, customer=cid)
    assert sent(emulator, "POST", "/v1/checkout/sessions")[0]["params"]["customer"] == cid


def test_a_session_is_retrieved_found_by_purchase_and_shows_its_payment(gw, emulator):
    s = session(gw)
    session(gw, purchase="pu2", key="k2")
    assert gw.checkout.retrieve(s.id) == s
    assert gw.checkout.retrieve("cs_never_made") is None
    assert gw.checkout.find("pu1", 0) == s
    assert gw.checkout.find("pu9", 0) is None
    emulator.advance_clock(100)
    assert gw.checkout.find("pu1", int(emulator.now())) is None  # created before the window
    assert sent(emulator, "GET", "/v1/checkout/sessions")[0]["params"] == {"limit": "100", "created": {"gte": "0"}}
    emulator.settle_checkout(s.id)
    paid = gw.checkout.retrieve(s.id)
    assert (paid.status, paid.payment_status, paid.purchase_id) == ("complete", "paid", "pu1")
    assert paid.payment_intent.startswith("pi_")


def test_session_of_reads_a_webhook_dict_and_an_sdk_object_and_falls_back_to_the_reference():
    payload = {"id": "cs_1", "url": None, "status": "complete", "payment_status": "paid",
               "metadata": {"tally_purchase_id": "pu1"}, "client_reference_id": "other", "payment_intent": "pi_1"}
    assert session_of(payload) == CheckoutSession("cs_1", None, "complete", "paid", "pu1", "pi_1")
    assert session_of({**payload, "metadata": None}).purchase_id == "other"
    assert session_of({**payload, "metadata": {}}).purchase_id == "other"
    obj = stripe.StripeObject.construct_from({**payload, "metadata": {"tally_purchase_id": "pu2"}}, "sk_test")
    assert session_of(obj) == CheckoutSession("cs_1", None, "complete", "paid", "pu2", "pi_1")
    bare = stripe.StripeObject.construct_from({"id": "cs_2", "client_reference_id": "pu3"}, "sk_test")
    assert session_of(bare) == CheckoutSession("cs_2", None, None, None, "pu3", None)
