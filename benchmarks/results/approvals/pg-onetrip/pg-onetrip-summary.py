import json, glob, os, re, sys
d = sys.argv[1] if len(sys.argv) > 1 else "/work/wt/pg-onetrip/benchmarks/results/approvals/pg-onetrip"
print("micro:")
for f in sorted(glob.glob(f"{d}/micro-*.txt")):
    try:
        j = json.loads(open(f).read().strip().splitlines()[-1])
    except Exception as e:
        print(os.path.basename(f), "??", e); continue
    rt = j["round_trips_per_approval"]
    print(f"{os.path.basename(f):28s} {j['per_s']:7.1f}/s cpu {j['cpu_ms_per_approval']:.3f} ms  rt/appr {sum(rt.values()):.2f} ({rt})  load {j['loadavg'][0]:.2f}")
print("served:")
for f in sorted(glob.glob(f"{d}/served-*.json"), key=lambda p: (re.findall(r'-(\d+)\.json', p), p)):
    j = json.load(open(f))
    for e, v in j["rounds"][0].items():
        s, b = v["steady"], v.get("burst", {})
        print(f"{os.path.basename(f):24s} {e:8s} {s['approvals_per_s']:7.1f}/s  ev p50/p99 {s['event_after_return_ms']['p50']:.2f}/{s['event_after_return_ms']['p99']:.1f}  call p50/p99 {s['call_ms']['p50']:.1f}/{s['call_ms']['p99']:.0f}  srvCPU {s['server_cpu_ms_per_approval']:.2f}  cores {s['server_cpu_cores']}  pgCPU {s.get('postgres_cpu_ms_per_approval','-')}  burst {b.get('approvals_per_s','-')}  load {s['loadavg_1m']}  miss/dup {s['missing']}/{s['duplicates']}")
