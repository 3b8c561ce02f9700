"""A small typed async client for the coworking backend's HTTP APIs (an example; needs aiohttp and pydantic)."""

from .client import Client
from .errors import ApiError
from .events import Envelope
from .models import (
    Activated,
    Contract,
    ContractCancellation,
    Customer,
    Delivery,
    FieldError,
    Page,
    Plan,
    Problem,
    Suspended,
    TokenGrant,
    UserAccountRequested,
    Visit,
    Visitor,
    VisitorIn,
)

__all__ = [
    "Activated",
    "ApiError",
    "Client",
    "Contract",
    "ContractCancellation",
    "Customer",
    "Delivery",
    "Envelope",
    "FieldError",
    "Page",
    "Plan",
    "Problem",
    "Suspended",
    "TokenGrant",
    "UserAccountRequested",
    "Visit",
    "Visitor",
    "VisitorIn",
]
