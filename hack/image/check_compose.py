"""Checks docker-compose.yml against the Compose Specification's JSON schema, then the few things
the single-board setup relies on that a schema cannot know.

    python check_compose.py SCHEMA [COMPOSE_FILE]

Runs in the project venv (hack/pyenv.sh: jsonschema, PyYAML); hack/image/compose-schema.sh
provides SCHEMA. Exit status 1 with one line per problem.
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml


def schema_errors(schema: dict, doc: dict) -> list[str]:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        out.append(f"schema: {where}: {err.message}")
    return out


def port_targets(service: dict) -> dict[str, str]:
    """Published host port -> container port, for the short "HOST:CONTAINER" syntax we use."""
    out = {}
    for p in service.get("ports", []):
        host, _, container = str(p).rpartition(":")
        out[host] = container
    return out


def setup_errors(doc: dict) -> list[str]:
    agent = doc.get("services", {}).get("agent")
    if agent is None:
        return ["no `agent` service"]
    out = []
    env = agent.get("environment", {})
    listen = env.get("ROCKCHIP_LLAMA_LISTEN", "")
    port = listen.rpartition(":")[2]
    if not listen.startswith("0.0.0.0:"):
        out.append(f"the agent must listen on all addresses in the container, not {listen!r}")
    ports = port_targets(agent)
    for published in ("11434", "8080"):
        if ports.get(published) != port:
            out.append(f"host port {published} must reach the agent's port {port}, not {ports.get(published)!r}")
    if env.get("ROCKCHIP_LLAMA_MODELS_DIR") != "/models":
        out.append("ROCKCHIP_LLAMA_MODELS_DIR must be /models, where the image's models volume is")
    volumes = agent.get("volumes", [])
    if not any(isinstance(v, str) and v.startswith("models:/models") for v in volumes):
        out.append("the models volume must be mounted at /models")
    rkllm = [v for v in volumes if isinstance(v, dict) and v.get("target") == env.get("ROCKCHIP_LLAMA_RKLLM_LIB")]
    if not rkllm or not rkllm[0].get("read_only"):
        out.append("the host's librkllmrt.so must be mounted read-only where ROCKCHIP_LLAMA_RKLLM_LIB points")
    elif rkllm[0].get("bind", {}).get("create_host_path") is not False:
        out.append("a missing librkllmrt.so must fail the start, not become an empty directory")
    if not any(str(d).startswith("/dev/dri") or str(d).startswith("/dev/rknpu") for d in agent.get("devices", [])):
        out.append("no NPU device")
    if str(agent.get("user", "")) in ("0", "root", "0:0"):
        out.append("the agent runs as root by default; only the commented tuning option may change that")
    if env.get("ROCKCHIP_LLAMA_SYSFS_ROOT") != "/host":
        out.append("ROCKCHIP_LLAMA_SYSFS_ROOT must be /host, where the host's board files are mounted")
    for v in volumes:
        if isinstance(v, str) and v.startswith(("/sys", "/proc")):
            source, target, *mode = v.split(":")
            if target != "/host" + source:
                out.append(f"{v}: host board files belong at /host<path>, where --sysfs-root looks")
            if mode != ["ro"]:
                out.append(f"{v}: writable by default; only tuning, when asked, makes /sys writable")
    if "healthcheck" in agent:
        out.append("a healthcheck needs a client the image does not have")
    return out


def main() -> int:
    schema_path = Path(sys.argv[1])
    compose_path = Path(sys.argv[2] if len(sys.argv) > 2 else "docker-compose.yml")
    schema = json.loads(schema_path.read_text())
    doc = yaml.safe_load(compose_path.read_text())
    errors = schema_errors(schema, doc) + setup_errors(doc)
    for e in errors:
        print(f"{compose_path}: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"{compose_path}: valid ({schema.get('title')}, {schema_path.name}) and the single-board checks pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
