"""The accounts API under /api/v1: signing in and out and one's own account
(``session_routes``), and managing staff, roles, API tokens and residents' accounts
(``admin_routes``). Each route declares its permission with ``Authorize``; the sign-in routes
are in ``permissions.PUBLIC_PATHS``."""

from fastapi import APIRouter

from cloud.accounts import admin_routes, session_routes

router = APIRouter(tags=["accounts"])
router.include_router(session_routes.router)
router.include_router(admin_routes.router)
