"""The ``[alerts]`` section of the cloud config: how the engine and the escalator behave."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

_Seconds = Annotated[float, Field(ge=0, le=7 * 86400)]


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # ingest turns events into alerts (and runs the escalator with the dispatcher)
    # A fault that clears and comes back within this stays one alert, marked flapping.
    flap_window_s: _Seconds = 600
    # That many returns within a day open a maintenance ticket for the device.
    flap_ticket_after: Annotated[int, Field(ge=1, le=1000)] = 3
    # A gateway's offline alert is told to people only if it is still offline after this (a
    # reconnect within it is a blip, shown on the console but not sent to anyone's phone).
    gateway_offline_notify_after_s: _Seconds = 60
    # Device alerts of an offline gateway are held behind its offline alert; events from up to
    # this long before it went offline count too (the broker notices a cut link late).
    inhibit_before_s: _Seconds = 120
    # After the gateway is back, a held device alert whose fault is still there is raised after
    # this (the gateway first delivers what it buffered, clears included).
    release_after_s: _Seconds = 120
    escalator_poll_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Event timeline rows per alert (a flood still counts every event, in event_count).
    timeline_events_max: Annotated[int, Field(ge=0, le=10_000)] = 50
