#!/usr/bin/env bash
# The demo behind `make demo`: Ferry reading the example manifests (deploy/examples), explaining where
# traffic goes, and following edits to a watched copy of them. Touches no network and no rules.
set -euo pipefail
cd "$(dirname "$0")/.."
ferry=${1:-.build/release/ferry}
examples=deploy/examples
node=(--node-name node-1)

bold=$'\033[1m'; plain=$'\033[0m'
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; "$@"; }
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$plain"; }

say "The walk-through: my-service (ClusterIP 10.96.0.10) in front of three nginx pods, and the feature examples."
step "$ferry" get services --manifests "$examples"
step "$ferry" get endpoints --manifests "$examples"

say "Where does traffic to my-service go, from node-1?"
step "$ferry" explain --manifests "$examples" "${node[@]}" --to 10.96.0.10:80
say "A service whose pods are shutting down: only the ready one gets new connections."
step "$ferry" explain --manifests "$examples" "${node[@]}" --to 10.96.0.15:80
say "externalTrafficPolicy: Local on a NodePort: only node-1's endpoint, and the client's IP is kept."
step "$ferry" explain --manifests "$examples" "${node[@]}" --to 10.0.0.1:30081 --from 203.0.113.7

say "Watching a copy of the manifests: edits show up as rows; a broken file keeps its last good state."
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
watcher=""
prefix="fd$$"
bed_up=""
userspace=""
cleanup() {
  [ -n "$watcher" ] && kill "$watcher" 2>/dev/null
  [ -n "$userspace" ] && kill "$userspace" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
  if [ -n "$bed_up" ]; then
    ip netns exec "$prefix-node" "$ferry" cleanup >/dev/null 2>&1 || true
    scripts/testbed.sh down "$prefix" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
cp -r "$examples" "$work/examples"
"$ferry" get endpoints --manifests "$work/examples" --watch > "$work/watch.out" 2> "$work/watch.err" &
watcher=$!
sleep 1
seen_out=0; seen_err=0
# Prints what the watcher wrote since the last call.
show() {
  sleep 1.5
  echo "--- the watcher printed:"
  tail -n +$((seen_out + 1)) "$work/watch.out"
  tail -n +$((seen_err + 1)) "$work/watch.err"
  seen_out=$(wc -l < "$work/watch.out"); seen_err=$(wc -l < "$work/watch.err")
}
show
say "A pod of my-service is replaced: 10.244.2.3 becomes 10.244.2.4."
sed -i 's/10\.244\.2\.3\b/10.244.2.4/g' "$work/examples/my-service.yaml"
show
say "A typo in sticky's file (port 70000): the error names file, document, object and field; sticky keeps serving."
sed -i 's/port: 8080/port: 70000/' "$work/examples/session-affinity.yaml"
show
say "The file is fixed, then deleted: sticky's endpoints go away."
sed -i 's/port: 70000/port: 8080/' "$work/examples/session-affinity.yaml"
rm "$work/examples/session-affinity.yaml"
show

say "nftables mode, for real: a node, a client and the example pods, each in a network namespace of this run."
if [ "$(id -u)" -ne 0 ]; then
  echo "(skipped: the traffic part needs root for network namespaces and nftables)"
  exit 0
fi
bed_up=1
scripts/testbed.sh up "$prefix" >/dev/null
scripts/testbed.sh serve "$prefix" "$ferry" --tcp 80 --tcp 8080 >/dev/null
in_node() { ip netns exec "$prefix-node" "$@"; }
in_client() { ip netns exec "$prefix-client" "$@"; }
step in_node "$ferry" sync --manifests "$examples" "${node[@]}" --node-ip 10.0.0.1 --cluster-cidr 10.244.0.0/16
say "The rules Ferry wrote over netlink (the dispatch map, and the endpoint map each service's pick chain DNATs through; 'nft list table ip ferry' shows all of it):"
in_node nft list map ip ferry service-ips
in_node nft list map ip ferry cluster-endpoints
say "300 requests from the client to my-service's ClusterIP 10.96.0.10:80: each pod's share."
step in_client "$ferry" debug probe --to 10.96.0.10:80 --count 300
say "300 requests to web-nodeport's NodePort on the node, 10.0.0.1:30080."
step in_client "$ferry" debug probe --to 10.0.0.1:30080 --count 300
say "Removing everything Ferry made:"
step in_node "$ferry" cleanup

say "userspace mode on the same namespaces: Ferry accepts each connection and relays it (epoll, splice)."
say "Service addresses become local through routes on lo (proto 249); no nftables rule is involved."
# `ip netns exec` execs Ferry in place, so $! is Ferry's PID.
ip netns exec "$prefix-node" "$ferry" run --mode userspace --manifests "$examples" "${node[@]}" --node-ip 10.0.0.1 \
  2> "$work/userspace.log" &
userspace=$!
for _ in $(seq 50); do grep -q synced "$work/userspace.log" && break; sleep 0.1; done
step in_node ip route show table local proto 249
say "300 requests from the client to my-service's ClusterIP 10.96.0.10:80, relayed by Ferry (round robin)."
step in_client "$ferry" debug probe --to 10.96.0.10:80 --count 300
say "300 requests to web-nodeport's NodePort on the node, 10.0.0.1:30080."
step in_client "$ferry" debug probe --to 10.0.0.1:30080 --count 300
say "32 MiB streamed through the relay and echoed back (the client half-closes, then reads it all):"
step in_client "$ferry" debug stream --to 10.96.0.10:80 --bytes 33554432
say "Stopping Ferry (SIGTERM): it closes its listeners and removes its routes."
kill -TERM "$userspace"; wait "$userspace" || true
userspace=""
step in_node ip route show table local proto 249
echo "(no routes left)"
