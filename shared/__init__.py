"""Contracts and plumbing shared by the four services. No domain logic lives here."""
