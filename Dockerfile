# One image for every role of the GAN service (see docker-compose.yml):
#   API     gan serve --no-worker --host 0.0.0.0 --port 8000   (the default CMD)
#   worker  gan worker                                          (one Celery worker, solo pool)
#   migrate gan db upgrade                                      (the job store schema, run first)
#
# No CUDA base image is needed: torch's Linux wheels from PyPI bundle the CUDA runtime (cuBLAS,
# cuDNN, ... come in as nvidia-* wheels), and the host's NVIDIA driver is mounted into the
# container by the NVIDIA container toolkit when the service reserves a GPU (the worker's
# deploy.resources.reservations.devices in docker-compose.yml). Without a GPU the trainer's
# "auto" device falls back to the CPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Non-root user; /data (MNIST IDX files) and /artifacts (checkpoints) belong to it, so a fresh
# named volume mounted there inherits that ownership. /app/var is for the embedded defaults
# (SQLite job store, filesystem broker) when the image runs alone, without Redis and Postgres.
RUN groupadd --gid 1000 gan \
    && useradd --uid 1000 --gid gan --create-home --shell /usr/sbin/nologin gan \
    && mkdir -p /data /artifacts /app/var \
    && chown gan:gan /data /artifacts /app/var

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes, not on
# every code change (torch alone is gigabytes). The list is read from pyproject.toml itself.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the code. The dependencies are already there, so this installs only the package itself.
COPY api ./api
COPY worker ./worker
COPY gan ./gan
RUN pip install --no-cache-dir . \
    && rm -rf build *.egg-info

ENV GAN_DATA_DIR=/data \
    GAN_ARTIFACTS_URL=/artifacts \
    GAN_CACHE_DIR=/artifacts/cache \
    GAN_HOST=0.0.0.0

USER gan

EXPOSE 8000

# The slim image has no curl: Python's urllib does the probe (non-2xx and refusals exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=3).status != 200)"]

CMD ["gan", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]
