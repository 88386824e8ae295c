"""An outbox row as an e-mail: plain text plus simple HTML, from the templates beside this module.

The message depends only on the row (and the sender setting), never on when it is sent: its
Message-ID is the one recorded before the first send and its Date is when the notice was written, so
a resend after a crash is the same message, which mail clients recognise by its Message-ID.
"""

from __future__ import annotations

import hashlib
import html
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                       autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False))


def text_to_html(text: str) -> str:
    """Plain text as an HTML fragment: a paragraph per blank-line-separated block, lines kept."""
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    return "".join(f"<p style=\"white-space: pre-wrap\">{html.escape(b)}</p>" for b in blocks)


def mail_domain(sender: str) -> str:
    """The domain of the From address: the right-hand side of every Message-ID we mint."""
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] if "@" in address else "tally.localhost"


def compose_notice(row, *, to: str, sender: str) -> EmailMessage:
    """``row``: a claimed notification (id, account_id, kind, subject, body, html, message_id, created_at)."""
    fragment = row.html or text_to_html(row.body)
    context = {"subject": row.subject, "body": row.body.rstrip("\n"), "fragment": fragment,
               "account_id": row.account_id, "kind": row.kind, "audience": getattr(row, "audience", "account")}
    msg = EmailMessage()
    msg["Subject"] = row.subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = format_datetime(row.created_at)
    msg["Message-ID"] = row.message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Tally-Notification"] = str(row.id)
    msg["X-Tally-Kind"] = row.kind
    msg.set_content(_env().get_template("notice.txt").render(context))
    msg.add_alternative(_env().get_template("notice.html").render(context), subtype="html")
    # A boundary from the Message-ID, not a random one: a resend is the same bytes.
    msg.set_boundary("tally-" + hashlib.sha256(row.message_id.encode()).hexdigest()[:32])
    return msg
