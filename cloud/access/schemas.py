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


class ErrorOut(BaseModel):
    detail: str
    code: str


class RequestErrorOut(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class RequestErrorsOut(BaseModel):
    """A request the API could not read at all (a query parameter out of range, say): FastAPI's
    own answer, a list of problems each with where it is."""

    detail: list[RequestErrorOut]


class InvalidRowsOut(BaseModel):
    detail: str
    code: str
    error_count: int
    errors: list[RowErrorOut] = Field(description="The first 1,000 problems, by row")
