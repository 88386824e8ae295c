"""Tally's metering service: the HTTP API the platform calls while agents run (record executions,
entitlement checks, live usage, invoices) and the billing page its users see.

Started by ``tally api`` (uvicorn) and by ``tally dev up``; see docs/api.md.
"""
