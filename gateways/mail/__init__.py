"""E-mail: the only code that speaks SMTP (``smtp.py``) and the one place messages are composed from
the notifications outbox with their templates (``messages.py``, ``templates/``)."""

from gateways.mail.messages import compose_notice
from gateways.mail.smtp import MailRejected, MailUnreachable, SmtpMailer, smtp_target

__all__ = ["compose_notice", "SmtpMailer", "MailRejected", "MailUnreachable", "smtp_target"]
