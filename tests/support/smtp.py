"""A real SMTP server (aiosmtpd) in the test process, with switches for temporary and permanent failures."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpBehaviour:
    reject_recipients: set[str] = field(default_factory=set)  # 550 at RCPT
    temporary_failures: int = 0  # the next N messages get 451 at DATA
    closing_at_mail: int = 0  # the next N MAIL commands get 421 and the server hangs up (nothing sent yet)
    hang_up_after_each_message: bool = False  # close the connection right after accepting a message


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_MAIL(self, smtp: Any, session: Any, envelope: Any, address: str, mail_options: Any) -> str:
        with self.server.lock:
            if self.server.behaviour.closing_at_mail > 0:
                self.server.behaviour.closing_at_mail -= 1
                self.server.closed_at_mail += 1
                asyncio.get_running_loop().call_soon(smtp.transport.close)  # after the reply is written
                return "421 4.3.2 Service shutting down, closing transmission channel"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, smtp: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address.lower() in self.server.behaviour.reject_recipients:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        with self.server.lock:
            if self.server.behaviour.temporary_failures > 0:
                self.server.behaviour.temporary_failures -= 1
                self.server.temporary_rejections += 1
                return "451 4.3.0 Try again later"
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.server.messages.append(msg)  # type: ignore[arg-type]
            self.server.peers.append(session.peer)  # the client's (host, port): one per connection
            if self.server.behaviour.hang_up_after_each_message:
                asyncio.get_running_loop().call_soon(smtp.transport.close)  # after the reply is written
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self.behaviour = SmtpBehaviour()
        self.temporary_rejections = 0
        self.closed_at_mail = 0
        self.peers: list[Any] = []  # for each accepted message, the connection it came over
        self.lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def connections_used(self) -> int:
        """How many distinct connections the accepted messages came over."""
        with self.lock:
            return len(set(self.peers))

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address.lower() in str(m["To"]).lower()]
