#!/usr/bin/env bash
# The host tools that the image and local-cluster targets run, from Debian's packages where
# missing: buildah and mmdebstrap (images without a daemon), iproute2 (pod networks), openssl
# (the cluster's keys), util-linux (unshare), mount; for the real nodes (cluster/kubelet.py)
# containerd, runc, the CNI plugins, docker-registry, iptables, conntrack and gcc (the pause
# image). Go builds the control plane, the kubelet and CoreDNS and is not a Debian package of
# a recent enough release: it must already be installed (1.26+).
set -euo pipefail
declare -A packages=([buildah]=buildah [mmdebstrap]=mmdebstrap [ip]=iproute2 [openssl]=openssl
                     [unshare]=util-linux [setpriv]=util-linux [mount]=mount
                     [containerd]=containerd [runc]=runc [docker-registry]=docker-registry
                     [iptables]=iptables [conntrack]=conntrack [gcc]=gcc)
missing=()
for tool in "${!packages[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${packages[$tool]}")
done
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
# gcc -static links the pause image against glibc's static archive.
[[ -e /usr/lib/x86_64-linux-gnu/libc.a || $(uname -m) != x86_64 ]] || missing+=(libc6-dev)
if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "error: missing ${missing[*]}: install them (apt-get) or run as root" >&2
        exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        $(printf '%s\n' "${missing[@]}" | sort -u)
fi
if ! command -v go >/dev/null; then
    echo "error: Go 1.26 or later is needed to build the local control plane (cluster/controlplane)" >&2
    exit 1
fi
