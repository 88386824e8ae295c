"""E-mail from the outbox (gateways/mail): a notice becomes the same message however often it is sent
(its recorded Message-ID, its own date), in plain text and simple HTML; SMTP_URL is read strictly."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from billing.alerts import budget_notice, check_budget
from billing.periods import Period
from decimal import Decimal
from gateways.mail import compose_notice, smtp_target
from gateways.mail.messages import mail_domain, text_to_html


def row(**kw):
    base = dict(id=7, account_id="acct-1", kind="plan_auto_converted", subject="Your plan changes to Pro",
                body="Line one <b>\n\nSecond paragraph & more", html=None, audience="account",
                message_id="<tally.7.abcdef0123456789@tally.localhost>",
                created_at=datetime(2026, 11, 3, 2, 0, tzinfo=timezone.utc))
    return SimpleNamespace(**{**base, **kw})


def test_a_notice_is_the_same_message_whenever_it_is_composed():
    a = compose_notice(row(), to="u@example.com", sender="Tally <billing@tally.localhost>")
    b = compose_notice(row(), to="u@example.com", sender="Tally <billing@tally.localhost>")
    assert a["Message-ID"] == "<tally.7.abcdef0123456789@tally.localhost>"
    assert a["Date"] == "Tue, 03 Nov 2026 02:00:00 +0000"
    assert a.as_bytes() == b.as_bytes()


def test_a_text_only_notice_gets_an_escaped_html_part_and_the_footer_in_both():
    msg = compose_notice(row(), to="u@example.com", sender="Tally <billing@tally.localhost>")
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert plain.startswith("Line one <b>\n\nSecond paragraph & more\n\n--\n")
    assert "Line one &lt;b&gt;" in html and "Second paragraph &amp; more" in html and "<b>" not in html
    assert "billing contact of the account" in plain and "billing contact of the account" in html
    assert msg["X-Tally-Kind"] == "plan_auto_converted" and msg["Auto-Submitted"] == "auto-generated"


def test_an_alert_notice_carries_its_html_figures_and_ops_mail_says_who_it_is_for():
    notice = budget_notice("acct-1", Period.parse("2026-10"), check_budget(Decimal("0.81"), Decimal("1.00")))
    r = row(kind=notice.kind, subject=notice.subject, body=notice.text, html=notice.html_body, audience="ops")
    msg = compose_notice(r, to="ops@example.com", sender="Tally <billing@tally.localhost>")
    html = msg.get_body(("html",)).get_content()
    assert "<table>" in html and "<th align=\"left\">Budget</th><td>$1.00</td>" in html
    assert "Tally operations" in msg.get_body(("plain",)).get_content()


def test_text_to_html_keeps_paragraphs():
    assert text_to_html("a\nb\n\nc") == ('<p style="white-space: pre-wrap">a\nb</p>'
                                         '<p style="white-space: pre-wrap">c</p>')


def test_the_message_id_domain_is_the_senders():
    assert mail_domain("Tally Billing <billing@mail.example.com>") == "mail.example.com"
    assert mail_domain("nobody") == "tally.localhost"


def test_smtp_url_forms_and_refusals():
    t = smtp_target("smtp://user%40x:p%3Ass@relay.example.com:587?starttls=1")
    assert (t.host, t.port, t.username, t.password, t.starttls, t.implicit_tls) == (
        "relay.example.com", 587, "user@x", "p:ss", True, False)
    assert "p:ss" not in str(t)
    assert smtp_target("smtps://relay.example.com").port == 465
    assert smtp_target("smtp://127.0.0.1").port == 25
    with pytest.raises(ValueError, match="SMTP_URL"):
        smtp_target("http://relay.example.com")
