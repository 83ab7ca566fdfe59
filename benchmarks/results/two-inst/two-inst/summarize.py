"""Table of approvals --tenants runs: python summarize.py FILE.json..."""
import json
import sys

rows = []
for path in sys.argv[1:]:
    d = json.load(open(path))
    for rnd in d["rounds"]:
        for label, r in rnd.items():
            s = r["steady"]
            c = s["cpu"]["components"]
            m = s["cpu"]["machine"]
            n = s["ok"]
            inst = [c[k]["ms_per_approval"] for k in sorted(c) if k.startswith("instance")]
            pg = sum(c.get(g, {}).get("ms_per_approval", 0) for g in
                     ("postgres_backends", "postgres_shared"))
            lg = sum(c.get(g, {}).get("ms_per_approval", 0) for g in
                     ("load_generator", "subscribers"))
            redis = c.get("redis", {}).get("ms_per_approval", 0)
            ours = sum(inst) + pg + lg + redis
            wake = [c[k].get("wakeups_per_approval") for k in sorted(c) if k.startswith("instance")]
            st = s.get("stages") or []
            groups = sum(x.get("decide_group.groups", 0) for x in st)
            members = sum(x.get("decide_group.members", 0) for x in st)
            batches = sum(x.get("publish.batches", 0) for x in st)
            events = sum(x.get("publish.events", 0) for x in st)
            decoded = sum(x.get("backplane.decoded", 0) for x in st)
            unwanted = sum(x.get("backplane.unwanted_skipped", 0) for x in st)
            rows.append((path.split("/")[-1].replace(".json", ""), label, s["approvals_per_s"],
                         " + ".join(f"{v:.2f}" for v in inst), f"{sum(inst):.2f}", f"{pg:.2f}",
                         f"{redis:.3f}", f"{lg:.2f}", f"{ours:.2f}",
                         f"{m['busy_ms_per_approval']:.2f}",
                         "/".join(f"{v:.2f}" for v in m.get("busy_per_cpu", [])),
                         f"{c.get('other', {}).get('cores', 0):.2f}",
                         "+".join(f"{w:.1f}" for w in wake if w is not None),
                         f"{members / max(1, groups):.2f}", f"{events / max(1, batches):.2f}",
                         f"{decoded:.0f}/{unwanted:.0f}",
                         f"{s['missing']}/{s['duplicates']}", s["loadavg_1m"]))
print("| file | run | approvals/s | instances ms/approval | sum | PG | Redis | LG+subs | all ours "
      "| machine busy ms/approval | busy per CPU | other cores | wakeups/approval "
      "| decisions/group | events/publish | decoded/unparsed | missing/dup | load |")
print("|" + "---|" * 18)
for r in rows:
    print("| " + " | ".join(str(x) for x in r) + " |")
