"""Login, sessions, TOTP, API tokens, user administration and access grants over HTTP.

The login calls carry the credentials in their body and need no other credential (a user
whose password expired can still change it); they are rate limited per source address (429).
User administration works in the caller's tenant only: a user of another tenant is 404,
exactly like one that does not exist. Security admins and auditors are the platform
operator's to manage (``shopfloor user``): here they are listed, and any change is 403.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from shopfloor.api.deps import SESSION_COOKIE, Caller, get_platform, need, source_of
from shopfloor.api.platform import Platform
from shopfloor.api.registry_routes import AUTH, E404, E409, E422, ErrorBody, Responses
from shopfloor.core.errors import BadInput, Forbidden
from shopfloor.registry.models import NAME_LEN
from shopfloor.security.auth import (
    MAX_TOKEN_DAYS,
    GrantInfo,
    TokenInfo,
    UserInfo,
)
from shopfloor.security.passwords import MAX_LENGTH
from shopfloor.security.principal import Principal, Scope
from shopfloor.security.roles import Permission, Role

router = APIRouter(prefix="/api/v1")

Plat = Annotated[Platform, Depends(get_platform)]
UsersManage = Annotated[Scope, Depends(need(Permission.USERS_MANAGE))]
Granting = Annotated[Scope, Depends(need(Permission.ACCESS_GRANT))]

Name = Annotated[str, Field(min_length=1, max_length=NAME_LEN)]
Secret = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]
PermissionField = Annotated[Permission, Field(strict=False)]
RoleField = Annotated[Role, Field(strict=False)]
# Ids beyond SQLite's 64-bit integers would fail in the driver: refuse them as bad input.
Id = Annotated[int, Path(ge=1, le=2**62)]


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


E401: Responses = {401: _err("Wrong credentials (one answer for every cause)")}
E403: Responses = {403: _err("Not allowed (permission, expired password, TOTP needed)")}
E423: Responses = {423: _err("Account locked after too many failed logins")}
CALLER: Responses = {**AUTH, **E403}


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------


class Credentials(_In):
    tenant: Name | None = Field(None, description="The user's tenant; null for platform users.")
    username: Name
    password: Secret


class LoginIn(Credentials):
    totp: str | None = Field(None, max_length=16, description="The 6-digit code, if required.")


class PasswordChangeIn(Credentials):
    new_password: Secret
    totp: str | None = Field(
        None, max_length=16, description="The 6-digit code, if the user has TOTP enrolled."
    )


class TotpConfirmIn(Credentials):
    code: str = Field(min_length=1, max_length=16)


class BindingOut(BaseModel):
    role: Role
    asset_id: int | None = None


class RoleIn(_In):
    role: RoleField
    asset_id: StrictInt | None = Field(
        None, ge=1, le=2**62, description="Bind below this asset only."
    )


class UserOut(BaseModel):
    id: int
    tenant_id: int | None
    username: str
    display_name: str
    roles: list[BindingOut]
    totp_enrolled: bool
    disabled: bool
    locked_until: datetime | None
    created_at: datetime


def user_out(u: UserInfo) -> UserOut:
    return UserOut(
        id=u.id,
        tenant_id=u.tenant_id,
        username=u.username,
        display_name=u.display_name,
        roles=[BindingOut(role=b.role, asset_id=b.asset_id) for b in u.bindings],
        totp_enrolled=u.totp_enrolled,
        disabled=u.disabled,
        locked_until=u.locked_until,
        created_at=u.created_at,
    )


class LoginOut(BaseModel):
    token: str = Field(description="The session secret (also set as the sf_session cookie).")
    expires_at: datetime
    user: UserOut


class TotpEnrolOut(BaseModel):
    secret: str
    otpauth_uri: str


class MeOut(BaseModel):
    kind: str
    name: str
    user: UserOut | None
    tenant: str | None
    roles: list[BindingOut]
    permissions: list[Permission]
    scopes: list[Permission] | None
    grant_id: int | None


class TokenIn(_In):
    name: Name
    scopes: list[PermissionField] | None = Field(
        None,
        min_length=1,
        description="Permissions the token keeps; null: all the user holds now (a later "
        "promotion does not widen the token).",
    )
    expires_in_days: StrictInt | None = Field(
        None, ge=1, le=MAX_TOKEN_DAYS, description="Default 90 days."
    )


class TokenOut(BaseModel):
    id: int
    name: str
    scopes: list[Permission] | None
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None


def token_out(t: TokenInfo) -> TokenOut:
    return TokenOut(
        id=t.id,
        name=t.name,
        scopes=None if t.scopes is None else sorted(t.scopes),
        expires_at=t.expires_at,
        created_at=t.created_at,
        revoked_at=t.revoked_at,
    )


class TokenCreated(BaseModel):
    token: str = Field(description="The secret, shown this once only.")
    info: TokenOut


class UserIn(_In):
    username: Name
    password: Secret
    display_name: str = Field("", max_length=NAME_LEN)
    roles: list[RoleIn] = Field(default_factory=list, max_length=50)


class UserPatch(_In):
    disabled: bool | None = None
    display_name: str | None = Field(None, max_length=NAME_LEN)


class RolesIn(_In):
    roles: list[RoleIn] = Field(max_length=50)


class PasswordResetOut(BaseModel):
    password: str = Field(description="A one-time password; it must be changed at login.")


class GrantIn(_In):
    grantee: Name = Field(description="The platform user's username.")
    duration_hours: StrictInt = Field(ge=1, le=720)
    reason: str = Field(min_length=1, max_length=2000)


class GrantOut(_Out):
    id: int
    grantee: str
    granted_by: str
    reason: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


def _grant_out(g: GrantInfo) -> GrantOut:
    return GrantOut.model_validate(g)


def _user_id(principal: Principal) -> int:
    if principal.user_id is None:
        raise Forbidden("API tokens belong to users; this credential is not a user's")
    return principal.user_id


def _whole_tenant(scope: Scope) -> int:
    # A user admin bound below an asset would still manage every user of the tenant:
    # refuse it, the role must hold tenant-wide.
    if not scope.whole_tenant:
        raise Forbidden(f"managing users needs {scope.permission.value} for the whole tenant")
    return scope.tenant_id


# ---------------------------------------------------------------------------------------------
# Login, sessions, passwords, TOTP
# ---------------------------------------------------------------------------------------------


@router.post(
    "/auth/login",
    summary="Log in; returns a session token and sets the session cookie",
    responses={**E401, **E403, **E422, **E423},
    tags=["auth"],
)
def login(body: LoginIn, request: Request, response: Response, plat: Plat) -> LoginOut:
    info, secret, user = plat.auth.login(
        body.tenant, body.username, body.password, body.totp, source=source_of(request)
    )
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(plat.settings.session_max_age_s),
        httponly=True,
        samesite="strict",
        secure=plat.settings.https,
        path="/",
    )
    return LoginOut(token=secret, expires_at=info.expires_at, user=user_out(user))


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End the caller's login session",
    responses={**AUTH, **E422},
    tags=["auth"],
)
def logout(me: Caller, request: Request, plat: Plat) -> Response:
    plat.auth.logout(me, source=source_of(request))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post(
    "/auth/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change a password (also when it has expired); ends the user's sessions",
    responses={**E401, **E403, **E422, **E423},
    tags=["auth"],
)
def change_password(body: PasswordChangeIn, request: Request, plat: Plat) -> Response:
    plat.auth.change_password(
        body.tenant,
        body.username,
        body.password,
        body.new_password,
        body.totp,
        source=source_of(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/auth/totp/enroll",
    summary="Start TOTP enrolment (until confirmed): returns the secret and otpauth URI",
    responses={**E401, **E409, **E422, **E423},
    tags=["auth"],
)
def totp_enroll(body: Credentials, request: Request, plat: Plat) -> TotpEnrolOut:
    e = plat.auth.enroll_totp(body.tenant, body.username, body.password, source=source_of(request))
    return TotpEnrolOut(secret=e.secret, otpauth_uri=e.otpauth_uri)


@router.post(
    "/auth/totp/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Confirm TOTP enrolment with a first code",
    responses={**E401, **E409, **E422, **E423},
    tags=["auth"],
)
def totp_confirm(body: TotpConfirmIn, request: Request, plat: Plat) -> Response:
    plat.auth.confirm_totp(
        body.tenant, body.username, body.password, body.code, source=source_of(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/auth/me", summary="Who the caller is", responses=AUTH, tags=["auth"])
def me(caller: Caller, plat: Plat) -> MeOut:
    user = None if caller.user_id is None else user_out(plat.auth.user_by_id(caller.user_id))
    tenant_id = caller.tenant.id if caller.tenant else None
    return MeOut(
        kind=caller.kind.value,
        name=caller.name,
        user=user,
        tenant=caller.tenant.name if caller.tenant else None,
        roles=[BindingOut(role=b.role, asset_id=b.asset_id) for b in caller.bindings],
        permissions=sorted(caller.permissions(tenant_id)),
        scopes=None if caller.scopes is None else sorted(caller.scopes),
        grant_id=caller.grant_id,
    )


# ---------------------------------------------------------------------------------------------
# API tokens (a user's own)
# ---------------------------------------------------------------------------------------------


@router.post(
    "/auth/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API token of the caller (needs a login session); returns its secret once",
    responses={**CALLER, **E422},
    tags=["auth"],
)
def create_token(body: TokenIn, caller: Caller, request: Request, plat: Plat) -> TokenCreated:
    days = body.expires_in_days
    info, secret = plat.auth.issue_token(
        _user_id(caller),
        body.name,
        body.scopes,
        None if days is None else days * 86400.0,
        actor=caller,
        source=source_of(request),
    )
    return TokenCreated(token=secret, info=token_out(info))


@router.get("/auth/tokens", summary="The caller's API tokens", responses=CALLER, tags=["auth"])
def list_tokens(caller: Caller, plat: Plat) -> list[TokenOut]:
    return [token_out(t) for t in plat.auth.list_tokens(_user_id(caller))]


@router.delete(
    "/auth/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke one of the caller's API tokens (effective on the next request)",
    responses={**CALLER, **E404, **E422},
    tags=["auth"],
)
def revoke_token(token_id: Id, caller: Caller, request: Request, plat: Plat) -> Response:
    plat.auth.revoke_token(_user_id(caller), token_id, actor=caller, source=source_of(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------------------------------
# Users of the caller's tenant
# ---------------------------------------------------------------------------------------------


def _roles(roles: list[RoleIn]) -> list[tuple[Role, int | None]]:
    return [(r.role, r.asset_id) for r in roles]


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    summary="Create a user of the caller's tenant",
    responses={**CALLER, **E404, **E409, **E422},
    tags=["users"],
)
def create_user(body: UserIn, scope: UsersManage, request: Request, plat: Plat) -> UserOut:
    u = plat.auth.create_user(
        _whole_tenant(scope),
        body.username,
        body.password,
        _roles(body.roles),
        display_name=body.display_name,
        actor=scope.principal,
        source=source_of(request),
    )
    return user_out(u)


@router.get("/users", summary="The users of the caller's tenant", responses=CALLER, tags=["users"])
def list_users(scope: UsersManage, plat: Plat) -> list[UserOut]:
    return [user_out(u) for u in plat.auth.list_users(_whole_tenant(scope))]


@router.get("/users/{username}", summary="One user", responses={**CALLER, **E404}, tags=["users"])
def get_user(username: str, scope: UsersManage, plat: Plat) -> UserOut:
    return user_out(plat.auth.get_user(_whole_tenant(scope), username))


@router.patch(
    "/users/{username}",
    summary="Disable/enable a user or change the display name",
    responses={**CALLER, **E404, **E422},
    tags=["users"],
)
def patch_user(
    username: str, body: UserPatch, scope: UsersManage, request: Request, plat: Plat
) -> UserOut:
    u = plat.auth.update_user(
        _whole_tenant(scope),
        username,
        disabled=body.disabled,
        display_name=body.display_name,
        actor=scope.principal,
        source=source_of(request),
    )
    return user_out(u)


@router.delete(
    "/users/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user with their tokens and sessions",
    responses={**CALLER, **E404, **E422},
    tags=["users"],
)
def delete_user(username: str, scope: UsersManage, request: Request, plat: Plat) -> Response:
    plat.auth.delete_user(
        _whole_tenant(scope), username, actor=scope.principal, source=source_of(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/users/{username}/roles",
    summary="Replace a user's role bindings",
    responses={**CALLER, **E404, **E422},
    tags=["users"],
)
def put_roles(
    username: str, body: RolesIn, scope: UsersManage, request: Request, plat: Plat
) -> UserOut:
    u = plat.auth.set_roles(
        _whole_tenant(scope),
        username,
        _roles(body.roles),
        actor=scope.principal,
        source=source_of(request),
    )
    return user_out(u)


@router.post(
    "/users/{username}/unlock",
    summary="Lift a lock after failed logins",
    responses={**CALLER, **E404},
    tags=["users"],
)
def unlock_user(username: str, scope: UsersManage, request: Request, plat: Plat) -> UserOut:
    u = plat.auth.unlock(
        _whole_tenant(scope), username, actor=scope.principal, source=source_of(request)
    )
    return user_out(u)


@router.post(
    "/users/{username}/password-reset",
    summary="Set a one-time password (returned once) that must be changed at login",
    responses={**CALLER, **E404},
    tags=["users"],
)
def reset_password(
    username: str, scope: UsersManage, request: Request, plat: Plat
) -> PasswordResetOut:
    one_time = plat.auth.reset_password(
        _whole_tenant(scope), username, actor=scope.principal, source=source_of(request)
    )
    return PasswordResetOut(password=one_time)


# ---------------------------------------------------------------------------------------------
# Access grants: a tenant lets a platform user read its data, for a while, audited
# ---------------------------------------------------------------------------------------------


@router.post(
    "/access-grants",
    status_code=status.HTTP_201_CREATED,
    summary="Let a platform user read this tenant's data for a while",
    responses={**CALLER, **E404, **E422},
    tags=["users"],
)
def create_grant(body: GrantIn, scope: Granting, request: Request, plat: Plat) -> GrantOut:
    if scope.principal.grant_id is not None:
        raise BadInput("a grant cannot be made under a grant", "grantee")
    g = plat.auth.create_grant(
        scope.tenant_id,
        body.grantee,
        body.duration_hours * 3600.0,
        body.reason,
        actor=scope.principal,
        source=source_of(request),
    )
    return _grant_out(g)


@router.get(
    "/access-grants", summary="This tenant's access grants", responses=CALLER, tags=["users"]
)
def list_grants(scope: Granting, plat: Plat) -> list[GrantOut]:
    return [_grant_out(g) for g in plat.auth.list_grants(scope.tenant_id)]


@router.delete(
    "/access-grants/{grant_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an access grant (effective on the next request)",
    responses={**CALLER, **E404, **E422},
    tags=["users"],
)
def revoke_grant(grant_id: Id, scope: Granting, request: Request, plat: Plat) -> Response:
    plat.auth.revoke_grant(
        scope.tenant_id, grant_id, actor=scope.principal, source=source_of(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
