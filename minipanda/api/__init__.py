"""The HTTP layer: request parsing, auth, and the two PanDA URL families (legacy /server/panda and /api/v1)."""
