"""Every manifest in ops/ parses, and the values that matter agree with the code.

Grace periods are sized from the shutdown settings they sit next to; every probe and command
is a real `executus-worker` command with real options; signals reach Celery's main process
only; every metric an alert or the autoscaler uses is one the worker exports.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from executus_worker.cli import main
from executus_worker.observability import METRIC_NAMES
from executus_worker.settings import Settings

OPS = Path(__file__).resolve().parents[2] / "ops"
BASE = OPS / "k8s" / "base"
# Termination grace = EXECUTUS_SHUTDOWN_GRACE_S + margin. Past the shutdown grace the step is
# cut short and the pool torn down (~2 s measured, tests/e2e/test_warm_shutdown.py); below 10 s
# of margin a loaded node SIGKILLs runs mid-interrupt, above 30 s a stuck pod only waits longer.
MARGIN_S = (10, 30)


def yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, for every resource the kustomization lists."""
    kustomization = yaml_docs(BASE / "kustomization.yaml")[0]
    found = {}
    for resource in kustomization["resources"]:
        for doc in yaml_docs(BASE / resource):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def cli_accepts(argv: list[str]) -> click.Command:
    """``argv`` (after the program) is an executus-worker command line the CLI would parse."""
    assert argv, "empty command line"
    command = main.get_command(click.Context(main), argv[0])
    assert command is not None, f"executus-worker has no command {argv[0]!r}"
    assert not (command.help or "").startswith("(unavailable"), command.help
    command.make_context(argv[0], list(argv[1:]))  # raises on an unknown option or bad value
    return command


def seconds(text: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(text).strip())
    assert match, f"not a duration: {text!r}"
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60}[unit]


def assert_grace_sized(grace_s: float, shutdown_grace_s: float, where: str) -> None:
    low, high = shutdown_grace_s + MARGIN_S[0], shutdown_grace_s + MARGIN_S[1]
    assert low <= grace_s <= high, (
        f"{where}: grace {grace_s:g}s should be EXECUTUS_SHUTDOWN_GRACE_S ({shutdown_grace_s:g}) "
        f"+ {MARGIN_S[0]}..{MARGIN_S[1]} s"
    )


# -- every file ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(OPS.rglob("*.y*ml")), ids=lambda p: str(p.relative_to(OPS)))
def test_every_yaml_manifest_parses(path: Path) -> None:
    assert yaml_docs(path), f"{path} is empty"


def test_the_kustomization_lists_every_file_of_the_base() -> None:
    listed = set(yaml_docs(BASE / "kustomization.yaml")[0]["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


# -- Kubernetes -----------------------------------------------------------------------------


def test_worker_termination_grace_is_sized_from_the_shutdown_grace() -> None:
    worker = manifests()[("Deployment", "executus-worker")]
    env = env_of(container(worker, "worker"))
    shutdown = float(env["EXECUTUS_SHUTDOWN_GRACE_S"])
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert_grace_sized(grace, shutdown, "k8s worker")


def test_worker_probes_are_the_health_command_and_never_a_shell() -> None:
    c = container(manifests()[("Deployment", "executus-worker")], "worker")
    probes = {
        k: c[k]["exec"]["command"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    for kind, argv in probes.items():
        assert argv[0] == "executus-worker", kind
        assert cli_accepts(argv[1:]).name == "health", kind
    assert "--ready" in probes["readinessProbe"] and "--ready" not in probes["livenessProbe"]
    # A probe that times out counts as a failure: give the CLI's start-up room.
    assert all(c[k]["timeoutSeconds"] >= 5 for k in probes)


def test_worker_liveness_tolerates_the_heartbeat_stale_limit() -> None:
    c = container(manifests()[("Deployment", "executus-worker")], "worker")
    env = env_of(c)
    settings = Settings.model_validate({k[len("EXECUTUS_") :].lower(): v for k, v in env.items()})
    live = c["livenessProbe"]
    # The heartbeat is written every health_interval_s; a probe period below it would only
    # re-read the same file.
    assert live["periodSeconds"] >= settings.health_interval_s
    # The heartbeat file must live on a mounted (writable) volume: the root fs is read-only.
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(str(settings.health_file).startswith(f"{m.rstrip('/')}/") for m in mounts)


def test_the_startup_probe_outlasts_the_workers_own_wait_for_redis() -> None:
    """The heartbeat file appears once the worker reached Redis and the broker, which it waits
    for up to EXECUTUS_STARTUP_TIMEOUT_S before exiting with a message: the kubelet must not
    kill it first, or the message is never seen."""
    c = container(manifests()[("Deployment", "executus-worker")], "worker")
    env = env_of(c)
    startup_s = float(env.get("EXECUTUS_STARTUP_TIMEOUT_S", Settings().startup_timeout_s))
    probe = c["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= startup_s + 30


def test_containers_run_the_cli_through_the_image_entrypoint() -> None:
    """No `command:` override: the exec-form ENTRYPOINT makes Celery's main process PID 1, so
    SIGTERM reaches it and only it."""
    for (kind, name), doc in manifests().items():
        if kind != "Deployment":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            assert "command" not in c, f"{name}: a command override bypasses the entrypoint"
            cli_accepts(c["args"])


def test_worker_metrics_port_is_declared_where_prometheus_and_keda_look() -> None:
    worker = manifests()[("Deployment", "executus-worker")]
    c = container(worker, "worker")
    port = int(env_of(c)["EXECUTUS_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": port} in c["ports"]
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    assert f"EXPOSE {port}" in (OPS / "Dockerfile").read_text()


def test_keda_scales_the_worker_on_queue_depth_plus_active_runs_per_slot() -> None:
    found = manifests()
    scaled = found[("ScaledObject", "executus-worker")]
    worker = found[("Deployment", scaled["spec"]["scaleTargetRef"]["name"])]
    args = container(worker, "worker")["args"]
    concurrency = args[args.index("--concurrency") + 1]
    triggers = {t["type"]: t["metadata"] for t in scaled["spec"]["triggers"]}
    query = triggers["prometheus"]["query"]
    assert {"executus_queue_depth", "executus_active_runs"} <= metric_names_in(query)
    assert metric_names_in(query) <= METRIC_NAMES
    assert triggers["prometheus"]["threshold"] == concurrency
    assert triggers["redis"]["listName"] == Settings().default_queue
    assert triggers["redis"]["listLength"] == concurrency


def test_the_disruption_budget_covers_the_worker_pods_one_at_a_time() -> None:
    found = manifests()
    pdb = found[("PodDisruptionBudget", "executus-worker")]
    labels = found[("Deployment", "executus-worker")]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


# -- compose ----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml_docs(OPS / "compose.yaml")[0]
    return doc["services"]


def test_compose_worker_grace_signal_and_healthcheck() -> None:
    worker = compose()["worker"]
    shutdown = float(worker["environment"]["EXECUTUS_SHUTDOWN_GRACE_S"])
    assert_grace_sized(seconds(worker["stop_grace_period"]), shutdown, "compose worker")
    assert worker["stop_signal"] == "SIGTERM"
    test = worker["healthcheck"]["test"]
    assert test[:2] == ["CMD", "executus-worker"]  # exec form, no shell
    assert cli_accepts(test[2:]).name == "health"
    cli_accepts(worker["command"])
    cli_accepts(compose()["beat"]["command"])
    assert "init" not in worker  # an init that signals the process group kills children


def test_compose_runs_flower_and_a_prometheus_that_scrapes_the_workers_with_our_rules() -> None:
    services = compose()
    assert "flower" in services["flower"]["command"]
    mounts = {m.split(":")[1]: OPS / m.split(":")[0] for m in services["prometheus"]["volumes"]}
    assert all(source.exists() for source in mounts.values())
    config = yaml_docs(mounts["/etc/prometheus/prometheus.yml"])[0]
    assert set(config["rule_files"]) <= set(mounts)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "executus-worker"]
    port = int(services["worker"]["environment"]["EXECUTUS_METRICS_PORT"])
    assert job["dns_sd_configs"][0] == {
        **job["dns_sd_configs"][0],
        "names": ["worker"],
        "port": port,
    }


# -- systemd and Docker ----------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    """key -> values (a key may repeat, as Environment= does)."""
    found: dict[str, list[str]] = {}
    for raw in (OPS / "systemd" / name).read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def unit_env(u: dict[str, list[str]]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in u.get("Environment", []))


@pytest.mark.parametrize("name", ["executus-worker.service", "executus-beat.service"])
def test_systemd_signals_only_the_main_process_and_execs_a_real_command(name: str) -> None:
    u = unit(name)
    assert u["KillMode"] == ["mixed"] and u["KillSignal"] == ["SIGTERM"]
    argv = shlex.split(u["ExecStart"][0])
    assert argv[0].endswith("/executus-worker")
    cli_accepts(argv[1:])


def test_systemd_worker_grace_and_watchdog() -> None:
    u = unit("executus-worker.service")
    env = unit_env(u)
    assert_grace_sized(
        seconds(u["TimeoutStopSec"][0]), float(env["EXECUTUS_SHUTDOWN_GRACE_S"]), "systemd"
    )
    # The watchdog is fed by the heartbeat thread (sdnotify.py): it must outlast a few beats.
    settings = Settings(health_file=Path(env["EXECUTUS_HEALTH_FILE"]))
    assert u["Type"] == ["notify"] and u["NotifyAccess"] == ["main"]
    assert seconds(u["WatchdogSec"][0]) >= 3 * settings.health_interval_s
    # The heartbeat file goes to the unit's RuntimeDirectory (/run/<dir>), which it owns.
    assert env["EXECUTUS_HEALTH_FILE"].startswith(f"/run/{u['RuntimeDirectory'][0]}/")


def test_dockerfile_entrypoint_is_exec_form_and_stops_with_sigterm() -> None:
    lines = dict(
        line.split(" ", 1) for line in (OPS / "Dockerfile").read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    assert json.loads(lines["ENTRYPOINT"]) == ["executus-worker"]
    assert lines["STOPSIGNAL"] == "SIGTERM"
    cli_accepts(json.loads(lines["CMD"]))


# -- alert rules --------------------------------------------------------------------------------

# Metrics of other exporters the rules may use (redis_exporter) and Prometheus's own `up`.
FOREIGN = re.compile(r"^(redis_\w+|up)$")
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "by", "without", "rate", "increase", "deriv", "and", "or",
    "unless", "on", "vector", "histogram_quantile", "le", "bool", "offset",
}  # fmt: skip


def metric_names_in(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name metrics (not functions, labels, values)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", without_strings)  # and [5m] ranges
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_groupings))
    return names - PROMQL_WORDS


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml_docs(OPS / "alerts.yaml")[0]
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_metric_an_alert_uses_is_one_the_worker_exports() -> None:
    for rule in alert_rules():
        names = metric_names_in(rule["expr"])
        assert names, rule["alert"]
        ours = {n for n in names if not FOREIGN.match(n)}
        assert ours <= METRIC_NAMES, f"{rule['alert']}: unknown metrics {ours - METRIC_NAMES}"


def test_alerts_cover_the_metrics_operators_page_on() -> None:
    used = set().union(*(metric_names_in(rule["expr"]) for rule in alert_rules()))
    for needed in ("executus_queue_depth", "executus_runs_total", "executus_lease_losses_total",
                   "executus_recoveries_total", "executus_active_runs"):  # fmt: skip
        assert needed in used


def test_every_alert_has_a_unique_name_a_severity_and_a_summary() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_name_extractor_sees_metrics_and_skips_labels_and_functions() -> None:
    expr = 'sum by (queue) (rate(a_total{x="b_c"}[5m])) / on() b_seconds_bucket{le="1"} > 0.5'
    assert metric_names_in("deriv(max(c)[30m:1m]) > 2") == {"c"}
    assert metric_names_in(expr) == {"a_total", "b_seconds_bucket"}
