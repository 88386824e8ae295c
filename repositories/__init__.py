"""SQL per aggregate: every query of Tally lives in these modules (and the bulk loader)."""
