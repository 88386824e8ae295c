"""``tally routing``: quality scores, skills, an account's slider and BYOK providers, and a route."""

from __future__ import annotations

import json
import sys

import click

from workers.cli.common import catalog, engine, friendly


@click.group()
def routing() -> None:
    """Dynamic model routing: the cheapest model good enough for a skill (docs/decisions.md)."""


@routing.group("scores")
def scores() -> None:
    """Quality scores per skill and model, from behavioural test runs."""


@scores.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--show-rejections", type=int, default=20, show_default=True, help="How many rejected rows to list.")
@friendly
def scores_import(file: str, show_rejections: int) -> None:
    """Import a CSV of test-run scores: header `skill,model,score,measured_at,suite_id`.

    score is 0-100 (at most 2 decimals), measured_at ISO 8601 with a time zone. Bad rows are rejected
    with their line and reason while the good ones are recorded; importing the same run again changes
    nothing; a newer run (measured_at, then suite_id) supersedes older ones per skill and model.
    """
    import io

    from services.routing import import_scores

    source = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="") if file == "-" else file
    report = import_scores(engine(), catalog(), source)
    click.echo(f"accepted {report.accepted:,}  duplicate {report.duplicates:,}  rejected {report.rejected:,}"
               + (f"  (new scores for {len(report.skills):,} skills)" if report.skills else ""))
    for rej in report.rejections[:show_rejections]:
        click.echo(f"  line {rej.line}: {rej.reason}")
    if report.rejected > show_rejections:
        click.echo(f"  … and {report.rejected - show_rejections:,} more rejected rows")


@scores.command("list")
@click.option("--skill", default=None, help="Only this skill.")
@friendly
def scores_list(skill: str | None) -> None:
    """The score in force per skill and model (the newest run)."""
    from billing.numbers import plain
    from services.routing import scores_in_force

    click.echo(f"{'skill':<28} {'model':<16} {'score':>6}  {'measured_at':<26} suite")
    for r in scores_in_force(engine(), skill):
        click.echo(f"{r.skill:<28} {r.model:<16} {plain(r.score):>6}  {r.measured_at.isoformat():<26} {r.suite_id}")


@routing.command("skill")
@click.argument("skill_id")
@click.option("--category", default=None, help="The skill's category (usage analytics).")
@click.option("--default-model", default=None, help="The model it runs on without routing (savings baseline).")
@friendly
def skill(skill_id: str, category: str | None, default_model: str | None) -> None:
    """Record a skill's category and default model (both replace what was recorded)."""
    from services.routing import set_skill

    s = set_skill(engine(), catalog(), skill_id, category=category, default_model=default_model)
    click.echo(f"{s['skill_id']}: category {s['category'] or '-'}, default model {s['default_model'] or '-'}")


@routing.command("account")
@click.argument("account_id")
@click.option("--slider", default=None, help="0 (cheapest) .. 1 (best quality).")
@click.option("--byok-providers", default=None, metavar="P1,P2",
              help="Providers the account holds its own keys for (empty string: none).")
@friendly
def account(account_id: str, slider: str | None, byok_providers: str | None) -> None:
    """Show or set an account's quality slider and BYOK providers."""
    from services.routing import account_routing, set_account_routing

    if slider is None and byok_providers is None:
        s = account_routing(engine(), account_id)
    else:
        providers = None if byok_providers is None else [p.strip() for p in byok_providers.split(",") if p.strip()]
        s = set_account_routing(engine(), catalog(), account_id, slider=slider, byok_providers=providers)
    click.echo(f"{s['account_id']}: slider {s['slider']}, BYOK providers {', '.join(s['byok_providers']) or '-'}")


@routing.command("route")
@click.argument("account_id")
@click.argument("skill_id")
@click.option("--input-tokens", type=int, default=None, help="Expected input tokens (with --output-tokens).")
@click.option("--output-tokens", type=int, default=None)
@click.option("--default-model", default=None, help="The model the skill would run on without routing.")
@click.option("--slider", default=None, help="Override the account's slider for this route.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as POST /v1/route answers it.")
@friendly
def route(account_id: str, skill_id: str, input_tokens: int | None, output_tokens: int | None,
          default_model: str | None, slider: str | None, as_json: bool) -> None:
    """Route one execution as POST /v1/route does (the decision is recorded)."""
    from services.routing import RoutingService

    body = {"account_id": account_id, "skill_id": skill_id, "expected_input_tokens": input_tokens,
            "expected_output_tokens": output_tokens, "default_model": default_model, "slider": slider}
    d = RoutingService(engine(), catalog()).route(None, {k: v for k, v in body.items() if v is not None})
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"{d['model']} ({d['reason']}); expected ${d['expected_cost']} per execution at "
               f"{d['token_mix']['input_tokens']:,} in / {d['token_mix']['output_tokens']:,} out "
               f"({d['token_mix']['source']}); decision {d['decision_id']}")
    for a in d["alternatives"]:
        click.echo(f"  {a['model']:<16} score {a['score']:>6}  ${a['expected_cost']}"
                   f"{'' if a['qualifies'] else '  (below the threshold)'}")
