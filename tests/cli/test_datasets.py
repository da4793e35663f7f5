"""Dataset definitions (``datasets/*.yaml``) and ``stactools-ingest dataset run|check|list``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from geotiffs import GLAD_COLLECTION
from moto_stack import STACK

from stactools_ingest.commands import dataset as dataset_command
from stactools_ingest.datasets import DatasetError, load

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "stactools-ingest")
DEFINITIONS = sorted((REPO / "datasets").glob("*.yaml"))

GOOD = """\
package: stactools-glad-glclu2020==0.1.1
extra_packages: ["affine<3"]
group: gladglclu2020
collection:
  options: {type: annual}
  partition_trunc: year
items:
  href_template: "{href}"
  options: {href-format: "examples/glad/data/{year}/{loc}.tif"}
inventory:
  source: examples/glad/hrefs.txt
"""


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def write(tmp_path: Path, text: str, name: str = "ds.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.stem)
def test_every_definition_in_the_repository_is_valid_and_its_inventory_exists(path):
    definition = load(path)
    source = definition.inventory.source
    assert source.startswith("s3://") or (REPO / source).is_file()


def test_the_glad_example_is_defined():
    assert [p.stem for p in DEFINITIONS] == ["glad-glclu2020"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("collection:", "colection:"), "colection: unknown key (known: description, package,"),
        (
            ("  options: {type: annual}", "  optoins: {type: annual}"),
            "collection.optoins: unknown key (known: id, args, options, partition_trunc)",
        ),
        (
            ("partition_trunc: year", "partition_trunc: week"),
            "collection.partition_trunc: Input should be 'year' or 'month'",
        ),
        (("==0.1.1", ""), "package: pin one exact version (stactools-glad-glclu2020==X.Y.Z)"),
        (
            ('href_template: "{href}"', 'href_template: "{url}"'),
            "items.href_template: must contain {href}",
        ),
        (("group: gladglclu2020", "group: glad glclu"), "group_name must be a single"),
        (("inventory:\n  source: examples/glad/hrefs.txt\n", ""), "inventory: missing (required)"),
        (("group: gladglclu2020", "group: [gladglclu2020"), ":4: not valid YAML"),
        (
            ("{type: annual}", "{type: annual, version: 1.10}"),
            "collection.options.version: Input should be a valid string (quote it",
        ),
        (
            ("{type: annual}", "{type: annual, at: 12:30:00}"),
            "collection.options.at: Input should be a valid string (quote it",
        ),
        (
            ("group: gladglclu2020", "group: gladglclu2020\ngroup: other"),
            "group: given twice (lines 3 and 4)",
        ),
        (("==0.1.1", "==0.*"), "package: pin one exact version"),
        (("==0.1.1", ">=0.1,==0.1.1"), "package: pin one exact version"),
    ],
)
def test_a_mistake_is_one_line_naming_the_file_and_the_key(tmp_path, edit, message):
    old, new = edit
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(DatasetError) as exc:
        load(path)
    text = str(exc.value)
    assert text.startswith(str(path)), text
    assert message in text, text
    assert "\n" not in text


def test_a_typo_from_the_command_line_is_one_line_and_exit_2(tmp_path):
    path = write(tmp_path, GOOD.replace("collection:", "colection:"))
    result = cli("dataset", "run", str(path), "--dry-run")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}: colection: unknown key")
    assert len(result.stderr.strip().splitlines()) == 1
    unknown = cli("dataset", "run", "no-such-dataset")
    assert unknown.returncode == 2
    assert "no dataset 'no-such-dataset'" in unknown.stderr
    assert "(known: glad-glclu2020)" in unknown.stderr


def test_dataset_run_creates_the_collection_then_its_items_and_a_rerun_changes_nothing(pgstac):
    # WHEN the GLAD definition runs here
    first = cli("dataset", "run", "glad-glclu2020", "--dsn", pgstac.dsn, "--json")
    # THEN the collection and the six items landed, partitioned by year as the file asks
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert (summary["requests"], summary["failed"], summary["items_loaded"]) == (7, 0, 6)
    assert len(pgstac.item_ids(GLAD_COLLECTION)) == 6
    with pgstac.connect() as conn:
        trunc, content = conn.execute(
            "SELECT partition_trunc, content FROM collections WHERE id = %s", (GLAD_COLLECTION,)
        ).fetchone()
        partitions = conn.execute(
            "SELECT count(*) FROM partitions_view WHERE collection = %s", (GLAD_COLLECTION,)
        ).fetchone()[0]
    assert trunc == "year" and "stactools_ingest:partition_trunc" not in content
    assert partitions == 2  # 2015 and 2020
    # AND running it again loads nothing twice
    again = cli("dataset", "run", "glad-glclu2020", "--dsn", pgstac.dsn, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["items_loaded"] == 0
    assert len(pgstac.item_ids(GLAD_COLLECTION)) == 6


def test_dataset_check_runs_one_sample_and_loads_nothing(pgstac):
    result = cli("dataset", "check", "glad-glclu2020")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"item 2015_40N_000E of collection {GLAD_COLLECTION}: ok")
    assert f"collection {GLAD_COLLECTION}: ok" in result.stderr
    # AND a sample the package cannot read fails with the package's reason, in one line
    bad = cli("dataset", "check", "glad-glclu2020", "--href", "examples/glad/data/none.tif")
    assert bad.returncode == 2
    [line] = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
    assert "create-item" in line and "none.tif" in bad.stderr
    assert pgstac.count() == 0


def test_dataset_run_to_a_stack_publishes_the_collection_request_first_then_resumes(
    deployed, tmp_path, monkeypatch
):
    monkeypatch.setenv("STACTOOLS_INGEST_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    run = ["run", "glad-glclu2020", "--stack", STACK, "--workers", "1"]
    result = CliRunner().invoke(dataset_command.dataset, run)
    assert result.exit_code == 0, result.output
    published = deployed.published("gen")
    assert "create_collection_options" in published[0]
    assert published[0]["partition_trunc"] == "year"
    assert sorted(r["create_item_args"][0] for r in published[1:]) == sorted(
        line
        for line in (REPO / "examples/glad/hrefs.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    again = CliRunner().invoke(dataset_command.dataset, run)
    assert again.exit_code == 0 and "already submitted in full" in again.stderr
    assert deployed.published("gen") == []
