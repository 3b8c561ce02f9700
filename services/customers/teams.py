"""Teams: operators group customers and choose what the team shares; a team's administrators manage its roster.

Every change locks the team row, bumps its version (the ``sequence`` of the ``customers.team.*`` event it
causes) and, when it can move anyone's space access, refreshes the access of the people concerned in the same
transaction (see :mod:`services.customers.access`)."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from services.customers import access, store
from services.customers.models import (
    CustomerTeamPage,
    Team,
    TeamCreate,
    TeamListQuery,
    TeamMember,
    TeamMemberCreate,
    TeamMemberPage,
    TeamMemberPatch,
    TeamMemberQuery,
    TeamPage,
    TeamPatch,
)
from services.customers.routes import CLOCK, TIMEZONE, own_customer_id
from shared.auth import CUSTOMER_ROLES, OPERATOR, operator_or_service, policy, principal, roles
from shared.events import (
    TeamCreatedV1,
    TeamDeletedV1,
    TeamMemberAddedV1,
    TeamMemberRemovedV1,
    TeamMemberUpdatedV1,
    TeamUpdatedV1,
)
from shared.events.base import Message
from shared.http import REQUEST_ID, Problem, field_problem, json_response, parse_body, parse_query, parse_uuid
from shared.idempotency import Idempotency
from shared.openapi import IDEMPOTENCY_KEY, IF_MATCH_OPTIONAL, describe
from shared.outbox import emit
from shared.service import RUNTIME

SERVICE = "customers"
routes = web.RouteTableDef()

TEAM_COLUMNS = (
    "t.id, t.name, t.description, t.paying_member_id, t.max_size, t.share_booking_credit, t.share_printing_credit, "
    "t.share_access, t.version, t.created_at, t.updated_at, "
    "(SELECT count(*) FROM team_memberships m WHERE m.team_id = t.id AND m.left_at IS NULL) AS member_count"
)
SETTINGS = (
    "name",
    "description",
    "paying_member_id",
    "max_size",
    "share_booking_credit",
    "share_printing_credit",
    "share_access",
)


def _team(row: Any) -> dict[str, Any]:
    return Team.model_validate(dict(row)).model_dump(mode="json")


def _member(row: Any) -> dict[str, Any]:
    return TeamMember.model_validate(dict(row)).model_dump(mode="json")


def _settings(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in SETTINGS}


def duplicate_name() -> Problem:
    return field_problem(409, "Team name in use", "name", "another team has this name", "urn:problem:duplicate-team")


async def _emit(conn: asyncpg.Connection, team_id: uuid.UUID, version: int, message: Message, request: Any) -> None:
    await emit(
        conn,
        message,
        producer=SERVICE,
        subject=team_id,
        sequence=version,
        correlation_id=request[REQUEST_ID],
        causation_id=request[REQUEST_ID],
    )


async def _bump(conn: asyncpg.Connection, team_id: uuid.UUID, **changes: Any) -> Any:
    sets = "".join(f"{col} = ${i}, " for i, col in enumerate(changes, start=2))
    return await conn.fetchrow(
        f"UPDATE teams SET {sets}version = version + 1, updated_at = now() WHERE id = $1 RETURNING *",
        team_id,
        *changes.values(),
    )


async def _locked_team(conn: asyncpg.Connection, team_id: uuid.UUID) -> Any:
    row = await conn.fetchrow("SELECT * FROM teams WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE", team_id)
    if row is None:
        raise Problem(404, "Not found", f"No team {team_id}")
    return row


async def _team_view(db: Any, team_id: uuid.UUID) -> dict[str, Any]:
    row = await db.fetchrow(f"SELECT {TEAM_COLUMNS} FROM teams t WHERE t.id = $1", team_id)
    return _team(row)


async def _authorise(request: web.Request, db: Any, team_id: uuid.UUID, *, manage: bool) -> None:
    """Operators: any team. A member or contact: their own team's administrators may manage its roster, and any
    member may read it. Everyone else: 403. A missing or deleted team: 404."""
    if not await db.fetchval("SELECT 1 FROM teams WHERE id = $1 AND deleted_at IS NULL", team_id):
        raise Problem(404, "Not found", f"No team {team_id}")
    who = principal(request)
    if who.role == "admin" or (who.role == "service" and not manage):
        return
    if who.role in CUSTOMER_ROLES and who.customer_id is not None:
        role = await db.fetchval(
            "SELECT role FROM team_memberships WHERE team_id = $1 AND customer_id = $2 AND left_at IS NULL",
            team_id,
            who.customer_id,
        )
        if role == "admin" or (role is not None and not manage):
            return
    raise Problem(
        403,
        "Forbidden",
        "Only operators and this team's administrators manage its roster"
        if manage
        else "Only operators and this team's members see it",
        type_="urn:problem:forbidden",
    )


async def _customer_for_team(conn: asyncpg.Connection, customer_id: uuid.UUID, field: str) -> Any:
    row = await conn.fetchrow("SELECT id, full_name, erased_at FROM customers WHERE id = $1", customer_id)
    if row is None:
        raise field_problem(422, "Invalid request", field, "no such customer")
    if row["erased_at"] is not None:
        raise field_problem(422, "Invalid request", field, "the customer was erased")
    return row


async def _add_member(
    conn: asyncpg.Connection, team: Any, customer_id: uuid.UUID, role: str, request: Any
) -> tuple[Any, Any]:
    """Add to a locked team; returns (membership row, team row after)."""
    if await conn.fetchval(
        "SELECT 1 FROM team_memberships WHERE team_id = $1 AND customer_id = $2 AND left_at IS NULL",
        team["id"],
        customer_id,
    ):
        raise field_problem(
            409, "Already a member", "customer_id", "already a member of this team", "urn:problem:already-member"
        )
    if team["max_size"] is not None:
        count = await conn.fetchval(
            "SELECT count(*) FROM team_memberships WHERE team_id = $1 AND left_at IS NULL", team["id"]
        )
        if count >= team["max_size"]:
            raise Problem(
                409,
                "Team full",
                f"The team has its maximum of {team['max_size']} members",
                type_="urn:problem:team-full",
                max_size=team["max_size"],
            )
    try:
        async with conn.transaction():
            m = await conn.fetchrow(
                """INSERT INTO team_memberships (team_id, customer_id, role, joined_at) VALUES ($1, $2, $3, $4)
                   RETURNING team_id, customer_id, role, joined_at, left_at""",
                team["id"],
                customer_id,
                role,
                request.app[CLOCK].now(),
            )
    except asyncpg.UniqueViolationError:
        raise field_problem(
            409, "Already a member", "customer_id", "already a member of this team", "urn:problem:already-member"
        ) from None
    team = await _bump(conn, team["id"])
    await _emit(
        conn,
        team["id"],
        team["version"],
        TeamMemberAddedV1(team_id=team["id"], customer_id=customer_id, role=role, joined_at=m["joined_at"]),  # type: ignore[arg-type]
        request,
    )
    return m, team


async def _remove_member(
    conn: asyncpg.Connection, team: Any, customer_id: uuid.UUID, now: datetime, correlation_id: Any
) -> Any | None:
    """End the customer's membership of a locked team (clearing them as paying member); None if not a member."""
    left_at = await conn.fetchval(
        """UPDATE team_memberships SET left_at = greatest($3, joined_at)
           WHERE team_id = $1 AND customer_id = $2 AND left_at IS NULL RETURNING left_at""",
        team["id"],
        customer_id,
        now,
    )
    if left_at is None:
        return None
    team = await _bump(conn, team["id"])
    await emit(
        conn,
        TeamMemberRemovedV1(team_id=team["id"], customer_id=customer_id, left_at=left_at),
        producer=SERVICE,
        subject=team["id"],
        sequence=team["version"],
        correlation_id=correlation_id,
        causation_id=correlation_id,
    )
    if team["paying_member_id"] == customer_id:  # the team has no paying member any more: say so
        team = await _bump(conn, team["id"], paying_member_id=None)
        await emit(
            conn,
            TeamUpdatedV1(
                team_id=team["id"], changes={"paying_member_id": {"old": customer_id, "new": None}}, **_settings(team)
            ),
            producer=SERVICE,
            subject=team["id"],
            sequence=team["version"],
            correlation_id=correlation_id,
            causation_id=correlation_id,
        )
    return team


async def leave_all_teams(
    conn: asyncpg.Connection, customer_id: uuid.UUID, now: datetime, correlation_id: str | None
) -> None:
    """The customer leaves every team (erasure). Teams are locked in id order."""
    team_ids = await conn.fetch(
        "SELECT team_id FROM team_memberships WHERE customer_id = $1 AND left_at IS NULL ORDER BY team_id",
        customer_id,
    )
    for r in team_ids:
        team = await conn.fetchrow("SELECT * FROM teams WHERE id = $1 FOR NO KEY UPDATE", r["team_id"])
        await _remove_member(conn, team, customer_id, now, correlation_id)


@routes.post("/v1/teams")
@describe(body=TeamCreate, response=Team, status=201, errors=(409,), tag="teams", headers=IDEMPOTENCY_KEY)
@policy(OPERATOR)
async def create_team(request: web.Request) -> web.Response:
    """Create a team and choose what it shares. A paying member joins it at once (their credit is drawn on first
    when the team shares credit)."""
    body = await parse_body(request, TeamCreate)
    idempotency = Idempotency.from_request(request, route="POST /v1/teams", body=body)
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction():
        if (replay := await idempotency.claim(conn)) is not None:
            return replay
        if body.paying_member_id is not None:
            await _customer_for_team(conn, body.paying_member_id, "paying_member_id")
        team_id = uuid.uuid4()
        try:
            async with conn.transaction():
                team = await conn.fetchrow(
                    """INSERT INTO teams (id, name, description, paying_member_id, max_size, share_booking_credit,
                                          share_printing_credit, share_access)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
                    team_id,
                    body.name,
                    body.description,
                    body.paying_member_id,
                    body.max_size,
                    body.share_booking_credit,
                    body.share_printing_credit,
                    body.share_access,
                )
        except asyncpg.UniqueViolationError:
            raise duplicate_name() from None
        await _emit(conn, team_id, team["version"], TeamCreatedV1(team_id=team_id, **_settings(team)), request)
        if body.paying_member_id is not None:
            _, team = await _add_member(conn, team, body.paying_member_id, "member", request)
            if team["share_access"]:
                await access.refresh(conn, [body.paying_member_id], request[REQUEST_ID], request[REQUEST_ID])
        view = await _team_view(conn, team_id)
        location = f"/v1/teams/{team_id}"
        await idempotency.remember(conn, 201, view, location)
    return json_response(view, status=201, headers={"Location": location, "ETag": f'"{view["version"]}"'})


@routes.get("/v1/teams")
@describe(query=TeamListQuery, response=TeamPage, errors=(400,), tag="teams")
@policy(operator_or_service("customers:read"))
async def list_teams(request: web.Request) -> web.Response:
    """Teams by name, ``q`` matching part of the name; keyset cursor pagination."""
    q = parse_query(request, TeamListQuery)
    args: list[Any] = [q.limit + 1]
    where = ["t.deleted_at IS NULL"]
    if q.q:
        args.append("%" + q.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        where.append(f"t.name ILIKE ${len(args)}")
    if q.cursor:
        try:
            name, _, tid = bytes.fromhex(q.cursor).decode().rpartition("\x1f")
            args.extend([name, uuid.UUID(tid)])
        except ValueError:
            raise field_problem(400, "Invalid cursor", "cursor", "not a cursor from this API") from None
        where.append(f"(lower(t.name), t.id) > (${len(args) - 1}, ${len(args)})")
    rows = await request.app[RUNTIME].db.fetch(
        f"SELECT {TEAM_COLUMNS} FROM teams t WHERE {' AND '.join(where)} ORDER BY lower(t.name), t.id LIMIT $1",
        *args,
    )
    items = rows[: q.limit]
    next_cursor = f"{items[-1]['name'].lower()}\x1f{items[-1]['id']}".encode().hex() if len(rows) > q.limit else None
    return json_response({"items": [_team(r) for r in items], "next_cursor": next_cursor})


@routes.get("/v1/teams/{id}")
@describe(response=Team, tag="teams")
@policy(roles("admin", *CUSTOMER_ROLES, scope="customers:read"))
async def get_team(request: web.Request) -> web.Response:
    """A team: operators any, members their own."""
    team_id = parse_uuid(request.match_info["id"])
    db = request.app[RUNTIME].db
    await _authorise(request, db, team_id, manage=False)
    view = await _team_view(db, team_id)
    return json_response(view, headers={"ETag": f'"{view["version"]}"'})


@routes.patch("/v1/teams/{id}")
@describe(body=TeamPatch, response=Team, errors=(409, 412), tag="teams", headers=IF_MATCH_OPTIONAL)
@policy(OPERATOR)
async def update_team(request: web.Request) -> web.Response:
    """Change a team's settings (``If-Match`` with its ETag optional: a stale one gets 412). Turning
    ``share_access`` on or off grants or revokes the members' access at once (with the events)."""
    team_id = parse_uuid(request.match_info["id"])
    body = await parse_body(request, TeamPatch)
    sent = body.model_dump(exclude_unset=True)
    for required in ("name", "description", "share_booking_credit", "share_printing_credit", "share_access"):
        if required in sent and sent[required] is None:
            raise field_problem(422, "Invalid request", required, "cannot be cleared")
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction():
        team = await _locked_team(conn, team_id)
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match.strip() != "*" and if_match.strip().strip('"') != str(team["version"]):
            raise Problem(
                412,
                "Precondition failed",
                f"The team changed (version {team['version']}); read it again",
                type_="urn:problem:stale-version",
                headers={"ETag": f'"{team["version"]}"'},
            )
        changes = {k: v for k, v in sent.items() if team[k] != v}
        if changes.get("paying_member_id") is not None:
            is_member = await conn.fetchval(
                "SELECT 1 FROM team_memberships WHERE team_id = $1 AND customer_id = $2 AND left_at IS NULL",
                team_id,
                changes["paying_member_id"],
            )
            if not is_member:
                raise field_problem(422, "Invalid request", "paying_member_id", "must be a current member of the team")
        if changes.get("max_size") is not None:
            count = await conn.fetchval(
                "SELECT count(*) FROM team_memberships WHERE team_id = $1 AND left_at IS NULL", team_id
            )
            if count > changes["max_size"]:
                raise field_problem(422, "Invalid request", "max_size", f"the team already has {count} members")
        if changes:
            old = team
            try:
                async with conn.transaction():
                    team = await _bump(conn, team_id, **changes)
            except asyncpg.UniqueViolationError:
                raise duplicate_name() from None
            await _emit(
                conn,
                team_id,
                team["version"],
                TeamUpdatedV1(
                    team_id=team_id,
                    changes={k: {"old": old[k], "new": team[k]} for k in changes},  # type: ignore[misc]
                    **_settings(team),
                ),
                request,
            )
            if "share_access" in changes:
                await access.refresh(
                    conn, await access.team_members(conn, team_id), request[REQUEST_ID], request[REQUEST_ID]
                )
        view = await _team_view(conn, team_id)
    return json_response(view, headers={"ETag": f'"{view["version"]}"'})


@routes.delete("/v1/teams/{id}")
@describe(status=204, tag="teams")
@policy(OPERATOR)
async def delete_team(request: web.Request) -> web.Response:
    """Delete a team: every membership ends now (the dated history stays), shared credit and access with it."""
    team_id = parse_uuid(request.match_info["id"])
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction():
        team = await _locked_team(conn, team_id)
        now = request.app[CLOCK].now()
        members = await access.team_members(conn, team_id)
        await conn.execute(
            "UPDATE team_memberships SET left_at = greatest($2, joined_at) WHERE team_id = $1 AND left_at IS NULL",
            team_id,
            now,
        )
        team = await _bump(conn, team_id, deleted_at=now)
        await _emit(conn, team_id, team["version"], TeamDeletedV1(team_id=team_id, former_member_ids=members), request)
        if team["share_access"]:
            await access.refresh(conn, members, request[REQUEST_ID], request[REQUEST_ID])
    return web.Response(status=204)


@routes.get("/v1/teams/{id}/members")
@describe(query=TeamMemberQuery, response=TeamMemberPage, tag="teams")
@policy(roles("admin", *CUSTOMER_ROLES, scope="customers:read"))
async def list_members(request: web.Request) -> web.Response:
    """The roster: current members, or with ``on`` everyone who was a member at any time that day (the dated
    memberships answer "who was in this team on a given day")."""
    team_id = parse_uuid(request.match_info["id"])
    q = parse_query(request, TeamMemberQuery)
    db = request.app[RUNTIME].db
    await _authorise(request, db, team_id, manage=False)
    select = """SELECT m.team_id, m.customer_id, c.full_name, m.role, m.joined_at, m.left_at
                FROM team_memberships m JOIN customers c ON c.id = m.customer_id WHERE m.team_id = $1"""
    if q.on is None:
        rows = await db.fetch(select + " AND m.left_at IS NULL ORDER BY m.joined_at, m.id", team_id)
    else:
        start = datetime.combine(q.on, time(0), tzinfo=request.app[TIMEZONE])
        rows = await db.fetch(
            select + " AND m.joined_at < $3 AND (m.left_at IS NULL OR m.left_at >= $2) ORDER BY m.joined_at, m.id",
            team_id,
            start,
            start + timedelta(days=1),
        )
    return json_response({"items": [_member(r) for r in rows], "next_cursor": None})


@routes.post("/v1/teams/{id}/members")
@describe(body=TeamMemberCreate, response=TeamMember, status=201, errors=(409,), tag="teams")
@policy(roles("admin", *CUSTOMER_ROLES, changes_state=True))
async def add_member(request: web.Request) -> web.Response:
    """Add a customer to the team (operators, or the team's administrators). Already a member or the team full:
    409."""
    team_id = parse_uuid(request.match_info["id"])
    db = request.app[RUNTIME].db
    await _authorise(request, db, team_id, manage=True)
    body = await parse_body(request, TeamMemberCreate)
    async with db.acquire() as conn, conn.transaction():
        team = await _locked_team(conn, team_id)
        customer = await _customer_for_team(conn, body.customer_id, "customer_id")
        m, team = await _add_member(conn, team, body.customer_id, body.role, request)
        if team["share_access"]:
            await access.refresh(
                conn, await access.team_members(conn, team_id), request[REQUEST_ID], request[REQUEST_ID]
            )
    return json_response(
        _member({**dict(m), "full_name": customer["full_name"]}),
        status=201,
        headers={"Location": f"/v1/teams/{team_id}/members/{body.customer_id}"},
    )


@routes.patch("/v1/teams/{id}/members/{customer_id}")
@describe(body=TeamMemberPatch, response=TeamMember, tag="teams")
@policy(roles("admin", *CUSTOMER_ROLES, changes_state=True))
async def update_member(request: web.Request) -> web.Response:
    """Make a member an administrator of the team, or not (operators, or the team's administrators)."""
    team_id = parse_uuid(request.match_info["id"])
    customer_id = parse_uuid(request.match_info["customer_id"])
    db = request.app[RUNTIME].db
    await _authorise(request, db, team_id, manage=True)
    body = await parse_body(request, TeamMemberPatch)
    async with db.acquire() as conn, conn.transaction():
        team = await _locked_team(conn, team_id)
        m = await conn.fetchrow(
            """SELECT m.id, m.team_id, m.customer_id, c.full_name, m.role, m.joined_at, m.left_at
               FROM team_memberships m JOIN customers c ON c.id = m.customer_id
               WHERE m.team_id = $1 AND m.customer_id = $2 AND m.left_at IS NULL""",
            team_id,
            customer_id,
        )
        if m is None:
            raise Problem(404, "Not found", f"Customer {customer_id} is not a member of team {team_id}")
        if m["role"] != body.role:
            await conn.execute("UPDATE team_memberships SET role = $2 WHERE id = $1", m["id"], body.role)
            team = await _bump(conn, team_id)
            await _emit(
                conn,
                team_id,
                team["version"],
                TeamMemberUpdatedV1(team_id=team_id, customer_id=customer_id, role=body.role),
                request,
            )
    return json_response(_member({**dict(m), "role": body.role}))


@routes.delete("/v1/teams/{id}/members/{customer_id}")
@describe(status=204, tag="teams")
@policy(roles("admin", *CUSTOMER_ROLES, changes_state=True))
async def remove_member(request: web.Request) -> web.Response:
    """Remove a member (operators, or the team's administrators); a member may also leave by removing
    themselves. The membership ends now; its dates stay."""
    team_id = parse_uuid(request.match_info["id"])
    customer_id = parse_uuid(request.match_info["customer_id"])
    db = request.app[RUNTIME].db
    who = principal(request)
    if who.customer_id != customer_id:
        await _authorise(request, db, team_id, manage=True)
    async with db.acquire() as conn, conn.transaction():
        team = await _locked_team(conn, team_id)
        updated = await _remove_member(conn, team, customer_id, request.app[CLOCK].now(), request[REQUEST_ID])
        if updated is None:
            raise Problem(404, "Not found", f"Customer {customer_id} is not a member of team {team_id}")
        if team["share_access"]:
            await access.refresh(
                conn,
                [customer_id, *await access.team_members(conn, team_id)],
                request[REQUEST_ID],
                request[REQUEST_ID],
            )
    return web.Response(status=204)


@routes.get("/v1/customers/{id}/teams")
@describe(response=CustomerTeamPage, tag="teams")
@policy(roles("admin", *CUSTOMER_ROLES, scope="customers:read"))
async def customer_teams(request: web.Request) -> web.Response:
    """The teams a customer belongs to now, with their role and what each team shares."""
    customer_id = own_customer_id(request)
    db = request.app[RUNTIME].db
    if await store.get_customer(db, customer_id) is None:
        raise Problem(404, "Not found", f"No customer {customer_id}")
    rows = await db.fetch(
        """SELECT t.id AS team_id, t.name, m.role, m.joined_at, t.share_booking_credit, t.share_printing_credit,
                  t.share_access
           FROM team_memberships m JOIN teams t ON t.id = m.team_id
           WHERE m.customer_id = $1 AND m.left_at IS NULL AND t.deleted_at IS NULL ORDER BY m.joined_at, m.id""",
        customer_id,
    )
    items = [{**dict(r), "team_id": str(r["team_id"]), "joined_at": r["joined_at"].isoformat()} for r in rows]
    return json_response({"items": items, "next_cursor": None})
