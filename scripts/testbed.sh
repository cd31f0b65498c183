#!/usr/bin/env bash
# The network-namespace test bed of Sources/FerryTestbed/Testbed.swift, with `ip` commands, for demos:
# a node (IPv4 forwarding on), a client, the walk-through's three pods (deploy/examples/my-service.yaml)
# and web-nodeport's two (deploy/examples/nodeport.yaml),
# each in its own namespace. Needs root.
#
#   scripts/testbed.sh up PREFIX                 create it and print the namespaces
#   scripts/testbed.sh serve PREFIX FERRY [ARGS] run `FERRY debug serve --name <pod> ARGS` in each pod
#                                                (default ARGS: --tcp 80) and wait until each is ready
#   scripts/testbed.sh down PREFIX               stop what runs in its namespaces, delete them
#
# PREFIX: 1-12 letters or digits, unique to the run (e.g. fy$$); every name starts with it.
#
#   client ns                  node ns (ip_forward=1)                       pod ns (one per pod)
#   eth0 10.0.0.2/24  <-veth->  PREFIXc 10.0.0.1/24
#   default via 10.0.0.1        PREFIXp1 10.0.0.1/32  <-veth->  eth0 10.244.1.2/32
#                               10.244.1.2/32 dev PREFIXp1       10.0.0.1 dev eth0 scope link
#                               ...                              default via 10.0.0.1 dev eth0
# Both node-2 pods hang off the same node namespace: the node is only a label.
set -euo pipefail

node_ip=10.0.0.1
client_ip=10.0.0.2
# name ip node, as in deploy/examples/my-service.yaml and deploy/examples/nodeport.yaml
pods=(
  "my-app-7c5ddbdf54-2xkqn 10.244.1.2 node-1"
  "my-app-7c5ddbdf54-9vwtr 10.244.2.2 node-2"
  "my-app-7c5ddbdf54-lh6zp 10.244.2.3 node-2"
  "web-nodeport-5f7d9c8b64-k2jxw 10.244.1.10 node-1"
  "web-nodeport-5f7d9c8b64-q8tzm 10.244.2.10 node-2"
)

usage() {
  sed -n '6,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 2 ] || usage
command=$1
prefix=$2
shift 2
[[ $prefix =~ ^[A-Za-z0-9]{1,12}$ ]] || { echo "testbed.sh: PREFIX must be 1-12 letters or digits" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "testbed.sh: needs root (network namespaces)" >&2; exit 1; }
PATH=$PATH:/usr/sbin:/sbin
command -v ip >/dev/null || { echo "testbed.sh: needs ip (iproute2)" >&2; exit 1; }

node=$prefix-node
client=$prefix-client
logs=${TMPDIR:-/tmp}/ferry-testbed-$prefix

pod_field() { # index field(1 name, 2 ip, 3 node)
  local -a parts
  read -r -a parts <<<"${pods[$1]}"
  echo "${parts[$2 - 1]}"
}

namespaces() { # every namespace this prefix owns, pods last
  echo "$node" "$client"
  for index in "${!pods[@]}"; do echo "$prefix-pod$((index + 1))"; done
}

exists() { [ -e "/run/netns/$1" ]; }

down() {
  local namespace pid pids=()
  for namespace in $(namespaces); do
    exists "$namespace" || continue
    for pid in $(ip netns pids "$namespace" 2>/dev/null); do pids+=("$pid"); done
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 20); do # up to 2 s
      local alive=()
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
      [ ${#alive[@]} -eq 0 ] && break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  for namespace in $(namespaces | tr ' ' '\n' | tac); do
    if exists "$namespace"; then ip netns del "$namespace" && echo "deleted $namespace"; fi
  done
  rm -rf "$logs"
}

up() {
  local namespace
  for namespace in $(namespaces); do
    if exists "$namespace"; then echo "testbed.sh: $namespace exists already (run: $0 down $prefix)" >&2; exit 1; fi
  done
  trap 'echo "testbed.sh: setting up failed; removing what was made" >&2; down >/dev/null' ERR

  ip netns add "$node"
  ip -n "$node" link set lo up
  ip netns exec "$node" sysctl -q -w net.ipv4.ip_forward=1

  ip netns add "$client"
  ip -n "$client" link set lo up
  ip -n "$node" link add "${prefix}c" type veth peer name eth0 netns "$client"
  ip -n "$node" addr add "$node_ip/24" dev "${prefix}c"
  ip -n "$node" link set "${prefix}c" up
  ip -n "$client" addr add "$client_ip/24" dev eth0
  ip -n "$client" link set eth0 up
  ip -n "$client" route add default via "$node_ip" dev eth0

  local index pod_ns link pod_ip
  for index in "${!pods[@]}"; do
    pod_ns=$prefix-pod$((index + 1))
    link=${prefix}p$((index + 1))
    pod_ip=$(pod_field "$index" 2)
    ip netns add "$pod_ns"
    ip -n "$pod_ns" link set lo up
    ip -n "$node" link add "$link" type veth peer name eth0 netns "$pod_ns"
    ip -n "$node" addr add "$node_ip/32" dev "$link"
    ip -n "$node" link set "$link" up
    ip -n "$node" route add "$pod_ip/32" dev "$link"
    ip -n "$pod_ns" addr add "$pod_ip/32" dev eth0
    ip -n "$pod_ns" link set eth0 up
    ip -n "$pod_ns" route add "$node_ip" dev eth0 scope link
    ip -n "$pod_ns" route add default via "$node_ip" dev eth0
  done
  trap - ERR

  printf '%-7s %-18s %-12s %-8s %s\n' ROLE NAMESPACE ADDRESS NODE "POD (node-side link)"
  printf '%-7s %-18s %-12s %-8s %s\n' node "$node" "$node_ip" - "(forwards; ip_forward=1)"
  printf '%-7s %-18s %-12s %-8s %s\n' client "$client" "$client_ip" - "(${prefix}c)"
  for index in "${!pods[@]}"; do
    printf '%-7s %-18s %-12s %-8s %s\n' pod "$prefix-pod$((index + 1))" "$(pod_field "$index" 2)" \
      "$(pod_field "$index" 3)" "$(pod_field "$index" 1) (${prefix}p$((index + 1)))"
  done
}

serve() {
  [ $# -ge 1 ] || usage
  local ferry=$1
  shift
  [ -x "$ferry" ] || { echo "testbed.sh: $ferry is not an executable" >&2; exit 1; }
  ferry=$(cd "$(dirname "$ferry")" && pwd)/$(basename "$ferry")
  [ $# -gt 0 ] || set -- --tcp 80
  mkdir -p "$logs"
  local index name pod_ns
  for index in "${!pods[@]}"; do
    name=$(pod_field "$index" 1)
    pod_ns=$prefix-pod$((index + 1))
    exists "$pod_ns" || { echo "testbed.sh: no namespace $pod_ns (run: $0 up $prefix)" >&2; exit 1; }
    ip netns exec "$pod_ns" "$ferry" debug serve --name "$name" "$@" >"$logs/$name.out" 2>"$logs/$name.err" </dev/null &
  done
  for index in "${!pods[@]}"; do
    name=$(pod_field "$index" 1)
    for _ in $(seq 50); do # up to 5 s
      grep -q "^serving " "$logs/$name.out" 2>/dev/null && break
      sleep 0.1
    done
    if grep -q "^serving " "$logs/$name.out"; then
      echo "$prefix-pod$((index + 1)): $(head -n 1 "$logs/$name.out")"
    else
      echo "testbed.sh: $name did not become ready:" >&2
      cat "$logs/$name.err" >&2
      exit 1
    fi
  done
}

case $command in
  up) up ;;
  down) down ;;
  serve) serve "$@" ;;
  *) usage ;;
esac
