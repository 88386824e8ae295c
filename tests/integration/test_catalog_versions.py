"""Recorded catalog versions: immutable, except for optional sections a version gains."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.catalog import OPTIONAL_SECTIONS, load_catalog
from models.db import get_engine
from repositories.catalog_versions import ensure_catalog_version


def test_a_version_recorded_before_its_optional_sections_accepts_them_once(clean_db):
    shipped = load_catalog().versions[0]
    bare = shipped.model_copy(update={name: None for name in OPTIONAL_SECTIONS})
    engine = get_engine(clean_db)
    with engine.begin() as conn:
        first = ensure_catalog_version(conn, bare)  # what a database recorded before the sections existed
    with engine.begin() as conn:
        assert ensure_catalog_version(conn, shipped) == first
        digest, document = conn.exec_driver_sql(
            "SELECT digest, document FROM catalog_versions WHERE id = %s", (first,)).one()
    assert digest == shipped.digest() and document["credits"] is not None
    with engine.begin() as conn, pytest.raises(ValueError, match="changed after it was recorded"):
        ensure_catalog_version(conn, bare)  # dropping a section again is a change


def test_a_changed_price_under_a_recorded_version_is_refused(clean_db):
    shipped = load_catalog().versions[0]
    pro = shipped.plans["pro"].model_copy(update={"monthly_fee": Decimal("30.00")})
    changed = shipped.model_copy(update={"plans": {**shipped.plans, "pro": pro}})
    engine = get_engine(clean_db)
    with engine.begin() as conn:
        ensure_catalog_version(conn, shipped)
    with engine.begin() as conn, pytest.raises(ValueError, match="changed after it was recorded"):
        ensure_catalog_version(conn, changed)
