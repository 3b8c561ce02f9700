"""Rendering emails from templates, and the two ways of sending them: SMTP, or .eml files in a folder."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
from aiosmtplib.email import flatten_message
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape

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
            auto_reload=False,  # the templates ship with the code: no stat() of each file on every email
        )
        self._compiled: dict[str, tuple[Template, Template, Template]] = {}

    def templates(self) -> set[str]:
        return {name.split(".", 1)[0] for name in self.env.list_templates()}

    def render(self, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
        ctx = dict(context)
        if "expires_at" in ctx and "expires_at_human" not in ctx:
            ctx["expires_at_human"] = datetime.fromisoformat(ctx["expires_at"]).strftime("%d %B %Y at %H:%M UTC")
        compiled = self._compiled.get(template)
        if compiled is None:
            compiled = (
                self.env.get_template(f"{template}.subject.txt"),
                self.env.get_template(f"{template}.txt"),
                self.env.get_template(f"{template}.html"),
            )
            self._compiled[template] = compiled
        subject, text, html = compiled
        return subject.render(ctx).strip(), text.render(ctx), html.render(ctx)


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


_HEADER_BREAKS = ("\r", "\n")


@dataclass(frozen=True)
class OutgoingEmail:
    """An email ready for the wire: the envelope and the whole message as bytes (CRLF line endings, 8bit bodies),
    written directly by ``compose`` rather than through ``EmailMessage``, whose header parsing and generator were
    most of the notifications service's CPU per email. The parts are kept to rebuild it as an ``EmailMessage``
    (``message()``), for a server without 8BITMIME."""

    delivery_id: uuid.UUID
    sender: str  # envelope MAIL FROM
    recipient: str  # envelope RCPT TO
    data: bytes
    utf8: bool  # the recipient's address needs SMTPUTF8
    parts: dict[str, Any]  # build_message's arguments

    def message(self) -> EmailMessage:
        return build_message(**self.parts)


def _plain_header(name: str, value: str) -> str:
    if any(c in value for c in _HEADER_BREAKS):
        raise ValueError(f"{name} header values may not contain linefeed or carriage return characters")
    return value


def _encoded(name: str, value: str, utf8: bool) -> str:
    """A header value as it goes on the wire: ASCII (or anything, in an SMTPUTF8 message) as it is unless it would
    pass the line limit, anything else as RFC 2047 encoded-words (folded)."""
    _plain_header(name, value)
    if (value.isascii() or utf8) and len(value.encode()) + len(name) < 990:  # within the 998-octet line limit
        return value
    return Header(value, "us-ascii" if value.isascii() else "utf-8", header_name=name).encode(linesep="\r\n")


def _body(text: str) -> bytes:
    # as EmailMessage.set_content(text, cte="8bit") writes it: every line ending normalised, a final newline
    return b"\r\n".join(text.encode("utf-8").splitlines()) + b"\r\n"


def compose(
    *,
    delivery_id: uuid.UUID,
    mail_from: str,
    to_email: str,
    to_name: str,
    subject: str,
    text: str,
    html: str,
    now: datetime,
) -> OutgoingEmail:
    """The message ``build_message`` builds (same headers, multipart/alternative text and HTML in 8bit UTF-8),
    written straight to bytes. Raises ValueError for what cannot be a header."""
    parts = {
        "delivery_id": delivery_id,
        "mail_from": mail_from,
        "to_email": to_email,
        "to_name": to_name,
        "subject": subject,
        "text": text,
        "html": html,
        "now": now,
    }
    utf8 = not to_email.isascii()
    _plain_header("To", to_email)
    _plain_header("From", mail_from)
    if utf8:  # an internationalised address needs SMTPUTF8 (RFC 6531) end to end; no display name, as before
        to = to_email
    else:
        Address(addr_spec=to_email)  # raises for what is not an address
        if not to_name:
            to = to_email
        elif to_name.isascii():
            to = formataddr((_plain_header("To", to_name), to_email))
        else:
            to = f"{_encoded('To', to_name, False)} <{to_email}>"
    sender = parseaddr(mail_from)[1] or mail_from
    boundary = f"==============={uuid.uuid4().int % 10**19:019d}=="
    head = (
        f"To: {to}\r\n"
        f"From: {mail_from}\r\n"
        f"Subject: {_encoded('Subject', subject, utf8)}\r\n"
        f"Date: {format_datetime(now)}\r\n"
        f"Message-ID: <{delivery_id}@coworking.invalid>\r\n"  # stable across resends: receivers can dedupe
        f"X-Delivery-ID: {delivery_id}\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        "\r\n"
    )
    part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
    data = b"".join(
        (
            head.encode("utf-8"),
            f"--{boundary}\r\n".encode(),
            part.format("plain").encode(),
            _body(text),
            f"\r\n--{boundary}\r\n".encode(),  # the CRLF before a boundary belongs to the boundary
            part.format("html").encode(),
            _body(html),
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    return OutgoingEmail(delivery_id, sender, to_email, data, utf8, parts)


class Sender(Protocol):
    async def send(self, message: OutgoingEmail) -> None: ...


@dataclass(eq=False)
class _Connection:
    client: aiosmtplib.SMTP
    messages: int = 0  # mail transactions completed on it
    last_used: float = 0.0  # time.monotonic()


class _NotStarted(Exception):
    """The connection failed before the server took the MAIL command: nothing of the message was delivered, so
    sending it again on a fresh connection cannot duplicate it."""


class SmtpSender:
    """Sends over a pool of persistent SMTP connections (at most ``max_connections`` open, one mail transaction
    at a time on each), opened on demand, re-used from one email to the next, and closed after
    ``max_messages_per_connection`` emails, after ``idle_timeout_s`` unused, or after any error that may leave
    the conversation in an unknown state.

    A re-used connection that turns out to be dead (the server closed it, or answers 421, at the MAIL command,
    before any part of the message was sent) is replaced by a fresh one and the email sent on it at once: nothing
    was delivered, so this neither loses nor doubles it. A failure from MAIL on is reported as before (temporary
    or permanent), and the connection is reset (RSET) or dropped."""

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
        max_connections: int = 10,
        max_messages_per_connection: int = 100,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.tls = starttls, tls
        self.timeout_s = timeout_s
        self.max_messages_per_connection = max(1, max_messages_per_connection)
        self.idle_timeout_s = idle_timeout_s
        # resolved once: aiosmtplib would otherwise look the local name up in a thread for every connection
        self.local_hostname = socket.getfqdn()
        self._slots = asyncio.Semaphore(max(1, max_connections))
        self._idle: list[_Connection] = []  # most recently used last
        self.connections_opened = 0

    async def send(self, message: OutgoingEmail) -> None:
        async with self._slots:
            conn = self._take()
            keep = False
            try:
                if conn.client.is_connected:
                    try:
                        errors = await self._transaction(conn.client, message)
                    except _NotStarted:  # dead re-used connection: nothing was sent, use a fresh one
                        self._discard(conn)
                        conn = self._new()
                        errors = await self._send_fresh(conn, message)
                else:
                    errors = await self._send_fresh(conn, message)
                conn.messages += 1
                keep = True
            except aiosmtplib.SMTPNotSupported as exc:  # e.g. SMTPUTF8 needed and not offered by the server
                keep = conn.client.is_connected
                raise PermanentFailure(f"the mail server cannot take this message: {exc}") from None
            except aiosmtplib.SMTPRecipientsRefused as exc:  # the envelope was reset (RSET)
                keep = conn.client.is_connected
                codes = [r.code for r in exc.recipients]
                detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
                if all(code >= 500 for code in codes):
                    raise PermanentFailure(detail) from None
                raise TemporaryFailure(detail) from None
            except aiosmtplib.SMTPResponseException as exc:  # the envelope was reset (RSET), unless 421
                keep = conn.client.is_connected and exc.code != 421
                if exc.code >= 500:
                    raise PermanentFailure(f"{exc.code} {exc.message}") from None
                raise TemporaryFailure(f"{exc.code} {exc.message}") from None
            except ValueError as exc:  # an address aiosmtplib will not send to
                keep = conn.client.is_connected
                raise PermanentFailure(f"the message cannot be sent: {exc}") from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError, _NotStarted) as exc:
                raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from None
            finally:
                if keep:
                    self._give_back(conn)
                else:
                    self._discard(conn)
            if errors:  # some recipients refused while others were accepted: we only ever send to one
                detail = "; ".join(f"{addr}: {r.code} {r.message}" for addr, r in errors.items())
                raise PermanentFailure(detail)

    async def close(self) -> None:
        """Say goodbye (QUIT) on every idle connection."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(c) for c in idle), return_exceptions=True)

    # -- the pool

    def _new(self) -> _Connection:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            start_tls=self.starttls,
            use_tls=self.tls,
            timeout=self.timeout_s,
            local_hostname=self.local_hostname,
        )
        return _Connection(client)

    def _take(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.client.is_connected and now - conn.last_used < self.idle_timeout_s:
                return conn
            self._discard(conn)
        return self._new()

    def _give_back(self, conn: _Connection) -> None:
        conn.last_used = time.monotonic()
        if conn.messages >= self.max_messages_per_connection:
            task = asyncio.create_task(self._quit(conn))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
            return
        self._idle.append(conn)

    @staticmethod
    def _discard(conn: _Connection) -> None:
        with contextlib.suppress(Exception):
            conn.client.close()

    @staticmethod
    async def _quit(conn: _Connection) -> None:
        try:
            await asyncio.wait_for(conn.client.quit(), timeout=5)
        except Exception:
            conn.client.close()

    # -- one email

    async def _send_fresh(self, conn: _Connection, message: OutgoingEmail) -> dict[str, aiosmtplib.SMTPResponse]:
        client = conn.client
        await client.connect()  # STARTTLS and login as configured
        self.connections_opened += 1
        if client.last_ehlo_response is None and client.last_helo_response is None:
            try:  # the server's extensions (8BITMIME, SMTPUTF8, SIZE) decide how the message is sent
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        try:
            return await self._transaction(conn.client, message)
        except _NotStarted as exc:  # on a fresh connection this is an ordinary connection failure
            raise aiosmtplib.SMTPServerDisconnected(str(exc)) from None

    async def _transaction(self, client: aiosmtplib.SMTP, message: OutgoingEmail) -> dict[str, Any]:
        """One mail transaction (MAIL, RCPT, DATA) as aiosmtplib's ``send_message`` does it, telling a failure
        before the server took MAIL (``_NotStarted``) from the others. Returns the refused recipients."""
        sender, recipients, utf8 = message.sender, [message.recipient], message.utf8
        options: list[str] = []
        if utf8:
            if not client.supports_extension("smtputf8"):
                raise aiosmtplib.SMTPNotSupported(
                    "An address containing non-ASCII characters was provided, but SMTPUTF8 is not supported"
                )
            options.append("SMTPUTF8")
        if client.supports_extension("8BITMIME"):
            options.append("BODY=8BITMIME")
            flat = message.data
        else:  # rare today: the bodies go quoted-printable or base64, through the standard library
            flat = flatten_message(message.message(), utf8=utf8, cte_type="7bit")
        if client.supports_extension("size"):
            size = len(flat) + flat.count(b"\n") - flat.count(b"\r\n")  # as sent, every line ending CRLF
            options.insert(0, f"size={size}")
        encoding = "utf-8" if utf8 else "ascii"
        try:
            await client.mail(sender, options=options, encoding=encoding)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError, aiosmtplib.SMTPTimeoutError) as exc:
            raise _NotStarted(f"{type(exc).__name__}: {exc}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing this connection
                raise _NotStarted(f"{exc.code} {exc.message}") from None
            await self._reset(client)
            raise
        try:
            refused: dict[str, aiosmtplib.SMTPResponse] = {}
            for rcpt in recipients:
                try:
                    await client.rcpt(rcpt, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[exc.recipient] = aiosmtplib.SMTPResponse(exc.code, exc.message)
            if len(refused) == len(recipients):
                raise aiosmtplib.SMTPRecipientsRefused(
                    [aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in refused.items()]
                )
            await client.data(flat)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            await self._reset(client)
            raise
        return refused

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        """Clear the envelope after a refusal so that the connection can carry the next email; if that fails,
        close it (the pool then drops it)."""
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, ConnectionError, OSError):
            client.close()


_BACKGROUND: set[asyncio.Task[None]] = set()


class FileSender:
    """Writes each email as ``<time>-<delivery id>.eml`` into a folder (the default with no SMTP server)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: OutgoingEmail) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, message)

    def _write(self, message: OutgoingEmail) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{message.delivery_id}.eml"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(message.data.replace(b"\r\n", b"\n"))
            os.replace(tmp, self.directory / name)
        except OSError as exc:
            raise TemporaryFailure(f"cannot write to {self.directory}: {exc}") from None
