"""deploy/: unit files verify, scripts parse, every environment variable is documented, the
Prometheus/Grafana files are valid and name metrics we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tradebaas.testing import BASE_DIR

DEPLOY = BASE_DIR / "deploy"
DOC = (BASE_DIR / "docs/PRODUCTION_DEPLOYMENT.md").read_text()
ENV_PATTERN = re.compile(
    r"""(?:env(?:\.\w+)?\(\s*|os\.environ(?:\.get)?[(\[]|os\.environ\.setdefault\(|required\(|getenv\()"([A-Z][A-Z0-9_]+)\""""
)


def _variables_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for folder in ("apps", "tradebaas"):
        for path in (BASE_DIR / folder).rglob("*.py"):
            if "/tests/" in str(path) or "/migrations/" in str(path):
                continue
            names |= set(ENV_PATTERN.findall(path.read_text()))
    from apps.strategies.runner.config import DEFAULTS

    names |= {f"TRADEBAAS_{name}" for name in DEFAULTS}
    return names


def test_every_environment_variable_is_documented():
    missing = sorted(name for name in _variables_read_by_the_code() if f"`{name}`" not in DOC)
    assert not missing, f"document these in docs/PRODUCTION_DEPLOYMENT.md: {missing}"


def test_env_example_sets_every_production_requirement():
    example = (DEPLOY / "tradebaas.env.example").read_text()
    for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "CREDENTIALS_KEYS"):
        assert re.search(rf"^{name}=\S", example, re.M), name
    assert "DJANGO_SETTINGS_MODULE=tradebaas.settings.production" in example


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path):
    venv = BASE_DIR / ".venv"
    for unit in (DEPLOY / "systemd").iterdir():
        text = unit.read_text().replace("/opt/tradebaas/venv", str(venv))
        text = text.replace("/opt/tradebaas/app", str(BASE_DIR))
        text = text.replace("User=tradebaas", "User=root").replace("Group=tradebaas", "Group=root")
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if "Unknown key" in line
        or "Failed" in line
        or "Invalid" in line
        or "is not executable" in line
    ]
    assert not problems, result.stderr
    runner = (DEPLOY / "systemd/tradebaas-runner.service").read_text()
    for line in ("Type=notify", "NotifyAccess=all", "WatchdogSec=", "Restart=always", "MemoryMax="):
        assert line in runner


def test_shell_scripts_parse():
    scripts = [*DEPLOY.rglob("*.sh")]
    assert len(scripts) >= 6
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, (script, result.stderr)


def test_prometheus_and_grafana_name_exported_metrics():
    from prometheus_client import REGISTRY

    from apps.monitoring import metrics, notify  # noqa: F401 - registers their metrics

    exported = {m.name for m in REGISTRY.collect()} | {
        "tradebaas_db_trades",
        "tradebaas_db_brackets",
        "tradebaas_active_run_state",
        "tradebaas_active_run_heartbeat_age_seconds",
        "tradebaas_process_heartbeat_age_seconds",
    }
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        c["job_name"]: c["static_configs"][0]["targets"][0] for c in config["scrape_configs"]
    }
    assert targets["tradebaas-web"] == "127.0.0.1:8000"
    rules = yaml.safe_load((DEPLOY / "prometheus/tradebaas-alerts.yml").read_text())
    dashboard = json.loads((DEPLOY / "grafana/tradebaas-dashboard.json").read_text())
    expressions = [r["expr"] for g in rules["groups"] for r in g["rules"]] + [
        t["expr"] for p in dashboard["panels"] for t in p["targets"]
    ]
    used = {name for expr in expressions for name in re.findall(r"tradebaas_[a-z_]+", expr)}
    base = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in used}
    unknown = sorted(n for n in base if n not in exported and f"{n}_total" not in exported)
    assert not unknown, unknown


def test_database_pool_replaces_persistent_connections(monkeypatch):
    from tradebaas.settings.base import database_config

    monkeypatch.setenv("DATABASE_POOL_MAX_SIZE", "7")
    config = database_config("postgres://tradebaas@127.0.0.1:5432/tradebaas")
    assert config["CONN_MAX_AGE"] == 0
    assert config["OPTIONS"]["pool"]["max_size"] == 7
    monkeypatch.delenv("DATABASE_POOL_MAX_SIZE")
    config = database_config("postgres://tradebaas@127.0.0.1:5432/tradebaas")
    assert "pool" not in config.get("OPTIONS", {})
    assert config["CONN_MAX_AGE"] == 60
