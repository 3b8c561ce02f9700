"""Every route of every service declares who may call it; only the documented routes are open."""

from __future__ import annotations

import pytest

from services.accounts.app import create_app as accounts_app
from services.accounts.settings import AccountsSettings
from services.customers.app import create_app as customers_app
from services.customers.settings import CustomersSettings
from services.notifications.app import create_app as notifications_app
from services.notifications.settings import NotificationsSettings
from services.visitors.app import create_app as visitors_app
from services.visitors.settings import VisitorsSettings
from shared import auth
from shared.auth import route_policies
from shared.http import is_pipelined
from shared.sealing import new_key
from shared.service import _check_pipelined

OPEN_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/v1/activations"),
    ("POST", "/v1/tokens"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/activate"),
    ("POST", "/v1/password-resets"),
    ("POST", "/v1/password-resets/confirm"),
    ("GET", "/reset-password"),
    ("POST", "/v1/logout"),
    ("*", "/{unmatched}"),  # any path no route has: 404, or 405 naming the methods allowed there
}


@pytest.fixture(scope="module")
def apps(tmp_path_factory, keys):
    seal = new_key()
    return {
        "customers": customers_app(CustomersSettings()),
        "accounts": accounts_app(AccountsSettings(jwt_private_key_file=keys.path, seal_key=seal)),
        "visitors": visitors_app(VisitorsSettings()),
        "notifications": notifications_app(NotificationsSettings(seal_key=seal)),
    }


@pytest.mark.parametrize("service", ["customers", "accounts", "visitors", "notifications"])
def test_every_route_declares_a_policy_and_only_documented_routes_are_open(apps, service):
    routes = list(route_policies(apps[service]))
    assert routes, "the service has routes"
    for method, path, policy in routes:
        assert policy is not None, f"{service}: {method} {path} has no policy"
        if policy.open:
            assert (method, path) in OPEN_ROUTES, f"{service}: {method} {path} is open but should not be"


@pytest.mark.parametrize("service", ["customers", "accounts", "visitors", "notifications"])
async def test_every_route_runs_in_the_request_pipeline_and_one_added_around_it_stops_the_service(apps, service):
    """The access check lives in the pipeline each route is wrapped in (shared.service.add_routes): a route added
    straight to the router would answer anyone, so the service refuses to start with one."""
    assert all(is_pipelined(route.handler) for route in apps[service].router.routes())
    sneaky = customers_app(CustomersSettings())

    @auth.policy(auth.roles("admin"))
    async def handler(request):
        raise AssertionError("never called")

    sneaky.router.add_get("/v1/sneaky", handler)
    with pytest.raises(RuntimeError, match=r"without the request pipeline.*GET /v1/sneaky"):
        await _check_pipelined(sneaky)


@pytest.mark.parametrize("service", ["customers", "accounts", "visitors", "notifications"])
def test_each_path_is_one_resource_so_a_request_tries_one_candidate_per_path(apps, service):
    paths = [resource.canonical for resource in apps[service].router.resources()]
    assert len(paths) == len(set(paths)), sorted(p for p in paths if paths.count(p) > 1)


def test_the_accounts_service_refuses_to_start_without_keys():
    from services.accounts.app import ConfigError

    with pytest.raises(ConfigError, match="JWT_PRIVATE_KEY_FILE"):
        accounts_app(AccountsSettings(seal_key=new_key(), jwt_private_key_file=None))


def test_notifications_refuses_to_start_without_the_seal_key():
    with pytest.raises(RuntimeError, match="SEAL_KEY"):
        notifications_app(NotificationsSettings(seal_key=None))
