"""examples/kubernetes: manifests checked as far as an offline machine allows.

No cluster and no schema validator here (kubeconform and kubeval are not packaged by
Debian), so the test parses every manifest and checks what would break the pipeline at
run time: required fields, selectors that match their pods, Services whose ports exist,
probes that ping the processor's own endpoints, DNS names of the links that name a
Service and its port, the system file (validated with its jobs), and the image recipe.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import yaml
from jobs_interop import REPO

from zjobs.run.system import load_system

HERE = REPO / "examples" / "kubernetes"
NAMESPACE = "zjobs-pipeline"
DNS = re.compile(rf"^dns://(?P<svc>[a-z0-9-]+)\.{NAMESPACE}\.svc\.cluster\.local:(?P<port>\d+)$")


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((HERE / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((HERE / name).read_text()) if d is not None]
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def option(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]


def system(tmp_path: Path) -> Any:
    # Where the image puts them: the jobs beside the system file (/app).
    shutil.copy(REPO / "examples" / "pipeline" / "jobs.py", tmp_path / "jobs.py")
    shutil.copy(HERE / "system.toml", tmp_path / "system.toml")
    return load_system(tmp_path / "system.toml")


def test_every_manifest_has_the_required_fields() -> None:
    kustomization = yaml.safe_load((HERE / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    for doc in documents():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert set(by_kind("Deployment")) == set(by_kind("Service")) == {"parse", "score",
                                                                      "store"}
    assert [d["metadata"]["name"] for d in documents() if d["kind"] == "Namespace"] == [
        NAMESPACE]
    generated = [g["name"] for g in kustomization["configMapGenerator"]]
    for entry in kustomization["configMapGenerator"]:
        for file in entry["files"]:
            assert (HERE / file).is_file()
    for deployment in by_kind("Deployment").values():
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in generated


def test_services_are_headless_and_select_their_pods() -> None:
    deployments = by_kind("Deployment")
    for name, service in by_kind("Service").items():
        spec = service["spec"]
        assert spec["clusterIP"] == "None"  # one DNS address per pod, not a virtual IP
        pod = deployments[name]["spec"]["template"]
        assert deployments[name]["spec"]["selector"]["matchLabels"].items() <= \
            pod["metadata"]["labels"].items()
        assert spec["selector"].items() <= pod["metadata"]["labels"].items()
        named = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in spec["ports"]:
            assert named[port["targetPort"]] == port["port"], (name, port)


def test_processors_run_the_system_file_and_are_probed_with_zjobs_ping(tmp_path: Path) -> None:
    processors = system(tmp_path).processors
    for name, deployment in by_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > 15  # longer than the preStop sleep
        main = next(c for c in pod["containers"] if c["name"] == "processor")
        assert main["args"][:2] == ["up", "/app/system.toml"]
        assert option(main["args"], "--only") == [name]
        spec = processors[name]
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert spec.requests == (f"tcp://*:{ports['requests']}",)
        assert spec.responses == (f"tcp://*:{ports['responses']}",)
        for probe in ("readinessProbe", "livenessProbe"):
            command = main[probe]["exec"]["command"]
            assert command[:2] == ["zjobs", "ping"], command
            assert option(command, "--requests") == [f"tcp://127.0.0.1:{ports['requests']}"]
            assert option(command, "--responses") == [f"tcp://127.0.0.1:{ports['responses']}"]
        assert main["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
        assert mounts["/app/system.toml"]["subPath"] == "system.toml"


def test_links_forward_to_the_pods_of_the_next_stage_by_dns(tmp_path: Path) -> None:
    processors = system(tmp_path).processors
    services = by_kind("Service")
    chain = []
    for name, deployment in by_kind("Deployment").items():
        containers = deployment["spec"]["template"]["spec"]["containers"]
        for link in (c for c in containers if c["name"] == "link"):
            args = link["args"]
            assert args[0] == "link"
            # The upstream is the processor of the same pod, on loopback.
            ports = {p["name"]: p["containerPort"] for p in containers[0]["ports"]}
            assert option(args, "--from") == [f"tcp://127.0.0.1:{ports['responses']}"]
            assert option(args, "--from-requests") == [f"tcp://127.0.0.1:{ports['requests']}"]
            (target,) = option(args, "--to-requests")
            match = DNS.match(target)
            assert match is not None, target
            service = services[match["svc"]]
            assert int(match["port"]) in [p["port"] for p in service["spec"]["ports"]
                                          if p["name"] == "requests"]
            assert processors[match["svc"]].requests == (f"tcp://*:{match['port']}",)
            chain.append((name, match["svc"]))
    assert sorted(chain) == [("parse", "score"), ("score", "store")]
    transform = option(by_kind("Deployment")["score"]["spec"]["template"]["spec"]
                       ["containers"][1]["args"], "--transform")
    assert transform == ["jobs:to_row"]


def test_the_caller_reaches_the_entry_and_exit_services() -> None:
    source = (HERE / "call.py").read_text()
    ports = {name: {p["name"]: p["port"] for p in svc["spec"]["ports"]}
             for name, svc in by_kind("Service").items()}
    assert f'svc.cluster.local:{ports["parse"]["requests"]}"' in source
    assert f'svc.cluster.local:{ports["store"]["responses"]}"' in source
    job = by_kind("Job")["pipeline-call"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python", "/app/call.py"]


def test_the_image_recipe_copies_what_exists() -> None:
    lines = (HERE / "Containerfile").read_text().splitlines()
    copies = [shlex.split(line)[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies, "no COPY lines"
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), source
    assert 'ENTRYPOINT ["zjobs"]' in lines
    assert any(line.startswith("USER ") and not line.endswith(" 0") for line in lines)
    images = {c["image"] for d in documents() if d["kind"] in ("Deployment", "Job")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"zjobs-pipeline:latest"}
