"""A Django app for the tests only: task classes that misbehave on purpose (they kill or
exit their worker, ignore timeouts, return what JSON cannot store). The example app that
ships in the image has none of them; ``tests.testapp.settings`` adds this app."""
