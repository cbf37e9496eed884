"""Reads a provisioning file the way Grafana does, and connects as its
PostgreSQL datasource would.

PyYAML parses the file; every string value then goes through expand/ (Go), which
applies Grafana's own expansion with the real os.ExpandEnv. Keys and non-string
values (numbers, booleans) are left alone, as Grafana leaves them.
"""

import json
import os
import pathlib
import subprocess

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "mlmon.yaml"
EXPANDER_SOURCE = pathlib.Path(__file__).resolve().parent / "expand"


def build_expander(out_dir):
    """Builds expand/ into out_dir and returns the binary's path."""
    binary = pathlib.Path(out_dir) / "expand"
    env = dict(os.environ, GOPROXY="off")  # stdlib only: never download a module
    if not any(k in env for k in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(pathlib.Path(out_dir) / "gocache")  # go refuses to build without one
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=EXPANDER_SOURCE, env=env, check=True)
    return binary


def expand_strings(expander, raws, env):
    """Grafana's value for each raw string, with env as Grafana's whole environment."""
    done = subprocess.run([str(expander)], input=json.dumps(raws), env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def expand_tree(expander, tree, env):
    """The parsed YAML document with every string value expanded."""
    raws = []

    def collect(node):
        if isinstance(node, dict):
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, str):
            raws.append(node)

    collect(tree)
    expanded = iter(expand_strings(expander, raws, env))

    def rebuild(node):
        if isinstance(node, dict):
            return {key: rebuild(value) for key, value in node.items()}
        if isinstance(node, list):
            return [rebuild(item) for item in node]
        return next(expanded) if isinstance(node, str) else node

    return rebuild(tree)


def provisioned_datasource(expander, env, uid="mlmon", path=DATASOURCES):
    """The datasource with this uid, as Grafana would store it under env."""
    document = expand_tree(expander, yaml.safe_load(path.read_text()), env)
    (datasource,) = [d for d in document["datasources"] if d.get("uid") == uid]
    return datasource


def grafana_conninfo(datasource):
    """libpq parameters as Grafana's PostgreSQL datasource derives them
    (pkg/tsdb/grafana-postgresql-datasource/connection_string.go): an url
    starting with "/" is a socket directory, else host[:port] or [v6addr][:port];
    jsonData.database wins over the top-level database field."""
    url = datasource["url"]
    port = None
    if url.startswith("/"):
        host = url
    elif "]" in url:
        host, _, rest = url[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    else:
        host, colon, rest = url.partition(":")
        if colon:
            port = int(rest)  # Grafana rejects a port that is not a number
    json_data = datasource.get("jsonData", {})
    conninfo = {
        "host": host,
        "user": datasource.get("user", ""),
        "password": datasource.get("secureJsonData", {}).get("password", ""),
        "dbname": json_data.get("database") or datasource.get("database", ""),
        "sslmode": json_data.get("sslmode", ""),
    }
    if port:
        conninfo["port"] = port
    return conninfo
