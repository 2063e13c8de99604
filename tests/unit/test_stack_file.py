"""Stack files read as the Pulumi CLI reads them (tools.stack_file.read_stack): what
the CLI refuses is refused, with the file and the line, and nothing is ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.stack_file import StackFileError, read_stack


def stack(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Pulumi.mistake.yaml"
    path.write_text(text)
    return path


def test_the_project_namespace_is_removed_and_others_are_left_out(tmp_path: Path) -> None:
    path = stack(tmp_path, "config:\n  msr-cache:cacheHost: c.example.com\n  docker:host: unix:///x.sock\n")
    assert read_stack(path) == {"cacheHost": "c.example.com"}


def test_the_old_config_module_form_means_the_same_key(tmp_path: Path) -> None:
    path = stack(tmp_path, "config:\n  msr-cache:config:cacheHost: c.example.com\n")
    assert read_stack(path) == {"cacheHost": "c.example.com"}


def test_a_key_without_its_namespace_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = stack(tmp_path, "config:\n  cacheHost: c.example.com\n")
    with pytest.raises(StackFileError, match=r"config key 'cacheHost'.*write it as msr-cache:cacheHost"):
        read_stack(path)


TWICE = [
    (
        "config:\n  msr-cache:cachePort: 443\n  msr-cache:cachePort: 8443\n",
        "line 3: key 'msr-cache:cachePort'",
        "line 2",
    ),
    ("config:\n  msr-cache:tls:\n    mode: caSigned\n    mode: provided\n", "line 4: key 'mode'", "line 3"),
]


@pytest.mark.parametrize(("text", "second", "first"), TWICE)
def test_a_key_given_twice_is_refused_naming_both_lines(
    tmp_path: Path, text: str, second: str, first: str
) -> None:
    with pytest.raises(StackFileError) as err:
        read_stack(stack(tmp_path, text))
    assert f"{second} is already defined at {first}" in str(err.value)


def test_the_same_key_in_both_forms_is_refused(tmp_path: Path) -> None:
    path = stack(tmp_path, "config:\n  msr-cache:cachePort: 443\n  msr-cache:config:cachePort: 8443\n")
    with pytest.raises(StackFileError, match="msr-cache:cachePort is given twice"):
        read_stack(path)


def test_a_tab_is_a_yaml_error_naming_the_file_and_line(tmp_path: Path) -> None:
    path = stack(tmp_path, "config:\n\tmsr-cache:cacheHost: c.example.com\n")
    with pytest.raises(StackFileError) as err:
        read_stack(path)
    assert str(err.value).startswith(f"{path}: line 2, column 1: not valid YAML")
    assert "tabs" in str(err.value)
