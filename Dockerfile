# syntax=docker/dockerfile:1
# Build stage: compile the Cython parts and build a wheel with everything it needs.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY fleet ./fleet
COPY bidder ./bidder
COPY cache ./cache
COPY pacing ./pacing
COPY bidlogger ./bidlogger
COPY tracker ./tracker
COPY learner ./learner
COPY sim ./sim
RUN pip install --no-cache-dir --upgrade pip wheel \
    && pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the wheels only, no compiler, a non-root user.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/rtbfleet --create-home rtbfleet
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER rtbfleet
WORKDIR /var/lib/rtbfleet
ENV RTBFLEET_DATA_DIR=/var/lib/rtbfleet/data \
    RTBFLEET_LOG_JSON=true \
    PYTHONUNBUFFERED=1
EXPOSE 8080 8090
# One service per container in production (deploy/k8s): `run bidder`, `run cache watcher`,
# `proxy --in tcp://*:5550 --out tcp://*:5551`, with RTBFLEET_PG_DSN, RTBFLEET_MEMCACHED and the
# bus endpoints set. With no arguments the whole fleet runs in one container (demos).
ENTRYPOINT ["tini", "--", "rtbfleet"]
CMD ["up"]
