"""Request and response models of the customers API (validated at the edge, documented in OpenAPI)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictBool, StringConstraints

from shared.text import SINGLE_LINE, SingleLine

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), SINGLE_LINE]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=40, pattern=r"^\+?[0-9 ().\-/]+$")
]


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full_name: Name = Field(description="The customer's full name")
    email: EmailStr = Field(description="Email address; unique among customers (case-insensitive)")
    company_name: Name | None = Field(None, description="Company")
    phone: Phone | None = Field(None, description="Phone number")
    send_welcome: StrictBool = Field(
        False, description="Create a user account and email the welcome message with the set-password link"
    )


class Customer(BaseModel):
    id: uuid.UUID
    full_name: str
    email: str
    company_name: str | None
    phone: str | None
    kind: Literal["member", "contact"]
    standing: Literal["active", "suspended"]
    version: int
    created_at: datetime
    updated_at: datetime


class CustomerQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: SingleLine | None = Field(None, max_length=320, description="Exact email (case-insensitive)")
    kind: Literal["member", "contact"] | None = None
    standing: Literal["active", "suspended"] | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)
