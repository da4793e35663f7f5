"""The optional STAC API stack (eoapi-cdk PgStacApiLambda), to look at what landed in pgstac."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack, Tags
from aws_cdk import aws_lambda as lambda_
from constructs import Construct
from eoapi_cdk import PgStacApiLambda

from infrastructure.config import DeploymentConfig
from infrastructure.database import DatabaseStack
from infrastructure.network import NetworkStack


class StacApiStack(Stack):
    """stac-fastapi-pgstac behind an HTTP API, reading pgstac as the application user.

    eoapi-cdk packages this Lambda with `docker build` while the app is synthesized, so enabling
    it (config: stac_api.enabled) needs Docker at synth time; `code` replaces that in tests.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        network: NetworkStack,
        database: DatabaseStack,
        code: lambda_.Code | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        function_options: dict = {
            "securityGroups": [database.client_security_group],
            "allowPublicSubnet": False,
        }
        if code is not None:
            function_options["code"] = code
        self.api = PgStacApiLambda(
            self,
            "StacApi",
            vpc=network.vpc,
            subnet_selection=network.lambda_subnets,
            db=database.pgstac.db,
            db_secret=database.pgstac_secret,
            lambda_function_options=function_options,
        )
        CfnOutput(self, "StacApiUrl", value=self.api.url)
        Tags.of(self).add("project", config.project_name)
