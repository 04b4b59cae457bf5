"""The docs stay true to the code: the README's layout names every module, the tables are current."""

import os
import re
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import tables  # pylint: disable=g-import-not-at-top,wrong-import-position


def _layout():
  """The README's Layout section."""
  readme = (REPO / "README.md").read_text()
  return readme[readme.index("## Layout"):readme.index("## Documentation")]


def test_readme_layout_names_every_module():
  """Each module of trainer/ (and each folder of tests/) appears in the README's layout."""
  layout = _layout()
  modules = {path.name for path in (REPO / "trainer").rglob("*.py")
             if path.name != "__init__.py" and path.parent.name != "configs"}
  assert sorted(name for name in modules if name not in layout) == []
  folders = {path.name for path in (REPO / "tests").iterdir() if (path / "__init__.py").exists()}
  assert sorted(f"tests/{name}/" for name in folders if f"tests/{name}/" not in layout
                and name not in layout) == []


@pytest.mark.parametrize("document", tables.DOCUMENTS)
def test_generated_tables_are_current(document):
  """`python benchmarks/tables.py` would change nothing: tables match their result files and the
  config's fields."""
  text = (REPO / document).read_text()
  assert tables.render(text) == text, f"run python benchmarks/tables.py ({document} is stale)"


def test_every_document_with_a_table_is_rendered():
  """A table marker in a Markdown file that tables.py does not rewrite would go stale."""
  marked = {os.path.relpath(path, REPO) for path in [REPO / "README.md", *REPO.glob("docs/*.md")]
            if "<!-- table:" in path.read_text()}
  assert marked <= set(tables.DOCUMENTS)


def test_every_fault_in_the_operations_table_names_tests_that_exist():
  """Each row of docs/operations.md's fault table names test files and tests found in them."""
  operations = (REPO / "docs" / "operations.md").read_text()
  table = operations[operations.index("| fault |"):operations.index("\n\n", operations.index(
      "| fault |"))]
  rows = table.splitlines()[2:]
  assert len(rows) >= 10
  for row in rows:
    cell = row.split("|")[-2]
    files = re.findall(r"\((\.\./tests/[\w/]+\.py)\)", cell)
    assert files, row
    tests = "".join((REPO / "docs" / path).resolve().read_text() for path in files)
    for name in re.findall(r"`(\w+)`", cell):
      assert re.search(rf"def test_\w*{name}", tests), (name, files)
