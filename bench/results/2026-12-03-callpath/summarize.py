import re,statistics,sys
d='/tmp/prof/final/'
def med(x): return statistics.median(x) if x else float('nan')
print("## ab.sh (old = b9d1805 before the core seams, new = this stop)")
rows={}; side=None
for line in open(d+'ab.txt'):
    m=re.match(r'== (\w+) round',line)
    if m: side=m.group(1); continue
    m=re.search(r'server ([\d.]+) (us/op|us/conn|s/GiB)',line)
    if not m: continue
    key=line.split(':')[0].split('(')[0].strip()
    if key.startswith('upload') or key.startswith('download'): key=key.split()[0]
    rows.setdefault(key,{}).setdefault(side,[]).append(float(m.group(1)))
for k,v in rows.items():
    o=v.get('old',[]); n=v.get('new',[])
    print(f"{k:32s} old {med(o):8.2f} new {med(n):8.2f} ratio {med(n)/med(o):.2f}  old={o} new={n}")
print("\n## isolation.sh")
rows={}
for line in open(d+'iso.txt'):
    m=re.match(r'== (\w+) round',line)
    if m: side=m.group(1); continue
    m=re.search(r'([\d.]+) ops/s.*server ([\d.]+) us/op',line)
    m2=re.search(r': ([\d.]+) MiB/s\s+server ([\d.]+) s/GiB',line)
    key=line.split(':')[0].split('(')[0].strip()
    if m: rows.setdefault(key,{}).setdefault(side,[]).append((float(m.group(2)),float(m.group(1))))
    elif m2: rows.setdefault(key.split()[0],{}).setdefault(side,[]).append((float(m2.group(2)),float(m2.group(1))))
for k,v in rows.items():
    a=v.get('in_process',[]); b=v.get('isolated',[])
    extra=[round(y[0]-x[0],2) for x,y in zip(a,b)]
    rate=[round(y[1]/x[1],2) for x,y in zip(a,b)]
    print(f"{k:24s} in cpu {med([x[0] for x in a]):.2f} iso cpu {med([y[0] for y in b]):.2f} extra med {med(extra):.2f} {extra} rate med {med(rate):.2f} {rate}")
print("\n## vs gRPC (p0 = start of this stop, p1 = now)")
rows={}
for line in open(d+'vsgrpc.txt'):
    m=re.search(r'^(\S+) .*?(pingpong|pipeline).*?([\d.]+) ops/s.*server ([\d.]+) us/op',line)
    if not m: continue
    rows.setdefault((m.group(2)),{}).setdefault(m.group(1),[]).append((float(m.group(3)),float(m.group(4))))
for k,v in rows.items():
    for who,l in v.items():
        print(f"{k:9s} {who:5s} rate med {med([x[0] for x in l]):9.0f} cpu med {med([x[1] for x in l]):7.1f}  {l}")
    if 'p1' in v and 'grpc' in v:
        r=[a[0]/b[0] for a,b in zip(v['p1'],v['grpc'])]
        print(f"   p1/grpc rate ratio per round {[round(x,2) for x in r]} median {med(r):.2f}; cpu ratio grpc/p1 {med([x[1] for x in v['grpc']])/med([x[1] for x in v['p1']]):.2f}")
print("\n## TLS describe ping-pong (A = start of stop, B = now)")
rows={}
for line in open(d+'tls.txt'):
    m=re.search(r'^(\S+ ?\S*) .*?([\d.]+) ops/s\s+p50 ([\d.]+) us.*server ([\d.]+) us/op',line)
    if not m: continue
    rows.setdefault(m.group(1).strip(),[]).append((float(m.group(2)),float(m.group(3)),float(m.group(4))))
for k,l in rows.items():
    print(f"{k:10s} rate med {med([x[0] for x in l]):7.0f} p50 med {med([x[1] for x in l]):6.1f} cpu med {med([x[2] for x in l]):6.1f} {l}")
if 'B tls' in rows and 'grpc-tls' in rows:
    r=[a[0]/b[0] for a,b in zip(rows['B tls'],rows['grpc-tls'])]
    print(f"B tls / grpc-tls rate per round {[round(x,2) for x in r]} median {med(r):.2f}")
print(open(d+'meta.txt').read())
