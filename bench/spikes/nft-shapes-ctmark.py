import sys
n, eps = int(sys.argv[1]), int(sys.argv[2])
def ip(s, e): return f"10.{64 + (s*eps+e)//65536}.{((s*eps+e)//256)%256}.{(s*eps+e)%256}"
out = ["table ip spike {",
 "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }",
 "  map endpoints { typeof ct mark : ip daddr . tcp dport; }",
 "  chain endpoint-dnat { meta l4proto tcp dnat ip to ct mark map @endpoints; }",
 "  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; ip daddr . meta l4proto . th dport vmap @service-ips; }"]
for s in range(n):
    out.append(f"  chain svc-{s} {{ ct mark set numgen random mod {eps} offset {s*16}; goto endpoint-dnat; }}")
out.append("}")
elems=[f"{s*16+e} : {ip(s,e)} . 8080" for s in range(n) for e in range(eps)]
for i in range(0, len(elems), 2000): out.append("add element ip spike endpoints { " + ", ".join(elems[i:i+2000]) + " }")
svc=[f"10.{96 + s//65536}.{(s//256)%256}.{s%256} . tcp . 80 : goto svc-{s}" for s in range(n)]
for i in range(0, len(svc), 2000): out.append("add element ip spike service-ips { " + ", ".join(svc[i:i+2000]) + " }")
print("\n".join(out))
