"""The audit log is append-only in the database on MariaDB too.

PostgreSQL has had it since revision 0005 (a trigger that raises, and the application
role without UPDATE/DELETE). MariaDB has no roles in play here (the application connects
as the user that migrates), so the trigger is the whole defence: `BEFORE UPDATE` and
`BEFORE DELETE` on `audit_logs` signal SQLSTATE 45000 ("audit_logs is append-only") for
every row, whoever sends the statement. One trigger per event: MariaDB triggers name one.

Deleting an organization still removes its entries: InnoDB's `ON DELETE CASCADE` does
not fire triggers. Creating a trigger needs the TRIGGER privilege (and, with binary
logging on, SUPER or `log_bin_trust_function_creators`). No-op on SQLite and PostgreSQL.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = {"audit_logs_no_update": "UPDATE", "audit_logs_no_delete": "DELETE"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "mariadb":
        return
    for name, event in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {event} ON audit_logs FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only'"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "mariadb":
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
