"""What a job reads of the config is one list (its declaration in ``ssp.stages``): its rule's params,
its narrowed config and its outputs' provenance come from it, so that a setting that changes an
output re-runs exactly the jobs that read it."""
import copy
import pickle

import pytest

from ssp.config import (
    Config,
    Undeclared,
    UndeclaredSetting,
    _is_section,
    declared_settings,
    location_keys,
    schema,
    with_defaults,
)
from ssp.io import hub
from ssp.stages import JOBS, STAGES, job_config, reads

JOB_NAMES = (*STAGES, *JOBS)
# configurations under which a job's declaration differs (the flow backend's own settings, the
# frames' network copy)
BASES = ({"preprocess": {"input_frames": "stored"}}, {"flow": {"backend": "perceiver"}})


def leaves(node: dict, prefix: str = ""):
    """Every key of the schema that holds a value (a section's keys, not the section), with its node."""
    for key, sub in node.get("properties", {}).items():
        if _is_section(sub):
            yield from leaves(sub, prefix + key + ".")
        else:
            yield prefix + key, sub


def another(node: dict, value):
    """A value of the schema node other than ``value`` (the change a user makes)."""
    if any(v != value for v in node.get("enum", ())):
        return next(v for v in node["enum"] if v != value)
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int) and "integer" in kinds:
        return value - 1 if "maximum" in node and value + 1 > node["maximum"] else value + 1
    if isinstance(value, (int, float)):
        return value / 2 if value else 0.5
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value[:-1] if value else ["x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    assert value is None, (node, value)
    return {"string": "x", "integer": 1, "number": 0.5, "boolean": True, "array": ["x"], "object": {"x": 1}}[
        next(k for k in kinds if k != "null")]


def covered(key: str, declared) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


def test_every_declared_key_is_a_key_of_the_schema():
    sch = schema()
    for base in BASES:
        raw = with_defaults(copy.deepcopy(base))
        for job in JOB_NAMES:
            for key in reads(job, raw):
                node = sch
                for part in key.split("."):
                    assert part in node.get("properties", {}), f"{job} declares '{key}', which the schema lacks"
                    node = node["properties"][part]


@pytest.mark.parametrize("base", BASES, ids=("dis-stored", "perceiver-source"))
def test_a_changed_setting_changes_the_settings_of_exactly_the_jobs_that_read_it(base):
    """For every key of the schema that changes an output: the jobs whose settings (their rules'
    params, their outputs' provenance) change are the jobs whose declaration covers the key; a
    speed-only key changes no job's settings."""
    raw = with_defaults(copy.deepcopy(base))
    before = {job: declared_settings(raw, reads(job, raw)) for job in JOB_NAMES}
    checked = 0
    for key, node in leaves(schema()):
        changed = copy.deepcopy(raw)
        hub._set_key(changed, key, another(node, hub.get_key(raw, key)))
        moved = {job for job in JOB_NAMES if declared_settings(changed, reads(job, changed)) != before[job]}
        readers = {job for job in JOB_NAMES if covered(key, reads(job, raw)) or covered(key, reads(job, changed))}
        if node.get("x-speed-only"):
            assert not moved, f"{key} is speed-only, yet it changes the settings of {sorted(moved)}"
        else:
            assert moved == readers, f"{key}: settings changed {sorted(moved)}, declared by {sorted(readers)}"
        checked += 1
    assert checked > 100


def test_the_backend_and_the_frames_copy_decide_what_flow_and_frames_read():
    raw = with_defaults(copy.deepcopy(BASES[0]))
    assert "flow.perceiver" not in reads("flow", raw) and "flow.dis_preset" in reads("flow", raw)
    assert "model.size" not in reads("frames", raw)
    other = with_defaults(copy.deepcopy(BASES[1]))
    assert "flow.perceiver" in reads("flow", other) and "flow.dis_preset" not in reads("flow", other)
    assert "model.size" in reads("frames", other)
    # the perceiver's speed settings reach the job and are not its settings
    settings = declared_settings(other, reads("flow", other))
    assert "batch_size" not in settings["flow.perceiver"] and "dtype" in settings["flow.perceiver"]


def test_a_job_reading_a_setting_it_does_not_declare_is_stopped():
    cfg = Config.from_dict({"vggish": {"weights": "random"}})
    audio = job_config(cfg, "audio")
    assert audio.preprocess.sample_rate == 16000 and audio.dataset.layout == cfg.dataset.layout
    assert audio.results == cfg.results and audio.dataset.name == cfg.dataset.name   # locations
    assert isinstance(audio.preprocess.image_size, Undeclared)
    for use in (lambda: audio.preprocess.image_size + 1, lambda: bool(audio.flow.backend),
                lambda: audio.train.epochs == 3, lambda: f"{audio.vggish.weights}", lambda: audio.model.backbone["x"]):
        with pytest.raises(UndeclaredSetting, match="the audio job read '"):
            use()
    assert set(audio.raw) == {"results", "dataset", "preprocess", "hub", "predict"} and set(audio.raw["preprocess"]) == {"sample_rate"}
    assert audio.settings() == {"dataset.layout": cfg.dataset.layout, "preprocess.sample_rate": 16000}
    assert job_config(audio, "audio") is audio
    assert pickle.loads(pickle.dumps(audio)).preprocess.sample_rate == 16000   # DataLoader workers
    with pytest.raises(ValueError, match="not narrowed"):
        cfg.settings()


def test_model_keys_are_recorded_as_where_they_came_from():
    cfg = Config.from_dict({"vggish": {"weights": "random"}})
    settings = declared_settings(cfg.raw, reads("vggish", cfg.raw), {"vggish.weights": "sha256:abc"})
    assert settings["vggish"]["weights"] == "sha256:abc"
    settings = declared_settings(cfg.raw, ("vggish.weights",), {"vggish.weights": "sha256:abc"})
    assert settings == {"vggish.weights": "sha256:abc"}


def test_locations_are_readable_by_every_job_and_marked_in_the_schema():
    assert set(location_keys()) == {"results", "dataset.name", "dataset.root", "hub.cache", "hub.lock",
                                    "predict.models_from"}


def test_a_jobs_settings_follow_a_studys_override_and_a_job_is_narrowed_once():
    import dataclasses

    from ssp.variants import with_overrides

    cfg = job_config(Config.from_dict({"vggish": {"weights": "random"}}), "predict")
    study = with_overrides(cfg, {"postmask_weight": 5.0})
    assert study.settings()["train"]["postmask_weight"] == 5.0 != cfg.settings()["train"]["postmask_weight"]
    assert dataclasses.replace(cfg).settings() == cfg.settings()
    with pytest.raises(ValueError, match="narrowed to the predict job already"):
        job_config(cfg, "frames")
