from __future__ import annotations

from .models import Problem


class ApiError(Exception):
    """A non-2xx answer. ``problem`` is the RFC 9457 body (``type``, ``title``, ``detail``, ``errors`` naming each
    bad field); an answer that was not a problem (a proxy's HTML page...) gets a problem made from its status."""

    def __init__(self, status: int, problem: Problem, request_id: str | None = None) -> None:
        self.status = status
        self.problem = problem
        self.request_id = request_id  # the X-Request-ID to quote when asking the operator of the API
        super().__init__(str(self))

    @property
    def type(self) -> str:
        return self.problem.type

    @property
    def fields(self) -> list[str]:
        """The names of the invalid fields (validation errors), in the server's order."""
        return [error.field for error in self.problem.errors]

    def __str__(self) -> str:
        text = f"{self.status} {self.problem.title}"
        if self.problem.detail:
            text += f": {self.problem.detail}"
        if self.problem.errors:
            text += " (" + "; ".join(f"{e.field}: {e.message}" for e in self.problem.errors) + ")"
        return text
