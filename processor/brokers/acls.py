"""The least-privilege Kafka ACLs of each ccmeter component, as data: docs/security.md's table is rendered from this
(`acl_lines`) and the secured end-to-end test grants exactly these (tests/processor/brokers/test_secured_e2e_kafka.py).

Components: `admin` (creates the topics: `ccmeter topics create`), `producer` (`ccmeter publish`), `worker`
(`ccmeter worker`), `sink` (`ccmeter sink`), `alerts` (`ccmeter alerts deliver`), `replay-publish` (`ccmeter replay
publish`, an idempotent producer). The worker's own topics, consumer group and transactional ids all start with its
app id (`{app_id}-state-changelog`, Faust's `{app_id}-__assignor-__leader`, group `{app_id}`, transactional ids
`{app_id}-{partition}` and `{app_id}-probe`), so they are granted as one PREFIXED pattern each.
"""

from __future__ import annotations

from dataclasses import dataclass

from processor.topics import ALERTS, DEFAULT_PREFIX, EVENTS, TOPICS, topic_names

COMPONENTS = ("admin", "producer", "worker", "sink", "alerts", "replay-publish")
OUTPUTS = tuple(spec.key for spec in TOPICS if spec.key != EVENTS)


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW entry (field names as processor.brokers.acl.AclBinding): `principal` may do `operation` on the
    resource. `resource_type`: topic, group, cluster, transactional_id; `pattern`: literal or prefixed."""

    principal: str
    resource_type: str
    resource_name: str
    operation: str
    pattern: str = "literal"
    host: str = "*"

    def line(self) -> str:
        """The `kafka-acls.sh --add` arguments of this entry."""
        kind = {
            "topic": "--topic",
            "group": "--group",
            "cluster": "--cluster",
            "transactional_id": "--transactional-id",
        }
        resource = kind[self.resource_type] + ("" if self.resource_type == "cluster" else f" {self.resource_name}")
        pattern = " --resource-pattern-type prefixed" if self.pattern == "prefixed" else ""
        operation = "".join(part.capitalize() for part in self.operation.split("_"))
        return f"--allow-principal {self.principal} --operation {operation} {resource}{pattern}"


def acls_for(
    component: str,
    prefix: str = DEFAULT_PREFIX,
    principal: str = "User:ccmeter",
    *,
    app_id: str = "ccmeter-worker",
    group: str | None = None,
) -> list[Acl]:
    """The ACLs `component` needs for topics under `prefix` (worker: app id `app_id`; alerts: consumer `group`,
    default `ccmeter-alerts-` prefixed, as `ccmeter alerts deliver` derives it from the webhook URL)."""
    names = topic_names(prefix)

    def topic(name: str, *operations: str, pattern: str = "literal") -> list[Acl]:
        return [Acl(principal, "topic", name, op, pattern) for op in operations]

    if component == "admin":
        return topic(prefix, "create", "describe", pattern="prefixed")
    if component == "producer":
        return topic(names[EVENTS], "write", "describe")
    if component == "replay-publish":
        return [
            *topic(names[EVENTS], "write", "describe"),
            Acl(principal, "cluster", "kafka-cluster", "idempotent_write"),
        ]
    if component == "worker":
        acls = topic(names[EVENTS], "read", "describe")
        for key in OUTPUTS:
            acls += topic(names[key], "write", "describe")
        acls += topic(f"{app_id}-", "create", "describe", "read", "write", pattern="prefixed")
        acls += [Acl(principal, "group", app_id, "read"), Acl(principal, "group", app_id, "describe")]
        acls += [Acl(principal, "transactional_id", f"{app_id}-", op, "prefixed") for op in ("write", "describe")]
        return acls
    if component == "sink":  # no consumer group: the sink keeps its offsets in its own manifest
        acls = []
        for name in names.values():
            acls += topic(name, "read", "describe")
        return acls
    if component == "alerts":
        name, pattern = (group, "literal") if group else ("ccmeter-alerts-", "prefixed")
        return [*topic(names[ALERTS], "read", "describe"), Acl(principal, "group", name, "read", pattern)]
    raise ValueError(f"unknown component {component!r}; expected one of {', '.join(COMPONENTS)}")


def acl_lines(prefix: str = DEFAULT_PREFIX, app_id: str = "ccmeter-worker") -> str:
    """docs/security.md's ACL table: per component, its `kafka-acls.sh` lines (principal `User:<component>`)."""
    out = []
    for component in COMPONENTS:
        out.append(f"# {component}")
        out += [acl.line() for acl in acls_for(component, prefix, f"User:{component}", app_id=app_id)]
    return "\n".join(out)
