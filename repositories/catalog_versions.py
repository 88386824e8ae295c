"""Catalog versions that priced something (``catalog_versions``): recorded once, never changed, except
that a version may gain an optional section it did not have (``CatalogVersion.only_adds_sections_to``)."""

from __future__ import annotations

import json

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.catalog import OPTIONAL_SECTIONS, CatalogVersion
from models.tables import catalog_versions


def ensure_catalog_version(conn: Connection, version: CatalogVersion) -> int:
    """Record the catalog version (idempotent) and return its id; a changed document under an
    existing version id is refused: versions are immutable once used."""
    digest = version.digest()
    row = conn.execute(
        select(catalog_versions.c.id, catalog_versions.c.digest, catalog_versions.c.document).where(
            catalog_versions.c.version == version.version
        )
    ).first()
    if row:
        recorded_sections = {name for name in OPTIONAL_SECTIONS if (row.document or {}).get(name) is not None}
        if row.digest != digest and version.only_adds_sections_to(row.digest, recorded_sections):
            conn.execute(
                update(catalog_versions)
                .where(catalog_versions.c.id == row.id, catalog_versions.c.digest == row.digest)
                .values(digest=digest, document=json.loads(version.model_dump_json()))
            )
            return ensure_catalog_version(conn, version)  # re-read: another process may have upgraded it
        if row.digest != digest:
            raise ValueError(
                f"catalog version {version.version!r} changed after it was recorded "
                f"(digest {row.digest[:12]} in the database, {digest[:12]} in the file); "
                "publish a new version with a later effective_from instead"
            )
        return row.id
    stmt = (
        pg_insert(catalog_versions)
        .values(
            version=version.version,
            effective_from=version.effective_from,
            digest=digest,
            document=json.loads(version.model_dump_json()),
        )
        .on_conflict_do_nothing(index_elements=["version"])
        .returning(catalog_versions.c.id)
    )
    new_id = conn.execute(stmt).scalar()
    if new_id is None:  # raced with another process
        return ensure_catalog_version(conn, version)
    return new_id


def catalog_version_name(conn: Connection, version_id: int) -> str:
    return conn.execute(
        select(catalog_versions.c.version).where(catalog_versions.c.id == version_id)
    ).scalar_one()
