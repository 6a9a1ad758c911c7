# The trainer image: `python -m trainer` on Debian's Python 3.11 with TensorFlow from PyPI.
# The base can be rebuilt from Debian's packages (scripts/image.sh does so where no registry
# answers). TENSORFLOW picks the build: the GPU one (CUDA and cuDNN come as pip wheels; the
# driver is the node's) or `--build-arg TENSORFLOW=tensorflow-cpu==2.21.*` for a CPU image.
FROM debian:bookworm-slim

# tini as PID 1 forwards SIGTERM to the trainer (which checkpoints and exits 75 within the
# pod's terminationGracePeriodSeconds) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3=3.11.* python3-venv=3.11.* tini=0.19.* \
    && rm -rf /var/lib/apt/lists/*

ARG TENSORFLOW="tensorflow[and-cuda]==2.21.*"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /opt/imdb-train

# Dependencies first, read from pyproject.toml without the source, so that a code change
# reuses this layer instead of reinstalling TensorFlow. The wheels are downloaded into a
# build cache mount and installed from there: kept between builds (pip's HTTP cache is not
# enough where a proxy marks responses uncacheable), never in the image. tf-keras
# (multi-worker runs) requires the package `tensorflow`, which tensorflow-cpu provides under
# another name: without --no-deps a CPU image would get the GPU build as well. Behind a
# proxy that intercepts TLS, the build's `ca` secret (optional) is mounted where Debian's
# pip reads it.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/var/cache/wheels,sharing=locked \
    --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -m venv "$VIRTUAL_ENV" \
    && python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print(*p["project"]["dependencies"], *p["build-system"]["requires"], sep="\n")' > /tmp/requirements.txt \
    && printf '%s\n' "$TENSORFLOW" "tensorboard>=2.20" >> /tmp/requirements.txt \
    && pip download --no-cache-dir --dest /var/cache/wheels -r /tmp/requirements.txt \
    && pip download --no-cache-dir --dest /var/cache/wheels --no-deps "tf-keras==2.21.*" \
    && pip install --no-cache-dir --no-index --find-links /var/cache/wheels -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-index --find-links /var/cache/wheels --no-deps "tf-keras==2.21.*" \
    && rm /tmp/requirements.txt

# The package itself: no dependencies and no build isolation, so it needs no network.
COPY README.md ./
COPY trainer ./trainer
COPY jobs ./jobs
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && python -c "import trainer, jobs"

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
