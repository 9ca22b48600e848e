# eventrelay: one image for every process (migrate, worker, scheduler, flower, metrics,
# mock-vendors). docker-compose.yml picks the process with `command:`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# pyproject's `readme` and the folders its package-dir maps under the one import name
# `eventrelay` (eventrelay/, worker/, models/, migrations/).
COPY pyproject.toml README.md alembic.ini ./
COPY eventrelay/ eventrelay/
COPY worker/ worker/
COPY models/ models/
COPY migrations/ migrations/

# The `flower` extra, so `celery -A eventrelay.worker flower` runs from this image too.
RUN pip install --no-cache-dir ".[flower]"

# Celery warns when run as root, and nothing here needs root at run time.
RUN useradd --system --create-home --uid 10001 --user-group eventrelay
USER eventrelay

# No ENTRYPOINT: compose's `command:` is the whole command line (eventrelay ... or celery ...).
CMD ["eventrelay", "--help"]
