"""The package's floors: every import goes down (or sideways), never up, and no two packages import
each other; the training library does not pull in Apache Beam."""

import ast
import collections
import pathlib

TRAINER = pathlib.Path(__file__).resolve().parent.parent / "trainer"
# Lowest first. A module may import from its own floor or below, never above.
FLOORS = {
    "errors": 0, "storage": 0, "config": 0, "configs": 0,
    "data": 1, "cluster": 1,
    "modeling": 2,
    "serving": 3,
    "training": 4,
    "retraining": 5, "diagnostics": 5,
    "cli": 6, "train": 6, "prepare": 6, "predict": 6, "promote": 6, "retrain": 6, "preflight": 6,
    "testing": 7,
}
# `config.get_preset` loads trainer/configs/<name>.py by name (importlib): the one import that runs
# back up, and not an import statement.


def _part(module):
  """The top-level part of trainer a dotted module name belongs to (trainer.data.text -> data)."""
  return module.split(".")[1]


def _imports():
  """{module: {trainer modules it imports}} from the source, statically."""
  graph = collections.defaultdict(set)
  for path in TRAINER.rglob("*.py"):
    module = ".".join(path.relative_to(TRAINER.parent).with_suffix("").parts).removesuffix(
        ".__init__")
    if module == "trainer":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainer"):
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          is_module = (TRAINER.parent / (full.replace(".", "/") + ".py")).exists() or (
              TRAINER.parent / full.replace(".", "/")).is_dir()
          graph[module].add(full if is_module else node.module)
      elif isinstance(node, ast.Import):
        graph[module] |= {alias.name for alias in node.names if alias.name.startswith("trainer.")}
    graph[module].discard("trainer")
  return graph


def _source(module):
  """The file of a trainer module or package."""
  path = TRAINER.parent / module.replace(".", "/")
  return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _external_imports(path):
  """The top-level names of the packages a file imports that are not trainer's."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module.split(".")[0])
    elif isinstance(node, ast.Import):
      names |= {alias.name.split(".")[0] for alias in node.names}
  return names - {"trainer"}


def test_every_part_has_a_floor():
  """A new package or main gets a floor here before it lands."""
  parts = {path.stem if path.is_file() else path.name for path in TRAINER.iterdir()
           if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()}
  assert parts == set(FLOORS)


def test_imports_never_go_up_a_floor():
  """From a floor only the same floor or lower ones are imported."""
  upward = sorted(f"{module} -> {imported}" for module, imports in _imports().items()
                  for imported in imports if FLOORS[_part(imported)] > FLOORS[_part(module)])
  assert upward == []


def test_no_two_packages_import_each_other():
  """Between two parts, imports go one way at most."""
  parts = collections.defaultdict(set)
  for module, imports in _imports().items():
    parts[_part(module)] |= {_part(imported) for imported in imports} - {_part(module)}
  assert sorted(f"{a} <-> {b}" for a in parts for b in parts[a] if a < b and a in parts[b]) == []


def test_the_training_library_does_not_import_beam():
  """train_lib and everything it imports, transitively, leave Apache Beam out (prepare is a main's
  or retraining's business)."""
  graph, seen, pending = _imports(), set(), ["trainer.training.train_lib"]
  while pending:
    module = pending.pop()
    if module not in seen:
      seen.add(module)
      pending += graph[module]
  beam_users = sorted(module for module in seen if "apache_beam" in _external_imports(
      _source(module)))
  assert len(seen) > 10 and beam_users == []
