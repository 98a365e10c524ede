"""fullctl-tasks operator: sizes poller Deployments from the queue (kopf)."""
