import re, sys, collections
text = open(sys.argv[1], errors="replace").read()
entries = re.split(r"\n(?=\d{4}-\d\d-\d\d [\d:.]+ UTC \[\d+\])", text)
c = collections.Counter(); dur = collections.defaultdict(float)
for e in entries:
    m = re.search(r"duration: ([\d.]+) ms  plan:\n\s*Query Text: (.{0,60})", e)
    if not m: continue
    q = m.group(2).strip()
    scans = tuple(sorted(set(re.findall(r"((?:Seq|Index|Bitmap Heap|Index Only) Scan(?: using \w+)? on pending_change)", e))))
    c[(q, scans)] += 1; dur[(q, scans)] += float(m.group(1))
for (q, s), n in sorted(c.items(), key=lambda kv: -dur[kv[0]])[:25]:
    print(f"{n:6d} {dur[(q,s)]:9.1f} ms  {dur[(q,s)]/n:6.3f}  {q[:45]:45s} {'; '.join(s)}")
