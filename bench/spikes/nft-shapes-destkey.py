# Register-free map shape: the endpoint map is keyed by the packet's own destination plus a slot,
# `dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @endpoints`, one such
# rule per distinct endpoint count N in a shared `pick-N` chain; each service chain ends in `goto pick-N`.
# Usage: nft-shapes-destkey.py SERVICES ENDPOINTS [nodeport]   (nodeport: every service also gets a
# NodePort frontend, keyed by protocol . port . slot in a second map)
import sys
n, eps = int(sys.argv[1]), int(sys.argv[2])
nodeport = len(sys.argv) > 3
def ip(s, e): return f"10.{64 + (s*eps+e)//65536}.{((s*eps+e)//256)%256}.{(s*eps+e)%256}"
def vip(s): return f"10.{96 + s//65536}.{(s//256)%256}.{s%256}"
out = ["table ip spike {",
 "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }",
 "  map service-nodeports { type inet_proto . inet_service : verdict; }",
 "  map endpoints { typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }",
 "  map nodeport-endpoints { typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }",
 "  set hairpin { type ipv4_addr . ipv4_addr; }",
 f"  chain pick-{eps} {{ dnat ip to ip daddr . meta l4proto . th dport . numgen random mod {eps} map @endpoints; }}",
 f"  chain pick-nodeport-{eps} {{ dnat ip to meta l4proto . th dport . numgen random mod {eps} map @nodeport-endpoints; }}",
 "  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; ip daddr . meta l4proto . th dport vmap @service-ips; fib daddr type local meta l4proto . th dport vmap @service-nodeports; }",
 "  chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; ip saddr . ip daddr @hairpin masquerade; }"]
for s in range(n):
    out.append(f"  chain svc-{s} {{ ip saddr != 10.244.0.0/16 meta mark set meta mark | 0x4000; goto pick-{eps}; }}")
    if nodeport: out.append(f"  chain ext-{s} {{ meta mark set meta mark | 0x4000; goto pick-nodeport-{eps}; }}")
out.append("}")
def chunks(elems, what):
    for i in range(0, len(elems), 2000): out.append(f"add element ip spike {what} {{ " + ", ".join(elems[i:i+2000]) + " }")
chunks([f"{vip(s)} . tcp . 80 . {e} : {ip(s,e)} . 8080" for s in range(n) for e in range(eps)], "endpoints")
chunks([f"{ip(s,e)} . {ip(s,e)}" for s in range(n) for e in range(eps)], "hairpin")
chunks([f"{vip(s)} . tcp . 80 : goto svc-{s}" for s in range(n)], "service-ips")
if nodeport:
    chunks([f"tcp . {30000 + s % 30000} . {e} : {ip(s,e)} . 8080" for s in range(min(n, 30000)) for e in range(eps)], "nodeport-endpoints")
    chunks([f"tcp . {30000 + s % 30000} : goto ext-{s}" for s in range(min(n, 30000))], "service-nodeports")
print("\n".join(out))
