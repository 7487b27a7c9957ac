"""Who may sign in and what each may do: staff accounts with roles per site, sessions with CSRF
and an optional TOTP second factor, scoped API tokens, residents' own sign-in, and the one
permission check every API route and console page goes through (``permissions``)."""
