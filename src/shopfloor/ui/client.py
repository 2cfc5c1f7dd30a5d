"""The console's way to the platform: its own HTTP API, in process, as the logged-in user."""

from __future__ import annotations

from typing import Any

import httpx

from shopfloor.api.deps import TENANT_HEADER

__all__ = ["ApiClient", "ApiError"]


class ApiError(Exception):
    """An API answer that was not 2xx, with the API's own message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    @property
    def refused(self) -> bool:
        """The API said no (403): the role or the access grant does not allow this."""
        return self.status == 403


class ApiClient:
    """Calls the FastAPI app directly (no socket) with the user's session token; for a
    platform user inside a tenant, with that tenant named in the header the API checks the
    access grant of (``TENANT_HEADER``)."""

    def __init__(self, app: Any, token: str | None, tenant: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if tenant:
            headers[TENANT_HEADER] = tenant
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 0)),
            base_url="http://console",
            headers=headers,
            timeout=30.0,
        )

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        r = await self._client.request(method, f"/api/v1{path}", **kw)
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                raise ApiError(r.status_code, str(err.get("message")), err.get("field"))
            except (ValueError, KeyError, TypeError):
                raise ApiError(r.status_code, r.text[:200]) from None
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, json=body)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self.request("PUT", path, json=body)

    async def close(self) -> None:
        await self._client.aclose()
