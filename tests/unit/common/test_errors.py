"""The platform error model: one table from kind to gRPC status, HTTP status and audit
outcome, and the way back from a status a client received."""

from __future__ import annotations

import doctest

import pytest

from services.common import errors
from services.common.errors import Kind, from_status, kind_of_http_status, problem
from services.serving import errors as serving_errors


@pytest.mark.parametrize("module", [errors, serving_errors], ids=lambda m: m.__name__)
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


def test_a_kind_survives_the_round_trip_through_its_grpc_status_and_trailer() -> None:
    for kind in Kind:
        error = errors.error_of(kind, "why", field="where")
        back = from_status(kind.grpc_code, "why", kind=kind.label, field="where")
        assert (type(back), back.kind, back.message, back.field) == (type(error), kind, "why", "where")


def test_without_a_trailer_a_shared_status_takes_the_kind_that_is_safe_to_act_on() -> None:
    # grpc itself answers RESOURCE_EXHAUSTED for a message over its size limit: retrying
    # that forever would stall a consumer, so the bare code is "too large", not "retry".
    assert from_status("RESOURCE_EXHAUSTED", "message larger than max").kind is Kind.TOO_LARGE
    assert not from_status("RESOURCE_EXHAUSTED", "").kind.retryable
    assert from_status("DEADLINE_EXCEEDED", "").kind.retryable
    assert from_status("UNKNOWN", "").kind is Kind.INTERNAL
    assert from_status("NOT_A_CODE", "").kind is Kind.INTERNAL
    # An unknown trailer (a newer server) falls back to the code.
    assert from_status("NOT_FOUND", "", kind="brand-new").kind is Kind.NOT_FOUND


def test_http_statuses_name_kinds_and_unlisted_ones_fall_back_by_class() -> None:
    assert kind_of_http_status(404) is Kind.NOT_FOUND
    assert kind_of_http_status(409) is Kind.CONFLICT
    assert kind_of_http_status(422) is Kind.INVALID
    assert kind_of_http_status(418) is Kind.INVALID
    assert kind_of_http_status(502) is Kind.INTERNAL


def test_the_problem_body_overrides_the_status_where_a_route_fixes_another() -> None:
    body = problem(errors.InvalidArgument("Content-Length is required"), status=411, instance="/v1/x")
    assert (body["status"], body["title"], body["kind"], body["code"]) == (
        411,
        "Length Required",
        "invalid",
        "INVALID_ARGUMENT",
    )
    assert body["instance"] == "/v1/x"


def test_service_errors_are_their_kind_and_carry_no_transport() -> None:
    assert isinstance(serving_errors.Overloaded("x"), errors.Exhausted)
    assert isinstance(serving_errors.TooLarge("x"), errors.TooLarge)
    assert serving_errors.ModelUnavailable("x").kind is Kind.UNAVAILABLE
    for name in ("grpc_code", "http_status"):
        assert not hasattr(serving_errors.ModelNotFound("x"), name)
