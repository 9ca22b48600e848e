"""The sample apps' own test suites are run as the apps' developers run them: in a pytest
process of their own, with eventrelay's plugin from its entry point and no eventrelay test
settings (tests/apps/test_app_suites.py). eventrelay's run does not collect them."""

collect_ignore = ["django_project/tests", "flask_tests"]
