#!/usr/bin/env bash
# Packets per second through softflowd over veth, between two namespaces,
# with iperf3 as the traffic: a TCP transfer, and a UDP flood of 64-byte
# frames.  Pipelines (configurations are interleaved, --runs rounds, median):
#   l2        in_port=1 -> output:2 and back (one stage)
#   noop      a softflow:noop stage, then forwarding (two stages), coalescing on
#   noop-off  the same with --no-coalesce
# Prints a Markdown table: TCP Gbit/s and packets/s through the switch, UDP
# packets/s received, and the share of packets resolved in XDP.
#
#   scripts/bench-veth.sh [--seconds 5] [--runs 3] [--build DIR] [--xdp-mode native]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=5
runs=3
build="$root/build"
mode=native
while (($#)); do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --xdp-mode) mode=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--runs N] [--build DIR] [--xdp-mode native|generic]" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "bench-veth: needs root" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "bench-veth: needs iperf3 (apt-get install iperf3)" >&2; exit 1; }

id="b$$"
h1="sf-bh1-$id" h2="sf-bh2-$id" sw="sf-bsw-$id"
tmp=$(mktemp -d)
sfd_pid=""
srv_pid=""
cleanup() {
  [[ -n $srv_pid ]] && kill "$srv_pid" 2>/dev/null || true
  [[ -n $sfd_pid ]] && { kill "$sfd_pid" 2>/dev/null; wait "$sfd_pid" 2>/dev/null; } || true
  for ns in "$h1" "$h2" "$sw"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

for ns in "$h1" "$h2" "$sw"; do ip netns add "$ns"; done
for i in 1 2; do
  host=$h1; [[ $i == 2 ]] && host=$h2
  ip link add "bh$i$id" type veth peer name "bs$i$id"
  ip link set "bh$i$id" netns "$host"
  ip link set "bs$i$id" netns "$sw"
  ip -n "$host" addr add "10.77.0.$i/24" dev "bh$i$id"
  ip -n "$host" link set "bh$i$id" up
  ip -n "$host" link set lo up
  ip netns exec "$host" ethtool -K "bh$i$id" tx off >/dev/null
  ip -n "$sw" link set "bs$i$id" up
done

cat >"$tmp/l2.flows" <<EOF
in_port=1,actions=output:2
in_port=2,actions=output:1
EOF
cat >"$tmp/noop.flows" <<EOF
table=0,priority=100,sf_stage=0,arp,actions=goto_table:1
table=0,priority=100,sf_stage=0,ip,actions=softflow:noop:0
table=0,priority=100,sf_stage=1,sf_action=noop,ip,actions=goto_table:1
table=1,priority=10,in_port=1,actions=output:2
table=1,priority=10,in_port=2,actions=output:1
EOF
cp "$tmp/noop.flows" "$tmp/noop-off.flows"

sock="$tmp/sfd.sock"
sfctl_json() { ip netns exec "$sw" "$build/sfctl" --socket "$sock" --json show; }
start_switch() {  # config
  local extra=()
  [[ $1 == noop-off ]] && extra=(--no-coalesce)
  ip netns exec "$sw" "$build/softflowd" --port "bs1$id:1" --port "bs2$id:2" \
    --flows "$tmp/$1.flows" --socket "$sock" --pin-dir "" --xdp-mode "$mode" "${extra[@]}" \
    >"$tmp/sfd.log" 2>&1 &
  sfd_pid=$!
  for _ in $(seq 50); do sfctl_json >/dev/null 2>&1 && return 0; sleep 0.1; done
  cat "$tmp/sfd.log" >&2
  return 1
}
stop_switch() { kill "$sfd_pid"; wait "$sfd_pid" || true; sfd_pid=""; }

# rx packets, XDP-resolved packets from `sfctl --json show`.
counters() {
  sfctl_json | python3 -c '
import json, sys
j = json.load(sys.stdin)
def find(o, k):
    if isinstance(o, dict):
        if k in o and not isinstance(o[k], (dict, list)): return o[k]
        for v in o.values():
            r = find(v, k)
            if r is not None: return r
    return None
rx = find(j, "rx_packets") or 0
xdp = (find(j, "xdp_emc_resolved") or 0) + (find(j, "xdp_megaflow_resolved") or 0)
print(rx, xdp)'
}

ip netns exec "$h2" iperf3 -s -D -I "$tmp/iperf.pid" >/dev/null
sleep 0.5
srv_pid=$(cat "$tmp/iperf.pid")

configs=(l2 noop noop-off)
declare -A tcp_gbps tcp_pps udp_pps xdp_share
for ((r = 0; r < runs; r++)); do
  for c in "${configs[@]}"; do
    start_switch "$c"
    ip netns exec "$h1" ping -c 2 -i 0.2 -q 10.77.0.2 >/dev/null
    read -r rx0 _ < <(counters)
    ip netns exec "$h1" iperf3 -c 10.77.0.2 -t "$seconds" --json >"$tmp/tcp.json"
    read -r rx1 xdp1 < <(counters)
    gbps=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9)' "$tmp/tcp.json")
    tcp_gbps[$c]+="$gbps "
    tcp_pps[$c]+="$(( (rx1 - rx0) / seconds )) "
    xdp_share[$c]+="$(python3 -c "print(100.0*$xdp1/max($rx1,1))") "
    # 64-byte frames: 14 Ethernet + 20 IPv4 + 8 UDP + 18 payload + 4 (FCS-less pad).
    ip netns exec "$h1" iperf3 -c 10.77.0.2 -u -b 0 -l 22 -t "$seconds" --json >"$tmp/udp.json"
    udp_pps[$c]+="$(python3 -c '
import json,sys
e = json.load(open(sys.argv[1]))["end"]["sum"]
print(int(e["packets"] * (1 - e["lost_percent"] / 100.0) / e["seconds"]))' "$tmp/udp.json") "
    stop_switch
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| pipeline | TCP Gbit/s | TCP packets/s | UDP 64 B packets/s | resolved in XDP |"
echo "| --- | --- | --- | --- | --- |"
for c in "${configs[@]}"; do
  printf '| %s | %.2f | %d | %d | %.1f%% |\n' "$c" \
    "$(echo "${tcp_gbps[$c]}" | median)" "$(echo "${tcp_pps[$c]}" | median)" \
    "$(echo "${udp_pps[$c]}" | median)" "$(echo "${xdp_share[$c]}" | median)"
done
echo
echo "(median of $runs interleaved runs, ${seconds}s each, XDP $mode mode)"
