# The trainer image: `python -m trainer` on the official TensorFlow GPU build.
# TensorFlow comes with the base image; only the package's light dependencies are added.
FROM tensorflow/tensorflow:2.21.0-gpu

# tini as PID 1 forwards SIGTERM to the trainer (which checkpoints and exits 75 within the
# pod's terminationGracePeriodSeconds) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/cache \
    IMDB_TRAIN_CACHE=/cache/imdb-train \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/imdb-train

# Dependencies first (cached across source changes), the package without TF extras.
COPY pyproject.toml README.md ./
COPY trainer ./trainer
COPY jobs ./jobs
RUN python -m pip install --no-cache-dir . "tf-keras==2.21.*" \
    && python -c "import trainer, jobs"

# Non-root; the UID matches the pods' runAsUser. /cache and /tmp are emptyDir volumes
# in Kubernetes because the root filesystem is mounted read-only there.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /cache --shell /usr/sbin/nologin trainer \
    && mkdir -p /cache \
    && chown 10001:10001 /cache
USER 10001:10001
WORKDIR /cache

ENTRYPOINT ["tini", "--", "python", "-m", "trainer"]
CMD ["--help"]
