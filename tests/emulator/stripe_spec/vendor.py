"""How ``stripe_shapes.json`` was made (run once; the file is vendored, the tests never fetch anything).

    python tests/emulator/stripe_spec/vendor.py /path/to/stripe-openapi-git-dir

Sources, both from github.com/stripe/openapi:
- ``openapi/fixtures3.json`` at FIXTURES_COMMIT (2026-08-21): Stripe's example object of every resource,
  generated from the spec of that day. Kept: the resources the emulator serves.
- ``openapi/spec3.json`` at SPEC_COMMIT (tag v127, 2022-04-12, API 2020-08-27): the newest full spec the
  snapshot held (later versions of the ~7 MB file were absent from it). Kept: the error schemas
  (``error``, ``api_errors``; unchanged since) and, for every field of the fixtures that the old spec
  already had, whether it is ``nullable``.
"""

from __future__ import annotations

import json
import subprocess
import sys

FIXTURES_COMMIT = "f6c2a48fbac2819d1feba8143d942ffc65e1c0d2"
SPEC_COMMIT = "e0123a38b40c8d840b4c0469ac0ee1650b6bfea3"
RESOURCES = {  # fixture name -> spec schema name
    "customer": "customer", "deleted_customer": "deleted_customer", "invoice": "invoice",
    "line_item": "line_item", "invoiceitem": "invoiceitem", "account": "account", "transfer": "transfer",
    "billing.meter": None, "billing.meter_event": None, "billing.meter_event_summary": None,
}


def _show(git_dir: str, commit: str, path: str) -> dict:
    return json.loads(subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"],
                                     check=True, capture_output=True).stdout)


def _resolve(schemas: dict, s: dict | None) -> dict | None:
    """Follow ``$ref`` and a single-branch ``anyOf`` to the object schema (None when unknown)."""
    for _ in range(5):
        if s is None:
            return None
        if "$ref" in s:
            s = schemas.get(s["$ref"].rsplit("/", 1)[1])
        elif "anyOf" in s and len([b for b in s["anyOf"] if "$ref" in b]) == 1:
            s = next(b for b in s["anyOf"] if "$ref" in b)
        else:
            return s
    return s


def _nullables(schemas: dict, schema: dict | None, fixture: dict, prefix: str, out: dict) -> None:
    props = (schema or {}).get("properties", {})
    for key, value in fixture.items():
        path = f"{prefix}{key}"
        prop = props.get(key)
        if prop is not None:
            out[path] = bool(prop.get("nullable"))
        if isinstance(value, dict):
            _nullables(schemas, _resolve(schemas, prop), value, path + ".", out)


def main(git_dir: str) -> None:
    fixtures = _show(git_dir, FIXTURES_COMMIT, "openapi/fixtures3.json")["resources"]
    spec = _show(git_dir, SPEC_COMMIT, "openapi/spec3.json")
    schemas = spec["components"]["schemas"]
    out = {
        "sources": {"fixtures": f"stripe/openapi@{FIXTURES_COMMIT}:openapi/fixtures3.json",
                    "spec": f"stripe/openapi@{SPEC_COMMIT}:openapi/spec3.json (v127, {spec['info']['version']})"},
        "fixtures": {name: fixtures[name] for name in RESOURCES},
        "nullable": {},
        "schemas": {"error": schemas["error"], "api_errors": {
            **schemas["api_errors"],
            # card-payment objects the emulator never returns: kept as names only
            "properties": {k: v for k, v in schemas["api_errors"]["properties"].items() if "$ref" not in v}}},
    }
    for name, schema_name in RESOURCES.items():
        nullable: dict = {}
        if schema_name:
            _nullables(schemas, schemas[schema_name], fixtures[name], "", nullable)
        out["nullable"][name] = nullable
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
