"""A job spec's webhook, checked and given its secret before the job is made (the deliveries
are the worker's: ``worker.webhooks``)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request

from api.errors import field_error
from api.schemas import WebhookSpec
from worker.settings import Settings
from worker.webhooks import key_secret, refused_address


def presented_key(request: Request) -> str | None:
    """The API key the request sent, as ``api.deps.get_owner`` reads it: ``Authorization:
    Bearer <key>`` first, else ``X-API-Key``."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return request.headers.get("X-API-Key") or None


def webhook_secret(
    spec: WebhookSpec,
    request: Request,
    settings: Settings,
    owner: str,
    at: Sequence[str] = ("body", "webhook"),
) -> str:
    """The key that will sign the webhook's deliveries: the request's API key's webhook secret
    (``worker.webhooks.key_secret``), or without keys the service's ``webhook_secret``. A 422
    naming ``webhook`` (where ``at`` says it is in the request) when there is none, or
    ``webhook.url`` for a URL that may not be sent to: with keys, one whose host does not
    resolve, or resolves to any loopback, private, link-local or reserved address, unless
    ``webhook_allow_private``."""
    if owner and not settings.webhook_allow_private:
        reason = refused_address(str(spec.url))
        if reason is not None:
            raise field_error([*at, "url"], f"this URL is refused: {reason}")
    if owner:
        key = presented_key(request)
        assert key is not None, "an owner without a key"
        return key_secret(key)
    if not settings.webhook_secret:
        raise field_error(
            list(at),
            "this service runs without API keys and has no GAN_WEBHOOK_SECRET to sign webhook "
            "deliveries with; set it to use webhooks",
        )
    return settings.webhook_secret
