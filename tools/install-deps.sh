#!/bin/sh
# Installs what braid needs to build and test on Debian 12 (run as root or with sudo).
set -eu
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
PKGS="build-essential cmake ninja-build pkg-config clang-14 clang-format-14 libssl-dev \
  libfmt-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev iproute2 iptables iputils-ping iperf3 procps openmpi-bin libopenmpi-dev \
  libgloo-dev python3-matplotlib python3-numpy libhwloc-dev nlohmann-json3-dev \
  qemu-system-x86 busybox-static kmod cpio libibverbs-dev librdmacm-dev ibverbs-providers \
  ibverbs-utils rdmacm-utils perftest rdma-core"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends $missing
fi
