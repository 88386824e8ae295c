"""Connect accounts: create, retrieve, update (``capabilities[<name>][requested]``: a requested
capability of an account whose details are not submitted is ``pending``), list; account links (the
onboarding URL of an account). New accounts are not enabled; tests enable them with
``set_account_enabled`` (the control plane's ``/_emulator/accounts/{id}/enable``)."""

from __future__ import annotations

from ..core.errors import StripeError, find
from ..core.ids import new_id
from ..core.listing import newest_first, paginate
from ..core.params import ANY, LIST, known, p_enum, p_metadata, p_str
from ..core.resource import Operation, Resource
from ..core.state import EmulatorState, Store


def find_account(st: EmulatorState, aid: str, param: str | None = None) -> dict:
    return find(st.accounts, "account", aid, param)


def _requirements(enabled: bool) -> dict:
    due = [] if enabled else ["external_account", "tos_acceptance.date", "tos_acceptance.ip"]
    return {"alternatives": [], "current_deadline": None, "currently_due": list(due),
            "disabled_reason": None if enabled else "requirements.past_due", "errors": [],
            "eventually_due": list(due), "past_due": list(due), "pending_verification": []}


def create_account(st, req):
    p = req.params
    acct_type = p_enum(p, "type", ("express", "custom", "standard"), default="standard")
    caps = {"transfers": "inactive"}
    if isinstance(p.get("capabilities"), dict):
        for name, req in p["capabilities"].items():
            caps[name] = "pending" if _requested(req) else "inactive"
    now = int(st.now())
    a = {
        "id": new_id("acct", 16), "object": "account",
        "business_profile": {"name": None, "url": None, "mcc": None, "support_email": None},
        "business_type": p_str(p, "business_type"), "capabilities": caps, "charges_enabled": False,
        "controller": {"type": "application", "is_controller": True}, "country": p_str(p, "country", default="US"),
        "created": now, "default_currency": (p_str(p, "default_currency") or "usd").lower(),
        "details_submitted": False, "email": p_str(p, "email"),
        "external_accounts": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                              "url": "/v1/accounts/acct/external_accounts"},
        "livemode": False, "metadata": p_metadata(p), "payouts_enabled": False,
        "requirements": _requirements(False), "settings": {}, "tos_acceptance": {"date": None},
        "type": acct_type,
    }
    a["external_accounts"]["url"] = f"/v1/accounts/{a['id']}/external_accounts"
    st.accounts[a["id"]] = a
    return a


def _requested(req) -> bool:
    return isinstance(req, dict) and str(req.get("requested", "")).lower() == "true"


def get_account(st, req):
    return find_account(st, req.args["id"])


def update_account(st, req):
    a = find_account(st, req.args["id"])
    p = req.params
    md = p_metadata(p, existing=a["metadata"])
    if "email" in p:
        a["email"] = p_str(p, "email") or None
    a["metadata"] = md
    if isinstance(p.get("capabilities"), dict):
        for name, want in p["capabilities"].items():
            if _requested(want):
                a["capabilities"][name] = "active" if a["details_submitted"] else "pending"
            elif isinstance(want, dict) and "requested" in want:
                a["capabilities"][name] = "inactive"
    return a


def list_accounts(st, req):
    return paginate(newest_first(st.accounts, None, req.params.get("created")), req, "/v1/accounts")


def set_account_enabled(st: EmulatorState, account_id: str, charges_enabled: bool = True,
                        payouts_enabled: bool = True, transfers: bool | None = None) -> dict:
    """Test hook: flip an account's capabilities (transfers defaults to charges or payouts enabled)."""
    a = find_account(st, account_id)
    if transfers is None:
        transfers = bool(charges_enabled or payouts_enabled)
    a["charges_enabled"] = bool(charges_enabled)
    a["payouts_enabled"] = bool(payouts_enabled)
    a["details_submitted"] = bool(charges_enabled or payouts_enabled)
    a["requirements"] = _requirements(a["details_submitted"])
    for cap in list(a["capabilities"]):
        a["capabilities"][cap] = "active" if a["details_submitted"] else "inactive"
    a["capabilities"]["transfers"] = "active" if transfers else "inactive"
    st.dirty = True
    return a


def create_account_link(st, req):
    """An onboarding (or update) link for an account: a URL valid for 5 minutes, as Stripe's."""
    p = req.params
    a = find_account(st, p_str(p, "account", required=True), param="account")
    link_type = p_enum(p, "type", ("account_onboarding", "account_update"), default=None)
    if link_type is None:
        raise StripeError(400, "Missing required param: type.", param="type", code="parameter_missing")
    for name in ("refresh_url", "return_url"):
        if not p_str(p, name):
            raise StripeError(400, f"Missing required param: {name}.", param=name, code="parameter_missing")
    now = int(st.now())
    return {"object": "account_link", "created": now, "expires_at": now + 300,
            "url": f"https://connect.stripe.com/setup/e/{a['id']}/{new_id('link', 12)}"}


resource = Resource("accounts", stores=(Store("accounts"),), operations=(
    Operation("POST", "/v1/account_links", create_account_link,
              known("account", "type", "refresh_url", "return_url")),
    Operation("POST", "/v1/accounts", create_account,
              known("type", "business_type", "country", "default_currency", "email", metadata=ANY,
                    capabilities=ANY)),
    Operation("GET", "/v1/accounts", list_accounts, LIST),
    Operation("GET", "/v1/accounts/{id}", get_account, {}),
    Operation("POST", "/v1/accounts/{id}", update_account, known("email", metadata=ANY, capabilities=ANY)),
))
