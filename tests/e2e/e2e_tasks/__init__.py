"""The task classes of the end-to-end tests, as a Django app that only their processes
install (``tests.e2e.e2e_tasks.settings``); the test process imports the models module by
the same dotted name (``tests/e2e/conftest.py``), so each class is defined once."""
