"""HTTP front of the emulator: stdlib ThreadingHTTPServer, HTTP/1.1 keep-alive, Stripe idempotency,
fault injection and the ``/_emulator/`` control plane."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

from . import api
from .errors import StripeError
from .forms import decode_form
from .state import FAULT_KINDS, EmulatorState

log = logging.getLogger("stripe_emulator")

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large", 414: "URI Too Long",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}
MAX_BODY = 10 * 1024 * 1024
CONTROL_PREFIX = "/_emulator/"


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


class _Response:
    __slots__ = ("status", "body", "headers", "drop")

    def __init__(self, status: int, body: bytes, headers: dict | None = None, drop: bool = False):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.drop = drop


def _error_response(err: StripeError) -> _Response:
    return _Response(err.status, _dumps(err.body()), dict(err.headers))


class _Headers(dict):
    """Request headers with lower-cased names (case-insensitive ``get``)."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name):
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name):
        return dict.__contains__(self, name.lower())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, handler, emulator: "EmulatorServer"):
        self.emulator = emulator
        self._conns: set = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request_thread(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.discard(request)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stripe-emulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this

    # -- plumbing --------------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        """A lean HTTP/1.1 request parser (the stdlib one goes through email.parser, which dominates
        the per-request CPU cost). Supports keep-alive, Content-Length and chunked bodies."""
        try:
            line = self.rfile.readline(65537)
            if not line:
                self.close_connection = True
                return
            if len(line) > 65536:
                self._reject(414, "Request line too long.")
                return
            parts = line.decode("latin-1").split()
            if not parts:  # stray CRLF between requests
                return
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                self._reject(400, "Malformed request line.")
                return
            self.command, self.path, self.request_version = parts
            self.requestline = " ".join(parts)
            headers = _Headers()
            for _ in range(101):
                h = self.rfile.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, sep, value = h.decode("latin-1").partition(":")
                if not sep:
                    self._reject(400, "Malformed header line.")
                    return
                headers[name.strip().lower()] = value.strip()
            else:
                self._reject(431, "Too many headers.")
                return
            self.headers = headers
            if (headers.get("expect", "").lower() == "100-continue"
                    and self.request_version == "HTTP/1.1"):
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()
            conn = headers.get("connection", "").lower()
            if self.request_version == "HTTP/1.1":
                self.close_connection = conn == "close"
            else:
                self.close_connection = conn != "keep-alive"
            self._dispatch(self.command)
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def _reject(self, status: int, message: str) -> None:
        self.close_connection = True
        try:
            self._send(_Response(status, _dumps({"error": {"type": "invalid_request_error",
                                                           "message": message}})))
        except OSError:
            pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks, total = [], 0
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise StripeError(413, "Request body too large.")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        n = int(self.headers.get("content-length") or 0)
        if n > MAX_BODY:
            raise StripeError(413, "Request body too large.")
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, resp: _Response, extra: dict | None = None) -> None:
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(resp.body)),
            "Request-Id": (extra or {}).get("Request-Id") or EmulatorState.new_id("req"),
            "Stripe-Version": "2026-10-28.endive",
        }
        headers.update(resp.headers)
        if extra:
            headers.update(extra)
        if self.close_connection:
            headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + resp.body
        self.wfile.write(data)
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection without sending a response."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
        except StripeError as err:
            self.close_connection = True
            self._send(_error_response(err))
            return
        except (OSError, ValueError):
            self.close_connection = True
            return
        raw_path = self.path
        path, _, query = raw_path.partition("?")
        emu: EmulatorServer = self.server.emulator  # type: ignore[attr-defined]
        try:
            if path.startswith(CONTROL_PREFIX):
                self._send(emu._control(method, path, query, body))
            else:
                emu._api(self, method, path, query, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # pragma: no cover - last resort: never kill the connection thread silently
            log.exception("unhandled error for %s %s", method, raw_path)
            self.close_connection = True
            try:
                self._send(_Response(500, _dumps({"error": {"type": "api_error",
                                                            "message": "Emulator internal error."}})))
            except OSError:
                pass


class EmulatorServer:
    """A running (or startable) emulator. ``start()`` serves in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state_file: str | None = None,
                 save_interval: float = 1.0):
        self.host = host
        self.state = EmulatorState()
        self.state_file = state_file
        self.save_interval = save_interval
        self.router = api.Router()
        if state_file:
            self.state.load(state_file)
        self._httpd = _Server((host, port), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._saver: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> "EmulatorServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"stripe-emulator:{self.port}", daemon=True)
        self._thread.start()
        self._saver = threading.Thread(target=self._save_loop, name="stripe-emulator-saver", daemon=True)
        self._saver.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_all_connections()
        if self._saver is not None:
            self._saver.join(timeout=5)
        self.save()

    def __enter__(self) -> "EmulatorServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def save(self) -> None:
        if self.state_file:
            self.state.save(self.state_file)

    def _save_loop(self) -> None:
        """Save when dirty, at most every ``save_interval`` s; a slow save (big state) backs off to keep
        the serialization (which holds the GIL) under ~10% of the time."""
        wait = self.save_interval
        last_prune = time.monotonic()
        while not self._stopping.wait(wait):
            wait = self.save_interval
            if time.monotonic() - last_prune > 60:
                last_prune = time.monotonic()
                self.state.prune_idempotency()
            if self.state_file and self.state.dirty:
                t0 = time.monotonic()
                try:
                    self.save()
                except Exception:  # pragma: no cover
                    log.exception("saving state file %s failed", self.state_file)
                wait = max(self.save_interval, 10 * (time.monotonic() - t0))

    # ---- Python control API ----------------------------------------------------------------------
    def add_fault(self, method: str = "POST", path: str = "*", kind: str = "error_500", count: int = 1,
                  retry_after: float = 1, seconds: float = 1.0) -> dict:
        return self.state.add_fault(method=method, path=path, kind=kind, count=count,
                                    retry_after=retry_after, seconds=seconds)

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def advance_clock(self, seconds: float) -> float:
        return self.state.advance_clock(seconds)

    def now(self) -> float:
        return self.state.now()

    def reset(self) -> None:
        self.state.reset()

    def enable_account(self, account_id: str, charges_enabled: bool = True, payouts_enabled: bool = True,
                       transfers: bool | None = None) -> dict:
        with self.state.lock:
            return json.loads(_dumps(api.set_account_enabled(self.state, account_id, charges_enabled,
                                                             payouts_enabled, transfers)))

    def requests(self, since: int = 0) -> list[dict]:
        return self.state.requests_since(since)

    def stats(self) -> dict:
        return self.state.stats()

    # ---- API requests ----------------------------------------------------------------------------
    @staticmethod
    def _api_key(headers) -> str | None:
        auth = headers.get("Authorization") or ""
        scheme, _, cred = auth.partition(" ")
        key = None
        if scheme.lower() == "bearer":
            key = cred.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(cred.strip()).decode("utf-8").split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = None
        if key and key.startswith("sk_test_"):
            return key
        return None

    def _api(self, h: _Handler, method: str, path: str, query: str, body: bytes) -> None:
        st = self.state
        idem_key = h.headers.get("Idempotency-Key") if method == "POST" else None
        match = self.router.match(method, path)
        template = match[1] if match else self.router.template_for(path)

        def finish(resp: _Response, replayed=False, executed=False, fault=None, extra=None):
            st.log_request(method, path, template, idem_key, resp.status, replayed, executed, fault)
            if resp.drop:
                h._drop()
            else:
                h._send(resp, extra)

        # 1. authentication
        api_key = self._api_key(h.headers)
        if api_key is None:
            auth = h.headers.get("Authorization")
            msg = ("You did not provide an API key. Provide it in the Authorization header as "
                   "'Bearer sk_test_...'." if not auth else
                   "Invalid API Key provided: the emulator accepts any key starting with sk_test_.")
            finish(_error_response(StripeError(401, msg, type="authentication_error")))
            return
        # 2. routing and parameter parsing (failures here are never saved under the key)
        if match is None:
            finish(_error_response(StripeError(
                404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                     "or we can help at https://support.stripe.com/.")))
            return
        handler, template, args = match
        try:
            text = body.decode("utf-8") if method == "POST" else query
            if method == "POST" and query:
                text = f"{query}&{text}" if text else query
            params = decode_form(text)
        except (StripeError, UnicodeDecodeError) as err:
            if not isinstance(err, StripeError):
                err = StripeError(400, "Request body is not valid UTF-8.")
            finish(_error_response(err))
            return
        args = {k: unquote(v) for k, v in args.items()}
        # 3. rate limiting faults: nothing executed, nothing saved
        faults = st.take_faults(method, path, ("rate_limit_429",)) if st.faults else {}
        if "rate_limit_429" in faults:
            ra = faults["rate_limit_429"]["retry_after"]
            ra_str = str(int(ra)) if float(ra).is_integer() else str(ra)
            err = StripeError(429, "Too many requests hit the API too quickly. (emulator fault injection)",
                              type="rate_limit_error", code="rate_limit", headers={"Retry-After": ra_str})
            finish(_error_response(err), fault="rate_limit_429")
            return
        # 4. idempotency
        claimed = False
        if idem_key:
            if len(idem_key) > 255:
                finish(_error_response(StripeError(400, "Idempotency keys can be at most 255 characters.",
                                                   param="Idempotency-Key")))
                return
            fp = method + " " + path + "\n" + json.dumps(params, sort_keys=True, separators=(",", ":"))
            outcome, rec = st.idem_begin(api_key, idem_key, fp)
            if outcome == "replay":
                resp = _Response(rec["status"], rec["body"].encode("utf-8"))
                finish(resp, replayed=True, extra={"Idempotent-Replayed": "true",
                                                   "Original-Request": rec["request_id"] or "",
                                                   "Idempotency-Key": idem_key})
                return
            if outcome == "mismatch":
                orig = rec["fp"].split("\n", 1)[0]
                finish(_error_response(StripeError(
                    400, "Keys for idempotent requests can only be used with the same parameters they were "
                         f"first used with. Try using a key other than '{idem_key}' if you meant to execute "
                         f"a different request (first used for {orig}).", type="idempotency_error")))
                return
            if outcome == "in_flight":
                finish(_error_response(StripeError(
                    409, "There is currently another in-progress request using this Idempotent Key (that "
                         "probably means you submitted twice, and the other request is still going "
                         f"through): {idem_key}. Please try again later.", type="idempotency_error",
                    code="idempotency_key_in_use")))
                return
            claimed = True
        # 5. execute
        request_id = EmulatorState.new_id("req")
        fault_name = None
        try:
            faults = st.take_faults(method, path, ("delay", "error_500", "drop_after_commit")) \
                if st.faults else {}
            if "delay" in faults:
                fault_name = "delay"
                time.sleep(max(0.0, faults["delay"]["seconds"]))
            if "error_500" in faults:
                fault_name = "error_500"
                resp = _error_response(StripeError(
                    500, "An unknown error occurred (emulator fault injection: error_500).", type="api_error"))
            else:
                req = api.Request(method, path, params, args, api_key)
                with st.lock:
                    try:
                        obj = handler(st, req)
                        resp = _Response(200, _dumps(obj))
                    except StripeError as err:
                        resp = _error_response(err)
                    except Exception:
                        log.exception("handler error for %s %s", method, path)
                        resp = _error_response(StripeError(500, "An unknown error occurred.", type="api_error"))
                    if method != "GET":
                        st.dirty = True
            if claimed:
                st.idem_finish(api_key, idem_key, resp.status, resp.body, request_id)
                claimed = False
        finally:
            if claimed:  # something blew up before we had a response: release the key
                with st.lock:
                    st.idempotency.pop((api_key, idem_key), None)
        if "drop_after_commit" in faults:
            fault_name = "drop_after_commit"
            resp.drop = True
        extra = {"Request-Id": request_id}
        if idem_key:
            extra["Idempotency-Key"] = idem_key
        finish(resp, executed=True, fault=fault_name, extra=extra)

    # ---- control plane ---------------------------------------------------------------------------
    def _control(self, method: str, path: str, query: str, body: bytes) -> _Response:
        st = self.state
        sub = path[len(CONTROL_PREFIX):].strip("/")
        q = dict(parse_qsl(query))
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            return _Response(400, _dumps({"error": {"type": "invalid_request_error",
                                                    "message": f"Invalid JSON body: {exc}"}}))

        def ok(obj, status=200):
            return _Response(status, _dumps(obj))

        def bad(msg, status=400):
            return _Response(status, _dumps({"error": {"type": "invalid_request_error", "message": msg}}))

        if sub == "health" and method == "GET":
            return ok({"ok": True, "now": st.now(), "url": self.url})
        if sub == "faults":
            if method == "GET":
                with st.lock:
                    return ok({"faults": [dict(f) for f in st.faults]})
            if method == "DELETE":
                st.clear_faults()
                return ok({"ok": True})
            if method == "POST":
                kind = payload.get("kind")
                if kind not in FAULT_KINDS:
                    return bad(f"kind must be one of {', '.join(FAULT_KINDS)}")
                try:
                    fault = st.add_fault(method=payload.get("method", "POST"), path=payload.get("path", "*"),
                                         kind=kind, count=payload.get("count", 1),
                                         retry_after=payload.get("retry_after", 1),
                                         seconds=payload.get("seconds", 1.0))
                except (TypeError, ValueError) as exc:
                    return bad(str(exc))
                return ok(fault)
        if sub == "clock":
            if method == "GET":
                return ok({"now": st.now(), "offset": st.clock_offset})
            if method == "POST":
                try:
                    secs = float(payload.get("advance_seconds", 0))
                except (TypeError, ValueError):
                    return bad("advance_seconds must be a number")
                if secs < 0:
                    return bad("advance_seconds must be >= 0 (the emulator clock only moves forward)")
                now = st.advance_clock(secs)
                return ok({"now": now, "offset": st.clock_offset})
        if sub == "reset" and method == "POST":
            st.reset()
            return ok({"ok": True})
        if sub == "requests" and method == "GET":
            try:
                since = int(q.get("since", 0))
            except ValueError:
                return bad("since must be an integer")
            reqs = st.requests_since(since)
            return ok({"requests": reqs, "last_seq": reqs[-1]["seq"] if reqs else since})
        if sub == "stats" and method == "GET":
            return ok(st.stats())
        if sub == "save" and method == "POST":
            if not self.state_file:
                return bad("this emulator has no state file")
            self.save()
            return ok({"ok": True, "state_file": self.state_file})
        parts = sub.split("/")
        if len(parts) == 3 and parts[0] == "accounts" and parts[2] in ("enable", "disable") and method == "POST":
            enable = parts[2] == "enable"
            try:
                acct = self.enable_account(
                    parts[1],
                    charges_enabled=bool(payload.get("charges_enabled", enable)),
                    payouts_enabled=bool(payload.get("payouts_enabled", enable)),
                    transfers=payload.get("transfers"),
                )
            except StripeError as err:
                return _error_response(err)
            return ok(acct)
        return bad(f"Unknown control endpoint: {method} {path}", status=404)


def start_emulator(port: int = 0, state_file: str | None = None, host: str = "127.0.0.1",
                   save_interval: float = 1.0) -> EmulatorServer:
    """Start an emulator in a daemon thread and return its handle (``.url``, ``.state``, ``.stop()``)."""
    return EmulatorServer(host=host, port=port, state_file=state_file, save_interval=save_interval).start()
