#!/usr/bin/env bash
# The demo's network-namespace test bed, by `ferry debug testbed`: the topology is described once, in
# Sources/FerryTestbed/Testbed.swift (the tests' beds are the same), with the walk-through's three pods
# (deploy/examples/my-service.yaml) and web-nodeport's two (deploy/examples/nodeport.yaml). Needs root.
#
#   scripts/testbed.sh up PREFIX                 create it and print the namespaces
#   scripts/testbed.sh serve PREFIX FERRY [ARGS] run `FERRY debug serve --name <pod> ARGS` in each pod
#                                                (default ARGS: --tcp 80) and wait until each is ready
#   scripts/testbed.sh down PREFIX               stop what runs in its namespaces, delete them
#
# PREFIX: 1-12 letters or digits, unique to the run (e.g. fy$$); every name starts with it. up and down
# use $FERRY, else .build/release/ferry, else .build/debug/ferry.
#
#   client ns                  node ns (ip_forward=1)                       pod ns (one per pod)
#   eth0 10.0.0.2/24  <-veth->  PREFIXc 10.0.0.1/24
#   default via 10.0.0.1        PREFIXp1 10.0.0.1/32  <-veth->  eth0 10.244.1.2/32
#                               10.244.1.2/32 dev PREFIXp1       10.0.0.1 dev eth0 scope link
#                               ...                              default via 10.0.0.1 dev eth0
set -euo pipefail

usage() {
  sed -n '6,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 2 ] || usage
command=$1
prefix=$2
shift 2
case $command in
  serve)
    [ $# -ge 1 ] || usage
    ferry=$1
    shift
    ;;
  up | down)
    root=$(cd "$(dirname "$0")/.." && pwd)
    ferry=${FERRY:-$root/.build/release/ferry}
    [ -x "$ferry" ] || ferry=$root/.build/debug/ferry
    ;;
  *) usage ;;
esac
[ -x "$ferry" ] || { echo "testbed.sh: no ferry executable ($ferry): build it first (make release)" >&2; exit 1; }
exec "$ferry" debug testbed "$command" "$prefix" "$@"
