"""cdk-nag AwsSolutions checks: nothing open, every accepted finding acknowledged with a reason."""

from __future__ import annotations

import pytest

from infrastructure.nag import FINDINGS, unacknowledged_findings


@pytest.mark.parametrize("app", ["default_app", "full_app"])
def test_aws_solutions_checks_pass(request, app):
    synthesized = request.getfixturevalue(app)
    report = synthesized.validation_report
    assert report is not None, "cdk-nag did not run"
    assert unacknowledged_findings(report) == []
    assert [plugin["conclusion"] for plugin in report["pluginReports"]] == ["success"]


def test_every_acknowledgment_has_a_reason():
    for finding in FINDINGS:
        assert len(finding.reason) > 40, finding.rule
