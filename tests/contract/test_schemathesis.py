"""The OpenAPI documents against the running services (schemathesis), so they cannot drift: each service runs
in-process, its document is loaded from its live /openapi.json, and every operation in it is called with generated
requests, valid ones and invalid ones, as an operator (the invalid ones include requests without the token).
Whatever the service answers must be documented: the status, the content type and the body's schema; and no
answer may be a 5xx. Operations that need an existing resource mostly get a documented 404 or 422 with the
generated ids, which is fine. Examples are bounded per operation and derandomized: a run is quick and repeatable
(SCHEMATHESIS_MAX_EXAMPLES=200 for a deeper one)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

SERVICES = ("customers", "accounts", "visitors", "notifications")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# examples per operation and generation mode (valid, invalid)
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
# Operations left out of the run, each with the defect that fails it: {service: {"METHOD /path": "defect"}}.
# None today: every operation of the four services passes.
EXCLUDED: dict[str, dict[str, str]] = {service: {} for service in SERVICES}


def exercise(service: str, base_url: str, token: str) -> list[str]:
    """Runs the checks on every operation of the service's live document; one report per failing operation."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{service}: the live document has no operations"
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            label = f"{operation.method.upper()} {operation.path}"
            if label in EXCLUDED[service]:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=MAX_EXAMPLES,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                    print_blob=False,
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def call(case: Any) -> None:
                    case.call_and_validate(
                        base_url=base_url, session=session, headers=headers, checks=CHECKS, timeout=10
                    )

                try:
                    call()
                except Unsatisfiable:  # nothing to make invalid (no parameters, no body): valid requests only
                    assert mode is GenerationMode.NEGATIVE, f"{service} {label}: no valid request can be generated"
                except (Exception, BaseExceptionGroup) as exc:  # a check failed (a FailureGroup), or the call did
                    failures.append(f"{service} {label} ({mode.value} data):\n{exc}")
    return failures


@pytest.mark.parametrize("service", SERVICES)
async def test_every_answer_of_the_running_service_is_documented(system_factory, keys, service):
    system = system_factory(services=(service,))
    await system.start(service)
    # the calls block (requests) and the service answers on this event loop: they run in a thread
    failures = await asyncio.to_thread(exercise, service, system.urls[service], keys.token())
    assert not failures, f"{len(failures)} operation(s) answer what their document does not say:\n\n" + "\n\n".join(
        failures
    )
