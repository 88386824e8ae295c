"""A local SMTP sink (aiosmtpd) for the dev stack and the tests: it accepts every message and keeps it,
as sent, in a Maildir (``$TALLY_HOME/mail`` under ``tally dev up``); ``tally dev mail`` lists them.

    python -m workers.devstack.smtp_sink --port 2525 --maildir .tally/mail

Each stored message gets two headers of the sink's own: ``X-Sink-Received`` (nanoseconds since the
epoch, the order of arrival) and ``X-Sink-Rcpt`` (the envelope recipients).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import mailbox
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller


class MaildirHandler:
    """aiosmtpd handler: every message accepted (250) and added to the Maildir."""

    def __init__(self, maildir: Path):
        self.maildir = Path(maildir)
        self.maildir.parent.mkdir(parents=True, exist_ok=True)
        self._box = mailbox.Maildir(str(self.maildir), create=True)  # makes tmp/, new/ and cur/
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        head = (f"X-Sink-Received: {time.time_ns()}\r\n"
                f"X-Sink-Rcpt: {', '.join(envelope.rcpt_tos)}\r\n").encode()
        data = envelope.original_content or envelope.content
        with self._lock:
            self._box.add(head + (data if isinstance(data, bytes) else data.encode()))
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class SinkMessage:
    received_ns: int
    recipients: str
    message: email.message.EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def to(self) -> str:
        return str(self.message["To"])

    def part(self, subtype: str) -> str:
        """The text of the ``text/<subtype>`` part (plain or html)."""
        found = self.message.get_body(preferencelist=(subtype,))
        return found.get_content() if found is not None else ""


def read_mail(maildir: Path) -> list[SinkMessage]:
    """Every message the sink kept, in the order it arrived."""
    maildir = Path(maildir)
    if not (maildir / "new").exists() and not (maildir / "cur").exists():
        return []
    box = mailbox.Maildir(str(maildir), factory=None, create=False)
    out = []
    for key in box.keys():
        raw = box.get_bytes(key)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        out.append(SinkMessage(int(msg.get("X-Sink-Received", "0")), str(msg.get("X-Sink-Rcpt", "")), msg))
    return sorted(out, key=lambda m: m.received_ns)


class SmtpSink:
    """The sink in this process (tests): ``start()``, ``stop()``, ``messages()``; restartable on the
    same port, so a test can take SMTP down for a while."""

    def __init__(self, maildir: Path, port: int, host: str = "127.0.0.1"):
        self.maildir = Path(maildir)
        self.host = host
        self.port = port
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> SmtpSink:
        if self._controller is None:
            self._controller = Controller(MaildirHandler(self.maildir), hostname=self.host, port=self.port,
                                          ready_timeout=10)
            self._controller.start()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def messages(self) -> list[SinkMessage]:
        return read_mail(self.maildir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m workers.devstack.smtp_sink", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--maildir", type=Path, required=True)
    args = p.parse_args(argv)
    sink = SmtpSink(args.maildir, args.port, args.host).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"SMTP sink on {args.host}:{args.port}, keeping mail in {args.maildir}", flush=True)
    stop.wait()
    sink.stop()


if __name__ == "__main__":
    main()
