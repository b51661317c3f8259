#!/usr/bin/env python3
"""Runs a docker/compose*.yml file with plain `podman run` on one podman network.

Why not Debian's podman-compose 1.0.3: it ignores `depends_on` conditions
(service_healthy, service_completed_successfully) and, on a machine without
systemd, podman cannot schedule health checks at all, so "healthy" never
happens.  This runner reads the same compose file (anchors and `<<` merge
keys, ${VAR}, ${VAR:-default} and ${VAR-default} interpolation from the
environment) and starts the services in dependency order, running each
health check itself (`podman exec`) and waiting for the conditions.

Supported: image, build (see --build-image), command, entrypoint,
environment (map or list), volumes (named and relative bind mounts, :ro),
ports, depends_on (list or map with condition), healthcheck (test,
interval, timeout, retries, start_period; the image's HEALTHCHECK when the
service has none), restart, stop_grace_period, top-level name and volumes.
Anything else in a service is refused, so the file cannot silently mean more
than what runs here.

  podman-compose.py -f docker/compose.yml -p NAME [--build-image IMG] up
  podman-compose.py -f docker/compose.yml -p NAME down      # containers, network, volumes

Containers are named NAME-SERVICE, carry the label notisync.compose=NAME, and
every service is reachable on the network NAME by its service name.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

import yaml

KNOWN = {"image", "build", "command", "entrypoint", "environment", "volumes",
         "ports", "depends_on", "healthcheck", "restart", "stop_grace_period"}
LABEL = "notisync.compose"


def log(msg):
    print(f"podman-compose.py: {msg}", file=sys.stderr, flush=True)


def interpolate(s):
    def rep(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3) or ""
        val = os.environ.get(name)
        if op == ":-" and not val:
            return default
        if op == "-" and val is None:
            return default
        return val or ""
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                  rep, s)


def walk(x):
    if isinstance(x, str):
        return interpolate(x)
    if isinstance(x, list):
        return [walk(v) for v in x]
    if isinstance(x, dict):
        return {k: walk(v) for k, v in x.items()}
    return x


def seconds(v, default):
    if v is None:
        return default
    if isinstance(v, (int, float)):
        return float(v)
    total, n = 0.0, 0
    for num, unit in re.findall(r"([0-9.]+)(ms|us|h|m|s)", str(v)):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
        n += 1
    if not n:
        raise SystemExit(f"bad duration {v!r}")
    return total


def podman(*args, check=True, capture=False, timeout=None):
    r = subprocess.run(["podman", *args], text=True, timeout=timeout,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE if capture else None)
    if check and r.returncode != 0:
        raise SystemExit(f"podman {' '.join(args[:3])} ... failed ({r.returncode}): "
                         f"{(r.stderr or '').strip()}")
    return r


def order(services):
    done, out = set(), []

    def visit(name, stack):
        if name in done:
            return
        if name in stack:
            raise SystemExit(f"depends_on cycle at {name}")
        for dep in deps(services[name]):
            if dep not in services:
                raise SystemExit(f"{name}: depends on unknown service {dep}")
            visit(dep, stack | {name})
        done.add(name)
        out.append(name)
    for n in services:
        visit(n, set())
    return out


def deps(svc):
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {k: "service_started" for k in d}
    return {k: (v or {}).get("condition", "service_started") for k, v in d.items()}


def health_of(svc, image):
    hc = svc.get("healthcheck")
    if hc is not None:
        if hc.get("disable"):
            return None
        return {"test": hc["test"], "interval": seconds(hc.get("interval"), 30),
                "timeout": seconds(hc.get("timeout"), 30), "retries": int(hc.get("retries", 3)),
                "start_period": seconds(hc.get("start_period"), 0)}
    r = podman("image", "inspect", "--format", "{{json .HealthCheck}}", image, capture=True)
    j = json.loads(r.stdout.strip() or "null")
    if not j or not j.get("Test") or j["Test"] == ["NONE"]:
        return None
    ns = 1e9
    return {"test": j["Test"], "interval": (j.get("Interval") or 30 * ns) / ns,
            "timeout": (j.get("Timeout") or 30 * ns) / ns, "retries": int(j.get("Retries") or 3),
            "start_period": (j.get("StartPeriod") or 0) / ns}


def health_argv(test):
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", " ".join(test[1:])]
    raise SystemExit(f"unsupported healthcheck test {test!r}")


def wait_healthy(project, name, hc, limit):
    """Polls the check every second (not every `interval`: the wait is shorter,
    the verdict the same) until it passes; gives up once the container has had
    start_period + retries x interval, as Docker would call it unhealthy."""
    ctr = f"{project}-{name}"
    budget = min(limit, hc["start_period"] + hc["retries"] * hc["interval"] + hc["timeout"])
    deadline = time.monotonic() + budget
    argv = health_argv(hc["test"])
    while True:
        state = podman("inspect", "--format", "{{.State.Status}} {{.RestartCount}}", ctr,
                       capture=True, check=False).stdout.split()
        if state and (state[0] in ("exited", "stopped") or (len(state) > 1 and state[1] != "0")):
            raise SystemExit(f"{name}: exited while waiting to be healthy "
                             f"(state {state[0]}, restarts {state[1] if len(state) > 1 else '?'})")
        try:
            r = podman("exec", ctr, *argv, check=False, capture=True, timeout=hc["timeout"] + 2)
            if r.returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            raise SystemExit(f"{name}: not healthy after {budget:.0f} s")
        time.sleep(1)


def wait_completed(project, name, limit):
    ctr = f"{project}-{name}"
    r = podman("wait", ctr, capture=True, timeout=limit)
    code = r.stdout.strip()
    if code != "0":
        raise SystemExit(f"{name}: exited with {code}, {'service_completed_successfully'} not met")


def up(args, cfg, base):
    project = args.project
    services = cfg.get("services") or {}
    for name, svc in services.items():
        extra = set(svc) - KNOWN
        if extra:
            raise SystemExit(f"{name}: keys not supported by this runner: {sorted(extra)}")
    podman("network", "create", "--label", f"{LABEL}={project}", project)
    for vol in (cfg.get("volumes") or {}):
        podman("volume", "create", "--label", f"{LABEL}={project}", f"{project}_{vol}")
    started = {}
    for name in order(services):
        svc = services[name]
        for dep, cond in deps(svc).items():
            if cond == "service_healthy":
                if started[dep] is None:
                    raise SystemExit(f"{name}: {dep} has no health check to wait for")
                log(f"waiting for {dep} to be healthy")
                wait_healthy(project, dep, started[dep], args.timeout)
            elif cond == "service_completed_successfully":
                log(f"waiting for {dep} to complete")
                wait_completed(project, dep, args.timeout)
            elif cond != "service_started":
                raise SystemExit(f"{name}: unknown condition {cond}")
        if "build" in svc:
            if not args.build_image:
                raise SystemExit(f"{name}: has build:, give --build-image")
            image = args.build_image
        else:
            image = svc["image"]
        cmd = ["run", "-d", "--name", f"{project}-{name}", "--label", f"{LABEL}={project}",
               "--network", project, "--network-alias", name, "--hostname", name,
               "--no-healthcheck"]
        env = svc.get("environment") or {}
        items = env.items() if isinstance(env, dict) else [e.split("=", 1) for e in env]
        for k, v in items:
            cmd += ["-e", f"{k}={'' if v is None else v}"]
        for v in svc.get("volumes") or []:
            parts = v.split(":")
            src = parts[0]
            if src.startswith((".", "/")):
                parts[0] = os.path.normpath(os.path.join(base, src))
            elif src in (cfg.get("volumes") or {}):
                parts[0] = f"{project}_{src}"
            cmd += ["-v", ":".join(parts)]
        for p in svc.get("ports") or []:
            cmd += ["-p", str(p)]
        if svc.get("restart") and svc["restart"] != "no":
            cmd += ["--restart", svc["restart"]]
        if "stop_grace_period" in svc:
            cmd += ["--stop-timeout", str(int(seconds(svc["stop_grace_period"], 10)))]
        ep = svc.get("entrypoint")
        if ep is not None:
            ep = shlex.split(ep) if isinstance(ep, str) else ep
            cmd += ["--entrypoint", json.dumps(ep)]
        cmd.append(image)
        c = svc.get("command")
        if c is not None:
            cmd += shlex.split(c) if isinstance(c, str) else [str(x) for x in c]
        log(f"starting {name} ({image})")
        podman(*cmd)
        started[name] = health_of(svc, image)
    # Like `docker compose up --wait`: everything with a health check healthy.
    for name in services:
        if started[name] is not None:
            wait_healthy(project, name, started[name], args.timeout)
    log("up: every service started, every health check passed")


def down(args):
    project = args.project
    r = podman("ps", "-aq", "--filter", f"label={LABEL}={project}", capture=True, check=False)
    ids = r.stdout.split()
    if ids:
        podman("rm", "-f", "-t", str(args.stop_timeout), *ids, check=False)
    r = podman("volume", "ls", "-q", "--filter", f"label={LABEL}={project}", capture=True, check=False)
    vols = r.stdout.split()
    if vols:
        podman("volume", "rm", "-f", *vols, check=False)
    if podman("network", "exists", project, check=False).returncode == 0:
        podman("network", "rm", "-f", project, check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-f", "--file", required=True)
    ap.add_argument("-p", "--project", help="default: the file's top-level name")
    ap.add_argument("--build-image", help="image to run for services that have build:")
    ap.add_argument("--timeout", type=float, default=180, help="cap on each wait (s)")
    ap.add_argument("--stop-timeout", type=int, default=15)
    ap.add_argument("action", choices=["up", "down", "config"])
    args = ap.parse_args()
    with open(args.file) as f:
        cfg = walk(yaml.safe_load(f))
    cfg = {k: v for k, v in cfg.items() if not str(k).startswith("x-")}
    args.project = args.project or cfg.get("name") or "notisync"
    if args.action == "config":
        print(json.dumps(cfg, indent=2))
    elif args.action == "up":
        up(args, cfg, os.path.dirname(os.path.abspath(args.file)))
    else:
        down(args)


if __name__ == "__main__":
    main()
