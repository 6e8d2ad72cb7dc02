#!/usr/bin/env python3
"""Consistency of docker/ and k8s/: what one file names, another provides.

Checks that every Secret and ConfigMap key a workload references exists,
that the routing ConfigMap is mounted where ism_state.routing_file says,
that the NATS password file is where ism_state.nats_password points, that
Services target ports the containers have, that images and probes match
the Dockerfile, and that no manifest carries a credential.  The
CloudNativePG Cluster of k8s/production is held to the StatefulSet: the
same image and ism_state settings, the files projected where the settings
point, synchronous replication, the worker role of scripts/worker-role.sql
at bootstrap, and the exporter queries plus the health query in the
workers' database.  Prints the SQL the readiness probe and the exporters
run, and the Cluster's bootstrap SQL, as JSON, for the integration test to
run against a live cluster.  Exit status 1 on any finding.

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
health = re.findall(r'"(SELECT [^"]+)"', read(os.path.join(ROOT, "docker", "healthcheck.sh")))
exporter = yaml.safe_load(read(os.path.join(BASE, "postgres-exporter-queries.yaml")))
queries = health + [q["query"] for q in exporter.values()]
if not queries:
    fail("found no probe or exporter queries")


# --- the CloudNativePG Cluster (k8s/production) against the StatefulSet ------
PRODUCTION = os.path.join(ROOT, "k8s", "production")
# the worker role of the README's "Least privilege", made at the Cluster's bootstrap
WORKER_ROLE = {"role": "ism_worker", "catalog_schema": "public", "data_schema": "ism_data"}
# settings the Cluster has and the StatefulSet does not: the one it must have
# (acks wait for a standby), and those of the worker role, once it is finished
CLUSTER_ONLY_SETTINGS = {"ism_state.ack_after": "replicated"}
WORKER_ROLE_SETTINGS = {"ism_state.role": WORKER_ROLE["role"],
                        "ism_state.catalog_schema": WORKER_ROLE["catalog_schema"],
                        "ism_state.data_schema": WORKER_ROLE["data_schema"]}
# settings naming a mounted file, compared by where the file is mounted
FILE_SETTINGS = {"ism_state.routing_file": ("configMap", "ism-state-routing"),
                 "ism_state.nats_password": ("secret", "ism-state-nats")}


def normalized(sql):
    return " ".join(sql.split()).rstrip(";")


def deleted_by_patches(kustomization):
    """(kind, name) of the resources a kustomization's patches delete."""
    out = set()
    for patch in kustomization.get("patches", []):
        doc = yaml.safe_load(patch.get("patch", "")) or {}
        if doc.get("$patch") == "delete":
            out.add((doc.get("kind"), doc.get("metadata", {}).get("name")))
    return out


def worker_role_statements(major):
    """scripts/worker-role.sql's statements on that major, with WORKER_ROLE's
    values, leaving out the grants on the ISM catalog's tables (the catalog
    does not exist at the Cluster's bootstrap)."""
    text = read(os.path.join(ROOT, "scripts", "worker-role.sql"))
    threshold = int(re.search(r"server_version_num'\)::int >= (\d+)", text).group(1))
    taken, sql = True, []
    for line in text.splitlines():
        command = line.strip().split(" ")[0]
        if command == "\\if":
            taken = major * 10000 >= threshold
        elif command == "\\else":
            taken = not taken
        elif command == "\\endif":
            taken = True
        elif taken and not line.startswith(("--", "\\")) and not line.rstrip().endswith("\\gset"):
            sql.append(line)
    statements = []
    for statement in " ".join(sql).split(";"):
        if not statement.strip() or ':"catalog_schema".' in statement:
            continue
        statements.append(normalized(re.sub(r':"(\w+)"', lambda m: WORKER_ROLE[m.group(1)], statement)))
    return statements


def projected_files(cluster, kind, store_name):
    """Paths where the items of that ConfigMap/Secret appear (under /projected)."""
    paths = []
    for source in cluster["spec"].get("projectedVolumeTemplate", {}).get("sources", []):
        ref = source.get(kind) or {}
        if ref.get("name") == store_name:
            paths += [os.path.join("/projected", item["path"]) for item in ref.get("items", [])]
    return paths


def check_cluster_references(cluster, configmaps, secrets):
    for source in cluster["spec"].get("projectedVolumeTemplate", {}).get("sources", []):
        for kind, store in (("configMap", configmaps), ("secret", secrets)):
            ref = source.get(kind)
            for item in (ref or {}).get("items", []):
                check_key(kind[0].upper() + kind[1:], store, ref["name"], item["key"],
                          "Cluster projectedVolumeTemplate")
    for ref in cluster["spec"].get("monitoring", {}).get("customQueriesConfigMap", []):
        check_key("ConfigMap", configmaps, ref["name"], ref["key"], "Cluster monitoring")


def check_kustomize_config(kustomization, cluster):
    """kustomize knows nothing of the CloudNativePG kinds: without these
    fieldSpecs `images:` leaves the catalog's image as it is and the Cluster
    names the generated ConfigMaps and Secrets without their hash suffix."""
    config = {}
    for name in kustomization.get("configurations", []):
        config = yaml.safe_load(read(os.path.join(PRODUCTION, name)))
    if not any(f.get("kind") == "ImageCatalog" and f["path"] == "spec/images[]/image"
               for f in config.get("images", [])):
        fail("k8s/production: no kustomize image fieldSpec for the ImageCatalog")
    covered = {(ref["kind"], spec["path"]) for ref in config.get("nameReference", [])
               for spec in ref["fieldSpecs"] if spec.get("kind") == "Cluster"}
    needed = {("ConfigMap", "spec/monitoring/customQueriesConfigMap/name")}
    for source in cluster["spec"].get("projectedVolumeTemplate", {}).get("sources", []):
        for kind in source:
            needed.add((kind[0].upper() + kind[1:], f"spec/projectedVolumeTemplate/sources/{kind}/name"))
    for kind, path in sorted(needed - covered):
        fail(f"k8s/production: no kustomize nameReference for the {kind} at Cluster {path}")


def check_cluster_image(cluster, catalogs, kustomization, image, major):
    ref = cluster["spec"].get("imageCatalogRef")
    if ref is None:
        # an imageName's tag would be read as the PostgreSQL major
        fail("the Cluster takes no imageCatalogRef")
        return
    catalog = catalogs.get(ref["name"])
    images = {i["major"]: i["image"] for i in (catalog or {}).get("spec", {}).get("images", [])}
    if ref.get("kind") != "ImageCatalog" or catalog is None:
        fail(f"the Cluster's image catalog {ref['name']} is not in k8s/production")
    elif images.get(ref["major"]) != image:
        fail(f"the Cluster's image for major {ref['major']} is {images.get(ref['major'])}, "
             f"the StatefulSet's {image}")
    if ref["major"] != major:
        fail(f"the Cluster runs major {ref['major']}, the Dockerfile builds {major}")
    if image.split(":")[0] not in [i["name"] for i in kustomization.get("images", [])]:
        fail(f"k8s/production does not set the image {image.split(':')[0]}")


def check_cluster_replication(cluster):
    spec = cluster["spec"]
    if spec.get("instances", 1) < 2:
        fail(f"the Cluster has {spec.get('instances', 1)} instance(s): no standby to fail over to")
    sync = spec.get("postgresql", {}).get("synchronous")
    if not sync:
        fail("the Cluster has no synchronous replication")
        return
    if sync.get("method") not in ("any", "first") or not 1 <= sync.get("number", 0) < spec.get("instances", 1):
        fail(f"the Cluster's synchronous replication waits for no standby: {sync}")
    if sync.get("dataDurability", "required") != "required":
        fail("the Cluster's synchronous replication lets commits go on without a standby")
    if sync.get("failoverQuorum") is not True:
        fail("the Cluster may promote a standby without every synchronous commit (failoverQuorum)")


def check_cluster_settings(cluster, expected, database):
    postgresql = cluster["spec"].get("postgresql", {})
    if "ism_state" not in postgresql.get("shared_preload_libraries", []):
        fail("the Cluster's shared_preload_libraries does not hold ism_state")
    params = postgresql.get("parameters", {})
    for key, value in params.items():
        if not isinstance(value, str):
            fail(f"the Cluster's {key} is not a string ({value!r}): CloudNativePG takes strings only")
    if "shared_preload_libraries" in params:
        fail("the Cluster sets shared_preload_libraries as a parameter, which CloudNativePG forbids")
    ism = {k: str(v) for k, v in params.items() if k.startswith("ism_state.")}
    for key, wanted in CLUSTER_ONLY_SETTINGS.items():
        if ism.get(key) != wanted:
            fail(f"the Cluster's {key} is {ism.get(key)}, not {wanted}")
    shared = {k: v for k, v in expected.items() if k not in CLUSTER_ONLY_SETTINGS}
    for key in sorted(set(shared) - set(ism)):
        fail(f"the Cluster does not set {key} (the StatefulSet's {shared[key]})")
    for key in sorted(set(ism) - set(shared) - set(CLUSTER_ONLY_SETTINGS)):
        if key not in WORKER_ROLE_SETTINGS:
            fail(f"the Cluster sets {key}, the StatefulSet does not")
        elif ism[key] != WORKER_ROLE_SETTINGS[key]:
            fail(f"the Cluster's {key} is {ism[key]}, not the bootstrap's {WORKER_ROLE_SETTINGS[key]}")
    if ism.get("ism_state.database") != database:
        fail(f"the Cluster's ism_state.database is {ism.get('ism_state.database')}, not {database}")
    for key in sorted(set(shared) & set(ism) - set(FILE_SETTINGS) - {"ism_state.database"}):
        if ism[key] != shared[key]:
            fail(f"the Cluster's {key} is {ism[key]}, the StatefulSet's {shared[key]}")
    for key, (kind, store_name) in FILE_SETTINGS.items():
        value = ism.get(key, "")
        if SECRET_NAME.search(key):
            if not value.startswith("file:"):
                fail(f"the Cluster's {key} is given literally; use file: and a Secret")
                continue
            value = value[5:]
        if value not in projected_files(cluster, kind, store_name):
            fail(f"the Cluster's {key} {value} is not where {store_name} is projected "
                 f"({projected_files(cluster, kind, store_name)})")


def check_cluster_bootstrap(cluster, database, major):
    initdb = cluster["spec"].get("bootstrap", {}).get("initdb", {})
    if initdb.get("database") != database:
        fail(f"the Cluster's bootstrap makes database {initdb.get('database')}, not {database}")
    sql = [normalized(s) for s in initdb.get("postInitApplicationSQL", [])]
    if not sql or sql[0] != "CREATE EXTENSION ism_state":
        fail("the Cluster's bootstrap does not begin with CREATE EXTENSION ism_state")
    wanted = worker_role_statements(major) + ["GRANT SELECT ON ism_state.route TO pg_monitor"]
    if sql[1:] != wanted:
        fail("the Cluster's bootstrap is not scripts/worker-role.sql's role then the exporter's grant: "
             f"{sorted(set(sql[1:]) ^ set(wanted))}")
    if any(re.search(r"PASSWORD\s+'", s, re.I) for s in sql):
        fail("the Cluster's bootstrap SQL holds a password")
    return sql[1:]


def check_cluster_queries(cluster, configmap_files, base_queries, health, database):
    """The Cluster's exporter queries: the base's, the same SQL and metrics,
    in the workers' database and on the primary only, and the health query."""
    refs = cluster["spec"].get("monitoring", {}).get("customQueriesConfigMap", [])
    if not refs or refs[0]["name"] not in configmap_files:
        fail("the Cluster has no custom queries from k8s/production")
        return {}
    cnpg = yaml.safe_load(read(os.path.join(PRODUCTION, configmap_files[refs[0]["name"]][refs[0]["key"]])))
    for name, base in base_queries.items():
        mine = cnpg.get(name, {})
        if normalized(mine.get("query", "")) != normalized(base["query"]) or mine.get("metrics") != base["metrics"]:
            fail(f"the Cluster's exporter query {name} is not the base's")
    for name, query in cnpg.items():
        if query.get("target_databases") != [database] or query.get("primary") is not True:
            fail(f"the Cluster's exporter query {name} does not run on the primary in {database} only")
    wanted = normalized(health).replace(" FROM ", " AS ready FROM ", 1)
    if not any(normalized(q["query"]) == wanted for q in cnpg.values()):
        fail(f"the Cluster's exporter has no health query: {wanted}")
    return {name: q["query"] for name, q in cnpg.items()}


def generated_files(kustomization):
    """ConfigMap name -> key -> file of a kustomization's configMapGenerator."""
    return {gen["name"]: {(e.split("=", 1)[0] if "=" in e else os.path.basename(e)):
                          e.split("=", 1)[-1] for e in gen.get("files", [])}
            for gen in kustomization.get("configMapGenerator", [])}


cnpg_json = {}
if pg is not None:
    prod = yaml.safe_load(read(os.path.join(PRODUCTION, "kustomization.yaml")))
    prod_objects = [doc for res in prod["resources"] if not os.path.isdir(os.path.join(PRODUCTION, res))
                    for doc in documents(os.path.join(PRODUCTION, res))]
    prod_configmaps = generated(prod, PRODUCTION, "configMapGenerator")
    prod_secrets = generated(prod, PRODUCTION, "secretGenerator")
    deleted = deleted_by_patches(prod)
    if "../base" not in prod["resources"]:
        fail("k8s/production does not take NATS and the routing ConfigMap from ../base")
    else:
        prod_configmaps.update({k: v for k, v in configmaps.items() if ("ConfigMap", k) not in deleted})
    if ("StatefulSet", "ism-state") not in deleted:
        fail("k8s/production keeps the base's StatefulSet ism-state beside the Cluster")
    for obj in prod_objects:
        if obj["kind"] == "Secret":
            fail(f"Secret {obj['metadata']['name']} is in a manifest: secrets go by reference only")
    clusters = [o for o in prod_objects if o["kind"] == "Cluster"]
    catalogs = {o["metadata"]["name"]: o for o in prod_objects if o["kind"] == "ImageCatalog"}
    if len(clusters) != 1:
        fail(f"k8s/production holds {len(clusters)} CloudNativePG Clusters, not one")
    else:
        cluster = clusters[0]
        sts_pod = pg["spec"]["template"]["spec"]
        sts_container = next(c for c in sts_pod["containers"] if c["name"] == "postgres")
        database = {e["name"]: e.get("value") for e in sts_container.get("env", [])}.get("POSTGRES_DB")
        # the image's settings, then the site's; the init script points
        # ism_state.database at POSTGRES_DB
        expected = {k: v for k, v in effective.items() if k.startswith("ism_state.")}
        expected["ism_state.database"] = database
        check_cluster_references(cluster, prod_configmaps, prod_secrets)
        check_kustomize_config(prod, cluster)
        check_cluster_image(cluster, catalogs, prod, sts_container["image"], major)
        for field, sts_field in (("postgresUID", "runAsUser"), ("postgresGID", "runAsGroup")):
            if cluster["spec"].get(field) != sts_pod["securityContext"][sts_field]:
                fail(f"the Cluster's {field} is not the StatefulSet's {sts_field} (the image's postgres)")
        check_cluster_replication(cluster)
        check_cluster_settings(cluster, expected, database)
        for env in cluster["spec"].get("env", []):
            if SECRET_NAME.search(env["name"]) and "value" in env:
                fail(f"the Cluster's {env['name']} is given literally; use a secretKeyRef")
        cnpg_json["bootstrap_sql"] = check_cluster_bootstrap(cluster, database, major or 0)
        cnpg_json["queries"] = check_cluster_queries(
            cluster, generated_files(prod), exporter, (health or [""])[0], database)

for f in findings:
    print(f"check_manifests: {f}", file=sys.stderr)
print(json.dumps({"queries": queries, "cnpg": cnpg_json}))
sys.exit(1 if findings else 0)
