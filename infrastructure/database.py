"""The database stack: pgstac on RDS PostgreSQL via eoapi-cdk's PgStacDatabase."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct
from eoapi_cdk import PgStacDatabase

from infrastructure.assets import asset_platform
from infrastructure.config import DeploymentConfig
from infrastructure.network import NetworkStack

BOOTSTRAPPER_DIR = Path(__file__).resolve().parent / "bootstrapper"
PGSTAC_DB_NAME = "pgstac"
APP_USERNAME = "pgstac_user"
INGEST_USERNAME = "pgstac_ingest_user"
POSTGRES_PORT = 5432


class DatabaseStack(Stack):
    """RDS PostgreSQL with PostGIS and pgstac, reachable only from its client security group."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        network: NetworkStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        db_config = config.database
        vpc = network.vpc

        self.security_group = ec2.SecurityGroup(
            self,
            "DatabaseSecurityGroup",
            vpc=vpc,
            description="pgstac database: PostgreSQL from its clients only",
            allow_all_outbound=False,
        )
        # Functions that talk to pgstac (ItemLoad, the STAC API) carry this group; the database
        # admits it and nothing else by default. It lives here, not in the ingestion stack, so
        # that the ingress rule does not make the two stacks depend on each other.
        self.client_security_group = ec2.SecurityGroup(
            self,
            "DatabaseClientSecurityGroup",
            vpc=vpc,
            description="pgstac clients: PostgreSQL to the database, HTTPS out",
            allow_all_outbound=False,
        )
        self.client_security_group.add_egress_rule(
            self.security_group, ec2.Port.tcp(POSTGRES_PORT), "PostgreSQL to pgstac"
        )
        self.client_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS endpoints and https hrefs"
        )
        self.security_group.add_ingress_rule(
            self.client_security_group, ec2.Port.tcp(POSTGRES_PORT), "PostgreSQL from clients"
        )
        for cidr in db_config.db_allowed_cidrs:
            peer = ec2.Peer.ipv6(cidr) if ":" in cidr else ec2.Peer.ipv4(cidr)
            self.security_group.add_ingress_rule(
                peer, ec2.Port.tcp(POSTGRES_PORT), "PostgreSQL from an operator network"
            )

        # The ingest login ItemLoad uses. Same shape as the secret eoapi-cdk writes for its user
        # (host, port, dbname, username, password); the bootstrapper creates the role.
        self.db_engine = rds.DatabaseInstanceEngine.postgres(
            version=rds.PostgresEngineVersion.of(
                db_config.postgres_version, db_config.postgres_version.split(".")[0]
            )
        )

        bootstrapper_code = lambda_.Code.from_asset_image(
            str(BOOTSTRAPPER_DIR),
            build_args={"PGSTAC_VERSION": db_config.pgstac_version, "PYTHON_VERSION": "3.12"},
            platform=asset_platform("x86_64"),
        )

        self.pgstac = PgStacDatabase(
            self,
            "Pgstac",
            vpc=vpc,
            # Public subnets only on request; the security group still admits only clients
            # and db_allowed_cidrs.
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
            if db_config.publicly_accessible
            else network.database_subnets,
            engine=self.db_engine,
            instance_type=ec2.InstanceType(db_config.instance_type),
            allocated_storage=db_config.allocated_storage_gib,
            max_allocated_storage=db_config.max_allocated_storage_gib,
            storage_type=rds.StorageType.GP3,
            storage_encrypted=True,
            multi_az=db_config.multi_az,
            backup_retention=Duration.days(db_config.backup_retention_days),
            deletion_protection=db_config.deletion_protection,
            removal_policy=RemovalPolicy.SNAPSHOT,
            publicly_accessible=db_config.publicly_accessible,
            security_groups=[self.security_group],
            cloudwatch_logs_exports=["postgresql"],
            cloudwatch_logs_retention=logs.RetentionDays.ONE_MONTH,
            pgstac_db_name=PGSTAC_DB_NAME,
            pgstac_username=APP_USERNAME,
            pgstac_version=db_config.pgstac_version,
            # A pooler on EC2 is not needed for a handful of loaders (each warm ItemLoad keeps
            # one connection). ItemLoad itself works behind a transaction-mode pooler (its
            # staging table is made inside each transaction, see item_load/upsert.py), but sets
            # search_path and lock_timeout as libpq startup options a pooler must pass on.
            add_pgbouncer=False,
            bootstrapper_lambda_function_options={
                "code": bootstrapper_code,
                "runtime": lambda_.Runtime.FROM_IMAGE,
                "handler": lambda_.Handler.FROM_IMAGE,
                # eoapi-cdk sets logRetention (one week) itself and it cannot be unset here.
                "memorySize": 512,
                "vpcSubnets": network.lambda_subnets,
                "allowPublicSubnet": False,
            },
            custom_resource_properties={
                "mosaic_index": "TRUE",
                # eoapi-cdk adds these two only for its own bootstrapper code. A changed version
                # or bootstrapper makes CloudFormation run the bootstrap again.
                "pgstac_version": db_config.pgstac_version,
                "code_hash": _bootstrapper_hash(),
            },
        )

        self.pgstac_secret: secretsmanager.ISecret = self.pgstac.pgstac_secret
        self.ingest_secret = secretsmanager.Secret(
            self,
            "IngestUserSecret",
            description=f"pgstac ingest login (pgstac_ingest role) for {self.stack_name}",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps(
                    {
                        "dbname": PGSTAC_DB_NAME,
                        "engine": "postgres",
                        "port": POSTGRES_PORT,
                        "host": self.pgstac.db.instance_endpoint.hostname,
                        "username": INGEST_USERNAME,
                    }
                ),
                generate_string_key="password",
                exclude_punctuation=True,
            ),
        )
        bootstrapper = self.pgstac.node.find_child("lambda")
        self.ingest_secret.grant_read(bootstrapper)
        # The bootstrapper creates the ingest login; it learns of the secret from here.
        bootstrap_resource = self.pgstac.node.find_child("bootstrapper")
        bootstrap_resource.node.default_child.add_property_override(
            "ingest_user_secret_arn", self.ingest_secret.secret_arn
        )
        self.bootstrap_resource = bootstrap_resource
        Tags.of(self).add("project", config.project_name)


def _bootstrapper_hash() -> str:
    """A digest of the bootstrapper's Dockerfile and handler."""
    digest = hashlib.sha256()
    for name in ("Dockerfile", "handler.py"):
        digest.update((BOOTSTRAPPER_DIR / name).read_bytes())
    return digest.hexdigest()
