# The trainer image: `python -m trainer` on Debian's Python 3.11 with TensorFlow from PyPI.
# The base can be rebuilt from Debian's packages (scripts/image.sh does so where no registry
# answers). LOCK picks the build and its exact packages: requirements/image-gpu.lock (CUDA
# and cuDNN come as pip wheels; the driver is the node's) or image-cpu.lock. Every wheel is
# checked against the lock's hashes; `make lock` refreshes the locks from pyproject.toml.
FROM debian:bookworm-slim

# tini as PID 1 forwards SIGTERM to the trainer (which checkpoints and exits 75 within the
# pod's terminationGracePeriodSeconds) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3=3.11.* python3-venv=3.11.* tini=0.19.* \
    && rm -rf /var/lib/apt/lists/*

ARG LOCK=image-gpu

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /opt/imdb-train

# Dependencies first, from the lock alone, so that a code change reuses this layer instead
# of reinstalling TensorFlow. The wheels are downloaded into a build cache mount and
# installed from there: kept between builds, never in the image. --require-hashes: a wheel
# whose hash differs from the lock's fails the build; --no-deps: nothing is resolved here,
# the lock is the whole set. Behind a proxy that intercepts TLS, the build's `ca` secret
# (optional) is mounted where Debian's pip reads it.
COPY requirements/${LOCK}.lock /opt/imdb-train/requirements.lock
RUN --mount=type=cache,target=/var/cache/wheels,sharing=locked \
    --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -m venv "$VIRTUAL_ENV" \
    && pip download --no-cache-dir --require-hashes --no-deps --dest /var/cache/wheels \
        -r requirements.lock \
    && pip install --no-cache-dir --require-hashes --no-deps --no-index \
        --find-links /var/cache/wheels -r requirements.lock

# The package itself: no dependencies and no build isolation, so it needs no network.
COPY pyproject.toml README.md ./
COPY trainer ./trainer
COPY jobs ./jobs
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && python -c "import trainer, jobs"

# What the image is, readable inside it (/opt/imdb-train/build.json, packages.txt: every run
# records them in its config.json) and outside it (OCI labels). scripts/image.sh passes the
# source revision and the commit's time, so two builds of one commit carry the same labels.
ARG REVISION=unknown
ARG CREATED=unknown
ARG VERSION=unknown
ARG SOURCE=https://github.com/imdb-train/imdb-train
LABEL org.opencontainers.image.source=$SOURCE \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.created=$CREATED \
      org.opencontainers.image.title=imdb-train
RUN pip freeze --all > /opt/imdb-train/packages.txt \
    && python -c 'import hashlib, json, sys; lock = open("requirements.lock", "rb").read(); json.dump({"revision": sys.argv[1], "created": sys.argv[2], "version": sys.argv[3], "source": sys.argv[4], "lock": sys.argv[5] + ".lock", "lock_sha256": hashlib.sha256(lock).hexdigest()}, open("build.json", "w"), indent=1)' \
        "$REVISION" "$CREATED" "$VERSION" "$SOURCE" "$LOCK"

# Non-root; the UID matches the pods' runAsUser. /cache and /tmp are emptyDir volumes in
# Kubernetes because the root filesystem is mounted read-only there: HOME and every cache
# point into them. GKE's device plugin mounts the node's NVIDIA driver under
# /usr/local/nvidia; the CUDA wheels find the driver's libcuda through LD_LIBRARY_PATH.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /cache --shell /usr/sbin/nologin trainer \
    && mkdir -p /cache \
    && chown 10001:10001 /cache
ENV HOME=/cache \
    IMDB_TRAIN_CACHE=/cache/imdb-train \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/cache \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib
USER 10001:10001
WORKDIR /cache

ENTRYPOINT ["tini", "--", "python", "-m", "trainer"]
CMD ["--help"]
