"""SMTP delivery: ``SMTP_URL`` parsed once, one connection per delivery run, errors sorted into what the
caller may do about them.

- ``MailUnreachable``: no server, a dropped connection, a timeout, a 4xx answer: try again later (the
  same message, with the same Message-ID).
- ``MailRejected``: the server refused this message or recipient for good (5xx): do not retry it.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit


class MailUnreachable(ConnectionError):
    """The SMTP server cannot take the message now; the same message may be sent again later."""


class MailRejected(ValueError):
    """The SMTP server refused the message or its recipient for good."""


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None

    def __str__(self) -> str:  # never shows the password
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}{'?starttls=1' if self.starttls else ''}"


def smtp_target(url: str) -> SmtpTarget:
    """``smtp://[user[:password]@]host[:port][?starttls=1]`` or ``smtps://...`` (implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(f"SMTP_URL: expected smtp://host[:port] or smtps://host[:port], got {parts.scheme}://…")
    implicit = parts.scheme == "smtps"
    query = parse_qs(parts.query)
    starttls = query.get("starttls", ["0"])[-1].lower() in ("1", "true", "yes")
    return SmtpTarget(
        host=parts.hostname, port=parts.port or (465 if implicit else 25), implicit_tls=implicit, starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class SmtpMailer:
    """One SMTP session, opened on first use: ``with SmtpMailer(url) as m: m.send(msg)``."""

    def __init__(self, url: str, timeout: float = 10.0, local_hostname: str | None = None):
        self.target = smtp_target(url)
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpMailer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        t = self.target
        try:
            if t.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(t.host, t.port, timeout=self.timeout,
                                                      local_hostname=self.local_hostname,
                                                      context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(t.host, t.port, timeout=self.timeout, local_hostname=self.local_hostname)
                if t.starttls:
                    smtp.starttls(context=ssl.create_default_context())
            if t.username:
                smtp.login(t.username, t.password or "")
        except smtplib.SMTPAuthenticationError as err:
            raise MailUnreachable(f"{t}: login refused ({err.smtp_code} {_text(err.smtp_error)})") from None
        except (OSError, smtplib.SMTPException) as err:
            raise MailUnreachable(f"{t}: {err.__class__.__name__}: {err}") from None
        return smtp

    def send(self, message: EmailMessage, to: str) -> None:
        """Hand one message to the server for ``to``. Raises MailUnreachable (try again later) or
        MailRejected (never)."""
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = self._smtp.send_message(message, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as err:
            code, reason = next(iter(err.recipients.values()))
            self._raise_for(code, f"recipient {to} refused: {code} {_text(reason)}")
        except smtplib.SMTPResponseException as err:
            self._raise_for(err.smtp_code, f"{err.smtp_code} {_text(err.smtp_error)}")
        except (OSError, socket.timeout, smtplib.SMTPException) as err:
            self.close()
            raise MailUnreachable(f"{self.target}: {err.__class__.__name__}: {err}") from None
        if refused:
            code, reason = next(iter(refused.values()))
            self._raise_for(code, f"recipient {to} refused: {code} {_text(reason)}")

    def _raise_for(self, code: int, what: str) -> None:
        if 500 <= code < 600:
            raise MailRejected(what)
        self.close()
        raise MailUnreachable(what)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()


def _text(x: bytes | str) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
