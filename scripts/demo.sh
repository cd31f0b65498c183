#!/usr/bin/env bash
# The demo behind `make demo`: Ferry reading the example manifests (deploy/examples), explaining where
# traffic goes and following edits to a watched copy of them; then, as root, real traffic through both
# modes in network namespaces of this run (a node, a client, the example pods): the rules or routes
# Ferry makes, which pods answer, and the answers moving when a pod leaves the watched manifests.
# Everything it makes (namespaces, rules, routes, files) is removed at the end, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ferry=${1:-.build/release/ferry}
examples=deploy/examples
node=(--node-name node-1)

bold=$'\033[1m'; plain=$'\033[0m'
# Prints a command as it can be pasted (arguments with shell characters in single quotes), then runs it.
step() {
  local shown="" word
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then shown+="$word "
    elif [[ $word != *"'"* ]]; then shown+="'$word' "
    else shown+="$(printf '%q' "$word") "; fi
  done
  printf '\n%s$ %s%s\n' "$bold" "${shown% }" "$plain"
  "$@"
}
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
running=""
cleanup() {
  [ -n "$watcher" ] && kill "$watcher" 2>/dev/null
  [ -n "$running" ] && kill "$running" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
  if [ -n "$bed_up" ]; then
    ip netns exec "$prefix-node" "$ferry" cleanup >/dev/null 2>&1 || true
    FERRY="$ferry" scripts/testbed.sh down "$prefix" >/dev/null 2>&1 || true
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
FERRY="$ferry" scripts/testbed.sh up "$prefix" >/dev/null
scripts/testbed.sh serve "$prefix" "$ferry" --tcp 80 --tcp 8080 >/dev/null
node_ns="$prefix-node"; client_ns="$prefix-client"
step ip netns exec "$node_ns" "$ferry" sync --manifests "$examples" "${node[@]}" --node-ip 10.0.0.1 --cluster-cidr 10.244.0.0/16
say "The rules Ferry wrote over netlink (the dispatch map, and the endpoint map each service's pick chain DNATs through; 'nft list table ip ferry' shows all of it):"
step ip netns exec "$node_ns" nft list map ip ferry service-ips
step ip netns exec "$node_ns" nft list map ip ferry cluster-endpoints
say "300 requests from the client to my-service's ClusterIP 10.96.0.10:80: each pod's share."
step ip netns exec "$client_ns" "$ferry" debug probe --to 10.96.0.10:80 --count 300
say "300 requests to web-nodeport's NodePort on the node, 10.0.0.1:30080."
step ip netns exec "$client_ns" "$ferry" debug probe --to 10.0.0.1:30080 --count 300
say "Removing everything Ferry made:"
step ip netns exec "$node_ns" "$ferry" cleanup

# Runs Ferry in MODE on a fresh watched copy of the examples, shows who answers, makes one pod of
# my-service unready in the copy, and shows the answers move to the other two.
follow_change() {
  local mode=$1 live="$work/live-$1"
  rm -rf "$live"; cp -r "$examples" "$live"
  say "ferry run --mode $mode, watching a copy of the manifests ($live):"
  echo "\$ ip netns exec $node_ns $ferry run --mode $mode --manifests $live ${node[*]} --node-ip 10.0.0.1 --cluster-cidr 10.244.0.0/16 &"
  # `ip netns exec` execs Ferry in place, so $! is Ferry's PID.
  ip netns exec "$node_ns" "$ferry" run --mode "$mode" --manifests "$live" "${node[@]}" --node-ip 10.0.0.1 \
    --cluster-cidr 10.244.0.0/16 2> "$work/$mode.log" &
  running=$!
  for _ in $(seq 50); do grep -q synced "$work/$mode.log" && break; sleep 0.1; done
  step ip netns exec "$client_ns" "$ferry" debug probe --to 10.96.0.10:80 --count 150
  say "my-app-7c5ddbdf54-lh6zp (10.244.2.3) fails its readiness probe: its Ready condition becomes False in the watched copy."
  step sed -i '/name: my-app-7c5ddbdf54-lh6zp/,/^---/{/type: Ready$/{n;s/"True"/"False"/}}' "$live/my-service.yaml"
  for _ in $(seq 50); do [ "$(grep -c synced "$work/$mode.log")" -ge 2 ] && break; sleep 0.1; done
  grep synced "$work/$mode.log" | tail -1 | sed 's/^.*what=/Ferry synced: /'
  step ip netns exec "$client_ns" "$ferry" debug probe --to 10.96.0.10:80 --count 150
}

follow_change nftables
say "Stopping Ferry (SIGTERM leaves the rules: a restart cuts no traffic), then removing them:"
kill -TERM "$running"; wait "$running" || true
running=""
step ip netns exec "$node_ns" "$ferry" cleanup

say "userspace mode on the same namespaces: Ferry accepts each connection and relays it (epoll, splice)."
say "Service addresses become local through routes on lo (proto 249); no nftables rule is involved."
follow_change userspace
step ip netns exec "$node_ns" ip route show table local proto 249
say "300 requests to web-nodeport's NodePort on the node, 10.0.0.1:30080."
step ip netns exec "$client_ns" "$ferry" debug probe --to 10.0.0.1:30080 --count 300
say "32 MiB streamed through the relay and echoed back (the client half-closes, then reads it all):"
step ip netns exec "$client_ns" "$ferry" debug stream --to 10.96.0.10:80 --bytes 33554432
say "Stopping Ferry (SIGTERM): it closes its listeners and removes its routes."
kill -TERM "$running"; wait "$running" || true
running=""
step ip netns exec "$node_ns" ip route show table local proto 249
echo "(no routes left)"
