#!/usr/bin/env bash
# Build or push the trainer image: docker where a daemon answers, else buildah (daemonless).
#
#   scripts/image.sh build IMAGE [gpu|cpu]   build IMAGE from the Dockerfile
#   scripts/image.sh push IMAGE [SOURCE]     push IMAGE (tagged from SOURCE first) to its
#                                            registry; plain HTTP for localhost:PORT
#   scripts/image.sh base                    (buildah) rebuild debian:bookworm-slim from packages
#
# Environment:
#   IMAGE_CA_BUNDLE  a CA bundle mounted (as the build secret `ca`) over Debian's bundle path
#                    while pip runs, for networks that intercept TLS
#   IMAGE_CACHE      where the base root filesystem is cached (default
#                    ${XDG_CACHE_HOME:-~/.cache}/imdb-train/image); pip's downloads are kept
#                    in the builder's cache mount (Dockerfile: RUN --mount=type=cache)
#   IMAGE_BUILDER    docker or buildah (default: docker if `docker info` answers, else buildah)
#   IMAGE_PLATFORM   e.g. linux/amd64 (docker buildx / buildah --platform)
#   IMAGE_NO_CACHE   1: rebuild every layer (a check that a build is reproducible)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=docker.io/library/debian:bookworm-slim
SUITE=bookworm
CACHE=${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imdb-train/image}

say() { printf 'image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

builder() {
    if [[ -n "${IMAGE_BUILDER:-}" ]]; then
        [[ $IMAGE_BUILDER == docker || $IMAGE_BUILDER == buildah ]] \
            || die "invalid IMAGE_BUILDER '$IMAGE_BUILDER': expected docker or buildah"
        echo "$IMAGE_BUILDER"
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        echo docker
    elif command -v buildah >/dev/null; then
        echo buildah
    else
        die "neither a docker daemon nor buildah found: install docker, or buildah and mmdebstrap"
    fi
}

# buildah runs RUN steps without a daemon; chroot isolation works as root without user
# namespaces (and inside other containers).
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

# Where no registry answers the base is rebuilt from Debian's packages: a minbase rootfs
# without docs, man pages and locales (as Debian's own -slim images), cached as a tarball.
build_base() {
    command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap"
    local tarball="$CACHE/debian-$SUITE-minbase.tar"
    mkdir -p "$CACHE"
    if [[ ! -s $tarball ]]; then
        say "building the $SUITE root filesystem with mmdebstrap -> $tarball"
        mmdebstrap --variant=minbase --format=tar --quiet \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            "$SUITE" "$tarball.partial"
        mv "$tarball.partial" "$tarball"
    else
        say "reusing $tarball"
    fi
    local c m
    c=$(buildah from scratch)
    trap 'buildah rm "$c" >/dev/null 2>&1 || true' EXIT
    m=$(buildah mount "$c")
    tar -xf "$tarball" -C "$m"
    buildah umount "$c" >/dev/null
    buildah config --cmd bash \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
    buildah commit --quiet --rm "$c" "$BASE" >/dev/null
    trap - EXIT
    say "committed $BASE (from packages)"
}

ensure_base() {
    buildah inspect --type image "$BASE" >/dev/null 2>&1 && return
    # A registry that answers gives the real image; else rebuild it.
    if timeout 60 buildah pull --quiet "$BASE" >/dev/null 2>&1; then
        say "pulled $BASE"
    else
        build_base
    fi
}

build() {
    local image=${1:?image name}
    local flavour=${2:-gpu}
    case $flavour in
        gpu|cpu) ;;
        *) die "invalid flavour '$flavour': expected gpu or cpu" ;;
    esac
    local lock=image-$flavour
    # What the image says it is: the commit (marked -dirty when the tree differs from it),
    # the commit's own time (so two builds of one commit agree), the app version.
    local revision created version
    revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    if [[ $revision != unknown && -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
        revision="$revision-dirty"
    fi
    created=$(git log -1 --format=%cI 2>/dev/null || echo unknown)
    version=$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' jobs/spec.py)
    local args=(--build-arg "LOCK=$lock" --build-arg "REVISION=$revision"
                --build-arg "CREATED=$created" --build-arg "VERSION=$version")
    local ca=()
    if [[ -n "${IMAGE_CA_BUNDLE:-}" ]]; then
        [[ -r $IMAGE_CA_BUNDLE ]] || die "IMAGE_CA_BUNDLE '$IMAGE_CA_BUNDLE' is not a readable file"
        # The Dockerfile mounts the `ca` secret over Debian's bundle path in the pip step.
        ca=(--secret "id=ca,src=$(realpath "$IMAGE_CA_BUNDLE")")
    fi
    local platform=()
    [[ -n "${IMAGE_PLATFORM:-}" ]] && platform=(--platform "$IMAGE_PLATFORM")
    [[ ${IMAGE_NO_CACHE:-} == 1 ]] && platform+=(--no-cache)
    local start=$SECONDS
    case $(builder) in
        docker)
            # BuildKit: the cache and secret mounts need it.
            say "docker build $image ($lock, $revision)"
            DOCKER_BUILDKIT=1 docker build "${platform[@]}" "${ca[@]}" "${args[@]}" -t "$image" .
            ;;
        buildah)
            ensure_base
            say "buildah bud $image ($lock, $revision)"
            buildah bud --pull=never --layers "${platform[@]}" "${ca[@]}" "${args[@]}" \
                -t "$image" .
            ;;
    esac
    say "built $image in $((SECONDS - start)) s"
}

push() {
    local image=${1:?image name} source=${2:-}
    # A local registry (make cluster's) speaks HTTP, as docker treats localhost.
    local tls=()
    [[ $image == localhost:* || $image == 127.0.0.1:* ]] && tls=(--tls-verify=false)
    case $(builder) in
        docker)
            [[ -z $source ]] || docker tag "$source" "$image"
            docker push "$image" ;;
        buildah)
            [[ -z $source ]] || buildah tag "$source" "$image"
            buildah push --quiet "${tls[@]}" "$image" "docker://$image" ;;
    esac
}

case ${1:-} in
    build) shift; build "$@" ;;
    push) shift; push "$@" ;;
    base) build_base ;;
    *) die "usage: scripts/image.sh build IMAGE [gpu|cpu] | push IMAGE | base" ;;
esac
