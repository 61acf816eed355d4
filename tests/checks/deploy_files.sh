#!/usr/bin/env bash
# deploy_files.sh ROOT: the files in deploy/ are valid and agree with the node they deploy.
#
#   - promtool check config on deploy/prometheus/*.yml (which also checks the rule files they
#     name) and promtool check rules on deploy/prometheus/alerts.yml;
#   - every metric name in an alert rule or a Grafana panel's `expr` is a series that
#     runtime/metrics.cpp registers, with its type (histograms only as _bucket/_sum/_count;
#     Prometheus' own `up` besides), and every route="..." matcher is a label value the
#     gateway really uses ("METHOD /template", templates of actors/gateway.cpp); the dashboard is JSON and has the panels deploy/README.md
#     promises, the alerts cover node down, breakers, restarts, journal latency, mailbox growth
#     (proxies) and migrations;
#   - every YAML file under deploy/k8s parses (python3-yaml) and holds what deploy/README.md
#     says: the StatefulSet's serviceName is a headless Service (clusterIP: None), readiness on
#     /readyz and liveness on /healthz on the gateway's port, resource requests,
#     volumeClaimTemplates mounted at --data-dir, terminationGracePeriodSeconds >=
#     node.shutdown_drain_ms + cluster.handoff_timeout_ms + 10 s, flags that agent-node knows,
#     the ConfigMap's hive.toml with keys of config/hive.toml only, a PDB whose selector picks
#     the pods (maxUnavailable 1), an autoscaling/v2 HPA that targets the StatefulSet, and a
#     kustomization.yaml that lists every manifest;
#   - the systemd unit: Type, User, KillSignal=SIGTERM, TimeoutStopSec by the same rule, known
#     flags, hardening settings; `systemd-analyze verify` when it is installed.
#
# promtool (Debian package prometheus) and python3 with yaml (python3-yaml) are required: the
# check FAILS without them (scripts/setup.sh installs both). Then, unless
# HIVE_CHECK_NO_SELFTEST=1, it plants mistakes in temporary copies of the files and requires
# itself to fail on each (a checker that cannot fail is not a checker).
set -uo pipefail

root="${1:-}"
[[ -n "$root" && -d "$root" ]] || { echo "usage: deploy_files.sh REPO_ROOT" >&2; exit 2; }
root="$(cd "$root" && pwd)"

fail() { echo "deploy_files: FAILED: $*"; exit 1; }

command -v promtool >/dev/null 2>&1 \
  || fail "promtool not found (Debian package 'prometheus'; scripts/setup.sh installs it)"
command -v python3 >/dev/null 2>&1 \
  || fail "python3 not found (scripts/setup.sh installs python3 and python3-yaml)"
python3 -c 'import yaml' 2>/dev/null \
  || fail "python3 cannot import yaml (Debian package 'python3-yaml'; scripts/setup.sh installs it)"
python3 -c 'import tomllib' 2>/dev/null \
  || fail "python3 has no tomllib (needs Python >= 3.11, Debian 12's python3)"

check() {
  local dir="$1" prom="$1/deploy/prometheus" out f
  for f in "$prom/alerts.yml" "$prom/prometheus.yml" "$prom/prometheus-kubernetes.yml"; do
    [[ -f "$f" ]] || fail "${f#"$dir"/} is missing"
  done
  out="$(promtool check rules "$prom/alerts.yml" 2>&1)" \
    || fail "promtool check rules deploy/prometheus/alerts.yml:"$'\n'"$out"
  out="$(cd "$prom" && promtool check config prometheus.yml 2>&1)" \
    || fail "promtool check config deploy/prometheus/prometheus.yml:"$'\n'"$out"
  # Debian's prometheus is built without Kubernetes service discovery: its promtool rejects
  # kubernetes_sd_configs as an unknown field. Then the Python part checks that file's shape
  # (and promtool checks the rule file it names).
  if ! out="$(cd "$prom" && promtool check config prometheus-kubernetes.yml 2>&1)"; then
    if [[ "$out" == *"field kubernetes_sd_configs not found"* ]]; then
      echo "deploy_files: note: this promtool has no kubernetes_sd (Debian build): prometheus-kubernetes.yml checked for shape only"
    else
      fail "promtool check config deploy/prometheus/prometheus-kubernetes.yml:"$'\n'"$out"
    fi
  fi
  python3 - "$dir" <<'PY' || exit 1
import json, math, pathlib, re, sys, tomllib

import yaml

root = pathlib.Path(sys.argv[1])
errors = []


def err(where, what):
    errors.append(f"{where}: {what}")


def read(rel):
    p = root / rel
    if not p.is_file():
        err(rel, "missing")
        return None
    return p.read_text()


# --- what the node really has -------------------------------------------------------------
metrics_src = read("runtime/metrics.cpp") or ""
types = {}
for kind, name in re.findall(r'Build(Counter|Gauge|Histogram)\(\)\s*\.Name\("([a-z0-9_:]+)"\)',
                             metrics_src):
    types[name] = kind.lower()
if len(types) < 10:
    err("runtime/metrics.cpp", f"found only {len(types)} metric families (parser out of date?)")
series = {"up": "prometheus"}  # Prometheus' own per-target series
for name, kind in types.items():
    if kind == "histogram":
        for suffix in ("_bucket", "_sum", "_count"):
            series[name + suffix] = kind
    else:
        series[name] = kind

flags_src = read("config/node_config.cpp") or ""
flags = set(re.findall(r'add_option\("(--[a-z-]+)"', flags_src)) | {"--help", "--version"}
if "--config" not in flags:
    err("config/node_config.cpp", "no --config option found (parser out of date?)")

defaults = {}
try:
    for section, table in tomllib.loads(read("config/hive.toml") or "").items():
        for key, value in table.items():
            defaults[f"{section}.{key}"] = value
except tomllib.TOMLDecodeError as e:
    err("config/hive.toml", f"TOML: {e}")
for key in ("node.shutdown_drain_ms", "cluster.handoff_timeout_ms"):
    if key not in defaults:
        err("config/hive.toml", f"no key {key}")

# The gateway's `route` label: "METHOD /template" (or "* /template" for a method it does
# not route, or "unmatched"), templates from actors/gateway.cpp.
gateway_src = read("actors/gateway.cpp") or ""
templates = set(re.findall(r'case route_id::\w+:\s*return\s*"(/[^"]*)";', gateway_src))
if len(templates) < 5:
    err("actors/gateway.cpp", f"found only {len(templates)} route templates (parser out of date?)")
ROUTE_RE = re.compile(r'\broute\s*(=|!=)\s*"([^"]*)"')


def check_routes(where, expr):
    for _, value in ROUTE_RE.findall(expr):
        method, _, path = value.partition(" ")
        if value == "unmatched":
            continue
        if method not in {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "*"} \
                or path not in templates:
            err(where, f'route="{value}" is no route label of the gateway (labels are '
                       f'"METHOD /template", e.g. "POST /v1/agents/{{id}}/ask")')


PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan", "start", "end"}


def metric_names(expr):
    """The metric names a PromQL expression selects (not functions, keywords, labels)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"`[^`]*`", "``", s)
    s = re.sub(r"\{[^}]*\}", "", s)           # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)          # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    out = []
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        name = m.group(1)
        if m.group(2) or name.lower() in PROMQL_WORDS:
            continue
        out.append(name)
    return out


def check_expr(where, expr):
    check_routes(where, expr)
    names = metric_names(expr)
    if not names:
        err(where, f"expression selects no metric: {expr!r}")
    for n in names:
        if n not in series:
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            if types.get(n) == "histogram":
                why = f"{n} is a histogram: use {n}_bucket, _sum or _count"
            elif base in types and types[base] != "histogram":
                why = f"{base} is a {types[base]}, it has no {n[len(base):]} series"
            else:
                why = f"no metric {n} in runtime/metrics.cpp"
            err(where, why)
    return names


def ms_to_s(ms):
    return math.ceil(ms / 1000)


def load_yaml(rel):
    text = read(rel)
    if text is None:
        return []
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        err(rel, f"YAML: {e}")
        return []


# --- alerts.yml ----------------------------------------------------------------------------
alert_names = set()
for doc in load_yaml("deploy/prometheus/alerts.yml"):
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record") or "?"
            where = f"deploy/prometheus/alerts.yml: rule {name}"
            alert_names.update(check_expr(where, str(rule.get("expr", ""))))
            if "alert" in rule:
                if "severity" not in (rule.get("labels") or {}):
                    err(where, "no labels.severity")
                if "summary" not in (rule.get("annotations") or {}):
                    err(where, "no annotations.summary")
for needed, what in [("up", "node down"), ("hive_breakers", "breaker open too long"),
                     ("hive_restarts_total", "restart storm"),
                     ("hive_journal_commit_seconds_bucket", "journal commit latency p99"),
                     ("hive_journal_append_seconds_bucket", "journal append latency p99"),
                     ("hive_message_handling_seconds_bucket", "mailbox growth (proxy)"),
                     ("hive_migrations_total", "migration/failover rate")]:
    if needed not in alert_names:
        err("deploy/prometheus/alerts.yml", f"no rule on {needed} ({what})")

# --- scrape configs ------------------------------------------------------------------------
for rel in ("deploy/prometheus/prometheus.yml", "deploy/prometheus/prometheus-kubernetes.yml"):
    for doc in load_yaml(rel):
        if "alerts.yml" not in (doc.get("rule_files") or []):
            err(rel, "rule_files does not name alerts.yml")
        jobs = {j.get("job_name"): j for j in doc.get("scrape_configs") or []}
        if "hive" not in jobs:
            err(rel, "no scrape job 'hive' (the alerts and the dashboard select job=\"hive\")")
            continue
        job = jobs["hive"]
        if job.get("metrics_path", "/metrics") != "/metrics":
            err(rel, "job hive: metrics_path is not /metrics")
        if "kubernetes" in rel:
            sd = job.get("kubernetes_sd_configs") or []
            if not sd or sd[0].get("role") != "pod":
                err(rel, "job hive: no kubernetes_sd_configs with role pod")
            relabels = job.get("relabel_configs") or []
            for r in relabels:
                if r.get("action", "replace") not in {"replace", "keep", "drop", "labelmap",
                                                      "labeldrop", "labelkeep", "hashmod",
                                                      "lowercase", "uppercase", "keepequal",
                                                      "dropequal"}:
                    err(rel, f"relabel action {r.get('action')!r} is not a Prometheus action")
            if not any(r.get("target_label") == "node" for r in relabels):
                err(rel, "job hive: no relabeling to the `node` label")

# --- Grafana dashboard ---------------------------------------------------------------------
dash_rel = "deploy/grafana/hive-dashboard.json"
dash_text = read(dash_rel)
if dash_text is not None:
    try:
        dash = json.loads(dash_text)
    except json.JSONDecodeError as e:
        err(dash_rel, f"not JSON: {e}")
        dash = {}
    if not isinstance(dash.get("schemaVersion"), int) or dash.get("schemaVersion") < 36:
        err(dash_rel, "schemaVersion missing or older than 36")
    used = set()
    count = 0

    def walk(node, where):
        global count
        if isinstance(node, dict):
            title = node.get("title", where)
            for k, v in node.items():
                if k == "expr" and isinstance(v, str):
                    count += 1
                    used.update(check_expr(f"{dash_rel}: panel '{where}'", v))
                else:
                    walk(v, title if isinstance(title, str) else where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    walk(dash.get("panels", []), "?")
    if count == 0:
        err(dash_rel, "no panel has an expr")
    for needed in ("hive_gateway_requests_total", "hive_gateway_request_seconds_bucket",
                   "hive_messages_handled_total", "hive_agents_live", "hive_restarts_total",
                   "hive_breaker_transitions_total", "hive_journal_commit_seconds_bucket",
                   "hive_journal_commit_batch_writes_sum", "hive_migrations_total",
                   "hive_migration_pause_seconds_bucket", "hive_transport_frames_total"):
        if needed not in used:
            err(dash_rel, f"no panel shows {needed}")

# --- numbers that must agree ---------------------------------------------------------------
k8s = root / "deploy/k8s"
docs = {}
for p in sorted(k8s.glob("*.yaml")) if k8s.is_dir() else []:
    rel = str(p.relative_to(root))
    for d in load_yaml(rel):
        if not isinstance(d, dict) or "kind" not in d:
            err(rel, "a document without kind")
            continue
        docs.setdefault(d["kind"], []).append((rel, d))
for kind in ("StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget",
             "HorizontalPodAutoscaler", "Kustomization"):
    if kind not in docs:
        err("deploy/k8s", f"no {kind}")

# The ConfigMap's hive.toml: real keys only, of the right type.
effective = dict(defaults)
for rel, cm in docs.get("ConfigMap", []):
    text = (cm.get("data") or {}).get("hive.toml")
    if text is None:
        err(rel, "ConfigMap has no data.hive.toml")
        continue
    try:
        tbl = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        err(rel, f"hive.toml: TOML: {e}")
        continue
    for section, table in tbl.items():
        if not isinstance(table, dict):
            err(rel, f"hive.toml: top-level key {section!r} outside a [section]")
            continue
        for key, value in table.items():
            path = f"{section}.{key}"
            if path not in defaults:
                err(rel, f"hive.toml: unknown config key {path} (not in config/hive.toml)")
            elif type(value) is not type(defaults[path]):
                err(rel, f"hive.toml: {path} = {value!r} has another type than its default")
            else:
                effective[path] = value
drain_ms = max(defaults.get("node.shutdown_drain_ms", 0),
               effective.get("node.shutdown_drain_ms", 0))
handoff_ms = max(defaults.get("cluster.handoff_timeout_ms", 0),
                 effective.get("cluster.handoff_timeout_ms", 0))
grace_min = ms_to_s(drain_ms + handoff_ms) + 10


def port_of(listen):
    return int(str(listen).rsplit(":", 1)[1]) if ":" in str(listen) else None


# --- StatefulSet ---------------------------------------------------------------------------
services = {d["metadata"]["name"]: (rel, d) for rel, d in docs.get("Service", [])}
sts_name, pod_labels, sts_rel = None, {}, "deploy/k8s"
for rel, sts in docs.get("StatefulSet", []):
    sts_rel = rel
    spec = sts.get("spec") or {}
    sts_name = sts["metadata"]["name"]
    tmpl = spec.get("template") or {}
    pod_labels = (tmpl.get("metadata") or {}).get("labels") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
        err(rel, f"selector {sel} does not match the pod labels {pod_labels}")
    svc = spec.get("serviceName")
    if svc not in services:
        err(rel, f"serviceName {svc!r} is not a Service in deploy/k8s")
    else:
        srel, sdoc = services[svc]
        if (sdoc.get("spec") or {}).get("clusterIP") != "None":
            err(srel, f"Service {svc} (the StatefulSet's serviceName) is not headless (clusterIP: None)")
    if spec.get("podManagementPolicy") not in ("Parallel", "OrderedReady"):
        err(rel, "podManagementPolicy is neither Parallel nor OrderedReady")
    pspec = tmpl.get("spec") or {}
    grace = pspec.get("terminationGracePeriodSeconds")
    if not isinstance(grace, int) or grace < grace_min:
        err(rel, f"terminationGracePeriodSeconds = {grace}, needs >= {grace_min} (node.shutdown_drain_ms "
                 f"{drain_ms} + cluster.handoff_timeout_ms {handoff_ms}, in s, + 10 s margin)")
    vct = spec.get("volumeClaimTemplates") or []
    if not vct:
        err(rel, "no volumeClaimTemplates (the data dir needs a volume per pod)")
    claims = {v["metadata"]["name"] for v in vct}
    containers = pspec.get("containers") or []
    node_c = [c for c in containers if "agent-node" in " ".join(c.get("command") or [])
              or c.get("name") == "agent-node"]
    if not node_c:
        err(rel, "no agent-node container")
        continue
    c = node_c[0]
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    gw_port = port_of(effective.get("gateway.listen", ""))
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = ((c.get(probe) or {}).get("httpGet")) or {}
        if get.get("path") != path:
            err(rel, f"{probe}.httpGet.path is {get.get('path')!r}, must be {path}")
        port = ports.get(get.get("port"), get.get("port"))
        if port != gw_port:
            err(rel, f"{probe} probes port {port}, the gateway listens on {gw_port} (gateway.listen)")
    res = c.get("resources") or {}
    if not (res.get("requests") or {}).get("cpu") or not (res.get("requests") or {}).get("memory"):
        err(rel, "resources.requests needs cpu and memory")
    if not (res.get("limits") or {}).get("memory"):
        err(rel, "resources.limits.memory is not set")
    env = {e["name"]: e for e in c.get("env") or []}
    args = [str(a) for a in c.get("args") or []]
    for a in args:
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
            if var not in env:
                err(rel, f"args use $({var}), which is not in env")
    opts = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            flag, _, inline = a.partition("=")
            if flag not in flags:
                err(rel, f"agent-node has no flag {flag} (config/node_config.cpp)")
            value = inline if inline else (args[i + 1] if i + 1 < len(args) else "")
            if not inline:
                i += 1
            opts.setdefault(flag, []).append(value)
            if flag == "--set":
                key = value.split("=", 1)[0]
                if key not in defaults:
                    err(rel, f"--set {key}: unknown config key")
        i += 1
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    data_dir = (opts.get("--data-dir") or [None])[0]
    if data_dir is None:
        err(rel, "no --data-dir")
    elif data_dir not in mounts or mounts[data_dir]["name"] not in claims:
        err(rel, f"--data-dir {data_dir} is not a volumeClaimTemplate mount")
    if (opts.get("--name") or [""])[0] != "$(POD_NAME)" or \
            ((env.get("POD_NAME") or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        err(rel, "--name must be $(POD_NAME) with POD_NAME from fieldRef metadata.name")
    vols = {v["name"]: v for v in pspec.get("volumes") or []}
    cfg = (opts.get("--config") or [None])[0]
    m = mounts.get(cfg) or {}
    if cfg is None or "configMap" not in vols.get(m.get("name"), {}):
        err(rel, f"--config {cfg} is not mounted from a ConfigMap")
    key_file = (opts.get("--admin-key-file") or [None])[0]
    if key_file is None or not any(
            key_file.startswith(p.rstrip("/") + "/") and "secret" in vols.get(mm["name"], {})
            for p, mm in mounts.items()):
        err(rel, f"--admin-key-file {key_file} is not in a Secret mount")
    cl_port = port_of((opts.get("--cluster") or [""])[0])
    if cl_port is None or cl_port not in ports.values():
        err(rel, f"--cluster port {cl_port} is not a containerPort")
    for seed in opts.get("--seed", []):
        if f".{svc}." not in seed and not seed.split(":")[0].endswith(f".{svc}"):
            err(rel, f"seed {seed} is not a name under the headless Service {svc}")
        if port_of(seed) != cl_port:
            err(rel, f"seed {seed} does not use the cluster port {cl_port}")
    if not opts.get("--seed") and not effective.get("cluster.seeds"):
        err(rel, "no seeds (--seed or cluster.seeds)")
    tp = effective.get("cluster.transport_port")
    if tp not in ports.values():
        err(rel, f"cluster.transport_port {tp} is not a containerPort (set a fixed one)")
    # Every Service targets ports the container has, and selects the pods.
    for name, (srel, sdoc) in services.items():
        ssel = (sdoc.get("spec") or {}).get("selector") or {}
        if not ssel or any(pod_labels.get(k) != v for k, v in ssel.items()):
            err(srel, f"Service {name}'s selector {ssel} does not select the agent-node pods")
        for p in (sdoc.get("spec") or {}).get("ports") or []:
            t = p.get("targetPort", p.get("port"))
            if t not in ports and t not in ports.values():
                err(srel, f"Service {name}: targetPort {t} is not a port of the agent-node container")

# --- PDB and HPA ---------------------------------------------------------------------------
for rel, pdb in docs.get("PodDisruptionBudget", []):
    spec = pdb.get("spec") or {}
    if spec.get("maxUnavailable") != 1:
        err(rel, f"maxUnavailable is {spec.get('maxUnavailable')!r}, must be 1")
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
        err(rel, f"PDB selector {sel} does not match the pod labels {pod_labels}")
for rel, hpa in docs.get("HorizontalPodAutoscaler", []):
    if hpa.get("apiVersion") != "autoscaling/v2":
        err(rel, "apiVersion is not autoscaling/v2")
    spec = hpa.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    if ref.get("kind") != "StatefulSet" or ref.get("name") != sts_name or ref.get("apiVersion") != "apps/v1":
        err(rel, f"scaleTargetRef {ref} is not the StatefulSet {sts_name} (apps/v1)")
    if not any((m.get("resource") or {}).get("name") == "cpu" for m in spec.get("metrics") or []):
        err(rel, "no cpu resource metric")
    if not spec.get("minReplicas") or spec.get("minReplicas") > spec.get("maxReplicas", 0):
        err(rel, "minReplicas missing or above maxReplicas")
for rel, kz in docs.get("Kustomization", []):
    listed = set(kz.get("resources") or [])
    for p in sorted(k8s.glob("*.yaml")):
        if p.name != "kustomization.yaml" and p.name not in listed:
            err(rel, f"resources does not list {p.name}")
    for r in listed:
        if not (k8s / r).is_file():
            err(rel, f"resources lists {r}, which does not exist")

# --- systemd -------------------------------------------------------------------------------
unit_rel = "deploy/systemd/hive-agent-node.service"
unit = {}
for line in (read(unit_rel) or "").splitlines():
    line = line.strip()
    if line and not line.startswith(("#", ";", "[")) and "=" in line:
        k, v = line.split("=", 1)
        unit.setdefault(k.strip(), []).append(v.strip())
envfile = {}
for line in (read("deploy/systemd/hive-agent-node.env") or "").splitlines():
    if line.strip() and not line.lstrip().startswith("#") and "=" in line:
        k, v = line.split("=", 1)
        envfile[k.strip()] = v.strip()


def one(k):
    return (unit.get(k) or [None])[-1]


def seconds(v):
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", v or "")
    if not m:
        return None
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


for k, want in [("Type", {"simple", "exec"}), ("User", {"hive"}), ("KillSignal", {"SIGTERM"}),
                ("Restart", {"on-failure"}), ("NoNewPrivileges", {"yes", "true"}),
                ("ProtectSystem", {"strict"}), ("PrivateTmp", {"yes", "true"}),
                ("StateDirectory", {"hive"})]:
    if one(k) not in want:
        err(unit_rel, f"{k}={one(k)}, expected {' or '.join(sorted(want))}")
for k in ("EnvironmentFile", "LimitNOFILE", "ReadWritePaths"):
    if not one(k):
        err(unit_rel, f"no {k}=")
if "/var/lib/hive" not in " ".join(unit.get("ReadWritePaths", [])):
    err(unit_rel, "ReadWritePaths does not hold /var/lib/hive")
stop = seconds(one("TimeoutStopSec"))
if stop is None or stop < grace_min:
    err(unit_rel, f"TimeoutStopSec={one('TimeoutStopSec')}, needs >= {grace_min} s (node.shutdown_drain_ms "
                  f"{drain_ms} + cluster.handoff_timeout_ms {handoff_ms}, in s, + 10 s margin)")
exec_start = one("ExecStart") or ""
if not exec_start.startswith("/usr/local/bin/agent-node --config /etc/hive/hive.toml --data-dir /var/lib/hive"):
    err(unit_rel, "ExecStart must start with /usr/local/bin/agent-node --config /etc/hive/hive.toml --data-dir /var/lib/hive")
words = exec_start.split()[1:]
for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", exec_start):
    if var not in envfile:
        err(unit_rel, f"ExecStart uses ${var}, which hive-agent-node.env does not set")
    else:
        words += envfile[var].split()
for w in words:
    if w.startswith("--") and w.split("=")[0] not in flags:
        err(unit_rel, f"agent-node has no flag {w.split('=')[0]}")

if errors:
    print("deploy_files: FAILED:")
    for e in errors:
        print("  " + e)
    sys.exit(1)
print(f"deploy_files: ok: {len(types)} metric families; alerts, dashboard, k8s manifests and "
      f"systemd unit agree with them, the flags and config/hive.toml (grace >= {grace_min} s)")
PY
  # systemd's own check, when installed (not required: Debian's systemd package has it),
  # on a copy whose ExecStart names an executable that exists here.
  if [[ "${HIVE_CHECK_NO_SYSTEMD:-0}" != "1" ]] && command -v systemd-analyze >/dev/null 2>&1; then
    local t
    t="$(mktemp -d)"
    sed "s#/usr/local/bin/agent-node#$(command -v true)#" \
      "$dir/deploy/systemd/hive-agent-node.service" >"$t/hive-agent-node.service"
    out="$(cd "$t" && systemd-analyze verify ./hive-agent-node.service 2>&1)"
    local rc=$?
    rm -rf "$t"
    [[ $rc -eq 0 && -z "$out" ]] || fail "systemd-analyze verify hive-agent-node.service:"$'\n'"$out"
  fi
}

if [[ "${HIVE_CHECK_NO_SELFTEST:-0}" == "1" ]]; then
  check "$root"
  exit 0
fi

(check "$root") || exit 1

# Self-test: each planted mistake must make the check fail, naming it.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
self="${BASH_SOURCE[0]}"
planted=0
plant() { # NAME NEEDLE FILE PYTHON-REPLACE-FROM PYTHON-REPLACE-TO
  local name="$1" needle="$2" file="$3" from="$4" to="$5" dst out
  dst="$tmp/case$planted"
  planted=$((planted + 1))
  mkdir -p "$dst/config" "$dst/runtime"
  cp -R "$root/deploy" "$dst/deploy"
  cp "$root/config/hive.toml" "$root/config/node_config.cpp" "$dst/config/"
  mkdir -p "$dst/actors"
  cp "$root/runtime/metrics.cpp" "$dst/runtime/"
  cp "$root/actors/gateway.cpp" "$dst/actors/"
  python3 - "$dst/$file" "$from" "$to" <<'PY' || fail "self-test '$name': cannot plant it"
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if old not in text:
    sys.exit(f"'{old}' is not in {path}")
open(path, "w").write(text.replace(old, new, 1))
PY
  if out="$(HIVE_CHECK_NO_SELFTEST=1 HIVE_CHECK_NO_SYSTEMD=1 bash "$self" "$dst" 2>&1)"; then
    fail "self-test '$name': the check passed on a planted mistake"
  fi
  [[ "$out" == *"$needle"* ]] \
    || fail "self-test '$name': the check failed without naming '$needle':"$'\n'"$out"
}
A=deploy/prometheus/alerts.yml
K=deploy/k8s
plant "unknown metric in an alert" "no metric hive_restart_total" $A \
  "rate(hive_restarts_total" "rate(hive_restart_total"
plant "histogram without _bucket in an alert" "hive_journal_commit_seconds is a histogram" $A \
  "hive_journal_commit_seconds_bucket" "hive_journal_commit_seconds"
plant "_bucket of a counter in an alert" "hive_migrations_total is a counter" $A \
  'rate(hive_migrations_total{' 'rate(hive_migrations_total_bucket{'
plant "PromQL syntax error" "promtool check rules" $A \
  'expr: up{job="hive"} == 0' 'expr: up{job="hive"} == == 0'
plant "route label without its method" 'route="/v1/agents/{id}/ask" is no route label' $A \
  'route="POST /v1/agents/{id}/ask"' 'route="/v1/agents/{id}/ask"'
plant "unknown metric in the dashboard" "no metric hive_agents_alive" \
  deploy/grafana/hive-dashboard.json "hive_agents_live" "hive_agents_alive"
plant "dashboard not JSON" "not JSON" deploy/grafana/hive-dashboard.json '"panels"' '"panels" ,'
plant "scrape config error" "promtool check config" deploy/prometheus/prometheus.yml \
  "scrape_interval: 15s" "scrape_interval: 15 seconds"
plant "grace period too short" "terminationGracePeriodSeconds = 30" $K/statefulset.yaml \
  "terminationGracePeriodSeconds: 60" "terminationGracePeriodSeconds: 30"
plant "handoff raised over the grace period" "terminationGracePeriodSeconds = 60, needs >= 75" \
  $K/configmap.yaml "handoff_timeout_ms = 30000" "handoff_timeout_ms = 60000"
plant "serviceName not the headless Service" "serviceName 'hive-peer'" $K/statefulset.yaml \
  "serviceName: hive-peers" "serviceName: hive-peer"
plant "peers Service not headless" "is not headless" $K/service.yaml \
  "  clusterIP: None" "  clusterIP: 10.0.0.10"
plant "readiness on /healthz" "readinessProbe.httpGet.path is '/healthz'" $K/statefulset.yaml \
  "path: /readyz" "path: /healthz"
plant "no resource requests" "resources.requests needs cpu and memory" $K/statefulset.yaml \
  "requests:
              cpu:" "wishes:
              cpu:"
plant "no volumeClaimTemplates" "no volumeClaimTemplates" $K/statefulset.yaml \
  "volumeClaimTemplates:" "volumeClaimTemplatesX:"
plant "unknown agent-node flag" "agent-node has no flag --peer" $K/statefulset.yaml \
  "- --seed" "- --peer"
plant "unknown config key" "unknown config key cluster.handoff_ms" $K/configmap.yaml \
  "handoff_migrations_max = 8" "handoff_ms = 8"
plant "PDB selector misses the pods" "PDB selector" $K/pdb.yaml \
  "    matchLabels:
      app.kubernetes.io/name: hive" "    matchLabels:
      app.kubernetes.io/name: hive-other"
plant "HPA targets a Deployment" "scaleTargetRef" $K/hpa.yaml "kind: StatefulSet" "kind: Deployment"
plant "kustomization misses a file" "resources does not list pdb.yaml" $K/kustomization.yaml \
  "  - pdb.yaml
" ""
plant "systemd stop timeout too short" "TimeoutStopSec=30" deploy/systemd/hive-agent-node.service \
  "TimeoutStopSec=60" "TimeoutStopSec=30"
plant "systemd unknown flag" "agent-node has no flag --metric" deploy/systemd/hive-agent-node.env \
  "--metrics 127.0.0.1:9464" "--metric 127.0.0.1:9464"
echo "deploy_files: self-test ok ($planted planted mistakes caught)"
