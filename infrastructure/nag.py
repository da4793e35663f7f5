"""cdk-nag AwsSolutions acknowledgments: every accepted finding, where it applies and why."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

from infrastructure.config import DeploymentConfig

_BASIC_EXECUTION = (
    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
)
_VPC_EXECUTION = (
    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
)


@dataclass(frozen=True)
class Finding:
    """An accepted cdk-nag finding: rule id (with its finding suffix), construct paths, reason."""

    rule: str
    paths: tuple[str, ...]
    reason: str


FINDINGS: tuple[Finding, ...] = (
    Finding(
        "AwsSolutions-SMG4",
        (
            "*-database/Pgstac/db/Secret",
            "*-database/Pgstac/bootstrappersecret",
            "*-database/IngestUserSecret",
        ),
        "No automatic rotation: ItemLoad and the STAC API cache the credentials for the life of "
        "a warm container, so a rotation would fail loads until every container recycles. The "
        "secrets stay in Secrets Manager, readable only by the functions that use them; "
        "operators who need rotation can add it with a single-user rotation schedule.",
    ),
    Finding(
        "AwsSolutions-RDS11",
        ("*-database/Pgstac/db",),
        "Default PostgreSQL port: a non-standard port is obscurity, not access control. The "
        "instance is in isolated subnets and its security group admits only the pgstac client "
        "group and the operator CIDRs from config.",
    ),
    Finding(
        f"AwsSolutions-IAM4[{_BASIC_EXECUTION}]",
        (
            "*-database/Pgstac/lambda/ServiceRole",
            "*/LogRetention*/ServiceRole",
            "*/BucketNotificationsHandler*/Role",
            "*-stac-api/StacApi/runtime/lambda/ServiceRole",
        ),
        "Roles created inside constructs we do not own (eoapi-cdk's bootstrapper, CDK's log "
        "retention and bucket notification helpers). AWSLambdaBasicExecutionRole only lets them "
        "write their own logs.",
    ),
    Finding(
        f"AwsSolutions-IAM4[{_VPC_EXECUTION}]",
        ("*-database/Pgstac/lambda/ServiceRole", "*-stac-api/StacApi/*/ServiceRole"),
        "eoapi-cdk creates these roles for Lambdas in the VPC; the AWS managed policy holds only "
        "the network-interface actions Lambda needs to attach the function to the VPC.",
    ),
    Finding(
        "AwsSolutions-IAM5[Resource::*]",
        (
            "*-ingestion/ItemLoadFunctionRole/DefaultPolicy",
            "*-ingestion/IngestApiFunctionRole/DefaultPolicy",
        ),
        "The EC2 network-interface actions Lambda uses to place ItemLoad and the ingest API in "
        "the VPC do not support resource-level permissions; this statement holds only those "
        "actions.",
    ),
    Finding(
        "AwsSolutions-IAM5[Resource::*]",
        (
            "*/LogRetention*/ServiceRole/DefaultPolicy",
            "*/BucketNotificationsHandler*/Role/DefaultPolicy",
        ),
        "CDK's log retention and bucket notification helpers set log group retention and "
        "bucket notification configuration on resources named at deploy time.",
    ),
    Finding(
        "AwsSolutions-IAM5[Resource::<PayloadBucket357F5869.Arn>/*]",
        (
            "*-ingestion/ItemGenFunctionRole/DefaultPolicy",
            "*-ingestion/ItemLoadFunctionRole/DefaultPolicy",
            "*-ingestion/IngestApiFunctionRole/DefaultPolicy",
        ),
        "Object-level access to the payload bucket only: ItemGen and the ingest API may "
        "s3:PutObject and ItemLoad may s3:GetObject; object keys are generated per item, so "
        "they cannot be listed ahead.",
    ),
    Finding(
        "AwsSolutions-S1",
        ("*-ingestion/PayloadBucket",),
        "No server access logs: the bucket holds transient copies of oversized items that "
        "expire after a few days; writes and reads come only from the two stage roles, whose "
        "activity is in CloudTrail and the functions' logs.",
    ),
)

STAC_API = (
    Finding(
        "AwsSolutions-L1",
        ("*-stac-api/StacApi/runtime/lambda",),
        "eoapi-cdk pins the Python runtime its STAC API package is built for; upgrading it "
        "is eoapi-cdk's change to make.",
    ),
    Finding(
        "AwsSolutions-APIG4",
        ("*-stac-api/StacApi/stac-api/api/DefaultRoute",),
        "The optional STAC API is a read-only view for checking what landed (off by default). "
        "Put eoapi-cdk's StacAuthProxyLambda in front of it before it serves a private catalog.",
    ),
    Finding(
        "AwsSolutions-APIG1",
        ("*-stac-api/StacApi/stac-api/api/DefaultStage",),
        "The HTTP API stage comes from eoapi-cdk; every request reaches the STAC API Lambda, "
        "whose own log group records it.",
    ),
)

MULTI_AZ = Finding(
    "AwsSolutions-RDS3",
    ("*-database/Pgstac/db",),
    "Single-AZ by default (config database.multi_az) to keep a test deployment's cost down; "
    "automated backups are on. Set database.multi_az: true for production.",
)

EVENT_SOURCE_BUCKETS = Finding(
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::*/*]",
    ("*-ingestion/ItemLoadFunctionRole/DefaultPolicy",),
    "Object-level read access to the S3 event-source and readable buckets named in config; "
    "ItemLoad reads the objects whose ObjectCreated events or pointers it receives.",
)

GEN_READABLE_BUCKETS = Finding(
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::*/*]",
    ("*-ingestion/ItemGenFunctionRole/DefaultPolicy",),
    "Object-level read access to the buckets named in item_gen.readable_buckets: requests name "
    "their inputs as s3://bucket/key, which the stactools package reads.",
)


def suppress_findings(stacks: list[Stack], config: DeploymentConfig) -> list[Finding]:
    """Acknowledge the accepted findings on the constructs they apply to; return them."""
    findings = list(FINDINGS)
    if config.stac_api.enabled:
        findings.extend(STAC_API)
    if not config.database.multi_az:
        findings.append(MULTI_AZ)
    for name in dict.fromkeys(
        [*config.item_load.s3_event_buckets, *config.item_load.readable_buckets]
    ):
        findings.append(
            Finding(
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{name}/*]",
                EVENT_SOURCE_BUCKETS.paths,
                EVENT_SOURCE_BUCKETS.reason,
            )
        )
    for name in config.item_gen.readable_buckets:
        findings.append(
            Finding(
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{name}/*]",
                GEN_READABLE_BUCKETS.paths,
                GEN_READABLE_BUCKETS.reason,
            )
        )
    for stack in stacks:
        for construct in _walk(stack):
            path = construct.node.path
            for finding in findings:
                if any(fnmatchcase(path, pattern) for pattern in finding.paths):
                    Validations.of(construct).acknowledge(
                        Acknowledgment(id=f"AwsSolutions::{finding.rule}", reason=finding.reason)
                    )
    return findings


def unacknowledged_findings(report: dict) -> list[tuple[str, str]]:
    """(rule, construct path) of every finding in a validation report without an acknowledgment."""
    return [
        (violation["ruleName"], construct["constructPath"])
        for plugin in report.get("pluginReports", [])
        for violation in plugin["violations"]
        if "acknowledgedId" not in violation
        for construct in violation["violatingConstructs"]
    ]


def _walk(root: IConstruct):
    """Every construct under root, root included."""
    yield root
    for child in root.node.children:
        yield from _walk(child)
