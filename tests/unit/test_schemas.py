import json
import re
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpack.errors import SchemaValidationError
from modelpack.schemas import MODEL_CONFIG, load_schema, validate

SPEC_DIR = Path(__file__).resolve().parents[1] / "data" / "modelpack-spec"
UPSTREAM = json.loads((SPEC_DIR / "config-schema.json").read_text())


def upstream_accepts(document) -> bool:
    return jsonschema.Draft202012Validator(UPSTREAM).is_valid(document)


def ours_accepts(document) -> bool:
    try:
        validate(document, MODEL_CONFIG)
    except SchemaValidationError:
        return False
    return True


def upstream_example():
    text = (SPEC_DIR / "config.md").read_text()
    return json.loads(re.search(r"```json[^\n]*\n(.*?)```", text, re.S).group(1))


MINIMAL = {"descriptor": {}, "config": {}, "modelfs": {"type": "layers", "diffIds": ["sha256:x"]}}


def test_upstream_example_validates_against_both():
    example = upstream_example()
    assert upstream_accepts(example)
    assert ours_accepts(example)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("modelfs"),
        lambda d: d.update(extra=1),
        lambda d: d["descriptor"].update(name=""),
        lambda d: d["descriptor"].update(licenses="MIT"),
        lambda d: d["config"].update(paramSize=8),
        lambda d: d["config"].update(capabilities={"languages": ["eng"]}),
        lambda d: d["config"].update(capabilities={"inputTypes": ["smell"]}),
        lambda d: d["config"].update(capabilities={"reasoning": "yes"}),
        lambda d: d["modelfs"].update(type="layer"),
        lambda d: d["modelfs"].update(diffIds=[]),
        lambda d: d["modelfs"].pop("type"),
        lambda d: d["descriptor"].update(unknown="x"),
    ],
)
def test_both_reject_the_same_broken_documents(mutate):
    document = json.loads(json.dumps(upstream_example()))
    mutate(document)
    assert not upstream_accepts(document)
    assert not ours_accepts(document)


def test_error_names_the_field():
    document = json.loads(json.dumps(MINIMAL))
    document["config"]["capabilities"] = {"languages": ["en", "ENG"]}
    with pytest.raises(SchemaValidationError, match=r"config\.capabilities\.languages\[1\]"):
        validate(document, MODEL_CONFIG, "model config")


# Documents near the schema's shape: mostly valid fields, some wrong types,
# unknown keys and missing parts.  Both schemas must agree on every one.
junk = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.text(max_size=3))
text = st.one_of(st.text(max_size=4), st.sampled_from(["", "en", "2025-01-01T00:00:00Z"]))
texts = st.lists(text, max_size=3)
modality = st.sampled_from(
    ["text", "image", "audio", "video", "embedding", "other"] * 4 + ["smell", "", "Text"]
)
language = st.integers(0, 10).flatmap(
    lambda pick: st.sampled_from(["en", "zh", "fr"]) if pick else st.text(max_size=3)
)


def mostly(valid, odds=20):
    """``valid`` about ``odds`` times as often as something of the wrong type."""
    wrong = st.one_of(junk, st.lists(junk, max_size=2))
    return st.integers(0, odds).flatmap(lambda pick: valid if pick else wrong)


def section(fields, extra_key="bogus"):
    optional = {key: mostly(strategy) for key, strategy in fields.items()}
    document = st.fixed_dictionaries({}, optional=optional)
    with_extra = st.fixed_dictionaries({extra_key: junk}, optional=optional)
    return st.integers(0, 8).flatmap(lambda pick: document if pick else with_extra)


descriptor = section(
    {
        k: text
        for k in [
            "createdAt",
            "vendor",
            "family",
            "name",
            "version",
            "title",
            "description",
            "docURL",
            "sourceURL",
            "revision",
        ]
    }
    | {k: texts for k in ["authors", "datasetsURL", "licenses"]}
)
capabilities = section(
    {
        "inputTypes": st.lists(modality, max_size=3),
        "outputTypes": st.lists(modality, max_size=3),
        "knowledgeCutoff": text,
        "reasoning": st.booleans(),
        "toolUsage": st.booleans(),
        "reward": st.booleans(),
        "languages": st.lists(language, max_size=3),
    }
)
config = section(
    {k: text for k in ["architecture", "format", "paramSize", "precision", "quantization"]}
    | {"capabilities": capabilities}
)
diff_ids = mostly(st.one_of(st.lists(text, min_size=1, max_size=2), texts), odds=6)
modelfs = st.one_of(
    st.fixed_dictionaries({"type": mostly(st.just("layers")), "diffIds": diff_ids}),
    st.fixed_dictionaries(
        {}, optional={"type": mostly(st.just("layers")), "diffIds": diff_ids, "bogus": junk}
    ),
)
complete = st.fixed_dictionaries(
    {"descriptor": mostly(descriptor), "config": mostly(config), "modelfs": mostly(modelfs)}
)
partial = st.fixed_dictionaries(
    {},
    optional={"descriptor": descriptor, "config": config, "modelfs": modelfs, "bogus": junk},
)
near_document = st.integers(0, 3).flatmap(lambda pick: complete if pick else partial)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(near_document)
def test_our_schema_agrees_with_upstream_on_generated_documents(document):
    assert ours_accepts(document) == upstream_accepts(document)


def test_all_published_schemas_are_valid_json_schema():
    paths = sorted((Path(__file__).resolve().parents[2] / "modelpack" / "schemas").glob("*.json"))
    assert len(paths) >= 10  # the folder moved once and this loop checked nothing
    for path in paths:
        jsonschema.Draft202012Validator.check_schema(load_schema(path.name))
