"""How the emulator is served: the lost-response fault at the TCP level, HTTP framing, routing misses,
lifecycle, and that a new resource module gets the whole pipeline."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time

import pytest
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from stripe_emulator import EmulatorServer, pipeline, start_emulator
from stripe_emulator.connection import DropConnection, droppable
from stripe_emulator.core.ids import new_id
from stripe_emulator.core.resource import Operation, Resource
from stripe_emulator.core.state import Store
from stripe_emulator.resources import RESOURCES

from .helpers import control, raw

FORM = {"Authorization": "Bearer sk_test_serving", "Content-Type": "application/x-www-form-urlencoded"}


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_drop_after_commit_closes_the_connection_without_sending_a_byte(emu, caplog):
    emu.add_fault(method="POST", path="/v1/customers", kind="drop_after_commit")
    body = b"name=dropped"
    with socket.create_connection(("127.0.0.1", emu.port), timeout=10) as sock, \
            caplog.at_level(logging.WARNING):
        sock.sendall(b"POST /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk_test_drop\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert _read_all(sock) == b""  # EOF, not a 500 or any other answer
    assert [c["name"] for c in emu.state.customers.values()] == ["dropped"]  # committed
    [logged] = emu.requests()
    assert (logged["status"], logged["executed"], logged["fault"]) == (200, True, "drop_after_commit")
    assert not [r for r in caplog.records if r.name.startswith(("uvicorn", "stripe_emulator"))]


def test_the_sdk_sees_a_dropped_response_as_a_connection_error_and_its_retry_replays(make_client, emu,
                                                                                     fast_retries):
    emu.add_fault(method="POST", path="/v1/customers", kind="drop_after_commit")
    with pytest.raises(stripe.APIConnectionError):
        make_client(max_network_retries=0).customers.create(params={"name": "a"},
                                                           options={"idempotency_key": "drop-1"})
    again = make_client(max_network_retries=0).customers.create(params={"name": "a"},
                                                                options={"idempotency_key": "drop-1"})
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert list(emu.state.customers) == [again.id]


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def test_drop_connection_works_on_both_uvicorn_http_protocols(base):
    async def hang_up(request):
        return DropConnection()

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/", hang_up)]), http=droppable(base),
                                               lifespan="off", log_config=None))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started:
                assert time.monotonic() < deadline and thread.is_alive()
                time.sleep(0.01)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_all(sock) == b""
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_chunked_request_bodies_are_decoded(emu):
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    parts = [b"name=chunked&", b"metadata[k]=", b"v"]
    conn.request("POST", "/v1/customers", body=iter(parts), headers=FORM, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    [cus] = emu.state.customers.values()
    assert (cus["name"], cus["metadata"]) == ("chunked", {"k": "v"})


def test_a_body_over_the_limit_is_refused_with_413_and_executes_nothing(emu, monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_BODY", 1000)
    status, body, headers = raw(emu, "POST", "/v1/customers", {"name": "x" * 2000})  # Content-Length
    assert status == 413 and body["error"]["message"] == "Request body too large."
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)  # chunked: no length up front
    conn.request("POST", "/v1/customers", body=iter([b"name=", b"x" * 600, b"x" * 600]), headers=FORM,
                 encode_chunked=True)
    assert conn.getresponse().status == 413
    assert emu.state.customers == {}
    assert raw(emu, "POST", "/v1/customers", {"name": "small"})[0] == 200


def test_a_known_path_with_an_unknown_method_is_a_stripe_404_logged_under_its_template(emu):
    status, body, _ = raw(emu, "DELETE", "/v1/transfers/tr_123")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    assert "Unrecognized request URL (DELETE: /v1/transfers/tr_123)" in body["error"]["message"]
    assert raw(emu, "DELETE", "/v1/transfers/tr_123", api_key=None)[0] == 401  # auth comes first
    assert [(r["template"], r["status"]) for r in emu.requests()] == [
        ("/v1/transfers/{id}", 404), ("/v1/transfers/{id}", 401)]
    status, body = control(emu, "DELETE", "/_emulator/health")
    assert status == 404 and body["error"]["message"] == "Unknown control endpoint: DELETE /_emulator/health"


def test_every_response_carries_a_request_id_and_the_stripe_version(emu):
    for status, _, headers in (raw(emu, "GET", "/v1/customers"), raw(emu, "GET", "/v1/nope"),
                               raw(emu, "GET", "/v1/customers", api_key=None)):
        assert headers["Request-Id"].startswith("req_") and headers["Stripe-Version"], status


def test_port_zero_serves_on_a_free_port_until_stopped():
    emu = start_emulator(port=0)
    try:
        assert emu.port > 0 and emu.url == f"http://127.0.0.1:{emu.port}"
        assert control(emu, "GET", "/_emulator/health")[1]["url"] == emu.url
    finally:
        emu.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=2).close()


def _create_gadget(st, req):
    gadget = {"id": new_id("gdg"), "object": "gadget", "name": req.params.get("name")}
    st.gadgets[gadget["id"]] = gadget
    return gadget


GADGETS = Resource("gadgets", stores=(Store("gadgets"),), operations=(
    Operation("POST", "/v1/gadgets", _create_gadget),
))


def test_a_new_resource_module_gets_auth_idempotency_logging_and_the_state_file(tmp_path):
    path = str(tmp_path / "state.json")
    with EmulatorServer(port=0, state_file=path, resources=(*RESOURCES, GADGETS)).start() as emu:
        assert raw(emu, "POST", "/v1/gadgets", {"name": "g"}, api_key=None)[0] == 401
        first = raw(emu, "POST", "/v1/gadgets", {"name": "g"}, {"Idempotency-Key": "g-1"})
        again = raw(emu, "POST", "/v1/gadgets", {"name": "g"}, {"Idempotency-Key": "g-1"})
        assert first[0] == 200 and again[1] == first[1] and again[2]["Idempotent-Replayed"] == "true"
        assert emu.stats()["objects"]["gadgets"] == 1
        assert [r["template"] for r in emu.requests()] == ["/v1/gadgets"] * 3
    with EmulatorServer(port=0, state_file=path, resources=(*RESOURCES, GADGETS)) as reloaded:
        assert list(reloaded.state.gadgets) == [first[1]["id"]]
