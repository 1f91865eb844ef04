#!/bin/bash
# The load balancer (softflow:balancer) with real TCP: a virtual IP
# 10.200.0.100 in front of three HTTP backends.
#   h1 = client 10.200.0.1; h2, h3, h4 = backends 10.200.0.2-4, each a small
#   python3 HTTP/1.1 server (keep-alive) on its own address, port 8080, whose
#   responses name the backend and the client's port, and which logs the
#   client's port of every request.
# The client has a static neighbour entry for the VIP (the switch does not
# answer ARP); ARP between real addresses bypasses the balancer.  Flows:
#   stage 0: client -> VIP:8080 -> softflow:balancer:0
#            backend b -> client (in_port=b, nw_src=b, tp_src=8080): source
#            rewritten to the VIP (nw_src, dl_src) -> softflow:balancer:0, so
#            the balancer sees both directions of the connection
#   stage 1: from the client, bucket B -> dl_dst/nw_dst of backend 2+(B mod 3),
#            output to its port; from backend b, a bucket of b -> output to
#            the client; from backend b with another bucket -> drop (a rule
#            whose counter must stay 0: the balancer is sticky both ways).
# Checks: 300 curl invocations (bounded parallelism), each fetching three URLs
# over one connection, all succeed with HTTP 200; the three responses of each
# name the same backend and client port, over one connection; every backend
# serves some connections; every client port appears in exactly one backend's
# log; replies never came back in a bucket of another backend; the balancer's
# stats have connections and bytes in all 8 buckets.
#
# Native XDP only: how packets reach softflowd (native or generic XDP) is
# covered by test_ping/test_tcp/...; this test is about the service, and one
# mode keeps it well under a minute.
source "$(dirname "$0")/lib.sh"
sf_init "$@"
sf_require_cmd curl ss xargs
SF_XDP_MODES=${SF_XDP_MODES:-native}

VIP=10.200.0.100
VIP_MAC=02:00:00:00:00:64
PORT=8080
N_CONN=300
PARALLEL=10
BACKENDS=(2 3 4)

SERVER_PY='
import http.server, sys, threading
name, addr, port, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
out, lock = open(log, "a", buffering=1), threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: one connection, several requests
    def do_GET(self):
        host, cport = self.client_address
        body = ("%s %s %d\n" % (name, host, cport)).encode()
        with lock:
            out.write("%d\n" % cport)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
Server((addr, port), Handler).serve_forever()
'

# Checks the curl outputs (one file per invocation) against the backend logs.
ANALYSE_PY='
import glob, json, os, sys
curl_dir, log_dir, n_expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
errors, per_backend, conn_backend = [], {}, {}
files = sorted(glob.glob(os.path.join(curl_dir, "*")))
for f in files:
    lines = open(f).read().split("\n")
    rc = [l for l in lines if l.startswith("rc ")]
    bodies = [l.split() for l in lines if l.startswith("h")]
    meta = [l.split("\t")[1:] for l in lines if l.startswith("\t")]
    tag = os.path.basename(f)
    if rc != ["rc 0"]:
        errors.append("%s: curl %s" % (tag, rc)); continue
    if len(bodies) != 3 or len(meta) != 3:
        errors.append("%s: %d bodies, %d results" % (tag, len(bodies), len(meta))); continue
    codes = [m[0] for m in meta]
    if codes != ["200"] * 3:
        errors.append("%s: HTTP %s" % (tag, codes)); continue
    names = {b[0] for b in bodies}
    ports = {b[2] for b in bodies} | {m[1] for m in meta}
    connects = sum(int(m[2]) for m in meta)
    if len(names) != 1 or len(ports) != 1 or connects != 1:
        errors.append("%s: backends %s, client ports %s, %d connects" % (tag, names, ports, connects))
        continue
    backend, port = names.pop(), ports.pop()
    per_backend[backend] = per_backend.get(backend, 0) + 1
    conn_backend[port] = backend
logs = {}
for f in glob.glob(os.path.join(log_dir, "*.log")):
    b = os.path.basename(f)[:-4]
    for p in open(f).read().split():
        logs.setdefault(p, []).append(b)
for port, backend in conn_backend.items():
    seen = logs.get(port, [])
    if seen != [backend] * 3:
        errors.append("client port %s: served by %s per curl, backend logs: %s" % (port, backend, seen))
stray = [p for p in logs if p not in conn_backend]
if stray:
    errors.append("ports in backend logs that no successful curl used: %s" % stray[:10])
print(json.dumps({"invocations": len(files), "ok": sum(per_backend.values()),
                  "per_backend": per_backend, "errors": errors[:10], "n_errors": len(errors)}))
'

write_flows() {
  local b i
  {
    echo "# ARP between real addresses: straight to the L2 table"
    echo "table=0,priority=100,sf_stage=0,arp,actions=goto_table:2"
    echo "# client -> VIP: the balancer"
    echo "table=0,priority=50,sf_stage=0,tcp,in_port=1,nw_src=$(sf_ip 1),nw_dst=$VIP,tp_dst=$PORT,actions=softflow:balancer:0"
    echo "# backend replies: from the VIP, then the balancer (same connection)"
    for i in "${BACKENDS[@]}"; do
      echo "table=0,priority=50,sf_stage=0,tcp,in_port=$i,nw_src=$(sf_ip "$i"),nw_dst=$(sf_ip 1),tp_src=$PORT,actions=mod_nw_src:$VIP,mod_dl_src:$VIP_MAC,softflow:balancer:0"
    done
    echo "# after the balancer: bucket -> backend (client side), bucket check (backend side)"
    for ((b = 0; b < 8; b++)); do
      i=${BACKENDS[b % 3]}
      echo "table=0,priority=50,sf_stage=1,sf_action=balancer,in_port=1,sf_metadata=$b,actions=mod_dl_dst:$(sf_mac "$i"),mod_nw_dst:$(sf_ip "$i"),output:$i"
      echo "table=0,priority=50,sf_stage=1,sf_action=balancer,in_port=$i,sf_metadata=$b,actions=output:1"
    done
    echo "table=0,priority=10,sf_stage=1,sf_action=balancer,actions=drop"
    echo "# L2 for ARP"
    for i in 1 "${BACKENDS[@]}"; do
      echo "table=2,priority=10,dl_dst=$(sf_mac "$i"),actions=output:$i"
    done
    echo "table=2,priority=5,in_port=1,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:2,output:3,output:4"
    for i in "${BACKENDS[@]}"; do
      echo "table=2,priority=5,in_port=$i,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:1"
    done
  } >"$SF_TMP/flows"
}

start_backends() {
  local i
  mkdir -p "$SF_TMP/logs"
  for i in "${BACKENDS[@]}"; do
    sf_bg ip netns exec "${SF_NS_H[i]}" python3 -c "$SERVER_PY" "h$i" "$(sf_ip "$i")" $PORT \
      "$SF_TMP/logs/h$i.log"
  done
  for i in "${BACKENDS[@]}"; do sf_wait_listen "$i" tcp $PORT || return 1; done
}

# N_CONN curl invocations from h1, PARALLEL at a time, each fetching three
# URLs over one connection; one output file per invocation.
run_curls() {
  local url=http://$VIP:$PORT
  mkdir -p "$SF_TMP/curl"
  # shellcheck disable=SC2016
  seq -w $N_CONN | sf_h 1 xargs -P $PARALLEL -I{} sh -c \
    'curl -sS --max-time 10 -w "\t%{http_code}\t%{local_port}\t%{num_connects}\n" \
       "$1/a" "$1/b" "$1/c" >"$2/$3" 2>&1; echo "rc $?" >>"$2/$3"' \
    sh "$url" "$SF_TMP/curl" {}
}

scenario() {
  local rc i
  sf_topology 4 || return 1
  ip -n "${SF_NS_H[1]}" neigh replace $VIP lladdr $VIP_MAC dev "${SF_HOST_IF[1]}" nud permanent ||
    return 1
  write_flows
  sf_start --flows "$SF_TMP/flows" || return 1
  start_backends || return 1

  local t0=$SECONDS result
  run_curls
  tap_diag "$N_CONN curl invocations (3 requests each, $PARALLEL in parallel): $((SECONDS - t0)) s"
  result=$(python3 -c "$ANALYSE_PY" "$SF_TMP/curl" "$SF_TMP/logs" $N_CONN)
  local errs
  errs=$(jq -r '.errors[]' <<<"$result" 2>/dev/null)
  sf_expect "$N_CONN curl connections to the VIP all succeed (HTTP 200, 3 requests each)" \
    "$(jq --argjson n $N_CONN '.invocations == $n and .ok == $n' <<<"$result" | grep -c true)" \
    "result: $(jq -c 'del(.errors)' <<<"$result")" "$errs"
  sf_expect "each connection stays on one backend (3 responses, 1 connect, 1 client port; backend logs agree)" \
    "$(jq '.n_errors == 0' <<<"$result" | grep -c true)"
  sf_expect "every backend serves some connections" \
    "$(jq '[.per_backend["h2", "h3", "h4"] // 0 | select(. > 0)] | length == 3' <<<"$result" |
      grep -c true)" "per backend: $(jq -c .per_backend <<<"$result")"

  local mismatch
  mismatch=$(sfctl --json dump-flows table=0 |
    jq '[.[] | select(.priority == 10 and (.actions | test("drop")))][0].n_packets')
  sf_expect "no backend reply came back in another backend's bucket (stickiness both ways)" \
    "$([[ $mismatch =~ ^[0-9]+$ ]] && ((mismatch == 0)) && echo 1 || echo 0)" \
    "packets on the bucket-mismatch drop rule: $mismatch"

  local stats
  stats=$(sf_service_stats balancer)
  sf_expect "balancer stats: all 8 buckets have connections and bytes" \
    "$(jq --argjson n $N_CONN '(.buckets | length) == 8
        and ([.buckets[] | select(.connections > 0 and .bytes > 0)] | length) == 8
        and ([.buckets[].connections] | add) >= $n' <<<"$stats" | grep -c true)" \
    "buckets (connections/bytes): $(jq -r '[.buckets[] | "\(.bucket):\(.connections)/\(.bytes)"] | join(" ")' <<<"$stats")" \
    "untracked=$(jq -r .untracked <<<"$stats"), live=$(jq -r .live_connections <<<"$stats")"

  sf_stop
  rc=$?
  sf_expect "softflowd exits 0 on SIGTERM" $((rc == 0)) "exit status $rc"
}

sf_run_modes scenario 6
sf_finish
