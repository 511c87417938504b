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


# -- rules pinned by the mutation run (docs/testing.md) ------------------------------


def test_the_store_key_is_made_once_and_kept_in_the_store(tmp_path):
    """Keyed hashes compare across runs of one store only if its key is made once,
    kept (meta "redaction_key", 32 random bytes) and read back; another store
    gets another key."""
    from roar.record.store import Store

    with Store(tmp_path / "a") as st:
        key = context.store_key(st)
        assert isinstance(key, bytes) and len(key) == 32
        assert context.store_key(st) == key
    with Store(tmp_path / "a") as st:
        assert st.meta_get("redaction_key") == key and context.store_key(st) == key
    with Store(tmp_path / "b") as other:
        assert context.store_key(other) != key


def test_an_argument_that_is_not_utf8_is_hashed_as_its_bytes():
    """argv and env come from the kernel as bytes; undecodable ones reach the
    rules as surrogate escapes and are hashed as the bytes they were."""
    import hashlib
    import hmac

    assert hidden("caf\udce9") == "hmac-sha256:" + hmac.new(KEY, b"caf\xe9",
                                                             hashlib.sha256).hexdigest()
    assert context.redact_argv(["--password", "caf\udce9"], KEY)[1] == hidden("caf\udce9")


def test_urls_with_an_empty_user_or_password():
    # nothing to hide: kept as written
    for url in ["postgres://alice:@db/x", "https://:@h/r"]:
        assert context.redact_argv([url], KEY) == [url]
    # a token given as the password of an empty user (https://:TOKEN@host)
    assert context.url_without_credentials("https://:tok@h/r.git") == "https://h/r.git"
    assert context.url_without_credentials("https://bob:@h/r.git") == "https://bob@h/r.git"


def test_values_holding_equals_signs_are_hidden_whole():
    """Base64 secrets end in '=': the option's or parameter's name ends at the
    first '=', the value is all the rest."""
    assert context.redact_argv(["--token=ab==", "--api-key=k=v"], KEY) == [
        f"--token={hidden('ab==')}", f"--api-key={hidden('k=v')}"]
    assert context.redact_argv(["https://h/f?sig=ab==&page=2"], KEY) == [
        f"https://h/f?sig={hidden('ab==')}&page=2"]


def test_an_empty_secret_option_does_not_end_the_rules():
    assert context.redact_argv(["--token=", "--password", "pw1", "--key=pw2"], KEY) == [
        "--token=", "--password", hidden("pw1"), f"--key={hidden('pw2')}"]


def test_curl_user_forms():
    """curl -u USER[:PASSWORD]: only a password is hidden, all of it (colons and
    all), whichever way the option is written."""
    out = context.redact_argv(["curl", "-u", "bob", "-u", "bob:", "-u", "bob:pa:ss",
                               "-ubob:pw1", "--user=bob", "u"], KEY)
    assert out == ["curl", "-u", "bob", "-u", "bob:", "-u", f"bob:{hidden('pa:ss')}",
                   f"-ubob:{hidden('pw1')}", "--user=bob", "u"]


def test_headers_given_with_equals_keep_their_names():
    out = context.redact_argv(["wget", "--header=Authorization: Bearer t1",
                               "--header=Accept: json", "--header=X-Api-Key:",
                               "u"], KEY)
    assert out == ["wget", f"--header=Authorization: {hidden('Bearer t1')}",
                   "--header=Accept: json", "--header=X-Api-Key:", "u"]


def test_an_option_value_holding_a_command_gets_the_argument_rules():
    """--exec='mysql -ppw db' (find, watch, git -c alias...): the value is read
    as a command line, not as a header."""
    assert context.redact_argv(["runner", "--exec=mysql -ppw1 db", "--lr=0.1"], KEY) == [
        "runner", f"--exec=mysql -p{hidden('pw1')} db", "--lr=0.1"]


def test_short_password_options_attached_one_character_and_single_dash_names():
    assert context.redact_argv(["mysql", "-pX", "db"], KEY) == ["mysql", f"-p{hidden('X')}", "db"]
    # long options written with one dash (Go's flag package): -key, -api-key, -api_key
    assert context.redact_argv(["svc", "-key", "v1", "-api-key", "v2", "-api_key", "v3"],
                               KEY) == ["svc", "-key", hidden("v1"), "-api-key", hidden("v2"),
                                        "-api_key", hidden("v3")]
    # short flags and odd words stay, with what follows them
    for argv in (["tar", "-k9", "v"], ["x", "-1key", "v"], ["x", "--", "v"], ["x", "-kv", "v"]):
        assert context.redact_argv(argv, KEY) == argv


def test_a_script_with_unbalanced_quotes_is_read_as_plain_words():
    script = "mysql -ppw1 -e 'select 1"  # shlex: "No closing quotation"
    assert context.redact_argv(["sh", "-c", script], KEY) == [
        "sh", "-c", script.replace("pw1", hidden("pw1"))]


def test_words_holding_other_unicode_spaces_are_one_word():
    """A shell splits words on space, tab and newline only: a file name with a
    no-break space (macOS screenshots: U+202F) is one word, not a script; it was
    read as a script nested to the depth limit and hashed whole."""
    for word in ["Screenshot 2026-12-01 at 06.20.11\u202fAM.png", "a\u00a0b", "x\u2003y"]:
        assert context.redact_argv(["cp", word, "out"], KEY) == ["cp", word, "out"]
        assert context.environment({"F": word}, KEY) == {"F": word}


def _nested(levels: int) -> str:
    """A command line nested `levels` deep: echo "echo \\"...a b...\\"" (each level
    escapes the one inside it, so no level is found as written in its parent)."""
    text = "a b"
    for _ in range(levels - 1):
        text = 'echo "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def test_scripts_nested_deeper_than_the_limit_are_hashed_whole():
    """Eight levels of nested command lines are read; a ninth is not: the whole
    argument (or environment value) is then a keyed hash."""
    eight, nine = _nested(8), _nested(9)
    assert context.redact_argv(["sh", "-c", eight], KEY) == ["sh", "-c", eight]
    assert context.environment({"CMD": eight}, KEY) == {"CMD": eight}
    assert context.redact_argv(["sh", "-c", nine], KEY) == ["sh", "-c", hidden(nine)]
    assert context.environment({"CMD": nine}, KEY) == {"CMD": hidden(nine)}
