"""Placeholder router (filled in by issue 4/8)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1")
