"""The database and network stacks: pgstac on RDS, never open to the internet."""

from __future__ import annotations

import json

import pytest

from infrastructure.database import INGEST_USERNAME

PUBLIC = {"0.0.0.0/0", "::/0"}


def _resources(template: dict, type_: str) -> dict:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == type_}


def _ingress_rules(template: dict) -> list[dict]:
    """Every ingress rule: inline in security groups and standalone."""
    rules = [
        rule
        for group in _resources(template, "AWS::EC2::SecurityGroup").values()
        for rule in group["Properties"].get("SecurityGroupIngress", [])
    ]
    rules += [
        r["Properties"] for r in _resources(template, "AWS::EC2::SecurityGroupIngress").values()
    ]
    return rules


def _covers_postgres(rule: dict) -> bool:
    if rule.get("IpProtocol") == "-1":
        return True
    return rule.get("FromPort", 0) <= 5432 <= rule.get("ToPort", 65535)


@pytest.mark.parametrize("app", ["default_app", "full_app"])
def test_nothing_open_to_the_internet_on_the_database_port(request, app):
    synthesized = request.getfixturevalue(app)
    for name, template in synthesized.templates.items():
        for rule in _ingress_rules(template):
            if _covers_postgres(rule):
                assert rule.get("CidrIp") not in PUBLIC, (name, rule)
                assert rule.get("CidrIpv6") not in PUBLIC, (name, rule)


def test_database_admits_only_its_clients_and_operator_cidrs(full_app):
    template = full_app.templates["database"]
    (db,) = _resources(template, "AWS::RDS::DBInstance").values()
    (db_group,) = db["Properties"]["VPCSecurityGroups"]
    group_id = db_group["Fn::GetAtt"][0]
    sources = set()
    for rule in _ingress_rules(template):
        if rule.get("GroupId", {"Fn::GetAtt": [group_id]})["Fn::GetAtt"][0] != group_id:
            continue
        assert (rule["FromPort"], rule["ToPort"]) == (5432, 5432)
        source = rule.get("SourceSecurityGroupId", {}).get("Fn::GetAtt", [rule.get("CidrIp")])[0]
        sources.add(source)
    inline = template["Resources"][group_id]["Properties"].get("SecurityGroupIngress", [])
    sources |= {rule["CidrIp"] for rule in inline}
    assert {s if "/" in s else s.rstrip("0123456789ABCDEF") for s in sources} == {
        "DatabaseClientSecurityGroup",
        "PgstaclambdaSecurityGroup",  # eoapi-cdk's bootstrapper
        "192.0.2.0/24",
    }


def test_database_settings(default_app):
    template = default_app.templates["database"]
    (db,) = _resources(template, "AWS::RDS::DBInstance").values()
    props = db["Properties"]
    assert props["StorageEncrypted"] is True
    assert props["PubliclyAccessible"] is False
    assert props["BackupRetentionPeriod"] == 7
    assert props["DeletionProtection"] is True
    assert props["DBInstanceClass"] == "db.t4g.small"
    assert props["EngineVersion"] == "17.9"  # a pinned minor: RDS never picks one at deploy
    assert props["StorageType"] == "gp3"
    assert props["MultiAZ"] is False
    assert db["DeletionPolicy"] == "Snapshot"
    (subnets,) = _resources(template, "AWS::RDS::DBSubnetGroup").values()
    assert all("isolatedSubnet" in s["Fn::ImportValue"] for s in subnets["Properties"]["SubnetIds"])


def test_bootstrapper_installs_pgstac_and_the_ingest_login(default_app):
    template = default_app.templates["database"]
    (bootstrap,) = _resources(template, "AWS::CloudFormation::CustomResource").values()
    props = bootstrap["Properties"]
    assert props["pgstac_version"] == "0.9.8"
    assert props["ingest_user_secret_arn"]["Ref"].startswith("IngestUserSecret")
    assert len(props["code_hash"]) == 64
    (db_id,) = _resources(template, "AWS::RDS::DBInstance")
    function_id = props["ServiceToken"]["Fn::GetAtt"][0]
    function = template["Resources"][function_id]["Properties"]
    assert function["PackageType"] == "Image"  # an asset built at deploy, not at synth
    (ingest_secret,) = [
        r
        for k, r in _resources(template, "AWS::SecretsManager::Secret").items()
        if k.startswith("IngestUserSecret")
    ]
    template_string = ingest_secret["Properties"]["GenerateSecretString"]["SecretStringTemplate"]
    parts = template_string["Fn::Join"][1]
    assert parts[1] == {"Fn::GetAtt": [db_id, "Endpoint.Address"]}
    assert json.loads(parts[0] + "HOST" + parts[2]) == {
        "dbname": "pgstac",
        "engine": "postgres",
        "port": 5432,
        "host": "HOST",
        "username": INGEST_USERNAME,
    }


def test_bootstrapper_grants_the_ingest_login_pgstac_ingest_only():
    from infrastructure.database import BOOTSTRAPPER_DIR

    source = (BOOTSTRAPPER_DIR / "handler.py").read_text()
    grant = source.split("def grant_ingest_user", 1)[1].split("\ndef ", 1)[0]
    assert "GRANT pgstac_ingest TO {user}" in grant
    assert "pgstac_admin" not in grant


def test_network_has_three_tiers_and_endpoints(default_app):
    template = default_app.templates["network"]
    subnets = _resources(template, "AWS::EC2::Subnet")
    kinds = {
        tag["Value"]
        for subnet in subnets.values()
        for tag in subnet["Properties"]["Tags"]
        if tag["Key"] == "aws-cdk:subnet-type"
    }
    assert kinds == {"Public", "Private", "Isolated"}
    assert len(_resources(template, "AWS::EC2::NatGateway")) == 1
    services = sorted(
        "".join(str(part) for part in e["Properties"]["ServiceName"]["Fn::Join"][1]).rsplit(".", 1)[
            1
        ]
        for e in _resources(template, "AWS::EC2::VPCEndpoint").values()
    )
    assert services == ["logs", "s3", "secretsmanager", "sns", "sqs"]
    for rule in _ingress_rules(template):
        assert rule.get("CidrIp") not in PUBLIC


def test_no_nat_puts_lambdas_in_isolated_subnets():
    from aws_cdk import App

    from infrastructure.config import DeploymentConfig
    from infrastructure.network import NetworkStack

    stack = NetworkStack(App(), "n", config=DeploymentConfig(network={"nat_gateways": 0}))
    assert stack.lambda_subnets.subnet_type.name == "PRIVATE_ISOLATED"
