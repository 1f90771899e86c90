"""The Python client's types (api.client) say what the API answers (api.schemas): the same fields
with the same JSON types, so that a field added to one and not the other fails here."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from api import client, schemas

PAIRS = [
    (client.Job, schemas.JobOut),
    (client.JobWarning, schemas.WarningOut),
    (client.Checkpoint, schemas.CheckpointOut),
    (client.Metrics, schemas.MetricsOut),
    (client.Slot, schemas.SlotOut),
    (client.Worker, schemas.WorkerOut),
    (client.Workers, schemas.WorkerList),
    (client.Webhooks, schemas.WebhooksOut),
    (client.WebhookDelivery, schemas.WebhookDeliveryOut),
    (client.Webhook, schemas.WebhookOut),
    (client.Sweep, schemas.SweepOut),
    (client.SweepSummary, schemas.SweepSummaryOut),
    (client.SweepJob, schemas.SweepJobOut),
    (client.SweepBest, schemas.SweepBestOut),
]


def on_the_wire(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its references resolved and without what does not change the JSON
    (titles, descriptions, defaults, formats: a datetime is a string), so that a TypedDict's and
    a model's can be compared. A model nested in another (a sweep's JobOut) is compared without
    its ``additionalProperties: false`` (a TypedDict cannot say it; the model's own pair checks
    its fields)."""
    defs = schema.get("$defs", {})

    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                nested = plain(defs[node["$ref"].rsplit("/", 1)[-1]])
                return {
                    k: v for k, v in nested.items() if (k, v) != ("additionalProperties", False)
                }
            dropped = ("$defs", "title", "description", "default", "format")
            return {k: plain(v) for k, v in node.items() if k not in dropped and k[:2] != "x-"}
        if isinstance(node, list):
            return [plain(v) for v in node]
        return node

    wire: dict[str, Any] = plain(schema)
    return wire


def client_schema(typed: type) -> dict[str, Any]:
    return on_the_wire(TypeAdapter(typed).json_schema())


def api_schema(model: type[BaseModel]) -> dict[str, Any]:
    return on_the_wire(model.model_json_schema())


@pytest.mark.parametrize(("typed", "model"), PAIRS, ids=[t.__name__ for t, _ in PAIRS])
def test_the_client_has_the_apis_fields(typed, model):
    assert set(client_schema(typed)["properties"]) == set(model.model_fields)
    assert set(client_schema(typed)["required"]) == set(api_schema(model)["required"])


@pytest.mark.parametrize(("typed", "model"), PAIRS, ids=[t.__name__ for t, _ in PAIRS])
def test_each_field_has_the_apis_json_type(typed, model):
    ours, theirs = client_schema(typed)["properties"], api_schema(model)["properties"]
    if typed is client.Metrics:
        # A point is {"step": int, name: float | None, ...}: the client types it as a dict of
        # numbers (a TypedDict with extra items is beyond mypy), which an int step is too.
        point = theirs["points"]["items"]
        assert point["properties"] == {"step": {"type": "integer"}}
        assert ours["points"]["items"]["additionalProperties"] == point["additionalProperties"]
        ours, theirs = {**ours, "points": None}, {**theirs, "points": None}
    assert ours == theirs


def test_a_changed_field_is_seen():
    """The comparison is not blind: a field typed differently on one side differs."""

    class Other(BaseModel):
        code: str
        step: int
        message: str

    assert client_schema(client.JobWarning) != api_schema(Other)
