"""The event contract: the envelope, and one frozen model per event and major version.

Routing key = ``<event_type>.v<event_version>``, for example ``customers.customer.created.v1``. The key is a
contract string, never derived from a class name.
"""

from shared.events.accounts import (
    AccountActivatedV1,
    AccountCreatedV1,
    AccountReactivatedV1,
    AccountRestoredV1,
    AccountRevokedV1,
    AccountRoleChangedV1,
    AccountSuspendedV1,
)
from shared.events.base import (
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    REGISTRY,
    Envelope,
    Message,
    UnknownMessage,
    lookup,
    make_envelope,
)
from shared.events.customers import (
    ContractEndedV1,
    ContractStartedV1,
    CustomerBecameContactV1,
    CustomerBecameMemberV1,
    CustomerCreatedV1,
    CustomerErasedV1,
    CustomerReactivatedV1,
    CustomerSuspendedV1,
    CustomerUpdatedV1,
    CustomerUserAccountRequestedV1,
)
from shared.events.notifications import EmailFailedV1, EmailSentV1, SendEmailV1
from shared.events.visitors import (
    VisitCancelledV1,
    VisitCheckedInV1,
    VisitCheckedOutV1,
    VisitNoShowV1,
    VisitRegisteredV1,
)

__all__ = [
    "COMMANDS_EXCHANGE",
    "EVENTS_EXCHANGE",
    "REGISTRY",
    "AccountActivatedV1",
    "AccountCreatedV1",
    "AccountReactivatedV1",
    "AccountRestoredV1",
    "AccountRevokedV1",
    "AccountRoleChangedV1",
    "AccountSuspendedV1",
    "ContractEndedV1",
    "ContractStartedV1",
    "CustomerBecameContactV1",
    "CustomerBecameMemberV1",
    "CustomerCreatedV1",
    "CustomerErasedV1",
    "CustomerReactivatedV1",
    "CustomerSuspendedV1",
    "CustomerUpdatedV1",
    "CustomerUserAccountRequestedV1",
    "EmailFailedV1",
    "EmailSentV1",
    "Envelope",
    "Message",
    "SendEmailV1",
    "UnknownMessage",
    "VisitCancelledV1",
    "VisitCheckedInV1",
    "VisitCheckedOutV1",
    "VisitNoShowV1",
    "VisitRegisteredV1",
    "lookup",
    "make_envelope",
]
