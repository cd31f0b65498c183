import sys
shape, n, eps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = ["table ip spike {"]
out.append("  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }")
if shape == "shared":
    out.append("  map endpoints { typeof numgen random mod 1 : ip daddr . tcp dport; }")
out.append("  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; ip daddr . meta l4proto . th dport vmap @service-ips; }")
for s in range(n):
    base = s * 16
    if shape == "shared":
        out.append(f"  chain svc-{s} {{ meta l4proto tcp dnat ip to numgen random mod {eps} offset {base} map @endpoints; }}")
    elif shape == "permap":
        out.append(f"  map ep-{s} {{ typeof numgen random mod 1 : ip daddr . tcp dport; }}")
        out.append(f"  chain svc-{s} {{ meta l4proto tcp dnat ip to numgen random mod {eps} map @ep-{s}; }}")
out.append("}")
# elements in separate statements (one transaction with the file)
def ip(s, e): return f"10.{64 + (s*eps+e)//65536}.{((s*eps+e)//256)%256}.{(s*eps+e)%256}"
elems = []
svc = []
for s in range(n):
    svc.append(f"10.{96 + s//65536}.{(s//256)%256}.{s%256} . tcp . 80 : goto svc-{s}")
    for e in range(eps):
        if shape == "shared":
            elems.append(("endpoints", f"{s*16+e} : {ip(s,e)} . 8080"))
        else:
            elems.append((f"ep-{s}", f"{e} : {ip(s,e)} . 8080"))
lines = out
for i in range(0, len(svc), 2000):
    lines.append("add element ip spike service-ips { " + ", ".join(svc[i:i+2000]) + " }")
from collections import defaultdict
bymap = defaultdict(list)
for m, e in elems: bymap[m].append(e)
for m, es in bymap.items():
    for i in range(0, len(es), 2000):
        lines.append(f"add element ip spike {m} {{ " + ", ".join(es[i:i+2000]) + " }")
print("\n".join(lines))
