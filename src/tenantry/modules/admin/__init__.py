"""Platform administration: every organization at once (the only cross-tenant routes)."""
