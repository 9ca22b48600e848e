"""Small real apps (Django, Flask) that produce jobs the way users' apps do."""
