"""Tally's gateways to outside services (today: Stripe). Nothing else imports their SDKs."""
