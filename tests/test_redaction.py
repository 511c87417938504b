"""Redaction of secrets (roar/record/context.py): each secret form in arguments
and the environment is replaced by a keyed hash, and nothing else is."""

from __future__ import annotations

import pytest

from roar.record import context

KEY = b"k" * 32
TOKENS = ["ghp_" + "a" * 36, "gho_" + "b" * 20, "github_pat_" + "c" * 22, "hf_" + "d" * 20,
          "sk-" + "e" * 16, "xoxb-" + "f" * 10, "AKIA" + "G" * 16, "ASIA" + "H" * 16,
          "glpat-" + "i" * 20]
NOT_TOKENS = ["ghp_short", "hf_" + "d" * 19, "sk-" + "e" * 15, "AKIA" + "g" * 16,
              "glpat-" + "i" * 19, "xoxb-short", "prefix-ghp_" + "a" * 36, "0.1", "train.py"]


def hidden(value: str) -> str:
    return context.redact(value, KEY)["redacted"]


@pytest.mark.parametrize("token", TOKENS)
def test_token_shapes_are_redacted_anywhere(token):
    assert context.redact_argv(["x", token], KEY) == ["x", hidden(token)]
    assert context.environment({"INNOCENT": token}, KEY) == {"INNOCENT": {"redacted":
                                                                          hidden(token)}}


@pytest.mark.parametrize("value", NOT_TOKENS)
def test_ordinary_values_stay(value):
    assert context.redact_argv(["x", value], KEY) == ["x", value]
    assert context.environment({"PLAIN": value}, KEY) == {"PLAIN": value}


@pytest.mark.parametrize("name", ["--token", "--api-key", "--password", "--passwd", "--secret",
                                  "--auth", "--db-credentials", "--aws_secret"])
def test_secret_named_option_with_equals(name):
    assert context.redact_argv([f"{name}=hunter2", "--lr=0.1"], KEY) == [
        f"{name}={hidden('hunter2')}", "--lr=0.1"]


@pytest.mark.parametrize("name", ["--token", "--api-key", "--password"])
def test_secret_named_option_then_its_value(name):
    assert context.redact_argv([name, "hunter2", "--lr", "0.1", "pos"], KEY) == [
        name, hidden("hunter2"), "--lr", "0.1", "pos"]


def test_secret_option_followed_by_another_option_hides_nothing():
    assert context.redact_argv(["--token", "--verbose", "file"], KEY) == [
        "--token", "--verbose", "file"]
    assert context.redact_argv(["--token=", "file"], KEY) == ["--token=", "file"]


def test_url_credentials_lose_their_password_only():
    url = "postgres://alice:s3cr3t@db.example:5432/runs"
    assert context.redact_argv(["--db", url], KEY) == [
        "--db", f"postgres://alice:{hidden('s3cr3t')}@db.example:5432/runs"]
    env = context.environment({"DATABASE_URL": url, "MIRROR": "https://pypi.org/simple"}, KEY)
    assert env == {"DATABASE_URL": f"postgres://alice:{hidden('s3cr3t')}@db.example:5432/runs",
                   "MIRROR": "https://pypi.org/simple"}
    assert "s3cr3t" not in str(context.redact_argv([f"--db={url}"], KEY))


@pytest.mark.parametrize("name", ["HF_TOKEN", "MY_SECRET", "DB_PASSWORD", "PASSWD", "API_KEY",
                                  "GOOGLE_APPLICATION_CREDENTIALS", "AUTH_HEADER",
                                  "AWS_REGION", "hf_token"])
def test_secret_named_environment_variables(name):
    assert context.environment({name: "v"}, KEY) == {name: {"redacted": hidden("v")}}


def test_not_secret_names_stay():
    env = {"PATH": "/bin", "HOME": "/root", "MY_AWS_THING": "x", "LR": "0.1"}
    assert context.environment(env, KEY) == env


def test_keyed_hash_is_stable_per_key_and_differs_across_keys():
    a = context.redact("value", KEY)["redacted"]
    assert a.startswith("hmac-sha256:") and len(a) == len("hmac-sha256:") + 64
    assert context.redact("value", KEY)["redacted"] == a
    assert context.redact("value", b"j" * 32)["redacted"] != a
    assert context.redact("other", KEY)["redacted"] != a
