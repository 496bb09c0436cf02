"""The ``email:send`` task: its type, payload, enqueue helper, handler and task definition.

The payload's ``to``, ``subject``, ``template`` and ``data`` fields match Grit's ``EmailPayload``, so a Go
service using Grit's job client can hand its emails to this worker unchanged::

    {"to": "ada@example.com", "subject": "Welcome", "template": "welcome", "data": {"name": "Ada"}}

From Python::

    await send_email(client, "ada@example.com", "Welcome", "welcome", {"name": "Ada"})

Workers run the task type :func:`send_email_task_for` builds from the settings: :data:`send_email_task` with the
provider's limit (``rate_limit``, ``concurrency_limit``) when the configuration asks for one.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Unpack

import msgspec
from redis.exceptions import RedisError

from framework import TaskDef
from framework.errors import FrameworkError, SkipRetry
from framework.storage import InvalidKey, ObjectNotFound, ObjectTooLarge
from framework_email.backends.base import EmailDeliveryError, OutboundEmail, RecipientsRefused
from framework_email.config import PLUGIN_NAME, provider_limit
from framework_email.message import AttachmentFile, build_message
from framework_email.service import get_email_service

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from framework import Client, EnqueueOptions, Schema, Services, TaskContext, TaskInfo
    from framework_email.config import EmailConfig

__all__ = (
    "DELIVERED_TTL",
    "MAX_INLINE_ATTACHMENT_BYTES",
    "SEND_EMAIL",
    "Attachment",
    "SendEmail",
    "delivered_key",
    "handle_send_email",
    "send_email",
    "send_email_task",
    "send_email_task_for",
)

SEND_EMAIL = "email:send"
"""The task type: a public, stable contract shared with Go services."""

DELIVERED_TTL = 7 * 24 * 3600
"""Seconds the record of who already has a partly refused email is kept: far longer than the task's
retries take with the worker's backoff, so that every retry still finds it, and short enough to clean up."""

MAX_INLINE_ATTACHMENT_BYTES = 256 * 1024
"""The largest attachment :func:`send_email` carries inside the payload; larger files go by storage key."""


class Attachment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A file to attach: small inline bytes, or a key in the app's object storage. Set by the caller.

    Attributes:
        filename: the name the recipient sees.
        content: the bytes themselves (base64 in the JSON payload); for small files only.
        key: a key in ``services.storage``; the file is read when the email is sent.
        content_type: ``type/subtype``; empty means guessed from ``filename``.
    """

    filename: str
    content: bytes | None = None
    key: str | None = None
    content_type: str = ""

    def __post_init__(self) -> None:
        if (self.content is None) == (self.key is None):
            raise ValueError(f"attachment {self.filename!r} needs exactly one of content or key")


class SendEmail(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The ``email:send`` payload. Set by the caller; fields are only ever added, with defaults.

    Attributes:
        to: the recipient, or several; ``Name <address>`` is accepted.
        subject: the subject line (templates see it as ``subject``).
        template: the template's name: ``welcome``, ``password-reset``, ``verify-email``,
            ``notification`` or one the app adds.
        data: the template's variables (``null`` from Go is accepted).
        sender: the ``From`` address (JSON ``from``); empty means the configured ``mail_from``.
        cc: copy recipients.
        bcc: blind copy recipients.
        reply_to: where replies go.
        tags: name/value pairs for the provider's analytics (Resend tags).
        attachments: files to attach; together at most the worker's ``max_attachment_bytes`` setting
            (25 MiB by default), or the email is archived unsent.
    """

    to: str | list[str]
    subject: str
    template: str
    data: dict[str, Any] | None = None
    sender: str = msgspec.field(default="", name="from")
    cc: list[str] = msgspec.field(default_factory=list)
    bcc: list[str] = msgspec.field(default_factory=list)
    reply_to: str | list[str] | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    attachments: list[Attachment] = msgspec.field(default_factory=list)


async def send_email(
    client: Client,
    to: str | Sequence[str],
    subject: str,
    template: str,
    data: Mapping[str, Any] | None = None,
    *,
    sender: str = "",
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: str | Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    attachments: Sequence[Attachment] = (),
    **options: Unpack[EnqueueOptions],
) -> TaskInfo:
    """Enqueue an email: the worker renders ``template`` with ``data`` and delivers it.

    Args:
        client: the enqueue client.
        to: the recipient, or several.
        subject: the subject line.
        template: the template's name (``welcome``, ``password-reset``, ...).
        data: the template's variables; they must be JSON-compatible.
        sender: the ``From`` address; empty means the configured ``mail_from``.
        cc: copy recipients.
        bcc: blind copy recipients.
        reply_to: where replies go.
        tags: name/value pairs for the provider's analytics.
        attachments: files to attach; inline ones must not exceed :data:`MAX_INLINE_ATTACHMENT_BYTES`.
        **options: enqueue options (``queue``, ``process_in``, ``task_id``, ``unique``, ...).

    Returns:
        The enqueued task's info.

    Raises:
        ValueError: an inline attachment is too large; store it and attach it by ``key``.
    """
    for attachment in attachments:
        if attachment.content is not None and len(attachment.content) > MAX_INLINE_ATTACHMENT_BYTES:
            raise ValueError(
                f"attachment {attachment.filename!r} is {len(attachment.content)} bytes, more than the "
                f"{MAX_INLINE_ATTACHMENT_BYTES} a payload may carry: put it in storage and attach it by key"
            )
    payload = SendEmail(
        to=to if isinstance(to, str) else list(to),
        subject=subject,
        template=template,
        data=dict(data) if data is not None else None,
        sender=sender,
        cc=list(cc),
        bcc=list(bcc),
        reply_to=reply_to if reply_to is None or isinstance(reply_to, str) else list(reply_to),
        tags=dict(tags or {}),
        attachments=list(attachments),
    )
    return await send_email_task.enqueue(client, payload, **options)


async def handle_send_email(ctx: TaskContext, payload: SendEmail) -> None:
    """Render the payload's template, build the message and deliver it with the configured backend.

    Raises:
        SkipRetry: the template is missing or needs data the payload lacks, an address is invalid, an
            attachment's storage key does not exist, the attachments are larger than the configured
            ``max_attachment_bytes``, or the provider refused the email for good.
        RetryAfter: the provider asked to wait (rate limit).
        EmailDeliveryError: a temporary delivery failure; retried with backoff. When the provider refused
            some recipients for now and took the email for others, the ones who took it are recorded
            (:func:`delivered_key`) and the retry sends the email only to the rest, with the same
            ``Message-ID``.
    """
    service = get_email_service(ctx.services)
    bodies = await service.renderer.render(payload.template, {**(payload.data or {}), "subject": payload.subject})
    files = await _load_attachments(ctx.services, payload.attachments, service.config.max_attachment_bytes)
    message = build_message(
        sender=payload.sender or service.config.mail_from or "noreply@localhost",
        to=payload.to,
        subject=payload.subject,
        bodies=bodies,
        key=ctx.id,
        cc=payload.cc,
        bcc=payload.bcc,
        reply_to=payload.reply_to or (),
        attachments=files,
    )
    delivered = await _delivered(ctx) if ctx.retried else frozenset[str]()
    outbound = OutboundEmail(message=message, key=ctx.id, tags=payload.tags, delivered=delivered)
    try:
        provider_id = await service.backend.send(outbound)
    except RecipientsRefused as exc:
        await _record_delivered(ctx, exc.accepted)
        raise _refusal_outcome(exc, delivered) from exc
    ctx.logger.info(
        "email_sent",
        template=payload.template,
        backend=service.config.backend,
        provider_id=provider_id,
    )


def delivered_key(schema: Schema, queue: str, task_id: str) -> str:
    """SET ``<ext>:email:delivered:<queue>:<task id>``: the recipients one email task already delivered to.

    Written only when a provider refused some recipients and took the email for others; read on the task's
    retries, which leave these recipients out; expires after :data:`DELIVERED_TTL`.
    """
    return schema.ext_key(PLUGIN_NAME, "delivered", queue, task_id)


async def _delivered(ctx: TaskContext) -> frozenset[str]:
    """The recipients an earlier attempt of this task delivered to (empty unless one was partly refused)."""
    members = await ctx.services.redis.smembers(delivered_key(ctx.services.schema, ctx.queue, ctx.id))
    return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)


async def _record_delivered(ctx: TaskContext, accepted: Sequence[str]) -> None:
    """Add ``accepted`` to the task's delivered set, so that its retries do not send them the email again.

    A failure to record is logged, not raised: the refusal still decides the outcome, and the worst a lost
    record causes is a second copy with the same ``Message-ID``, which receiving systems can drop.
    """
    if not accepted:
        return
    key = delivered_key(ctx.services.schema, ctx.queue, ctx.id)
    try:
        async with ctx.services.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, *accepted)
            pipe.expire(key, DELIVERED_TTL)
            await pipe.execute()
    except RedisError as exc:
        ctx.logger.warning("email_delivered_not_recorded", recipients=list(accepted), error=str(exc))


def _refusal_outcome(exc: RecipientsRefused, delivered: frozenset[str]) -> FrameworkError:
    """Retry while a refusal may pass (4xx); archive when every refusal left is permanent (5xx).

    Either way the message names each refused recipient with the provider's reply, and who has the email.
    """
    have = ", ".join(sorted({*delivered, *exc.accepted})) or "nobody"
    permanent = "; ".join(f"{address}: {reply}" for address, reply in exc.permanent.items())
    if exc.temporary:
        later = "; ".join(f"{address}: {reply}" for address, reply in exc.temporary.items())
        also = f"; refused for good: {permanent}" if permanent else ""
        return EmailDeliveryError(
            f"email refused for now for {later}{also}; delivered to {have}; the retry sends it only to "
            "the recipients who do not have it"
        )
    return SkipRetry(f"email refused for good for {permanent}; delivered to {have}")


async def _load_attachments(services: Services, attachments: Sequence[Attachment], cap: int) -> list[AttachmentFile]:
    """The attachments' bytes, in order: inline, or read from storage; at most ``cap`` bytes in all.

    The inline bytes are counted first; each stored object is then read with what is left of ``cap`` as its
    ``max_size``, so that an object over it is refused before it is read into memory.

    Raises:
        SkipRetry: the attachments are larger than ``cap`` (the message names the file, its size and the
            cap), or a storage key is invalid or does not exist. A retry would meet the same files.
    """
    inline = sum(len(a.content) for a in attachments if a.content is not None)
    if inline > cap:
        names = ", ".join(repr(a.filename) for a in attachments if a.content is not None)
        raise SkipRetry(
            f"the inline attachments ({names}) are {inline} bytes, more than the {cap} bytes setting "
            "plugins.email.max_attachment_bytes allows for one email's attachments"
        )
    left = cap - inline
    files: list[AttachmentFile] = []
    for attachment in attachments:
        if attachment.content is not None:
            files.append(AttachmentFile(attachment.filename, attachment.content, attachment.content_type))
            continue
        data = await _read_attachment(services, attachment, left, cap)
        left -= len(data)
        files.append(AttachmentFile(attachment.filename, data, attachment.content_type))
    return files


async def _read_attachment(services: Services, attachment: Attachment, max_size: int, cap: int) -> bytes:
    """A stored attachment's bytes, refused unread when larger than ``max_size`` (what is left of ``cap``).

    Raises:
        SkipRetry: the key is invalid, does not exist, or names an object larger than ``max_size``.
    """
    key = attachment.key or ""
    try:
        return await services.storage.get(key, max_size=max_size)
    except ObjectNotFound as exc:
        raise SkipRetry(f"attachment {attachment.filename!r}: storage key {key!r} does not exist") from exc
    except ObjectTooLarge as exc:
        room = f"the {cap}" if max_size == cap else f"the {max_size} bytes left of the {cap}"
        others = "" if max_size == cap else f" (the email's other files take {cap - max_size})"
        raise SkipRetry(
            f"attachment {attachment.filename!r}: storage key {key!r} is {exc.size} bytes, more than {room} "
            f"bytes setting plugins.email.max_attachment_bytes allows for one email's attachments{others}"
        ) from exc
    except InvalidKey as exc:
        raise SkipRetry(f"attachment {attachment.filename!r}: {exc}") from exc


send_email_task: TaskDef[SendEmail] = TaskDef(
    type=SEND_EMAIL,
    payload=SendEmail,
    handler=handle_send_email,
    queue="default",
    max_retry=3,
    timeout=120.0,
    description="Render an email template and deliver it (outbox, SMTP or Resend).",
)
"""The task definition the plugin registers; enqueue with :func:`send_email` or ``send_email_task.enqueue``."""


def send_email_task_for(config: EmailConfig) -> TaskDef[SendEmail]:
    """The ``email:send`` task type a worker runs with ``config``: :data:`send_email_task` with the provider's limit.

    Returns:
        :data:`send_email_task` itself when the configuration asks for no limit, otherwise a copy whose
        ``limit`` is :func:`~framework_email.config.provider_limit`'s.

    Raises:
        framework.errors.ConfigError: a limit setting is invalid; the message names it.
    """
    limit = provider_limit(config)
    return send_email_task if limit is None else dataclasses.replace(send_email_task, limit=limit)
