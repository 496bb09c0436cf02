"""Building the MIME message of an email: addresses checked, text and HTML alternatives, attachments.

Bad input here (an address without a domain, a line break or control character in a header, a malformed
content type) is permanent, so it raises :class:`~framework.errors.SkipRetry` naming the field and the value.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING

from framework.errors import SkipRetry
from framework_email.backends.base import safe_token

if TYPE_CHECKING:
    from collections.abc import Sequence

    from framework_email.render import RenderedEmail

__all__ = ("AttachmentFile", "build_message", "message_id_for", "parse_addresses", "parse_sender")

_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"(?P<maintype>{_TOKEN})/{_TOKEN}[ \t]*(?:;[^\x00-\x1f\x7f]*)?")
"""``type/subtype``, then optional parameters; no control characters anywhere."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""ASCII control characters but tab and line breaks (a header refuses line breaks itself)."""


@dataclass(frozen=True, slots=True)
class AttachmentFile:
    """An attachment's bytes, ready to go into a message.

    Attributes:
        filename: the name the recipient sees.
        content: the file's bytes.
        content_type: ``type/subtype``; empty means guessed from ``filename``.
    """

    filename: str
    content: bytes
    content_type: str = ""


def parse_addresses(values: str | Sequence[str], field: str) -> tuple[Address, ...]:
    """Parse and check email addresses (``a@b.example`` or ``Name <a@b.example>``, commas allowed).

    An internationalized domain is turned into its ASCII form (``xn--...``), which every server accepts.
    Obsolete but unambiguous syntax is accepted (a period in an unquoted name: ``J. Smith <j@b.example>``);
    the message quotes such a name.

    Args:
        values: one string or several.
        field: the header the addresses are for (``To``, ``Cc``, ...), named in errors.

    Raises:
        SkipRetry: a value is not a valid address; the message names the field and the value.
    """
    parsed: list[Address] = []
    for value in [values] if isinstance(values, str) else values:
        try:
            header = policy.default.header_factory(field, value)
            addresses = header.addresses
        except (ValueError, IndexError, TypeError) as exc:
            raise SkipRetry(f"invalid {field} address {value!r}: {exc}") from exc
        flaws = [d for d in header.defects if not isinstance(d, errors.ObsoleteHeaderDefect)]
        if flaws or not addresses or any(not a.username or not a.domain for a in addresses):
            raise SkipRetry(f"invalid {field} address {value!r}")
        parsed.extend(_ascii_domain(address, field, value) for address in addresses)
    return tuple(parsed)


def parse_sender(value: str, field: str = "From") -> Address:
    """Parse and check a sender: exactly one address (``a@b.example`` or ``Name <a@b.example>``).

    Args:
        value: the sender.
        field: what the value is, named in errors.

    Raises:
        SkipRetry: ``value`` is not a valid address, or holds more than one.
    """
    addresses = parse_addresses(value, field)
    if len(addresses) != 1:
        raise SkipRetry(f"invalid {field} address {value!r}: one address is needed, not {len(addresses)}")
    return addresses[0]


def _ascii_domain(address: Address, field: str, value: str) -> Address:
    """``address`` with an internationalized domain in its ASCII form (``bücher.example`` -> ``xn--bcher-kva.example``).

    Every mail server and header reader takes the ASCII form; the Unicode one needs SMTPUTF8 on the path, and
    in a header it cannot be encoded at all.

    Raises:
        SkipRetry: the domain is not a valid internationalized domain name.
    """
    if address.domain.isascii():
        return address
    try:
        domain = address.domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise SkipRetry(f"invalid {field} address {value!r}: domain {address.domain!r} is not a valid name") from exc
    return Address(display_name=address.display_name, username=address.username, domain=domain)


def message_id_for(key: str, sender: Address) -> str:
    """A ``Message-ID`` that is the same on every attempt to send one email.

    Args:
        key: the email's key (the task id).
        sender: the sender, whose domain ends the id.

    Returns:
        ``<key@sender-domain>`` (the key hashed when it has characters a Message-ID cannot hold).
    """
    try:
        domain = sender.domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "localhost"
    return f"<{safe_token(key)}@{domain or 'localhost'}>"


def build_message(
    *,
    sender: str,
    to: str | Sequence[str],
    subject: str,
    bodies: RenderedEmail,
    key: str,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: str | Sequence[str] = (),
    attachments: Sequence[AttachmentFile] = (),
) -> EmailMessage:
    """Assemble the message: text and HTML as ``multipart/alternative``, then attachments (``multipart/mixed``).

    Args:
        sender: the ``From`` address: exactly one.
        to: recipients.
        subject: the subject line.
        bodies: the rendered text and/or HTML.
        key: the email's key (the task id); it makes the ``Message-ID``.
        cc: copy recipients.
        bcc: blind copy recipients (delivered to, but not shown to the others).
        reply_to: where replies go.
        attachments: files to attach.

    Raises:
        SkipRetry: an address, the subject or an attachment is invalid.
    """
    msg = EmailMessage()
    from_address = parse_sender(sender)
    recipients = parse_addresses(to, "To")
    if not recipients:
        raise SkipRetry("the email has no recipient: 'to' is empty")
    if _CONTROL.search(subject):
        raise SkipRetry(f"invalid Subject {subject!r}: it has a control character")
    try:
        msg["From"] = from_address
        msg["To"] = recipients
        for name, values in (("Cc", cc), ("Bcc", bcc), ("Reply-To", reply_to)):
            if values:
                msg[name] = parse_addresses(values, name)
        msg["Subject"] = subject
    except ValueError as exc:
        raise SkipRetry(f"invalid email header: {exc}") from exc
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id_for(key, from_address)
    if bodies.text is not None:
        msg.set_content(bodies.text)
        if bodies.html is not None:
            msg.add_alternative(bodies.html, subtype="html")
    elif bodies.html is not None:
        msg.set_content(bodies.html, subtype="html")
    for attachment in attachments:
        _attach(msg, attachment)
    return msg


def _attach(msg: EmailMessage, attachment: AttachmentFile) -> None:
    """Add one attachment, its content type given or guessed from its name.

    The type is ``type/subtype`` (parameters allowed: ``text/plain; charset=utf-8``) without control
    characters; a ``multipart`` type is refused, since an attachment's bytes are never a set of MIME parts.
    A ``message`` type (an ``.eml`` file) goes as ``application/octet-stream``: MIME forbids base64 in a
    ``message`` part, so a reader would not get the file's bytes back; the name still tells what it is.
    """
    content_type = attachment.content_type or mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"
    match = _CONTENT_TYPE.fullmatch(content_type)
    if match is None or match["maintype"].lower() == "multipart":
        raise SkipRetry(f"attachment {attachment.filename!r} has an invalid content type {content_type!r}")
    maintype, subtype = match["maintype"], content_type[match.end("maintype") + 1 :]
    if maintype.lower() == "message":
        maintype, subtype = "application", "octet-stream"
    try:
        msg.add_attachment(attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename)
    except ValueError as exc:
        raise SkipRetry(f"attachment {attachment.filename!r} cannot be attached: {exc}") from exc
