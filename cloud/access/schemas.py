"""The access API's answers."""

from pydantic import BaseModel, Field


class ChangeOut(BaseModel):
    added: int
    changed: int
    unchanged: int
    removed: int
    version: int = Field(description="The site's access version after the change")
    pushed_to: list[str] = Field(
        default_factory=list, description="Online gateways of the site sent an access.sync for it"
    )


class AccessSummaryOut(BaseModel):
    site: str
    version: int
    schedules: int
    levels: int
    holidays: int
    credentials: int


class RowErrorOut(BaseModel):
    row: int | None = Field(description="Spreadsheet row (the header is row 1); null: the whole file")
    column: str | None
    message: str


class InvalidRowsOut(BaseModel):
    detail: str
    code: str
    error_count: int
    errors: list[RowErrorOut] = Field(description="The first 1,000 problems, by row")
