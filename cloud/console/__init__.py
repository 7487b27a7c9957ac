"""The web console: server-rendered Jinja2 pages (htmx for the live parts), Chinese first."""
