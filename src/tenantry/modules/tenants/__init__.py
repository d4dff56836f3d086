"""Database per tenant (`TENANCY_MODE=database`): the tenant registry, placement,
provisioning, migration of every tenant database, and the platform admin's view of them.
Routing of statements is core's (core/tenantdb.py); this module decides where databases
are and makes them."""
