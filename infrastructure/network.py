"""The network stack: a VPC with public, private and isolated subnets and AWS service endpoints."""

from __future__ import annotations

from aws_cdk import Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infrastructure.config import DeploymentConfig

VPC_CIDR = "10.20.0.0/16"

# Interface endpoints the ItemLoad function (in private subnets) calls without a NAT gateway.
INTERFACE_ENDPOINTS = {
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
}


class NetworkStack(Stack):
    """The VPC: public subnets (NAT), private subnets (Lambdas), isolated subnets (database)."""

    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig, **kwargs) -> None:
        super().__init__(scope, id, **kwargs)
        net = config.network

        subnets = [
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
            ec2.SubnetConfiguration(
                name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
            ),
        ]
        if net.nat_gateways > 0:
            subnets.insert(
                1,
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                ),
            )

        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=net.max_azs,
            nat_gateways=net.nat_gateways,
            subnet_configuration=subnets,
            restrict_default_security_group=True,
        )

        # Flow logs of rejected traffic: cheap, and the first thing to look at when a Lambda
        # cannot reach the database.
        flow_log_group = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH)
        flow_log_role = iam.Role(
            self, "FlowLogsRole", assumed_by=iam.ServicePrincipal("vpc-flow-logs.amazonaws.com")
        )
        self.vpc.add_flow_log(
            "RejectedFlows",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group, flow_log_role),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )

        # Lambdas run in the private subnets when there is a NAT (https hrefs need the internet),
        # otherwise in the isolated ones and reach AWS only through the endpoints below.
        self.lambda_subnets = ec2.SubnetSelection(
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
            if net.nat_gateways > 0
            else ec2.SubnetType.PRIVATE_ISOLATED
        )
        self.database_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)

        self.vpc.add_gateway_endpoint(
            "S3Endpoint",
            service=ec2.GatewayVpcEndpointAwsService.S3,
            subnets=[self.lambda_subnets, self.database_subnets],
        )
        if net.interface_endpoints:
            # One group for all endpoints: HTTPS from inside the VPC. The CIDR is written out
            # (not the VPC's CidrBlock attribute) so the rule is checkable at synth time.
            endpoint_sg = ec2.SecurityGroup(
                self,
                "EndpointSecurityGroup",
                vpc=self.vpc,
                description="AWS service endpoints: HTTPS from inside the VPC",
                allow_all_outbound=False,
            )
            endpoint_sg.add_ingress_rule(
                ec2.Peer.ipv4(VPC_CIDR), ec2.Port.tcp(443), "HTTPS from the VPC"
            )
            for name, service in INTERFACE_ENDPOINTS.items():
                self.vpc.add_interface_endpoint(
                    f"{name}Endpoint",
                    service=service,
                    subnets=self.lambda_subnets,
                    private_dns_enabled=True,
                    open=False,
                    security_groups=[endpoint_sg],
                )
        Tags.of(self).add("project", config.project_name)
