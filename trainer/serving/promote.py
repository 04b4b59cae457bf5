"""Promotes an export to production only if it serves and beats production on the same reviews.

The candidate is an export (local or gs://): a SavedModel with `export_metadata.json`. At
decision time both the candidate and the production model are scored, fresh, on the same
held-out reviews (an `Assessor`: `serving.evaluation` through each export's own raw-text
signature), and the per-review outcomes go through McNemar's exact test, one-sided each way, and
a paired bootstrap over movies (`serving.significance`). Before that, the candidate must load in
a fresh process, answer its warm-up requests and answer one review within the latency budget
(`serving.serving_gate`). Each decision has a verdict:

  promoted    no production model yet; or better by >= min_improvement with p < max_p_value in
              both McNemar's "better" test and the movie bootstrap, on enough reviews to detect
              min_improvement (power 0.8)
  refused     not better, better by too little, on too few reviews to tell, or not significantly
  regression  significantly worse than production (McNemar's "worse" p < max_p_value): an alert
  not_served  failed to load, to answer, or answered slower than max_latency_ms (p99); also a
              model that `rollback()` was asked to go back to
  rolled_back `rollback()` pointed production back at a previous model (which served)

Production (local or gs://, the same layout on both) holds:

  models/<model id>/   a full copy of every promoted export, kept forever
  CURRENT.json         the pointer to the production model (and the models it replaced), switched
                       in one step
  decisions/<time>-<random>.json   one record per decision, whatever the verdict

The copy is complete before the pointer switches. The switch is a compare-and-swap (an fcntl lock
and os.replace locally, a generation precondition on GCS), so of two concurrent promotions only
one wins; the other scores the new production model and decides again.
"""

import dataclasses
import datetime
import uuid

from absl import logging

from trainer.config import option
from trainer.config import Options
from trainer import errors
from trainer.errors import UserInputError
from trainer.serving import evaluation
from trainer.serving import export
from trainer.serving import serving_gate
from trainer.serving import significance
from trainer import storage

POINTER_FORMAT = "imdb-bilstm-production"
POINTER_FORMAT_VERSION = 2  # 2 added `history`, the models each promotion replaced.
POINTER_FILE = "CURRENT.json"
MODELS_DIR = "models"
DECISIONS_DIR = "decisions"
PROMOTED, REFUSED, REGRESSION, NOT_SERVED, ROLLED_BACK = (
    "promoted", "refused", "regression", "not_served", "rolled_back")

# Accuracies are fractions of one set of reviews: differences this small are float rounding.
_TOLERANCE = 1e-9
# What a decision record keeps of the paired comparison (None without a production model).
_COMPARISON_FACTS = ("test", "candidate_only_correct", "production_only_correct",
                     "p_value_better", "p_value_worse", "alpha", "power", "detectable_difference",
                     "bootstrap")


@dataclasses.dataclass(frozen=True)
class Policy(Options):
  """When a candidate replaces production (the flags of promote and retrain)."""
  min_improvement: float = option(0.0, "Least accuracy gain over production, on the same "
                                  "held-out reviews, that promotes, e.g. 0.005.",
                                  bound="nonnegative")
  max_p_value: float = option(0.05, "Largest p-value that counts as a real difference, in "
                              "each one-sided test on the paired answers (McNemar's exact; the "
                              "bootstrap over movies); also the level of the power computed.",
                              bound="probability")
  max_latency_ms: float = option(50.0, "Largest p99 latency in ms of one typical review, "
                                 "served in a fresh process on this machine.", bound="positive")


class Assessor:
  """Scores real exports: the serving gate, then the answers on the held-out reviews."""

  def __init__(self, reviews):
    """Scores on `reviews`, an `evaluation.HeldOutReviews`."""
    self.reviews = reviews
    self.data = reviews.describe()
    self.clusters = reviews.clusters

  def serving(self, model_dir):
    """The serving gate's report for the local export `model_dir`."""
    return serving_gate.measure(model_dir)

  def correct_answers(self, model_dir):
    """Whether the local export `model_dir` labels each held-out review right."""
    return evaluation.correct_answers(model_dir, self.reviews)


# --- The candidate and the production pointer.


def _read_export(store):
  """Checks that `store` holds an export of this project and returns its metadata."""
  where = store.location()
  files = store.list_files()
  if not files:
    raise UserInputError(f"Candidate {where}: nothing is there; pass an export directory (it "
                         f"holds {export.METADATA_FILE} and {export.SAVED_MODEL_FILE}).")
  if export.METADATA_FILE not in files:
    raise UserInputError(f"Candidate {where} is not an export of this project: it has no "
                         f"{export.METADATA_FILE}; pass the directory that training exported.")
  if export.SAVED_MODEL_FILE not in files:
    raise UserInputError(f"Candidate {where} has no {export.SAVED_MODEL_FILE}: the export is "
                         "incomplete; export the model again.")
  return _metadata(store, export.METADATA_FILE)


def _metadata(store, name):
  """The checked export metadata in the file `name` of `store`."""
  return export.parse_metadata(store.read_versioned(name)[0], store.location(name))


def _read_production(store):
  """The production pointer (None before the first promotion) and its compare-and-swap token."""
  data, token = store.read_versioned(POINTER_FILE)
  if data is None:
    return None, token
  location = store.location(POINTER_FILE)
  fix = (f"the pointer is corrupt; rewrite it from the last promoted record in "
         f"{store.location(DECISIONS_DIR)}, or delete it to promote the next candidate "
         "unconditionally.")
  pointer = storage.parse_json_object(data, location, fix)
  if not isinstance(pointer.get("model_id"), str) or not pointer["model_id"]:
    raise UserInputError(f"{location} names no model_id: {fix}")
  history = pointer.setdefault("history", [])  # Format 1 kept none.
  if not (isinstance(history, list) and all(isinstance(item, str) for item in history)):
    raise UserInputError(f"{location}: history is not a list of model ids: {fix}")
  return pointer, token


def _pointer(target, model_id, metadata, history, **facts):
  """The contents of CURRENT.json naming `model_id`."""
  return {"format": POINTER_FORMAT, "format_version": POINTER_FORMAT_VERSION,
          "model_id": model_id, "path": target.location(f"{MODELS_DIR}/{model_id}"),
          "version": metadata["version"], "switched_at": _timestamp(_now()),
          "history": history, **facts}


def _production_answers(target, pointer, assessor):
  """The production model's answers on the held-out reviews, scored now from its copy."""
  model = target.subfolder(f"{MODELS_DIR}/{pointer['model_id']}")
  try:
    with model.local_copy() as model_dir:
      return assessor.correct_answers(model_dir)
  except (UserInputError, OSError, ValueError) as e:
    raise UserInputError(
        f"The production model {model.location()} cannot be scored ({errors.first_line(e)}): "
        "roll back to a previous model with python -m trainer.promote --production=... "
        "--rollback, then promote again.") from e


# --- Deciding and promoting.


def _underpowered(comparison, policy):
  """Whether the reviews are too few for the test to detect `min_improvement` (power 0.8)."""
  detectable = comparison.detectable_difference
  return policy.min_improvement > 0 and (
      detectable is None or detectable > policy.min_improvement + _TOLERANCE)


def _judge(comparison, production, policy):
  """The verdict on the candidate against `production` (a pointer, or None), and why."""
  if production is None:
    return PROMOTED, "no production model yet"
  bootstrap = comparison.bootstrap
  versus = (f"accuracy {comparison.candidate_accuracy:.4%} vs {comparison.production_accuracy:.4%}"
            f" of production model {production['model_id']} on the same {comparison.examples} "
            f"reviews ({comparison.candidate_only_correct} right only by the candidate, "
            f"{comparison.production_only_correct} only by production; one-sided McNemar p = "
            f"{comparison.p_value_better:.3g} better, {comparison.p_value_worse:.3g} worse)")
  improvement = comparison.improvement
  if comparison.p_value_worse < policy.max_p_value:
    return REGRESSION, f"{versus}: significantly worse (p < max_p_value {policy.max_p_value:g})"
  if improvement <= _TOLERANCE:
    return REFUSED, f"{versus}: not better"
  if improvement < policy.min_improvement - _TOLERANCE:
    return REFUSED, (f"{versus}: better by {improvement:.4%}, less than min_improvement "
                     f"{policy.min_improvement:.4%}")
  if _underpowered(comparison, policy):
    return REFUSED, (f"{versus}: better by {improvement:.4%}, but the reviews are too few to tell "
                     f"min_improvement {policy.min_improvement:.4%} from chance: "
                     f"{significance.describe_power(dataclasses.asdict(comparison))}; score on "
                     "more held-out reviews")
  if comparison.p_value_better >= policy.max_p_value:
    return REFUSED, (f"{versus}: better by {improvement:.4%} but not significantly (p >= "
                     f"max_p_value {policy.max_p_value:g})")
  if bootstrap["p_value_better"] >= policy.max_p_value:
    return REFUSED, (f"{versus}: better by {improvement:.4%}, significantly by McNemar but not "
                     f"over movies (bootstrap p = {bootstrap['p_value_better']:.3g} over "
                     f"{bootstrap['clusters']} movies, >= max_p_value {policy.max_p_value:g})")
  return PROMOTED, (f"{versus}: better by {improvement:.4%}, significantly (bootstrap over "
                    f"{bootstrap['clusters']} movies p = {bootstrap['p_value_better']:.3g})")


def _serving_problem(report, policy):
  """Why the serving gate's `report` refuses the candidate, or None."""
  if not report["loaded"]:
    return f"the candidate could not be served: {report['error']}"
  if report["latency_ms_p99"] > policy.max_latency_ms:
    return (f"the candidate answers one review in {report['latency_ms_p99']:.1f} ms at p99, over "
            f"max_latency_ms {policy.max_latency_ms:g}")
  return None


def _now():
  """The current UTC time."""
  return datetime.datetime.now(datetime.timezone.utc)


def _timestamp(time):
  """`time` in ISO 8601 with microseconds and Z."""
  return time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_apart(source, target):
  """Raises UserInputError if production is the candidate folder or inside it."""
  candidate, production = source.location(), target.location()
  if production == candidate or production.startswith(candidate.rstrip("/") + "/"):
    raise UserInputError(f"Production {production} is inside the candidate {candidate}: keep "
                         "production in a folder of its own.")


@dataclasses.dataclass(frozen=True)
class _Outcome:
  """How a decision ended."""
  verdict: str
  reason: str
  production: dict | None  # The pointer judged against last; None if there was none.
  comparison: significance.PairedComparison | None  # None without a production model.
  candidate_accuracy: float | None  # On the held-out reviews; None if not served.
  model_id: str | None = None  # The promoted model; None if not promoted.
  lost_races: int = 0  # Switches that failed because another promotion switched first.


def _decide_and_switch(candidate_dir, source, target, metadata, assessor, policy):
  """Scores the local candidate and production, judges, and on a win copies and switches."""
  candidate_correct = assessor.correct_answers(candidate_dir)
  candidate_accuracy = float(candidate_correct.mean()) if candidate_correct.size else None
  production_answers = {}  # model id -> its answers: a lost race brings a new production model.
  model_id, lost_races = None, 0
  # Each lost race is a promotion by someone else, whose model then has to be beaten: this ends.
  while True:
    current, token = _read_production(target)
    comparison = None
    if current is not None:
      if current["model_id"] not in production_answers:
        production_answers[current["model_id"]] = _production_answers(target, current, assessor)
      comparison = significance.compare(candidate_correct, production_answers[current["model_id"]],
                                        assessor.clusters, policy.max_p_value)
    verdict, reason = _judge(comparison, current, policy)
    if verdict != PROMOTED:
      if model_id is not None:
        target.delete_tree(f"{MODELS_DIR}/{model_id}")  # Only this call knew it: never pointed to.
      return _Outcome(verdict, reason, current, comparison, candidate_accuracy,
                      lost_races=lost_races)
    if model_id is None:
      model_id = f"{metadata['version']}-{uuid.uuid4().hex[:8]}"
      _copy_export(candidate_dir, target, f"{MODELS_DIR}/{model_id}")
    history = current["history"] + [current["model_id"]] if current else []
    pointer = _pointer(target, model_id, metadata, history, candidate=source.location(),
                       accuracy=candidate_accuracy, data_fingerprint=assessor.data["fingerprint"])
    if target.replace_if(POINTER_FILE, storage.json_text(pointer).encode(), token):
      return _Outcome(verdict, reason, current, comparison, candidate_accuracy, model_id,
                      lost_races)
    lost_races += 1
    logging.info("Production changed during the promotion (race %d lost); deciding again.",
                 lost_races)


def _already_production(target, metadata):
  """A refusal without scoring when the candidate is the production model's export; else None.

  An export is known by the `export_id` its metadata got when it was written (copies keep it).
  """
  current, _ = _read_production(target)
  if current is None or not metadata.get("export_id"):
    return None
  production = _metadata(target, f"{MODELS_DIR}/{current['model_id']}/{export.METADATA_FILE}")
  if production.get("export_id") != metadata["export_id"]:
    return None
  return _Outcome(REFUSED, f"it is the production model already ({current['model_id']}, "
                  f"export version {metadata['version']}): nothing to compare", current, None,
                  None)


def _copy_export(local_dir, target, name):
  """Copies every file of the local export `local_dir` to the folder `name` of `target`."""
  logging.info("Copying %s to %s.", local_dir, target.location(name))
  try:
    target.put_tree(local_dir, name, last=export.SAVED_MODEL_FILE)  # Listed once it is whole.
  except BaseException:
    target.delete_tree(name)  # A partial copy that nothing points to.
    raise


def _log(target, record):
  """Writes the decision `record` under decisions/ with its time and name; returns it."""
  time = _now()
  log_name = f"{DECISIONS_DIR}/{time:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.json"
  record = {"time": _timestamp(time), **record, "production": target.location(),
            "log": target.location(log_name)}
  target.write_new(log_name, storage.json_text(record).encode())
  return record


def promote(candidate, production, assessor, policy=Policy(), *, gcs_client=None):
  """Promotes the export `candidate` to `production` if it wins; logs the decision.

  Args:
    candidate: an export folder, a local path or gs://bucket/prefix.
    production: the production folder, a local path or gs://bucket/prefix (created if missing).
    assessor: what scores exports: an `Assessor` on the held-out reviews.
    policy: the `Policy` the candidate must pass.
    gcs_client: a google.cloud.storage.Client for gs:// paths; by default one from the
      environment.

  Returns:
    The decision record, as logged under <production>/decisions/.
  """
  source = storage.open_store(candidate, gcs_client)
  target = storage.open_store(production, gcs_client)
  _check_apart(source, target)
  metadata = _read_export(source)
  outcome, serving = _already_production(target, metadata), None
  if outcome is None:
    with source.local_copy() as candidate_dir:
      serving = assessor.serving(candidate_dir)
      problem = _serving_problem(serving, policy)
      if problem:
        outcome = _Outcome(NOT_SERVED, problem, _read_production(target)[0], None, None)
      else:
        outcome = _decide_and_switch(candidate_dir, source, target, metadata, assessor, policy)
  comparison = dataclasses.asdict(outcome.comparison) if outcome.comparison else {}
  judged_against = outcome.production or {}
  return _log(target, {
      "verdict": outcome.verdict, "promoted": outcome.verdict == PROMOTED,
      "reason": outcome.reason, "candidate": source.location(),
      "candidate_version": metadata["version"],
      "candidate_accuracy": outcome.candidate_accuracy,
      "production_accuracy": comparison.get("production_accuracy"),
      "examples": None if outcome.candidate_accuracy is None else assessor.data["examples"],
      **{key: comparison.get(key) for key in _COMPARISON_FACTS},
      "underpowered": (_underpowered(outcome.comparison, policy) if outcome.comparison
                       else None),
      "data": assessor.data, "serving": serving, **dataclasses.asdict(policy),
      "production_model_id": judged_against.get("model_id"),
      "lost_races": outcome.lost_races, "model_id": outcome.model_id,
      "model_path": (target.location(f"{MODELS_DIR}/{outcome.model_id}") if outcome.model_id
                     else None)})


def raise_alerts(record):
  """Raises `errors.Regression` or `errors.ServingGateFailed` for those verdicts of a record."""
  if record["verdict"] == REGRESSION:
    raise errors.Regression(f"Regression alert: {record['reason']}. Production is unchanged; the "
                            f"decision is logged in {record['log']}.")
  if record["verdict"] == NOT_SERVED:
    raise errors.ServingGateFailed(f"Not promoted: {record['reason']}. The decision is logged in "
                                   f"{record['log']}.")


def current_model(production, *, gcs_client=None):
  """The production model, or None before the first promotion.

  Returns:
    (its model id, its folder as a `storage` store, its export metadata).
  """
  target = storage.open_store(production, gcs_client)
  current, _ = _read_production(target)
  if current is None:
    return None
  model = target.subfolder(f"{MODELS_DIR}/{current['model_id']}")
  return current["model_id"], model, _metadata(model, export.METADATA_FILE)


# --- Rolling back.


def _model_ids(target):
  """The ids of the whole models kept in production.

  A copy is whole once its saved_model.pb is there (copied last); a local copy is renamed into
  place, so its temporary folder never counts.
  """
  suffix = f"/{export.SAVED_MODEL_FILE}"
  return sorted(name.split("/")[1] for name in target.list_files(MODELS_DIR)
                if name.count("/") == 2 and name.endswith(suffix)
                and storage.TEMP_MARKER not in name)


def _rollback_target(target, current, model_id):
  """The model to roll back to and the history after it, or UserInputError."""
  kept = _model_ids(target)
  if model_id is None:
    if not current["history"]:
      raise UserInputError(f"{target.location(POINTER_FILE)} records no model before "
                           f"{current['model_id']}: pass --rollback=<model id>, one of {kept}.")
    return current["history"][-1], current["history"][:-1]
  if model_id == current["model_id"]:
    raise UserInputError(f"--rollback={model_id} is the production model already.")
  if model_id not in kept:
    raise UserInputError(f"--rollback={model_id}: no such model in "
                         f"{target.location(MODELS_DIR)}; pass one of {kept}.")
  history = current["history"]
  if model_id in history:
    return model_id, history[:history.index(model_id)]
  return model_id, history + [current["model_id"]]


def rollback(production, model_id=None, *, serving=serving_gate.measure, policy=Policy(),
             gcs_client=None):
  """Points production back at `model_id`, or at the model the current one replaced.

  The model rolled back to must pass the serving gate first (`serving`, as in promotion, judged
  by `policy.max_latency_ms`): a model that does not load is never switched to. Then one
  compare-and-swap of CURRENT.json, logged under decisions/ with the verdict rolled_back (or
  not_served).

  Returns:
    The decision record.
  """
  target = storage.open_store(production, gcs_client)
  lost_races = 0
  while True:
    current, token = _read_production(target)
    if current is None:
      raise UserInputError(f"{target.location(POINTER_FILE)} does not exist: there is no "
                           "production model to roll back.")
    to, history = _rollback_target(target, current, model_id)
    with target.subfolder(f"{MODELS_DIR}/{to}").local_copy() as model_dir:
      report = serving(model_dir)
    problem = _serving_problem(report, policy)
    if problem:
      return _log(target, {
          "verdict": NOT_SERVED, "promoted": False,
          "reason": f"not rolled back from {current['model_id']} to {to}: {problem}",
          "serving": report, "production_model_id": current["model_id"],
          "lost_races": lost_races, "model_id": None, "model_path": None})
    metadata = _metadata(target, f"{MODELS_DIR}/{to}/{export.METADATA_FILE}")
    pointer = _pointer(target, to, metadata, history, rolled_back_from=current["model_id"])
    if target.replace_if(POINTER_FILE, storage.json_text(pointer).encode(), token):
      break
    lost_races += 1
  return _log(target, {
      "verdict": ROLLED_BACK, "promoted": False,
      "reason": f"rolled back from {current['model_id']} to {to}", "serving": report,
      "production_model_id": current["model_id"], "lost_races": lost_races, "model_id": to,
      "model_path": target.location(f"{MODELS_DIR}/{to}")})
