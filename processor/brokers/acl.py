"""Kafka ACLs from Python: CreateAcls/DescribeAcls requests over an (authenticated) aiokafka client connection.

aiokafka's admin client has no `create_acls`, but its protocol module has the CreateAcls/DescribeAcls requests
(v1: with pattern types, which Kafka 4.x still serves). `create_acls` sends them as the given client (e.g. the
super user of processor.brokers.secure) and then waits until the broker's authorizer lists every new binding:
with KRaft the controller commits an ACL before the broker's authorizer has replayed it, and a test that acts
right after a grant must not race that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

# Wire codes of org.apache.kafka.common.{resource.ResourceType, resource.PatternType, acl.AclOperation,
# acl.AclPermissionType}.
RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4, "transactional_id": 5, "delegation_token": 6, "user": 7}
PATTERN_TYPES = {"literal": 3, "prefixed": 4}
OPERATIONS = {
    "all": 2,
    "read": 3,
    "write": 4,
    "create": 5,
    "delete": 6,
    "alter": 7,
    "describe": 8,
    "cluster_action": 9,
    "describe_configs": 10,
    "alter_configs": 11,
    "idempotent_write": 12,
    "create_tokens": 13,
    "describe_tokens": 14,
    "two_phase_commit": 15,
}
PERMISSION_ALLOW = 3
CLUSTER_RESOURCE = "kafka-cluster"


class AclError(RuntimeError):
    """The broker rejected or did not apply an ACL change."""


def _code(table: Mapping[str, int], value: str, what: str) -> int:
    key = value.strip().lower().replace("-", "_")
    if key not in table:
        raise ValueError(f"unknown {what} {value!r}; expected one of: {', '.join(sorted(table))}")
    return table[key]


@dataclass(frozen=True)
class AclBinding:
    """One ALLOW entry: `principal` may do `operation` on the resource from `host`."""

    principal: str  # "User:name"
    resource_type: str
    resource_name: str
    operation: str
    pattern: str = "literal"
    host: str = "*"

    def wire(self) -> tuple[int, str, int, str, str, int, int]:
        """The request fields: resource type, name, pattern type, principal, host, operation, permission."""
        return (
            _code(RESOURCE_TYPES, self.resource_type, "resource type"),
            self.resource_name,
            _code(PATTERN_TYPES, self.pattern, "pattern type"),
            self.principal,
            self.host,
            _code(OPERATIONS, self.operation, "operation"),
            PERMISSION_ALLOW,
        )


def allow_bindings(
    principal: str,
    resource_type: str,
    name: str,
    operations: str | Iterable[str],
    *,
    pattern: str = "LITERAL",
    host: str = "*",
) -> list[AclBinding]:
    """ALLOW bindings for each operation; a bare user name becomes "User:name", a cluster's name "kafka-cluster"."""
    if isinstance(operations, str):
        operations = [operations]
    principal = principal if ":" in principal else f"User:{principal}"
    if resource_type.strip().lower() == "cluster" and not name:
        name = CLUSTER_RESOURCE
    bindings = [AclBinding(principal, resource_type, name, op, pattern, host) for op in operations]
    if not bindings:
        raise ValueError("no operations to grant")
    for binding in bindings:
        binding.wire()  # validate names before anything is sent
    return bindings


async def _send(client: AIOKafkaClient, request: Any) -> Any:
    return await client.send(client.get_random_node(), request)


async def _visible(client: AIOKafkaClient, binding: AclBinding) -> bool:
    response = await _send(client, DescribeAclsRequest(*binding.wire()))
    if response.error_code:
        raise AclError(f"DescribeAcls failed for {binding}: error {response.error_code} {response.error_message}")
    return bool(response.resources)


async def create_acls(
    client_kwargs: Mapping[str, Any], bootstrap: str, bindings: Iterable[AclBinding], *, timeout: float = 30.0
) -> None:
    """Create the ALLOW `bindings` as the client described by `client_kwargs` and wait until the broker applies
    them (DescribeAcls lists each); raise AclError on a rejection or when `timeout` seconds pass."""
    bindings = list(bindings)
    client = AIOKafkaClient(bootstrap_servers=bootstrap, **client_kwargs)
    try:
        await client.bootstrap()
        for binding in bindings:
            response = await _send(client, CreateAclsRequest(*binding.wire()))
            for error_code, error_message in response.creation_responses:
                if error_code:
                    raise AclError(f"CreateAcls rejected {binding}: error {error_code} {error_message}")
        deadline = time.monotonic() + timeout
        pending = list(bindings)
        while pending:
            pending = [binding for binding in pending if not await _visible(client, binding)]
            if pending and time.monotonic() > deadline:
                raise AclError(f"the broker did not apply {pending} within {timeout:.0f}s")
            if pending:
                await asyncio.sleep(0.05)
    finally:
        await client.close()
