#!/usr/bin/env python3
"""Consistency of docker/ and k8s/: what one file names, another provides.

Checks that every Secret and ConfigMap key a workload references exists,
that the routing ConfigMap is mounted where ism_state.routing_file says,
that the NATS password file is where ism_state.nats_password points, that
Services target ports the containers have, that images and probes match
the Dockerfile, and that no manifest carries a credential.  Prints the SQL
the readiness probe and the exporter run, as JSON, for the integration
test to run against a live cluster.  Exit status 1 on any finding.

    test/check_manifests.py [repository root]
"""
import json
import os
import re
import sys

import yaml

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), ".."))
BASE = os.path.join(ROOT, "k8s", "base")
OVERLAY = os.path.join(ROOT, "k8s", "overlays", "example")
findings = []


def fail(message):
    findings.append(message)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def documents(path):
    return [d for d in yaml.safe_load_all(read(path)) if d]


def conf_settings(path):
    """name -> value of the "name = 'value'" lines of a postgresql.conf file."""
    settings = {}
    for line in read(path).splitlines():
        m = re.match(r"\s*([\w.]+)\s*=\s*'?([^'#]*?)'?\s*(#.*)?$", line)
        if m:
            settings[m.group(1)] = m.group(2)
    return settings


def generated(kustomization, directory, kind):
    """name -> keys of the ConfigMaps or Secrets a kustomization generates."""
    out = {}
    for gen in kustomization.get(kind, []):
        keys = set()
        for entry in gen.get("files", []):
            keys.add(entry.split("=", 1)[0] if "=" in entry else os.path.basename(entry))
        for env in gen.get("envs", []):
            # the real file is kept out of git; its example lists the keys
            for line in read(os.path.join(directory, env + ".example")).splitlines():
                if line and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    keys.add(key)
                    if value:
                        fail(f"{env}.example: {key} has a value; examples must be empty")
        out[gen["name"]] = keys
    return out


base_kustomization = yaml.safe_load(read(os.path.join(BASE, "kustomization.yaml")))
overlay_kustomization = yaml.safe_load(read(os.path.join(OVERLAY, "kustomization.yaml")))
objects = [doc for res in base_kustomization["resources"]
           for doc in documents(os.path.join(BASE, res))]

configmaps = generated(base_kustomization, BASE, "configMapGenerator")
secrets = generated(overlay_kustomization, OVERLAY, "secretGenerator")
for obj in objects:
    if obj["kind"] == "ConfigMap":
        configmaps[obj["metadata"]["name"]] = set(obj.get("data", {}))
    if obj["kind"] == "Secret":
        fail(f"Secret {obj['metadata']['name']} is in a manifest: secrets go by reference only")

workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("StatefulSet", "Deployment")}
services = [o for o in objects if o["kind"] == "Service"]

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|PASS$|CREDENTIAL", re.I)


def check_key(kind, store, name, key, where):
    if name not in store:
        fail(f"{where}: {kind} {name} is not defined")
    elif key not in store[name]:
        fail(f"{where}: {kind} {name} has no key {key}")


def check_workload(name, workload):
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"]}
    for vol in volumes.values():
        for kind, store, ref in (("ConfigMap", configmaps, vol.get("configMap")),
                                 ("Secret", secrets, vol.get("secret"))):
            if ref:
                ref_name = ref.get("name") or ref.get("secretName")
                for item in ref.get("items", []):
                    check_key(kind, store, ref_name, item["key"], f"{name} volume {vol['name']}")
    ports = set()
    for c in pod["containers"]:
        where = f"{name}/{c['name']}"
        for env in c.get("env", []):
            source = env.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                check_key("Secret", secrets, ref["name"], ref["key"], where)
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                check_key("ConfigMap", configmaps, ref["name"], ref["key"], where)
            elif SECRET_NAME.search(env["name"]) and "value" in env:
                fail(f"{where}: {env['name']} is given literally; use a secretKeyRef")
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in volumes:
                fail(f"{where}: mounts unknown volume {mount['name']}")
        for p in c.get("ports", []):
            ports.add(p.get("name"))
            ports.add(p["containerPort"])
    labels = workload["spec"]["template"]["metadata"]["labels"]
    for svc in services:
        selector = svc["spec"].get("selector", {})
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            for p in svc["spec"]["ports"]:
                if p.get("targetPort", p["port"]) not in ports:
                    fail(f"Service {svc['metadata']['name']}: no container port {p.get('targetPort')}")


for wname, wl in workloads.items():
    check_workload(wname, wl)

# --- the PostgreSQL pod against the image ------------------------------------
dockerfile = read(os.path.join(ROOT, "docker", "Dockerfile"))
image_conf = conf_settings(os.path.join(ROOT, "docker", "conf.d", "ism_state.conf"))
site_conf = conf_settings(os.path.join(BASE, "10-site.conf"))
effective = {**image_conf, **site_conf}

pg = workloads.get("ism-state")
if pg is None:
    fail("no StatefulSet ism-state")
else:
    pod = pg["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "postgres")
    volumes = {v["name"]: v for v in pod["volumes"]}

    def mounted_files(kind, store_name):
        """Paths where the items of that ConfigMap/Secret appear."""
        paths = []
        for m in container["volumeMounts"]:
            vol = volumes.get(m["name"], {})
            ref = vol.get(kind) or {}
            if (ref.get("name") or ref.get("secretName")) != store_name:
                continue
            for item in ref.get("items", []):
                if "subPath" in m:
                    if m["subPath"] == item["path"]:
                        paths.append(m["mountPath"])
                else:
                    paths.append(os.path.join(m["mountPath"], item["path"]))
        return paths

    routing = effective.get("ism_state.routing_file")
    if routing not in mounted_files("configMap", "ism-state-routing"):
        fail(f"ism_state.routing_file {routing} is not where ism-state-routing is mounted "
             f"({mounted_files('configMap', 'ism-state-routing')})")
    password = effective.get("ism_state.nats_password", "")
    if password and not password.startswith("file:"):
        fail("ism_state.nats_password is given literally; use file: and a Secret")
    if password.startswith("file:") and password[5:] not in mounted_files("secret", "ism-state-nats"):
        fail(f"ism_state.nats_password file {password[5:]} is not where ism-state-nats is mounted")
    if "/etc/postgresql/conf.d/10-site.conf" not in mounted_files("configMap", "ism-state-config"):
        fail("10-site.conf is not mounted into /etc/postgresql/conf.d")
    if "include_dir = '/etc/postgresql/conf.d'" not in dockerfile:
        fail("the Dockerfile does not include /etc/postgresql/conf.d")

    image = container["image"].split(":")[0]
    if image not in [i["name"] for i in overlay_kustomization.get("images", [])]:
        fail(f"the overlay does not set the image {image}")
    compose = yaml.safe_load(read(os.path.join(ROOT, "docker", "compose.yaml")))
    if compose["services"]["postgres"]["image"].split(":")[0] != image:
        fail("docker/compose.yaml builds another image name")
    # the image: the official one of the major the Dockerfile takes (15 to
    # 18), whose data directory compose and the pod set in their volume
    m = re.search(r"^ARG PG_MAJOR=(\d+)$", dockerfile, re.M)
    major = int(m.group(1)) if m else None
    if major is None or not 15 <= major <= 18:
        fail("the Dockerfile has no default PG_MAJOR from 15 to 18")
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    if not froms or any(not f.startswith("postgres:${PG_MAJOR}-") for f in froms):
        fail(f"the Dockerfile's stages are not all postgres:${{PG_MAJOR}}-...: {froms}")
    compose_pg = compose["services"]["postgres"]
    if str(compose_pg["build"].get("args", {}).get("PG_MAJOR")) != f"${{PG_MAJOR:-{major}}}":
        fail(f"docker/compose.yaml does not build the Dockerfile's default major {major}")
    data_dir = f"/var/lib/postgresql/{major}/docker"
    pgdata = {e["name"]: e.get("value") for e in container.get("env", [])}.get("PGDATA")
    if pgdata != data_dir:
        fail(f"the pod's PGDATA {pgdata} is not {data_dir}")
    data_mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data"]
    if not any(pgdata and pgdata.startswith(d.rstrip("/") + "/") for d in data_mounts):
        fail(f"the pod's PGDATA {pgdata} is not in its data volume ({data_mounts})")
    compose_data = compose_pg["environment"].get("PGDATA", "").replace(
        "${PG_MAJOR:-%d}" % major, str(major))
    compose_mounts = [v.split(":")[1] for v in compose_pg["volumes"] if v.startswith("pg-data:")]
    if compose_data != data_dir or not any(compose_data.startswith(d.rstrip("/") + "/")
                                          for d in compose_mounts):
        fail(f"docker/compose.yaml's PGDATA {compose_data} is not {data_dir} in its pg-data volume "
             f"({compose_mounts})")

    probe = container["readinessProbe"]["exec"]["command"][0]
    if f"COPY docker/healthcheck.sh {probe}" not in dockerfile:
        fail(f"the readiness probe runs {probe}, which the Dockerfile does not install")
    if container["ports"][0]["containerPort"] != 5432:
        fail("PostgreSQL does not listen on 5432")

    # NATS: the URL's service, and as many nodes as stream replicas
    nats_host = re.match(r"nats://([^:/]+)", effective["ism_state.nats_url"]).group(1)
    if not any(s["metadata"]["name"] == nats_host and
               any(p["port"] == 4222 for p in s["spec"]["ports"]) for s in services):
        fail(f"no Service {nats_host} on port 4222 for ism_state.nats_url")
    replicas = int(effective.get("ism_state.stream_replicas", "1"))
    if workloads.get("nats", {}).get("spec", {}).get("replicas") != replicas:
        fail(f"ism_state.stream_replicas is {replicas} but NATS has another number of nodes")

# --- SQL the probes and the exporter run -------------------------------------
queries = re.findall(r'"(SELECT [^"]+)"', read(os.path.join(ROOT, "docker", "healthcheck.sh")))
exporter = yaml.safe_load(read(os.path.join(BASE, "postgres-exporter-queries.yaml")))
queries += [q["query"] for q in exporter.values()]
if not queries:
    fail("found no probe or exporter queries")

for f in findings:
    print(f"check_manifests: {f}", file=sys.stderr)
print(json.dumps({"queries": queries}))
sys.exit(1 if findings else 0)
