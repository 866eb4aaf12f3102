"""The OpenAPI description: served, identical to the file in the repository, in step with
the route table, and checked against the real server by schemathesis (property-based:
generated requests for every operation, responses validated against the description)."""

import json
from pathlib import Path

import pytest
import schemathesis
from erqpy_http import app as http_app
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from http_helpers import start_http_server

SPEC_PATH = Path(http_app.__file__).with_name("openapi.json")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A server for generated requests: waits capped at 20 ms so no example blocks long;
    GET /q and GET /qb take jobs (allow_get_consume) so those operations are exercised,
    not only their 405."""
    data = tmp_path_factory.mktemp("openapi") / "data"
    server = start_http_server(data, {"max_wait_ms": 20, "max_batch": 50, "sample_interval": 0.5,
                                      "allow_get_consume": True})
    yield server
    server.stop()
    # A handler that failed behind a 4xx, or a service that died, would show here.
    assert "Traceback" not in server.srv.log()


@pytest.fixture(scope="module")
def served_schema(fuzzed):
    return schemathesis.openapi.from_url(fuzzed.url("/openapi.json"))


def test_served_description_is_the_file_in_the_repository(fuzzed):
    """GET /openapi.json returns plugins/erqpy-http/erqpy_http/openapi.json unchanged."""
    reply = fuzzed.get("/openapi.json")

    assert json.loads(SPEC_PATH.read_text()) == reply.json()


def test_every_route_is_described_and_every_description_is_routed():
    """The route table and the description list the same (method, path) pairs."""
    spec = json.loads(SPEC_PATH.read_text())
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    routed = {(method, template) for methods, template, _handler in http_app.ROUTES for method in methods}

    assert routed == described


def test_every_operation_lists_its_errors_as_json():
    """Each 4xx/5xx response of the description uses the Error schema."""
    spec = json.loads(SPEC_PATH.read_text())
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and "content" in response:
                    schema = response["content"]["application/json"]["schema"]
                    assert {"$ref": "#/components/schemas/Error"} == schema or path.startswith("/peers"), (method, path, code)


def test_description_is_valid_openapi_3():
    """schemathesis loads and validates the file as OpenAPI 3.0."""
    schema = schemathesis.openapi.from_path(SPEC_PATH)

    assert "3.0.3" == schema.raw_schema["openapi"]
    assert len(list(schema.get_all_operations())) == sum(len(ops) for ops in schema.raw_schema["paths"].values())


# schemathesis's own pytest integration (from_fixture) does not run under pytest 9, so the
# operations are parametrized here and each runs a Hypothesis loop over its strategy.
OPERATIONS = [result.ok() for result in schemathesis.openapi.from_path(SPEC_PATH).get_all_operations()]
LABELS = [operation.label for operation in OPERATIONS]
#: Negative generation needs something to break: a parameter or a body.
WITH_INPUTS = [op.label for op in OPERATIONS if op.definition.raw.get("parameters") or op.definition.raw.get("requestBody")]
EXAMPLES = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.mark.parametrize("label", LABELS)
def test_generated_requests_get_answers_that_match_the_description(label, served_schema, fuzzed):
    """Valid generated requests: no 5xx, declared status codes, content types, body schemas."""
    operation = served_schema.find_operation_by_label(label)

    @EXAMPLES
    @given(operation.as_strategy(GenerationMode.POSITIVE))
    def check(case):
        case.call_and_validate(base_url=fuzzed.base, timeout=10)

    check()


@pytest.mark.parametrize("label", WITH_INPUTS)
def test_invalid_generated_requests_never_cause_a_server_error(label, served_schema, fuzzed):
    """Requests that break the description (negative mode) get 4xx answers, never 5xx."""
    operation = served_schema.find_operation_by_label(label)

    @EXAMPLES
    @given(operation.as_strategy(GenerationMode.NEGATIVE))
    def check(case):
        case.call_and_validate(base_url=fuzzed.base, timeout=10, checks=[not_a_server_error])

    check()
