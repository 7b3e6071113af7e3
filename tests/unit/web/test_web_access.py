"""Account-page access rules and static serving (no Redis touched on these paths)."""

from __future__ import annotations

from datetime import date

import pytest
from starlette.testclient import TestClient

from accountpage.access import AccessConfigError, AccessControl, parse_account_keys
from accountpage.app import build_app
from accountpage.usage import period_days


def _client() -> TestClient:
    app = build_app(
        redis_url="redis://127.0.0.1:1/0",
        redis_prefix="mt:",
        api_keys={"svc": "service-key"},
        access=AccessControl({"acme": "acme-key", "globex": "globex-key"}, "admin-key"),
        clickhouse=lambda: pytest.fail("ClickHouse must not be touched"),
    )
    return TestClient(app)


def test_parse_account_keys() -> None:
    assert parse_account_keys(" acme:k1, globex:k:2 ,") == {"acme": "k1", "globex": "k:2"}
    with pytest.raises(AccessConfigError):
        parse_account_keys("acme")
    with pytest.raises(AccessConfigError):
        AccessControl({}, None)


def test_viewer_by_key() -> None:
    access = AccessControl({"acme": "a"}, "root")
    assert access.viewer("a") is not None and access.viewer("a").account == "acme"  # type: ignore[union-attr]
    admin = access.viewer("root")
    assert admin is not None and admin.is_admin and admin.may_see("anyone")
    assert access.viewer("") is None and access.viewer(None) is None and access.viewer("x") is None


def test_account_key_sees_only_its_account() -> None:
    with _client() as client:
        me = client.get("/v1/me", headers={"X-API-Key": "acme-key"})
        assert me.json() == {"admin": False, "accounts": ["acme"]}
        for path in ("/v1/accounts/globex/overview", "/v1/accounts/globex/usage"):
            r = client.get(path, headers={"Authorization": "Bearer acme-key"})
            assert r.status_code == 404 and r.json()["error"] == "unknown_account"
        assert client.get("/v1/me").status_code == 401
        assert client.get("/v1/me", headers={"X-API-Key": "service-key"}).status_code == 401


def test_page_and_assets_are_served_without_a_key() -> None:
    with _client() as client:
        page = client.get("/account")
        assert page.status_code == 200 and "account.js" in page.text
        assert "http" not in page.text.replace("http://www.w3.org", "")  # no CDN
        js = client.get("/account/static/account.js")
        assert js.status_code == 200 and "BALANCE_POLL_MS = 1000" in js.text
        assert client.get("/account/static/account.css").status_code == 200
        assert client.get("/", follow_redirects=False).headers["location"] == "/account"
        # The sidecar's own routes are still there.
        assert client.get("/openapi.json").status_code == 200


def test_period_days_covers_the_billing_period() -> None:
    start = 1_761_955_200_000  # 2025-11-01T00:00Z
    end = 1_764_547_200_000  # 2025-12-01T00:00Z
    p = period_days(start, end, start + 5)
    assert (p.start, p.end) == (date(2025, 11, 1), date(2025, 12, 1))
    fallback = period_days(0, 0, start + 86_400_000 * 3)
    assert (fallback.start, fallback.end) == (date(2025, 11, 1), date(2025, 12, 1))


def test_bad_account_ids_are_422_and_an_outage_is_a_503_that_names_no_address() -> None:
    with _client() as client:  # Redis at 127.0.0.1:1: unreachable
        admin = {"X-API-Key": "admin-key"}
        bad = client.get("/v1/accounts/a{b}/overview", headers=admin)
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
        long_id = client.get(f"/v1/accounts/{'x' * 300}/usage", headers=admin)
        assert long_id.status_code == 422
        for path in ("/v1/me", "/v1/accounts/acme/overview"):
            down = client.get(path, headers=admin)
            assert down.status_code == 503, path
            assert down.json()["error"] == "redis_unavailable"
            assert "127.0.0.1" not in down.text and ":1" not in down.text
