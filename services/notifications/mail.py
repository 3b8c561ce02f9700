"""Rendering emails from templates, and the two ways of sending them: SMTP, or .eml files in a folder."""

from __future__ import annotations

import asyncio
import email.policy
import os
import socket
import uuid
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"


class TemporaryFailure(Exception):
    """Try again later (4xx, connection refused, timeout)."""


class PermanentFailure(Exception):
    """The server will never accept this message (5xx, recipient rejected)."""


class Renderer:
    def __init__(self, directory: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def templates(self) -> set[str]:
        return {name.split(".", 1)[0] for name in self.env.list_templates()}

    def render(self, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
        ctx = dict(context)
        if "expires_at" in ctx and "expires_at_human" not in ctx:
            ctx["expires_at_human"] = datetime.fromisoformat(ctx["expires_at"]).strftime("%d %B %Y at %H:%M UTC")
        subject = self.env.get_template(f"{template}.subject.txt").render(ctx).strip()
        text = self.env.get_template(f"{template}.txt").render(ctx)
        html = self.env.get_template(f"{template}.html").render(ctx)
        return subject, text, html


def build_message(
    *,
    delivery_id: uuid.UUID,
    mail_from: str,
    to_email: str,
    to_name: str,
    subject: str,
    text: str,
    html: str,
    now: datetime,
) -> EmailMessage:
    if to_email.isascii():
        msg = EmailMessage()
        msg["To"] = Address(display_name=to_name, addr_spec=to_email)  # the name is encoded as needed
    else:  # an internationalised address needs SMTPUTF8 (RFC 6531) end to end
        msg = EmailMessage(policy=email.policy.SMTPUTF8)
        msg["To"] = to_email
    msg["From"] = mail_from
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{delivery_id}@coworking.invalid>"  # stable across resends: receivers can dedupe
    msg["X-Delivery-ID"] = str(delivery_id)
    # 8bit, not quoted-printable: the link stays intact and copyable in the raw message (.eml files) and every
    # current mail server accepts 8BITMIME
    msg.set_content(text, cte="8bit")
    msg.add_alternative(html, subtype="html", cte="8bit")
    return msg


class Sender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpSender:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        tls: bool = False,
        timeout_s: float = 15.0,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.tls = starttls, tls
        self.timeout_s = timeout_s
        # resolved once: aiosmtplib would otherwise look the local name up in a thread for every connection
        self.local_hostname = socket.getfqdn()

    async def send(self, message: EmailMessage) -> None:
        try:
            errors, _ = await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                use_tls=self.tls,
                timeout=self.timeout_s,
                local_hostname=self.local_hostname,
            )
        except aiosmtplib.SMTPNotSupported as exc:  # e.g. SMTPUTF8 needed and not offered by the server
            raise PermanentFailure(f"the mail server cannot take this message: {exc}") from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            if all(code >= 500 for code in codes):
                raise PermanentFailure(detail) from None
            raise TemporaryFailure(detail) from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise PermanentFailure(f"{exc.code} {exc.message}") from None
            raise TemporaryFailure(f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from None
        if errors:  # some recipients refused while others were accepted: we only ever send to one
            detail = "; ".join(f"{addr}: {r.code} {r.message}" for addr, r in errors.items())
            raise PermanentFailure(detail)


class FileSender:
    """Writes each email as ``<time>-<delivery id>.eml`` into a folder (the default with no SMTP server)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, message)

    def _write(self, message: EmailMessage) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{message['X-Delivery-ID']}.eml"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(message.as_bytes())
            os.replace(tmp, self.directory / name)
        except OSError as exc:
            raise TemporaryFailure(f"cannot write to {self.directory}: {exc}") from None
