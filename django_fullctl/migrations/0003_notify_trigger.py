"""A trigger that sends the wake-up notifications (PostgreSQL only).

``fullctl_task_new`` (payload: op) when a task becomes runnable: inserted pending, put
back to pending, or released by its parent's completion. ``fullctl_task_done``
(payload: id) when a task reaches a final status. PostgreSQL delivers them when the
writing transaction commits and merges identical ones, so a bulk insert of one op sends
one notification.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION fullctl_task_notify() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'pending' AND NOT NEW.waiting AND (
        TG_OP = 'INSERT' OR OLD.status <> 'pending' OR OLD.waiting
    ) THEN
        PERFORM pg_notify('fullctl_task_new', NEW.op);
    ELSIF NEW.status IN ('completed', 'failed', 'cancelled') AND (
        TG_OP = 'INSERT' OR OLD.status NOT IN ('completed', 'failed', 'cancelled')
    ) THEN
        PERFORM pg_notify('fullctl_task_done', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER fullctl_task_notify
AFTER INSERT OR UPDATE OF status, waiting ON django_fullctl_task
FOR EACH ROW WHEN (NEW.status <> 'running')
EXECUTE FUNCTION fullctl_task_notify();
"""

DROP = """
DROP TRIGGER IF EXISTS fullctl_task_notify ON django_fullctl_task;
DROP FUNCTION IF EXISTS fullctl_task_notify();
"""


def run_on_postgresql(sql):
    def operation(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return operation


class Migration(migrations.Migration):
    dependencies = [("django_fullctl", "0002_commandtask")]

    operations = [migrations.RunPython(run_on_postgresql(CREATE), run_on_postgresql(DROP))]
