"""One mutation run per target, restricted to its modules and the tests that can see them:

    python -m tests.mutation.run push        # activities/push.py + gateways/stripe/*
    python -m tests.mutation.run close       # workflows/close.py
    python -m tests.mutation.run ingest      # activities/ingest.py + services/ingest.py
    python -m tests.mutation.run billing     # billing/* (what `make mutation` runs)

The repository's code and tests are copied to ``.mutation/<target>/`` with ``[tool.mutmut]`` rewritten for
the target, mutmut runs there (``--max-children``, default 1: the machine is shared), and the score per
module is printed by ``tests.mutation.report``. Names after the target run only those mutants (globs)
in the existing copy: how a sample of a slow target is measured; ``--refresh-tests`` first copies the
current tests into that copy (new tests are found and mapped to the functions they run; the named
mutants are run again against them). Targets whose tests need Postgres: set ``DATABASE_URL`` to a running
server; the run creates ``<that database>_<target>`` there, migrates it once, and every pytest of the
run uses it (``TALLY_TEST_MIGRATED_DATABASE_URL``) instead of creating and migrating one per mutant."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["billing", "models", "repositories", "services", "gateways", "capabilities", "activities",
            "workflows", "workers", "stripe_emulator", "migrations", "api", "tests"]
TARGETS = {
    "billing": (["billing/*"], ["tests/unit"]),
    # the fast ones first: the requests each resource sends (no database) and the push stage by stage
    # (invoices written straight into Postgres); then the ledger's and the customers' integration tests
    "push": (["activities/push.py", "gateways/stripe/*"],
             ["tests/unit/test_stripe_gateway_rules.py", "tests/integration/test_stripe_gateway_requests.py",
              "tests/integration/test_push_stages.py", "tests/integration/test_stripe_ledger.py",
              "tests/integration/test_stripe_ledger_batch.py", "tests/integration/test_stripe_core.py",
              "tests/integration/test_stripe_customers.py"]),
    "close": (["workflows/close.py"], ["tests/integration/test_close_workflow.py"]),
    # each field's rule (no database), then both ways in on a handful of rows, then the bulk loader's own
    "ingest": (["activities/ingest.py", "services/ingest.py"],
               ["tests/unit/test_ingest_fields.py", "tests/integration/test_ingest_batches.py",
                "tests/integration/test_ingest.py"]),
}


def mutmut_section(only: list[str], tests: list[str]) -> str:
    q = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    return ("[tool.mutmut]\n"
            f'source_paths = ["billing", "models", "activities", "workflows", "gateways", "services"]\n'
            f"only_mutate = {q(only)}\n"
            f"pytest_add_cli_args_test_selection = {q(tests)}\n"
            'also_copy = ["migrations", "repositories", "capabilities", "workers", "api", "stripe_emulator"]\n'
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n')


def prepare(target: str) -> Path:
    only, tests = TARGETS[target]
    work = ROOT / ".mutation" / target
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    start = pyproject.index("[tool.mutmut]")
    end = pyproject.find("\n[", start)
    pyproject = pyproject[:start] + mutmut_section(only, tests) + (pyproject[end + 1:] if end >= 0 else "")
    (work / "pyproject.toml").write_text(pyproject)
    return work


DATABASE_TARGETS = {"push", "close", "ingest"}


def migrated_database(target: str) -> str | None:
    """``<DATABASE_URL's database>_<target>`` on DATABASE_URL's server, created afresh and migrated (None
    without DATABASE_URL: each pytest then creates its own)."""
    url = os.environ.get("DATABASE_URL")
    if not url or target not in DATABASE_TARGETS:
        return None
    import psycopg

    from models.db import database_name, libpq_url, migrate
    from tests.conftest import _with_database

    name = f"{database_name(url) or 'tally'}_{target}"
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrated = _with_database(url, name)
    migrate(migrated)
    return migrated


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutation.run", description=__doc__.split("\n")[0])
    ap.add_argument("target", choices=sorted(TARGETS))
    ap.add_argument("mutants", nargs="*", help="only these mutants (mutmut's name globs, e.g. "
                    "'gateways.stripe.core*'), in the existing run's copy and stats (a sample of a slow target)")
    ap.add_argument("--max-children", type=int, default=1)
    ap.add_argument("--refresh-tests", action="store_true",
                    help="with mutant names: copy the current tests into the existing copy first")
    args = ap.parse_intermixed_args(argv)  # options before or after the mutant names
    work = ROOT / ".mutation" / args.target
    if not (args.mutants and (work / "mutants").is_dir()):
        work = prepare(args.target)
    elif args.refresh_tests:
        shutil.copytree(ROOT / "tests", work / "tests", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = dict(os.environ)
    migrated = migrated_database(args.target) if args.max_children == 1 else None  # one pytest at a time
    if migrated:
        env["TALLY_TEST_MIGRATED_DATABASE_URL"] = migrated
    mutmut = Path(sys.executable).parent / "mutmut"
    with open(work / "mutants.log", "a") as log:
        rc = subprocess.call([str(mutmut), "run", "--max-children", str(args.max_children), *args.mutants],
                             cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        print((work / "mutants.log").read_text()[-3000:], file=sys.stderr)
    report = [sys.executable, "-m", "tests.mutation.report", "--mutants", str(work / "mutants"), "--survivors"]
    return subprocess.call(report + (["--ran-only"] if args.mutants else []), cwd=ROOT) or rc


if __name__ == "__main__":
    sys.exit(main())
