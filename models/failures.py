"""Names shared across the workflow/activity boundary: failure types and attempt budgets.

An activity raises ``ApplicationError(type=Failure.X)``; a workflow lists the same constant in its retry
policy's ``non_retryable_error_types``. Both sides import it from here, so a rename cannot leave one
side matching a string that no longer exists.
"""

from __future__ import annotations


class Failure:
    """``ApplicationError.type`` values raised by activities and matched by workflows and services."""

    INVALID_PERIOD = "InvalidPeriod"  # the period text is not YYYY-MM or out of range
    PERIOD_NOT_CLOSABLE = "PeriodNotClosable"  # not ended + grace yet, or before the first catalog version
    RATING_ERROR = "RatingError"  # the catalog/terms cannot price the period: no retry can fix it
    INVOICE_REJECTED = "InvoiceRejected"  # Stripe refused the invoice (4xx): ops must look
    NOT_FOUND = "NotFound"  # the invoice/account named in the input does not exist
    STRIPE_TRANSIENT = "StripeTransient"  # some invoices not pushed yet; Temporal retries the activity
    CONTRACT_REFUSED = "ContractRefused"  # a contract rule refused an amendment (or the stored contract)

    HOUR_NOT_REPORTABLE = "HourNotReportable"  # the hour has not ended, or is past Stripe's 35-day window
    METERS_NOT_SET_UP = "MetersNotSetUp"  # no Stripe meters recorded yet: `tally meters apply`

    SMTP_UNAVAILABLE = "SmtpUnavailable"  # the SMTP server cannot take mail now; retried with back-off
    MAIL_NOT_CONFIGURED = "MailNotConfigured"  # no SMTP_URL in production: ops must set it
    ANOMALY_DECIDED = "AnomalyDecided"  # the anomaly is no longer in a state that allows this decision

    PAYOUT_DECIDED = "PayoutDecided"  # the payout is paid or cancelled: nothing to retry or cancel
    PAYOUT_BUSY = "PayoutBusy"  # another process works on this payout now; retried shortly
    GRANT_NOT_FOUND = "GrantNotFound"  # a credit grant named in the input does not exist (credits)

    CUSTOMER_MISMATCH = "CustomerMismatch"  # the Stripe customer names another account: refused, ops must look


class PushBudget:
    """How often the close's push activity is attempted before it gives up on an invoice.

    Temporal stops retrying at ``MAX_ATTEMPTS``; the activity itself stops raising for transient Stripe
    trouble from attempt ``GIVE_UP_AT`` on and marks what is left ``push_failed`` for ops, so the last
    attempts always end with a result the workflow can report instead of a failed close.
    """

    MAX_ATTEMPTS = 10
    GIVE_UP_AT = MAX_ATTEMPTS - 2


class ReportBudget:
    """How often a usage report's chunk activity is attempted. From ``GIVE_UP_AT`` on it stops raising
    for transient Stripe trouble (429 storms, 5xx, no answer) and returns what failed: the hour is left
    ``partial`` and the next scheduled run sends the rest, so one bad hour never stalls the others."""

    MAX_ATTEMPTS = 6
    GIVE_UP_AT = MAX_ATTEMPTS - 1


class PayoutBudget:
    """How often the payout run's transfer activity is attempted. Stripe down (no answer, 5xx, 429
    storms): Temporal retries with back-off; from ``GIVE_UP_AT`` on the activity stops raising and marks
    what is still unpaid ``failed`` ("Stripe unavailable ..."), each waiting for ops in its own
    ``payout-<creator>-<YYYY-MM>`` workflow. An ops retry is attempted ``RETRY_ATTEMPTS`` times."""

    MAX_ATTEMPTS = 5
    GIVE_UP_AT = MAX_ATTEMPTS - 1
    RETRY_ATTEMPTS = 3
