# One image for every nudgeflow process: the compose file and the Kubernetes manifests pick the command
# (worker, collector, sink). Kafka and ClickHouse run from their own images at scale, so no Java here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir schemas streams sinks \
    && touch schemas/__init__.py streams/__init__.py sinks/__init__.py \
    && pip install . \
    && pip uninstall -y nudgeflow \
    && rm -rf schemas streams sinks build

COPY schemas ./schemas
COPY streams ./streams
COPY sinks ./sinks
RUN pip install --no-deps . && rm -rf build

# RocksDB tables (worker) and any embedded chDB live under the data directory; mount a volume there.
RUN useradd --create-home --uid 10001 nudgeflow && mkdir -p /var/lib/nudgeflow && chown nudgeflow /var/lib/nudgeflow
USER nudgeflow
ENV NUDGEFLOW_DATA_DIR=/var/lib/nudgeflow \
    NUDGEFLOW_LOG_FORMAT=json

ENTRYPOINT ["nudgeflow"]
CMD ["--help"]
