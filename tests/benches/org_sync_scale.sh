#!/usr/bin/env bash
# Issue 8's scale probe (work in progress, not a test): plan a Feishu -> DingTalk route for the
# 100,000-user / 5,000-department org through the sandboxes, and report plan time, peak RSS and
# the read calls the source served.  Usage: tests/benches/org_sync_scale.sh [USERS] [DEPTS]
# Needs ../shared/fixtures/gen_org.py and a release build (cargo build --release -p huitong).
set -u
here="$(cd "$(dirname "$0")/../.." && pwd)"
B="${HUITONG_BIN:-${CARGO_TARGET_DIR:-/var/tmp/huitong-target}/release/huitong}"
USERS="${1:-100000}"; DEPTS="${2:-5000}"
D="${BENCH_DIR:-/var/tmp/huitong-scale}"
mkdir -p "$D" && cd "$D" && rm -rf data
[ -f "org-$USERS.json" ] || python3 "$here/../shared/fixtures/gen_org.py" --users "$USERS" --depts "$DEPTS" --out "org-$USERS.json"
echo '{"departments":[{"key":"root","name":"子公司","parent":null,"order":0,"leaders":[]}],"users":[]}' > empty.json
"$B" sandbox feishu --listen 127.0.0.1:19101 --org "org-$USERS.json" --app-id cli_big --app-secret s1 > feishu.log 2>&1 & F=$!
"$B" sandbox dingtalk --listen 127.0.0.1:19102 --org empty.json --app-key dingbig --app-secret s2 > dingtalk.log 2>&1 & T=$!
trap 'kill $F $T 2>/dev/null' EXIT
sleep 3
cat > huitong.toml <<TOML
[database]
url = "sqlite://$D/data/huitong.db"
[connectors.hq]
kind = "feishu"
app_id = "cli_big"
app_secret_env = "S1"
base_url = "http://127.0.0.1:19101"
[connectors.sub]
kind = "dingtalk"
app_key = "dingbig"
app_secret_env = "S2"
base_url = "http://127.0.0.1:19102"
[routes.org]
source = "hq"
targets = ["sub"]
TOML
S1=s1 S2=s2 /usr/bin/time -f "plan: %e s wall, %M KB max RSS" timeout "${BENCH_TIMEOUT:-1800}" \
  "$B" --config huitong.toml sync plan org --output json > plan.json 2> plan.err
tail -n 1 plan.err
python3 -c "import json;p=json.load(open('plan.json'));t=p['targets'][0];print('steps',len(t['steps']),'conflicts',len(t['conflicts']),'records read',p['records_read'])"
curl -s http://127.0.0.1:19101/_sandbox/calls | python3 -c "import json,sys;c=json.load(sys.stdin);print('feishu API calls',c['total'],'faults',c.get('faults'))"
