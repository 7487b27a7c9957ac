"""The console's pages (filled in by the console module)."""

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
