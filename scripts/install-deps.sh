#!/usr/bin/env bash
# Installs SoftFlow's build and test dependencies from Debian's archive.
# Safe to re-run: it only calls apt-get when a package is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  g++ clang clang-14 lld libclang-rt-14-dev   # g++ 12 and clang 14; libFuzzer/ASan runtimes
  libpcap-dev           # pcap file ports (sf-offline, tests)
  libgtest-dev libgmock-dev   # unit tests
  libbenchmark-dev      # micro-benchmarks
  nlohmann-json3-dev    # JSON output and service configuration
  libcli11-dev          # command-line parsing
  libfmt-dev            # formatting
  libabsl-dev           # absl::flat_hash_map for the megaflow subtables
  libssl-dev            # the aes service: AES-128-CBC through OpenSSL's EVP API
  libbpf-dev libxdp-dev # loading the XDP program and its maps; AF_XDP sockets (xsk.h)
  bpftool               # BPF skeleton generation at build time
  iproute2 ethtool iputils-ping netcat-openbsd procps jq bc  # integration tests: netns, veth, traffic
  tcpdump               # reading pcaps in tests and by hand
  curl                  # integration: HTTP clients through the load balancer
  python3
  iperf3                # scripts/bench-veth.sh
  openvswitch-switch    # benchmark peer: OVS userspace datapath with ct() (scripts/peers/ovs.sh)
  nftables              # benchmark peer: Linux router with nftables conntrack (scripts/peers/linux.sh)
  python3-matplotlib    # scripts/plot-figures.py (Debian's /usr/bin/python3)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi
