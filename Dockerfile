# The pipeline's services (processor, projection, sink, sidecar) as one image; the
# docker-compose.yml service picks the command, e.g. `metering run processor`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    METERING_STATE_DIR=/var/lib/metering

WORKDIR /app
COPY pyproject.toml README.md ./
COPY metering ./metering
COPY pipeline ./pipeline
COPY consumers ./consumers
COPY projections ./projections
COPY schemas ./schemas
RUN pip install . && mkdir -p /var/lib/metering \
    && useradd --system --home /var/lib/metering metering \
    && chown metering /var/lib/metering
USER metering

ENTRYPOINT ["metering"]
CMD ["--help"]
