"""The roles a bearer token carries, and which of them may do what (minipanda.core.auth signs and checks them).

A module of its own, without the token machinery (PyJWT, the token table): ``minipanda token create --role`` lists
the roles when its parser is built, and ``minipanda --help`` must not pay for the rest.
"""
ROLES = ("admin", "production", "pilot", "harvester", "user")
# harvester fetches jobs for pilots it starts in push mode and relays reports of pilots with no network.
PILOT_ROLES = frozenset({"admin", "production", "pilot", "harvester"})
HARVESTER_ROLES = frozenset({"admin", "harvester"})
# Roles whose token names are users: they own jobs, tasks and the file-store scope ``user.<name>``.
OWNER_ROLES = ("admin", "production", "user")
