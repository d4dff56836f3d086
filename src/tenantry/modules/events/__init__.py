"""Real-time events: `GET /orgs/{orgId}/events` (Server-Sent Events) and its tickets."""
