import pytest

from lookalike.registry import Registry


def make() -> Registry:
    r: Registry = Registry("widget")
    r.register("plain")(lambda **kw: ("plain", kw))
    r.register("fam", takes_arg=True)(lambda arg, **kw: ("fam", arg, kw))
    return r


def test_create_plain_and_family() -> None:
    r = make()
    assert r.create("plain", x=1) == ("plain", {"x": 1})
    assert r.create("fam:resnet18", y=2) == ("fam", "resnet18", {"y": 2})
    assert r.names() == ["fam:<name>", "plain"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("nope", "Unknown widget 'nope'. Valid widgets: fam:<name>, plain"),
     ("fam", "widget 'fam' needs an argument: write it as 'fam:<name>'"),
     ("plain:x", "widget 'plain' takes no argument")],
)
def test_bad_names_say_what_is_valid(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make().create(name)


def test_double_registration_refused() -> None:
    r = make()
    with pytest.raises(ValueError, match="registered twice"):
        r.register("plain")(lambda: None)
