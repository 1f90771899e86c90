"""/jobs/{id}/webhooks: a job's webhook and the record of its deliveries."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AUTH_RESPONSES, STORE_RESPONSES, JobDep, SessionDep
from api.schemas import WebhookDeliveryOut, WebhookOut, WebhooksOut
from worker.store import webhooks

router = APIRouter(
    prefix="/jobs", tags=["webhooks"], responses={**AUTH_RESPONSES, **STORE_RESPONSES}
)


@router.get(
    "/{job_id}/webhooks",
    response_model=WebhooksOut,
    responses={404: {"description": "No such job."}},
)
def job_webhooks(job: JobDep, session: SessionDep) -> WebhooksOut:
    """The job's webhook (null when its spec had none) and its deliveries, oldest first: for
    each event sent or to send, its state (pending, delivered, failed), the attempts made, the
    HTTP status of each, the latest error and when it is tried next.

    The worker POSTs each event the webhook wants, as JSON ``{id, event, job_id, created_at,
    data}`` (data: the event stream's), signed in ``X-GAN-Signature: t=<unix time>,v1=<hex
    HMAC-SHA256 of "<t>.<body>">`` with the API key's webhook secret (or the service's
    GAN_WEBHOOK_SECRET without keys); a failed attempt is retried with exponential backoff,
    and the delivery recorded as failed after the last."""
    hook = webhooks.get_webhook(session, job.id)
    spec = None
    if hook is not None:
        spec = WebhookOut(
            url=hook.url,
            events=hook.events,
            progress_every_s=hook.progress_every_s,
        )
    deliveries = [
        WebhookDeliveryOut(
            id=d.id,
            event_id=d.event_id,
            event=d.kind,
            state=d.state,
            attempts=d.attempts,
            status_codes=d.status_codes,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )
        for d in webhooks.deliveries_of(session, job.id)
    ]
    session.commit()
    return WebhooksOut(job_id=job.id, webhook=spec, deliveries=deliveries)
