#!/usr/bin/env bash
# Issue 8's org-sync benchmark (not a test): sync a generated org (default 100,000 users in
# 5,000 departments) from one WeCom corp's sandbox to another's, both enforcing WeCom's
# published limits (10,000/min and 150,000/h per API, sliding windows), and report
#   plan:  wall time, peak RSS, read calls vs the minimum (1 department/list + 1 user/list per
#          department + 1 gettoken),
#   apply: wall time, peak RSS, write calls vs the changes planned, the achieved write rate of
#          each write API vs its limit, and the peak calls the sandbox saw in any 60-s window,
#   again: a second plan (reads both sides completely) must be empty.
# Usage: tests/benches/org_sync_scale.sh [USERS] [DEPTS]
# Needs a release build only (cargo build --release -p huitong): it generates the org itself.
# WeCom is the pair whose published limits let a 5,000-department read fit in 30 s: Feishu's
# find_by_department allows 1,000/min (5,100 calls = 5.1 min minimum) and DingTalk 20/s per API.
set -u
B="${HUITONG_BIN:-${CARGO_TARGET_DIR:-/var/tmp/huitong-target}/release/huitong}"
USERS="${1:-100000}"; DEPTS="${2:-5000}"
D="${BENCH_DIR:-/var/tmp/huitong-scale}"
export SRC_PORT="${SRC_PORT:-19111}" DST_PORT="${DST_PORT:-19112}"
mkdir -p "$D" && cd "$D" && rm -rf data
[ -f "org-$USERS.json" ] || "$B" sandbox fixture --users "$USERS" --depts "$DEPTS" --out "org-$USERS.json"
echo '{"departments":[{"key":"root","name":"工厂","parent":null,"order":0,"leaders":[]}],"users":[]}' > empty.json
for port in "$SRC_PORT" "$DST_PORT"; do
  curl -sf "http://127.0.0.1:$port/_sandbox/calls" > /dev/null && { echo "port $port is already serving a sandbox; stop it first" >&2; exit 1; }
done
"$B" sandbox wecom --listen "127.0.0.1:$SRC_PORT" --org "org-$USERS.json" --corp-id wwsource --corp-secret s1 --agent-id 1000002 --enforce-rate-limits > source.log 2>&1 & S=$!
"$B" sandbox wecom --listen "127.0.0.1:$DST_PORT" --org empty.json --corp-id wwtarget --corp-secret s2 --agent-id 1000002 --enforce-rate-limits > target.log 2>&1 & T=$!
trap 'kill $S $T 2>/dev/null' EXIT
for port in "$SRC_PORT" "$DST_PORT"; do
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/_sandbox/calls" > /dev/null && break; sleep 0.1; done
done
cat > huitong.toml <<TOML
[database]
url = "sqlite://$D/data/huitong.db"
[log]
level = "warn"
[connectors.hq]
kind = "wecom"
corp_id = "wwsource"
agent_id = 1000002
corp_secret_env = "S1"
base_url = "http://127.0.0.1:$SRC_PORT"
user_listing = "per_department"
[connectors.factory]
kind = "wecom"
corp_id = "wwtarget"
agent_id = 1000002
corp_secret_env = "S2"
base_url = "http://127.0.0.1:$DST_PORT"
user_listing = "per_department"
[routes.org]
source = "hq"
targets = ["factory"]
safety_threshold_percent = 100
TOML
export S1=s1 S2=s2
run() { # name, then the command; writes "name: wall s, max RSS KB" to name.time
  local name="$1"; shift
  /usr/bin/time -f "$name: %e s wall, %M KB max RSS" -o "$name.time" timeout "${BENCH_TIMEOUT:-3600}" "$@"
}
calls() { curl -s "http://127.0.0.1:$1/_sandbox/calls"; }

run plan "$B" --config huitong.toml sync plan org --output json > plan.json 2> plan.err || { tail -5 plan.err; exit 1; }
cat plan.time
calls "$SRC_PORT" > source-calls.json
[ -n "${PLAN_ONLY:-}" ] && { python3 -c "import json;c=json.load(open('source-calls.json'));print('source calls',c['total'],c['calls'])"; exit 0; }
python3 - <<'PY'
import json
p = json.load(open("plan.json")); c = json.load(open("source-calls.json"))
org = json.load(open([f for f in __import__("os").listdir(".") if f.startswith("org-")][0]))
t = p["targets"][0]
reads = {k: v for k, v in c["calls"].items()}
minimum = 1 + 1 + len(org["departments"])  # gettoken + department/list + user/list per department
print(f"plan: {len(t['steps'])} steps, {len(t['conflicts'])} conflicts, {p['records_read']} records read")
print(f"source read calls: {c['total']} (minimum {minimum}): {reads}")
print(f"source rate-limited replies: {c.get('rate_limited', c.get('faults'))}")
PY

run apply "$B" --config huitong.toml sync apply org > apply.out 2> apply.err || { tail -5 apply.err; }
cat apply.time
tail -1 apply.out
calls "$DST_PORT" > target-calls.json
python3 - <<'PY'
import json
p = json.load(open("plan.json")); c = json.load(open("target-calls.json"))
steps = p["targets"][0]["steps"]
changes = sum(1 for s in steps if s["action"] != "link")
writes = {k: v for k, v in c["calls"].items() if k.split()[-1].split("/")[-1] in ("create", "update", "delete")}
print(f"write calls: {sum(writes.values())} for {changes} planned changes: {writes}")
for k, w in sorted(c.get("windows", {}).items()):
    if k not in writes: continue
    span = max(w["last_ms"] - w["first_ms"], 1) / 1000.0
    # A limit of 10,000 in any 60 s lets N calls span no less than (N / 10,000 - 1) minutes:
    # the achieved rate is N over (span + one window), as a share of 10,000/min.
    rate = w["count"] / (span + 60) * 60
    print(f"  {k}: {w['count']} calls, first to last {span:.1f} s; sustained {rate:,.0f}/min = "
          f"{rate/100:.1f} % of the 10,000/min limit; peak in any 60 s window: {w['peak_60s']} "
          f"(limit 10,000), in any 1 s: {w['peak_1s']}")
print(f"target rate-limited replies: {c.get('rate_limited', c.get('faults'))}")
PY

calls "$SRC_PORT" > source-before-again.json; calls "$DST_PORT" > target-before-again.json
run again "$B" --config huitong.toml sync plan org --output json > again.json 2> again.err || { tail -5 again.err; exit 1; }
cat again.time
calls "$SRC_PORT" > source-after-again.json; calls "$DST_PORT" > target-after-again.json
python3 - <<'PY'
import json
t = json.load(open("again.json"))["targets"][0]
print(f"second plan: {len(t['steps'])} steps, {len(t['conflicts'])} conflicts")
import os, urllib.request
for side, port in (("source", os.environ["SRC_PORT"]), ("target", os.environ["DST_PORT"])):
    a = json.load(open(f"{side}-before-again.json"))["calls"]; b = json.load(open(f"{side}-after-again.json"))["calls"]
    d = {k: b[k] - a.get(k, 0) for k in b if b[k] != a.get(k, 0)}
    org = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/org"))
    depts = len(org["departments"])
    print(f"second plan {side} read calls: {sum(d.values())} (minimum {depts + 2}: 1 gettoken + 1 department/list + 1 user/list for each of {depts} departments): {d}")
PY
