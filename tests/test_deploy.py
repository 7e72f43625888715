"""The deployment examples in deploy/: every manifest parsed, every command line in it run
against the test Prometheus with ``--check`` (and, where it adds something, a real collection).

A test changes a command line in three ways, and no other (see ``Root``):
  * the installed binary ``/usr/local/bin/promduck-collector`` (host or image) becomes the
    binary under test, build/promduck-collector;
  * every other absolute path P becomes <tmp>/root/P: the test lays out there the tree the
    manifest expects (config file, password file, data and metrics directories);
  * the mode flag ``--once`` becomes ``--check`` (the two cannot be combined), or ``--date D``
    for a real collection of a day the test Prometheus has.
In the configuration that a manifest carries (the Kubernetes ConfigMap), ``prometheus.url`` and
``username`` become the test server's and its paths are rooted as above; the Secret's placeholder
becomes the test server's password (and, for the sharded Job, ``apiProxies`` becomes the test
history's proxies, so that the shards' union can be compared). For systemd and cron, which
point at a config file of the host, the test writes one for the test server at the (rooted)
path the command names.

What cannot run here is checked by other means: the systemd units by ``systemd-analyze verify``
and ``security --offline`` (no systemd as PID 1 to start them), the sandbox's writable paths by
comparing them with the paths the collector writes; the Kubernetes manifests by emulating what
the kubelet does for the container (volumes, env with ``$(VAR)`` expansion, the Job controller's
JOB_COMPLETION_INDEX) and by structural checks (no cluster here).
"""

from __future__ import annotations

import fcntl
import functools
import json
import re
import shlex
import subprocess
from datetime import date
from pathlib import Path

import pytest
import yaml

from helpers import COLLECTOR, REPO_ROOT, expected_rows, normalise, read_rows, tool, write_config

DEPLOY = REPO_ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
CRON = DEPLOY / "cron"
KUBERNETES = DEPLOY / "kubernetes"

#: where the manifests expect the collector (host install and container image alike)
INSTALLED_BINARY = "/usr/local/bin/promduck-collector"
#: a day the test Prometheus has (conftest.HISTORY_START)
DAY = date(2024, 3, 1)
#: what README's install steps put in the systemd host's config (outputDir under StateDirectory=)
SYSTEMD_OUTPUT_DIR = "/var/lib/promduck/data"
#: the Job controller's completion-index annotation (and, from Kubernetes 1.28, label)
INDEX_FIELD_PATHS = {f"metadata.{kind}['batch.kubernetes.io/job-completion-index']"
                     for kind in ("annotations", "labels")}


# ---------------------------------------------------------------------------------------------
# helpers


@functools.cache
def collector_help() -> str:
    return subprocess.run([str(COLLECTOR), "--help"], capture_output=True, text=True, timeout=30).stdout


def require_collector_supports(argv, env_names=()):
    """Every flag and PROMDUCK_ variable a manifest uses is one the collector knows (its --help)."""
    text = collector_help()
    missing = sorted({a.split("=", 1)[0] for a in argv if a.startswith("--") and a.split("=", 1)[0] not in text}
                     | {n for n in env_names if n.startswith("PROMDUCK_") and n not in text})
    assert not missing, f"build/promduck-collector --help has no {', '.join(missing)}"


class Root:
    """A private file-system tree standing for the host's or the container's '/'."""

    def __init__(self, path: Path):
        self.root = path
        path.mkdir(parents=True, exist_ok=True)

    def path(self, p: str) -> Path:
        assert p.startswith("/"), p
        return self.root / p.lstrip("/")

    def arg(self, a: str) -> str:
        if a == INSTALLED_BINARY:
            return str(COLLECTOR)
        if a.startswith("/"):
            return str(self.path(a))
        if a.startswith("--") and "=/" in a:
            key, value = a.split("=", 1)
            return f"{key}={self.path(value)}"
        return a

    def argv(self, argv) -> list[str]:
        return [self.arg(a) for a in argv]


def swap_mode(argv, *replacement) -> list[str]:
    """The command line with its one ``--once`` replaced (by ``--check`` or ``--date D``)."""
    assert argv.count("--once") == 1, argv
    i = argv.index("--once")
    return [*argv[:i], *replacement, *argv[i + 1:]]


def flag_value(argv, flag):
    for i, a in enumerate(argv):
        if a == flag:
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def under(path: str, dirs) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def run(argv, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=timeout)


def explain(r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


# ---------------------------------------------------------------------------------------------
# systemd


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> values in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        assert not s.endswith("\\"), f"{path.name}:{n}: no line continuations in the examples"
        if s.startswith("["):
            assert s.endswith("]"), f"{path.name}:{n}: {s}"
            current = sections.setdefault(s[1:-1], {})
            continue
        assert current is not None and "=" in s, f"{path.name}:{n}: {s}"
        key, value = s.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def words(values) -> list[str]:
    return [w for v in values for w in v.split()]


def service_exec_start() -> list[str]:
    [exec_start] = parse_unit(SYSTEMD / "promduck.service")["Service"]["ExecStart"]
    # systemd would expand these; the example uses none, so shlex splits it as systemd does
    assert exec_start[0] not in "-@:+!" and "$" not in exec_start and "%" not in exec_start, exec_start
    return shlex.split(exec_start)


def test_systemd_units_are_consistent():
    service = parse_unit(SYSTEMD / "promduck.service")
    timer = parse_unit(SYSTEMD / "promduck.timer")
    svc = service["Service"]
    assert svc["Type"] == ["oneshot"]
    argv = service_exec_start()
    assert argv[0] == INSTALLED_BINARY and "--once" in argv and flag_value(argv, "--config")
    assert flag_value(argv, "--log-format") == "json" and flag_value(argv, "--progress") == "never"
    assert timer["Timer"]["Unit"] == ["promduck.service"]
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["OnCalendar"], timer
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    # ProtectSystem=strict: the collector may write only below StateDirectory= and ReadWritePaths=
    assert svc["ProtectSystem"] == ["strict"]
    writable = [f"/var/lib/{d}" for d in words(svc["StateDirectory"])] + \
               [p.lstrip("-") for p in words(svc.get("ReadWritePaths", []))]
    assert under(SYSTEMD_OUTPUT_DIR, writable), writable
    metrics_file = flag_value(argv, "--metrics-file")
    assert metrics_file and under(str(Path(metrics_file).parent), writable), (metrics_file, writable)


def test_systemd_analyze_verify_and_security(tmp_path):
    """The units as shipped, except that ExecStart names the binary under test (verify checks
    that the command exists)."""
    for name in ("promduck.service", "promduck.timer"):
        text = (SYSTEMD / name).read_text()
        (tmp_path / name).write_text(text.replace(INSTALLED_BINARY, str(COLLECTOR)))
    units = [str(tmp_path / "promduck.service"), str(tmp_path / "promduck.timer")]
    r = subprocess.run([tool("systemd-analyze", "systemd"), "verify", "--man=no", *units], capture_output=True, text=True,
                       timeout=60)
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "promduck" in line]
    assert r.returncode == 0 and not ours, explain(r)
    # exposure 0 (sandboxed) .. 10 (unprotected); --threshold is in tenths
    r = subprocess.run([tool("systemd-analyze", "systemd"), "security", "--offline=yes", "--threshold=20", units[0]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, explain(r)


def systemd_root(tmp_path, server) -> tuple[Root, list[str]]:
    """The host as the service sees it: StateDirectory= and ReadWritePaths= exist, the password
    is at the credential path LoadCredential= gives, the config names it (passwordFile)."""
    svc = parse_unit(SYSTEMD / "promduck.service")["Service"]
    argv = service_exec_start()
    root = Root(tmp_path / "root")
    for d in [f"/var/lib/{d}" for d in words(svc["StateDirectory"])] + \
             [p.lstrip("-") for p in words(svc.get("ReadWritePaths", []))]:
        root.path(d).mkdir(parents=True, exist_ok=True)
    [credential] = svc["LoadCredential"]
    name, _source = credential.split(":", 1)
    password_file = root.path(f"/run/credentials/promduck.service/{name}")
    password_file.parent.mkdir(parents=True)
    user, password = server.basic_auth
    password_file.write_text(password + "\n")
    config = root.path(flag_value(argv, "--config"))
    config.parent.mkdir(parents=True)
    write_config(config, server.url, ["api-proxy-1", "api-proxy-2"], output_dir=root.path(SYSTEMD_OUTPUT_DIR),
                 prometheus_extra={"username": user, "passwordFile": str(password_file)})
    return root, argv


def test_systemd_exec_start_checks(prometheus_auth, tmp_path):
    root, argv = systemd_root(tmp_path, prometheus_auth)
    command = swap_mode(root.argv(argv), "--check")
    require_collector_supports(command)
    r = run(command, env={"PATH": "/usr/bin:/bin"})  # systemd starts services with a bare environment
    assert r.returncode == 0, explain(r)


def test_systemd_exec_start_collects_and_writes_metrics(prometheus_auth, history, tmp_path):
    root, argv = systemd_root(tmp_path, prometheus_auth)
    command = swap_mode(root.argv(argv), "--date", DAY.isoformat())
    require_collector_supports(command)
    r = run(command, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, explain(r)
    data = root.path(SYSTEMD_OUTPUT_DIR)
    assert normalise(read_rows(data)) == expected_rows(history, days=[DAY], proxies=["api-proxy-1", "api-proxy-2"])
    metrics = root.path(flag_value(argv, "--metrics-file"))
    assert metrics.is_file(), sorted(p.name for p in metrics.parent.iterdir())
    # deploy/README.md's alert is on this metric
    assert re.search(r"^promduck_last_success_timestamp_seconds \d", metrics.read_text(), re.M), metrics.read_text()


def syscall_set(spec: str) -> set[str]:
    """The system calls of a SystemCallFilter= list (groups such as @system-service expanded)."""
    names = set()
    for item in spec.split():
        if item.startswith("@"):
            out = subprocess.run([tool("systemd-analyze", "systemd"), "syscall-filter", item], capture_output=True, text=True,
                                 timeout=30, check=True).stdout
            for line in out.splitlines()[1:]:
                word = line.strip().split(" ", 1)[0]
                if word and not word.startswith("#"):
                    names |= syscall_set(word) if word.startswith("@") else {word}
        else:
            names.add(item)
    return names


def test_systemd_syscall_filter_allows_every_call_the_collector_makes(prometheus_auth, tmp_path):
    """SystemCallFilter= kills the service at the first call outside it: every system call of a
    check and a collection (run under strace) must be in the filter."""
    allowed: set[str] = set()
    for spec in parse_unit(SYSTEMD / "promduck.service")["Service"]["SystemCallFilter"]:
        if spec.startswith("~"):
            allowed -= syscall_set(spec[1:])
        else:
            assert not allowed, "one allow-list, then deny-lists"
            allowed = syscall_set(spec)
    assert "read" in allowed and "reboot" not in allowed
    root, argv = systemd_root(tmp_path, prometheus_auth)
    used = set()
    for mode in (["--check"], ["--date", DAY.isoformat()]):
        command = swap_mode(root.argv(argv), *mode)
        require_collector_supports(command)
        trace = tmp_path / f"trace{mode[0]}"
        r = run([tool("strace", "strace"), "-f", "-qq", "-o", trace, *command], env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, explain(r)
        for line in trace.read_text().splitlines():
            m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
            if m:
                used.add(m.group(1))
    assert "connect" in used and used - allowed == set(), sorted(used - allowed)


# ---------------------------------------------------------------------------------------------
# cron

CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def parse_cron_d(path: Path):
    """An /etc/cron.d file: its variables and its jobs (five time fields, user, command)."""
    env, jobs = {}, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", s)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        fields = s.split(None, 6)
        assert len(fields) == 7, f"{path.name}:{n}: expected 5 time fields, a user and a command"
        for text, (low, high) in zip(fields[:5], CRON_FIELDS):
            for part in text.split(","):
                base, _, step = part.partition("/")
                assert not step or step.isdigit(), f"{path.name}:{n}: {text}"
                if base != "*":
                    bounds = [int(x) for x in base.split("-")]
                    assert all(low <= b <= high for b in bounds), f"{path.name}:{n}: {text} outside {low}-{high}"
        assert "%" not in fields[6], f"{path.name}:{n}: cron turns % into a newline"
        jobs.append((fields[:5], fields[5], fields[6]))
    return env, jobs


ABSOLUTE_PATH = re.compile(r"(?<![\w.-])/[\w./-]+")


def cron_command(command: str, root: Root, *mode) -> str:
    """The cron command with paths rooted (Root.arg) and ``--once`` swapped, shell text kept."""
    assert len(re.findall(r"(?<!\S)--once(?!\S)", command)) == 1, command
    command = re.sub(r"(?<!\S)--once(?!\S)", " ".join(mode), command)
    return ABSOLUTE_PATH.sub(lambda m: shlex.quote(root.arg(m.group(0))), command)


def test_cron_job_checks_and_never_overlaps(prometheus, tmp_path):
    env, jobs = parse_cron_d(CRON / "promduck")
    assert len(jobs) == 1
    schedule, user, command = jobs[0]
    assert user != "root"
    argv = shlex.split(command.split(">", 1)[0])
    assert INSTALLED_BINARY in argv
    collector_argv = argv[argv.index(INSTALLED_BINARY):]
    assert "--once" in collector_argv and flag_value(collector_argv, "--log-format") == "json"
    require_collector_supports(swap_mode(collector_argv, "--check"))

    root = Root(tmp_path / "root")
    # the install steps of deploy/README.md: every directory the line names exists
    for p in ABSOLUTE_PATH.findall(command):
        if p != INSTALLED_BINARY:
            root.path(p).parent.mkdir(parents=True, exist_ok=True)
    config = root.path(flag_value(collector_argv, "--config"))
    write_config(config, prometheus.url, ["api-proxy-1", "api-proxy-2"], output_dir=root.path("/var/lib/promduck/data"))
    cron_env = {"HOME": str(tmp_path), "LOGNAME": user, **env}  # cron's environment: the file's variables
    shell = cron_env.get("SHELL", "/bin/sh")
    line = cron_command(command, root, "--check")

    r = run([shell, "-c", line], env=cron_env)
    assert r.returncode == 0, explain(r) + f"\ncommand: {line}"
    redirect = re.search(r">>\s*(/\S+)", command)
    log = root.path(redirect.group(1)) if redirect else None
    if log:
        assert log.is_file() and log.stat().st_size > 0
        size = log.stat().st_size

    # while a run holds the lock, the next one is skipped at once
    lock_path = next((p for p in ABSOLUTE_PATH.findall(command) if p.endswith(".lock")), None)
    assert lock_path and argv[0] == "flock" and "-n" in argv, "the line serialises runs with flock -n"
    with open(root.path(lock_path), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = run([shell, "-c", line], env=cron_env, timeout=10)
    assert r.returncode == 1, explain(r)
    if log:
        assert log.stat().st_size == size, "the collector ran although the lock was held"


# ---------------------------------------------------------------------------------------------
# Kubernetes


def k8s_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion (command, args, env values): $(VAR) of a variable defined
    so far is replaced, an unknown one is left as written, $$ is a literal $."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def test_k8s_expand_matches_kubernetes():
    env = {"A": "1", "B": "x/y"}
    assert k8s_expand("$(A)/4", env) == "1/4"
    assert k8s_expand("$(MISSING)/4", env) == "$(MISSING)/4"
    assert k8s_expand("$$(A)", env) == "$(A)"
    assert k8s_expand("--x=$(B)$(A)", env) == "--x=x/y1"
    assert k8s_expand("$(A", env) == "$(A"


@functools.cache
def k8s_documents() -> tuple:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return tuple(docs)


def k8s(kind: str, name: str) -> dict:
    found = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} is defined {len(found)} times in deploy/kubernetes"
    return found[0]


def cronjobs():
    return [d for _, d in k8s_documents() if d["kind"] == "CronJob"]


def collector_container(cronjob) -> dict:
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def indexed(cronjob) -> bool:
    return cronjob["spec"]["jobTemplate"]["spec"].get("completionMode") == "Indexed"


def secret_value(secret: dict, key: str, server) -> str:
    """The test server's password in place of the Secret's placeholder (server None: a dummy)."""
    assert key in {**secret.get("data", {}), **secret.get("stringData", {})}, (secret["metadata"]["name"], key)
    return (server.basic_auth[1] if server else "placeholder") + "\n"


def localised_config(text: str, root: Root, server) -> str:
    """The ConfigMap's collector config for the test server (url, username), paths rooted."""
    cfg = yaml.safe_load(text)
    prom = cfg["prometheus"]
    prom["url"] = server.url
    if "username" in prom:
        prom["username"] = server.basic_auth[0]
    for key in ("passwordFile", "bearerTokenFile"):
        if key in prom:
            prom[key] = str(root.path(prom[key]))
    for key, value in prom.get("tls", {}).items():
        if key.endswith("File"):
            prom["tls"][key] = str(root.path(value))
    cfg["storage"]["outputDir"] = str(root.path(cfg["storage"]["outputDir"]))
    return json.dumps(cfg, indent=2)


def pod_root(cronjob, root: Root, server) -> list[str]:
    """Lays out the container's volumes under ``root`` as the kubelet would mount them; returns
    the writable mount paths (the root file system itself is read-only)."""
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = []
    for mount in collector_container(cronjob)["volumeMounts"]:
        assert "subPath" not in mount, mount
        volume = volumes[mount["name"]]
        target = root.path(mount["mountPath"])
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            assert mount.get("readOnly"), mount
            config_map = k8s("ConfigMap", volume["configMap"]["name"])
            items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in config_map["data"]]
            for item in items:
                text = config_map["data"][item["key"]]
                if "prometheus" in (yaml.safe_load(text) or {}):
                    text = localised_config(text, root, server)
                (target / item["path"]).write_text(text)
        elif "secret" in volume:
            assert mount.get("readOnly"), mount
            secret = k8s("Secret", volume["secret"]["secretName"])
            keys = list({**secret.get("data", {}), **secret.get("stringData", {})})
            for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in keys]:
                (target / item["path"]).write_text(secret_value(secret, item["key"], server))
        elif "persistentVolumeClaim" in volume:
            k8s("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
            if not mount.get("readOnly"):
                writable.append(mount["mountPath"])
        elif "emptyDir" in volume:
            writable.append(mount["mountPath"])
        else:
            raise AssertionError(f"volume kind not emulated: {volume}")
    return writable


def container_env(cronjob, server, index=None) -> dict[str, str]:
    """The container's environment as the kubelet builds it, in order, with $(VAR) expansion;
    for an Indexed Job pod with completion index ``index``."""
    env: dict[str, str] = {}
    for var in collector_container(cronjob).get("env", []):
        if "value" in var:
            env[var["name"]] = k8s_expand(var["value"], env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] in INDEX_FIELD_PATHS and index is not None, var
            env[var["name"]] = str(index)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = secret_value(k8s("Secret", ref["name"]), ref["key"], server).rstrip("\n")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = k8s("ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            raise AssertionError(f"env source not emulated: {var}")
    if index is not None:
        env.setdefault("JOB_COMPLETION_INDEX", str(index))  # the Job controller appends it if absent
    return env


def container_argv(cronjob, env) -> list[str]:
    container = collector_container(cronjob)
    return [k8s_expand(a, env) for a in [*container["command"], *container.get("args", [])]]


def test_kubernetes_manifests_are_complete_and_hardened():
    names = [(d["kind"], d["metadata"]["name"]) for _, d in k8s_documents()]
    assert len(names) == len(set(names)), names
    for file, doc in k8s_documents():
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), file
    assert {c["metadata"]["name"]: indexed(c) for c in cronjobs()} == {"promduck": False, "promduck-sharded": True}
    dockerfile = (KUBERNETES / "Dockerfile").read_text()
    copied_to = re.search(r"^COPY\s+\S+\s+(\S+)", dockerfile, re.M).group(1)
    image_user = re.search(r"^USER\s+(\d+)", dockerfile, re.M).group(1)

    for cronjob in cronjobs():
        spec = cronjob["spec"]
        job = spec["jobTemplate"]["spec"]
        pod = job["template"]["spec"]
        container = collector_container(cronjob)
        where = cronjob["metadata"]["name"]
        assert len(spec["schedule"].split()) == 5 and spec.get("timeZone"), where
        assert spec["concurrencyPolicy"] == "Forbid", where
        assert isinstance(job["backoffLimit"], int) and job.get("activeDeadlineSeconds"), where
        assert pod["restartPolicy"] == "Never", where  # podFailurePolicy requires it
        rules = job["podFailurePolicy"]["rules"]
        assert any(r["action"] == "FailJob" and 2 in r["onExitCodes"]["values"]
                   and r["onExitCodes"]["containerName"] == container["name"] for r in rules if "onExitCodes" in r), where
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0, where
        assert str(pod["securityContext"]["runAsUser"]) == image_user, where
        assert pod.get("automountServiceAccountToken") is False, where
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"], where
        assert container["command"][0] == INSTALLED_BINARY == copied_to, where
        argv = container_argv(cronjob, {})
        assert "--once" in argv and flag_value(argv, "--log-format") == "json", where
        # the config the args name is a key of a mounted ConfigMap
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        config = flag_value(argv, "--config")
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(Path(config).parent)]["name"])
        assert Path(config).name in k8s("ConfigMap", volume["configMap"]["name"])["data"], where
        if indexed(cronjob):
            n = job["completions"]
            assert job["parallelism"] == n, "every shard runs in the same night"
            shards = {container_env(cronjob, None, i).get("PROMDUCK_SHARD") or flag_value(container_argv(
                cronjob, container_env(cronjob, None, i)), "--shard") for i in range(n)}
            assert shards == {f"{i}/{n}" for i in range(n)}, shards
    assert len({collector_container(c)["image"] for c in cronjobs()}) == 1


def test_kubernetes_cronjob_checks(prometheus_auth, tmp_path):
    cronjob = k8s("CronJob", "promduck")
    root = Root(tmp_path / "root")
    writable = pod_root(cronjob, root, prometheus_auth)
    env = container_env(cronjob, prometheus_auth)
    argv = container_argv(cronjob, env)
    config = yaml.safe_load(k8s("ConfigMap", "promduck-config")["data"]["config.yaml"])
    assert "passwordFile" in config["prometheus"] or "passwordEnv" in config["prometheus"]
    assert under(config["storage"]["outputDir"], writable), "readOnlyRootFilesystem: outputDir must be a volume"
    command = swap_mode(root.argv(argv), "--check")
    require_collector_supports(command, env)
    r = run(command, env={"PATH": "/usr/local/bin:/usr/bin:/bin", **env})
    assert r.returncode == 0, explain(r) + f"\ncommand: {command}\nenv: {env}"


def test_kubernetes_sharded_cronjob_checks_and_covers_every_proxy_once(prometheus_auth, history, tmp_path):
    """Each index of the Indexed Job checks; then each collects DAY into its own volume: the
    shards' files are disjoint and together are exactly the day's rows for every proxy."""
    cronjob = k8s("CronJob", "promduck-sharded")
    n = cronjob["spec"]["jobTemplate"]["spec"]["completions"]
    # the test Prometheus's proxies instead of the ConfigMap's (the one change to the config here)
    proxies = history.proxies
    files_by_shard, rows = [], []
    for index in range(n):
        root = Root(tmp_path / f"pod-{index}")
        pod_root(cronjob, root, prometheus_auth)
        config_path = root.path(flag_value(container_argv(cronjob, {}), "--config"))
        config = json.loads(config_path.read_text())
        config["apiProxies"] = proxies
        config_path.write_text(json.dumps(config, indent=2))
        env = container_env(cronjob, prometheus_auth, index)
        argv = root.argv(container_argv(cronjob, env))
        require_collector_supports(argv, env)
        process_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **env}

        r = run(swap_mode(argv, "--check"), env=process_env)
        assert r.returncode == 0, explain(r) + f"\nshard {index}, env: {env}"

        r = run(swap_mode(argv, "--date", DAY.isoformat()), env=process_env)
        assert r.returncode == 0, explain(r) + f"\nshard {index}, env: {env}"
        data = Path(config["storage"]["outputDir"])
        files_by_shard.append({p.name for p in data.rglob("*.parquet")})
        if files_by_shard[-1]:
            rows += normalise(read_rows(data))
    all_files = [f for files in files_by_shard for f in files]
    assert len(all_files) == len(set(all_files)) == len(proxies), files_by_shard
    rows.sort(key=lambda r: (r[4], r[3], r[1], r[0], str(r[5])))
    assert rows == expected_rows(history, days=[DAY])
