"""What the pods and the operator of the end-to-end tests run with: the test settings
(``tests.testapp.settings``) plus the e2e task classes. The test process itself keeps
``tests.testapp.settings`` and imports ``tests.e2e.e2e_tasks.models`` directly."""

from tests.testapp.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.e2e.e2e_tasks"]  # noqa: F405

# the qualifier of the region tasks (a pool's FULLCTL_POOL_SETTINGS sets it for its pods)
E2E_REGION = ""
