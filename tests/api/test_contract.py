"""Contract tests generated from /openapi.json (schemathesis): valid and invalid requests to every
operation, with a valid key, for random accounts and for an existing one; none may answer 5xx.
Bounded: a few dozen examples per operation (about 15 s in all).

Driven through schemathesis' strategies directly (its lazy pytest fixture does not run on pytest 9).
"""

from __future__ import annotations

from collections import Counter

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from models.db import libpq_url
from tests.api.conftest import NOW
from tests.conftest import all_tables
from tests.factories import OCT_START, event, ingest

EXAMPLES = 25


@pytest.fixture(scope="module")
def contract(api_server):
    with psycopg.connect(libpq_url(api_server.database_url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(all_tables(conn))} RESTART IDENTITY CASCADE")
    api_server.clock.now = NOW
    key = api_server.platform("contract")
    api_server.account("a1", "pro", platform="contract", overage=True)
    ingest(api_server.database_url, [event("a1", i, OCT_START) for i in range(20)], now=NOW)
    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")
    return schema, key


BODY_ACCOUNT = {"body": "a1"}


def _body_properties(schema, operation) -> set[str]:
    """The top-level properties of the operation's JSON request body (refs resolved)."""
    body = operation.definition.raw.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = body.get("schema", {}).get("$ref", "")
    if not ref.startswith("#/components/schemas/"):
        return set()
    found = schema.raw_schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return set(found.get("properties", {}))


def _with_body_account(case):
    if isinstance(case.body, dict) and "account_id" in case.body:
        case.body["account_id"] = "a1"
    return case


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_generated_request_makes_the_api_fail(contract, mode):
    schema, key = contract
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    failures: list[str] = []
    statuses: Counter = Counter()

    for operation in operations:
        variants = [{}]
        if "{account_id}" in operation.path:
            variants.append({"account_id": "a1"})  # an account of this platform: the handlers run for real
        if "account_id" in _body_properties(schema, operation):
            variants.append(BODY_ACCOUNT)  # the same, for an account named in the request body
        for path_parameters in variants:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=(
                path_parameters if path_parameters and path_parameters is not BODY_ACCOUNT else None))
            if path_parameters is BODY_ACCOUNT:
                strategy = strategy.map(_with_body_account)

            @given(case=strategy)
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def exercise(case):
                response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=30)
                statuses[(operation.label, response.status_code)] += 1
                if response.status_code >= 500:
                    failures.append(f"{response.status_code} for {case.as_curl_command()}: {response.text[:300]}")

            try:
                exercise()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # e.g. /healthz: nothing to make invalid
    assert not failures, "\n".join(failures[:5])
    if mode is GenerationMode.POSITIVE:  # the existing account was reached on every account route
        reached = {label for (label, status), _ in statuses.items() if status in (200, 201)}
        # Stripe's webhook endpoint is authenticated by Stripe's signature, which no generator can forge.
        signed_by_stripe = {op.label for op in operations if op.path.startswith("/v1/stripe/")}
        assert signed_by_stripe and all(statuses[(label, 400)] for label in signed_by_stripe), statuses
        # ids no generator can guess (a period with an invoice, a contract of the account) are left out, and so
        # is a contract the catalog accepts (its minimums, a start in an open period): test_contracts_api.py.
        # A route needs an account of this platform named in its JSON body and a CSV import a header line:
        # no generator finds them (tests/api/test_routing_api.py reaches both).
        unguessable = ("{period}", "{contract_id}", "/contracts")
        body_named = {"POST /v1/route", "POST /v1/routing/scores"}
        # a credit package the catalog sells is a name no generator finds (tests/api/test_credits_api.py buys one)
        body_named |= {"POST /v1/accounts/{account_id}/credits/purchases"}
        assert {op.label for op in operations if not any(p in op.path for p in unguessable)} - signed_by_stripe \
            - body_named <= reached, statuses
