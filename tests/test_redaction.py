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


@pytest.mark.parametrize("argv, secret", [
    (["mysql", "-uroot", "-pS3cret!", "db"], "S3cret!"),
    (["/usr/bin/mysqldump", "-pS3cret!", "db"], "S3cret!"),
    (["docker", "exec", "c", "mariadb", "-pS3cret!"], "S3cret!"),
    (["sshpass", "-p", "S3cret!", "ssh", "h"], "S3cret!"),
    (["mongodump", "-p", "S3cret!"], "S3cret!"),
    (["redis-cli", "-a", "S3cret!", "get", "k"], "S3cret!"),
    (["unzip", "-P", "S3cret!", "a.zip"], "S3cret!"),
    (["7z", "x", "-pS3cret!", "a.7z"], "S3cret!"),
    (["tool", "-password", "S3cret!"], "S3cret!"),
    (["env", "DB_PASSWORD=S3cret!", "prog"], "S3cret!"),
])
def test_short_password_options_of_known_programs(argv, secret):
    out = context.redact_argv(argv, KEY)
    assert secret not in str(out) and hidden(secret) in str(out)
    assert len(out) == len(argv)


@pytest.mark.parametrize("argv", [
    ["mysql", "-p", "dbname"],  # mysql: -p alone prompts, the next word is the database
    ["psql", "-p", "5432", "-h", "db"],  # psql: -p is the port
    ["rsync", "-p", "a", "b"], ["mkdir", "-p", "x"], ["cp", "-pr", "a", "b"],
    ["python", "-c", "print('a b')"], ["sh", "-c", "echo hello world; ls -la | wc -l"],
])
def test_short_p_of_other_programs_stays(argv):
    assert context.redact_argv(argv, KEY) == argv


def test_curl_user_password_and_auth_headers():
    out = context.redact_argv(["curl", "-u", "bob:pw1", "--user=bob:pw2", "-H",
                               "Authorization: Bearer tok3", "-H", "Accept: json", "u"], KEY)
    assert out == ["curl", "-u", f"bob:{hidden('pw1')}", f"--user=bob:{hidden('pw2')}", "-H",
                   f"Authorization: {hidden('Bearer tok3')}", "-H", "Accept: json", "u"]


def test_shell_scripts_get_the_argument_rules_word_by_word():
    script = ("set -e; mysql -uroot -ppw1 -e 'select 1' && curl -u bob:pw2 http://x | wc\n"
              "TOKEN=pw3 ./go --password pw4; echo done")
    [_, _, out] = context.redact_argv(["bash", "-c", script], KEY)
    assert out == script.replace("pw1", hidden("pw1")).replace("pw2", hidden("pw2")).replace(
        "pw3", hidden("pw3")).replace("pw4", hidden("pw4"))
    # nested: sh -c inside bash -c, and ssh's remote command
    [*_, nested] = context.redact_argv(["bash", "-c", "sh -c 'mysql -ppw5 db'"], KEY)
    assert "pw5" not in nested and nested.startswith("sh -c 'mysql -phmac-sha256:")
    assert "pw6" not in str(context.redact_argv(["ssh", "h", "redis-cli -a pw6 get k"], KEY))


def test_a_secret_not_written_as_found_hides_the_whole_script():
    script = "mysql -p'my pw7' db"  # shlex reads -pmy pw7, not written so in the text
    assert context.redact_argv(["sh", "-c", script], KEY) == ["sh", "-c", hidden(script)]


def test_urls_tokens_as_users_and_passwords_with_at_signs():
    assert context.redact_argv(["x", "https://u:p@ss@h/db"], KEY) == [
        "x", f"https://u:{hidden('p@ss')}@h/db"]
    tok = "ghp_" + "a" * 36
    assert context.redact_argv([f"https://{tok}@github.com/o/r"], KEY) == [
        f"https://{hidden(tok)}@github.com/o/r"]
    assert context.redact_argv(["https://alice@h/r"], KEY) == ["https://alice@h/r"]
    dsn = "https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42"
    assert context.environment({"SENTRY_DSN": dsn}, KEY) == {"SENTRY_DSN": {
        "redacted": hidden(dsn)}}
    assert context.environment({"ERRORS": dsn}, KEY) == {"ERRORS": dsn.replace(
        "0123456789abcdef0123456789abcdef", hidden("0123456789abcdef0123456789abcdef"))}
    assert context.environment({"JAVA_OPTS": "-Xmx1g -Dtrust.password=pw8"}, KEY) == {
        "JAVA_OPTS": f"-Xmx1g -Dtrust.password={hidden('pw8')}"}


def test_git_remotes_lose_their_credentials():
    tok = "ghp_" + "a" * 36
    for url, kept in [(f"https://user:{tok}@github.com/o/r.git", "https://user@github.com/o/r.git"),
                      (f"https://{tok}@github.com/o/r.git", "https://github.com/o/r.git"),
                      ("git@github.com:o/r.git", "git@github.com:o/r.git"),
                      ("https://alice@h/r", "https://alice@h/r")]:
        assert context.url_without_credentials(url) == kept


def test_redacting_twice_changes_nothing():
    argv = ["sh", "-c", "mysql -ppw1 db", "--token", "t", "https://u:p@h/x", "-H",
            "Authorization: x y"]
    once = context.redact_argv(argv, KEY)
    assert context.redact_argv(once, KEY) == once


def test_signing_and_credential_query_parameters_of_urls():
    """A presigned URL's signature and credential, a SAS token's sig, ?token=:
    hidden; the object and the other parameters stay readable."""
    url = ("https://b.s3.amazonaws.com/data/x.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           "&X-Amz-Credential=AKIDEXAMPLE%2F20261201&X-Amz-Signature=abc123&versionId=7")
    [out] = context.redact_argv([url], KEY)
    assert out == ("https://b.s3.amazonaws.com/data/x.csv?X-Amz-Algorithm="
                   f"{hidden('AWS4-HMAC-SHA256')}&X-Amz-Credential="
                   f"{hidden('AKIDEXAMPLE%2F20261201')}&X-Amz-Signature={hidden('abc123')}"
                   "&versionId=7")
    env = context.environment({"FEED": "https://h/f?sig=s1&page=2 https://h/g?token=t2"}, KEY)
    assert env == {"FEED": f"https://h/f?sig={hidden('s1')}&page=2 "
                           f"https://h/g?token={hidden('t2')}"}
    assert context.redact_argv(["https://h/search?q=token&page=2"], KEY) == [
        "https://h/search?q=token&page=2"]
