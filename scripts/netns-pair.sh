#!/usr/bin/env bash
# Two hosts for softflowd to switch between, as network namespaces:
#
#   netns sf-h1: sf-h1-eth (10.0.0.1/24) ==veth== sf-sw1  (this namespace)
#   netns sf-h2: sf-h2-eth (10.0.0.2/24) ==veth== sf-sw2  (this namespace)
#
#   scripts/netns-pair.sh up      create them
#   scripts/netns-pair.sh down    remove them
#
# TX checksum offload is turned off on the hosts' veths: a veth otherwise
# hands over TCP/UDP frames with partial checksums, which stay partial when
# the frame crosses AF_XDP, and the receiving host drops them (Open vSwitch's
# AF_XDP tests do the same).
set -euo pipefail

up() {
  for i in 1 2; do
    ip netns add "sf-h$i"
    ip link add "sf-sw$i" type veth peer name "sf-h$i-eth"
    ip link set "sf-h$i-eth" netns "sf-h$i"
    ip -n "sf-h$i" addr add "10.0.0.$i/24" dev "sf-h$i-eth"
    ip -n "sf-h$i" link set "sf-h$i-eth" up
    ip -n "sf-h$i" link set lo up
    ip netns exec "sf-h$i" ethtool -K "sf-h$i-eth" tx off >/dev/null
    ip link set "sf-sw$i" up
  done
  echo "sf-h1 (10.0.0.1) <-> sf-sw1 | sf-sw2 <-> sf-h2 (10.0.0.2)"
}

down() {
  for i in 1 2; do
    ip link del "sf-sw$i" 2>/dev/null || true
    ip netns del "sf-h$i" 2>/dev/null || true
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
