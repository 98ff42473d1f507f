import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelpack.errors import InvalidReferenceError
from modelpack.oci.reference import parse_reference

DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5000/team/bert:v1", "127.0.0.1:5000", "team/bert", "v1", None),
        ("127.0.0.1:5000/team/bert", "127.0.0.1:5000", "team/bert", "latest", None),
        ("localhost/bert:v1", "localhost", "bert", "v1", None),
        (
            "harbor.example.com/ml/llama-3.1_8b:2024.07",
            "harbor.example.com",
            "ml/llama-3.1_8b",
            "2024.07",
            None,
        ),
        (f"reg.io/a/b@{DIGEST}", "reg.io", "a/b", None, DIGEST),
        (f"reg.io/a/b:v1@{DIGEST}", "reg.io", "a/b", "v1", DIGEST),
        ("bert", "docker.io", "library/bert", "latest", None),
        ("org/bert:v2", "docker.io", "org/bert", "v2", None),
        ("[::1]:5000/bert:v1", "[::1]:5000", "bert", "v1", None),
        ("index.docker.io/org/bert", "docker.io", "org/bert", "latest", None),
    ],
)
def test_valid_references(text, registry, repository, tag, digest):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        " reg.io/a:b",
        "Bad Ref!",
        "127.0.0.1:5000/Team/bert:v1",
        "reg.io/a/b:",
        "reg.io/a/b:-tag",
        "reg.io/a/b@sha256:1234",
        "reg.io/a/b@md5:" + "0" * 32,
        "reg.io//b",
        "reg.io/a/b/",
        "reg-.io/a:b",
        "reg.io/a__-b",
        "reg.io/" + "a" * 300,
        "reg.io/a:" + "t" * 129,
    ],
)
def test_invalid_references_raise_usage_errors(text):
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    assert info.value.exit_code == 2
    assert "invalid reference" in str(info.value)


def test_str_round_trips():
    for text in ["127.0.0.1:5000/team/bert:v1", f"reg.io/a/b:v1@{DIGEST}", f"reg.io/a/b@{DIGEST}"]:
        assert str(parse_reference(text)) == text


component = st.from_regex(r"[a-z0-9]{1,5}(?:[._-][a-z0-9]{1,5}){0,2}", fullmatch=True)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(
    host=st.sampled_from(["127.0.0.1:5000", "reg.example.com", "localhost:1234"]),
    path=st.lists(component, min_size=1, max_size=4),
    tag=tag,
)
def test_generated_references_round_trip(host, path, tag):
    text = f"{host}/{'/'.join(path)}:{tag}"
    ref = parse_reference(text)
    assert str(ref) == text
    assert parse_reference(str(ref)) == ref


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_usage_error(text):
    try:
        ref = parse_reference(text)
    except InvalidReferenceError:
        return
    assert parse_reference(str(ref)) == ref
