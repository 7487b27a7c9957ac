"""The property API under /api/v1 (filled in by its module)."""

from fastapi import APIRouter

router = APIRouter(tags=["property"])
