# The access policy (`--policy FILE`) alone: parsing the documented forms, every refusal with its line,
# and `decide` (who may send and receive where) against a plain model of the documented rules.
# Invariant: pure data; the password hashes here are well-formed strings, never verified.
from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.core.paths import parse_target
from pipe_relay.core.policy import Anyone, Policy, PolicyError, Rule, Verdict, Who, parse_policy
from tests.fuzzing import fuzz_settings

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
"""A well-formed argon2id hash (parsing only checks the form; nothing here verifies a password)."""

ALLOW, NEED_USER, FORBIDDEN = Verdict.ALLOW, Verdict.NEED_USER, Verdict.FORBIDDEN

DOCUMENTED = f"""\
# Anyone may receive; only users may send, and only alice under /alice/.
default = {{ send = "users", receive = "anyone" }}

[users.alice]
password = "{HASH}"    # pipe-relay hash-password

[users.bob]
password = "{HASH}"

[[rules]]
prefix = "/alice/"          # or: pattern = "/team-*/**"
send = ["alice"]
receive = "anyone"

[[rules]]
pattern = "/team-*/**"
send = ["alice", "bob"]
receive = "users"

[[rules]]
prefix = "/closed/"
send = "nobody"
receive = "nobody"
"""


def users(*names: str) -> str:
    return "".join(f'[users.{name}]\npassword = "{HASH}"\n\n' for name in names)


def refusal(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return str(caught.value)


# -- the documented forms ------------------------------------------------------------------------


def test_the_documented_example_parses_into_its_users_rules_and_default() -> None:
    policy = parse_policy(DOCUMENTED)
    assert policy.users == {"alice": HASH, "bob": HASH}
    assert policy.default == Rule(Anyone.USERS, Anyone.ANYONE, line=2)
    first, second, third = policy.rules
    assert (first.prefix, first.pattern, first.send, first.receive, first.line) == (
        "/alice/",
        None,
        frozenset({"alice"}),
        Anyone.ANYONE,
        10,
    )
    assert second.prefix is None and second.pattern is not None and second.line == 15
    assert (second.send, second.receive) == (frozenset({"alice", "bob"}), Anyone.USERS)
    assert (third.prefix, third.send, third.receive, third.line) == (
        "/closed/",
        Anyone.NOBODY,
        Anyone.NOBODY,
        20,
    )


def test_the_documented_example_decides_as_its_comment_says() -> None:
    policy = parse_policy(DOCUMENTED)
    assert policy.decide("/alice/notes", "send", "alice") is ALLOW
    assert policy.decide("/alice/notes", "send", "bob") is FORBIDDEN
    assert policy.decide("/alice/notes", "send", None) is NEED_USER
    assert policy.decide("/alice/notes", "receive", None) is ALLOW
    assert policy.decide("/elsewhere", "send", "bob") is ALLOW  # (the default: any user)
    assert policy.decide("/elsewhere", "send", None) is NEED_USER
    assert policy.decide("/elsewhere", "receive", None) is ALLOW
    assert policy.decide("/team-red/a/b", "send", "bob") is ALLOW
    assert policy.decide("/team-red/a/b", "receive", None) is NEED_USER
    assert policy.decide("/closed/x", "receive", "alice") is FORBIDDEN
    assert policy.decide("/closed/x", "send", None) is NEED_USER


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", users("alice")])
def test_a_file_without_a_default_lets_anyone_send_and_receive(text: str) -> None:
    policy = parse_policy(text)
    assert policy.rules == ()
    assert (policy.default.send, policy.default.receive) == (Anyone.ANYONE, Anyone.ANYONE)
    for action in ("send", "receive"):
        assert policy.decide("/any/where", action, None) is ALLOW


@pytest.mark.parametrize(
    ("written", "who"),
    [
        ('"anyone"', Anyone.ANYONE),
        ('"users"', Anyone.USERS),
        ('"nobody"', Anyone.NOBODY),
        ('["alice"]', frozenset({"alice"})),
        ('["alice", "bob", "alice"]', frozenset({"alice", "bob"})),
    ],
)
def test_each_way_of_saying_who(written: str, who: Who) -> None:
    text = users("alice", "bob") + f"[[rules]]\nprefix = '/x/'\nsend = {written}\nreceive = {written}\n"
    text += f"\n[default]\nsend = {written}\nreceive = 'anyone'\n"
    policy = parse_policy(text)
    assert policy.rules[0].send == policy.rules[0].receive == policy.default.send == who


def test_other_forms_toml_allows_mean_the_same() -> None:
    """`[default]` as a table, users in one `[users]` table, rules as an inline array."""
    text = f"""\
rules = [
  {{ prefix = "/a/", send = "nobody", receive = "anyone" }},
  {{ pattern = "/b/*", send = ["carol"], receive = "users" }},
]

[default]
send = "users"
receive = "nobody"

[users]
carol = {{ password = "{HASH}" }}
"dot.ted_-9" = {{ password = "{HASH}" }}
"""
    policy = parse_policy(text)
    assert set(policy.users) == {"carol", "dot.ted_-9"}
    assert [rule.prefix for rule in policy.rules] == ["/a/", None]
    assert policy.decide("/b/x", "send", "carol") is ALLOW
    assert policy.decide("/b/x", "send", "dot.ted_-9") is FORBIDDEN
    assert policy.decide("/b/x/y", "send", "dot.ted_-9") is ALLOW  # (no rule: the default)
    assert policy.decide("/c", "receive", "carol") is FORBIDDEN


# -- decide ------------------------------------------------------------------------------------------

WHO_TABLE = [
    # who, user -> verdict
    (Anyone.ANYONE, None, ALLOW),
    (Anyone.ANYONE, "alice", ALLOW),
    (Anyone.USERS, None, NEED_USER),
    (Anyone.USERS, "alice", ALLOW),
    (Anyone.USERS, "bob", ALLOW),
    (Anyone.NOBODY, None, NEED_USER),
    (Anyone.NOBODY, "alice", FORBIDDEN),
    (frozenset({"alice"}), None, NEED_USER),
    (frozenset({"alice"}), "alice", ALLOW),
    (frozenset({"alice"}), "bob", FORBIDDEN),
    (frozenset({"alice", "bob"}), "bob", ALLOW),
]


@pytest.mark.parametrize(("who", "user", "verdict"), WHO_TABLE)
def test_decide_for_each_kind_of_who(who: Who, user: str | None, verdict: Verdict) -> None:
    send_only = Policy({}, (), Rule(send=who, receive=Anyone.ANYONE))
    receive_only = Policy({}, (), Rule(send=Anyone.NOBODY, receive=who))
    assert send_only.decide("/k", "send", user) is verdict
    assert receive_only.decide("/k", "receive", user) is verdict
    assert send_only.decide("/k", "receive", user) is ALLOW  # (the other action is its own)


def test_the_first_matching_rule_decides_and_the_default_when_none_does() -> None:
    # (a top-level key after a table would belong to it: the default goes first)
    head = 'default = { send = "nobody", receive = "nobody" }\n' + users("alice", "bob")
    narrow = '[[rules]]\nprefix = "/team/alice/"\nsend = ["alice"]\nreceive = ["alice"]\n'
    broad = '[[rules]]\npattern = "/team/**"\nsend = "users"\nreceive = "anyone"\n'
    narrow_first = parse_policy(head + narrow + broad)
    broad_first = parse_policy(head + broad + narrow)
    assert narrow_first.decide("/team/alice/x", "send", "bob") is FORBIDDEN
    assert broad_first.decide("/team/alice/x", "send", "bob") is ALLOW
    assert narrow_first.decide("/team/alice/x", "receive", None) is NEED_USER
    assert broad_first.decide("/team/alice/x", "receive", None) is ALLOW
    assert narrow_first.decide("/team/bob/x", "send", "bob") is ALLOW  # (the broad one, second)
    for policy in (narrow_first, broad_first):
        assert policy.rule_for("/elsewhere") is policy.default
        assert policy.decide("/elsewhere", "send", "alice") is FORBIDDEN
        assert policy.decide("/elsewhere", "receive", None) is NEED_USER
        assert policy.decide("/team", "send", "alice") is FORBIDDEN  # (`/team/**` needs the slash)


PATTERNS = [
    # pattern, matching keys, keys it does not match
    (
        "/team-*/**",
        ["/team-a/x", "/team-a/x/y/z", "/team-/x", "/team-a/"],
        ["/team-a", "/team/x", "/x/team-a/b"],
    ),
    ("/drop/*", ["/drop/a", "/drop/", "/drop/a.b-c"], ["/drop/a/b", "/drop", "/dropx/a", "/drop/a/"]),
    ("/*/inbox", ["/alice/inbox", "//inbox"], ["/a/b/inbox", "/alice/inbox/x", "/alice/inbox2"]),
    ("/a/**/z", ["/a/b/z", "/a/b/c/z", "/a//z"], ["/a/z", "/a/b/z/y"]),
    ("/**", ["/", "/x", "/x/y/z"], []),
    ("/f*.txt", ["/f.txt", "/foo.txt"], ["/foo.txt/x", "/fooXtxt", "/g.txt", "/d/f.txt"]),
    ("/a.b+c(d)[e]$^|?", ["/a.b+c(d)[e]$^|?"], ["/aXb+c(d)[e]$^|?", "/a.bbc(d)[e]$^|?", "/a.b+cd[e]$^|"]),
    ("/exact", ["/exact"], ["/exact/", "/exactly", "/EXACT"]),
    ("/x\ny/*", ["/x\ny/z"], ["/xy/z"]),
]


@pytest.mark.parametrize(("pattern", "matching", "other"), PATTERNS)
def test_patterns_star_within_a_segment_double_star_across(
    pattern: str, matching: list[str], other: list[str]
) -> None:
    escaped = pattern.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    policy = parse_policy(f'[[rules]]\npattern = "{escaped}"\nsend = "nobody"\nreceive = "anyone"\n')
    for key in matching:
        assert policy.decide(key, "send", None) is NEED_USER, (pattern, key)
    for key in other:
        assert policy.decide(key, "send", None) is ALLOW, (pattern, key)


@pytest.mark.parametrize(
    ("prefix", "matching", "other"),
    [
        ("/alice/", ["/alice/", "/alice/x", "/alice/x/y"], ["/alice", "/alicex/y", "/ALICE/x", "/x/alice/"]),
        ("/a", ["/a", "/ab", "/a/b"], ["/", "/b/a"]),
        ("/", ["/", "/anything/at/all"], []),
        ("/*/", ["/*/x"], ["/a/x"]),  # (a prefix is taken as it is: no wildcards)
    ],
)
def test_a_prefix_is_a_plain_string_prefix(prefix: str, matching: list[str], other: list[str]) -> None:
    policy = parse_policy(f'[[rules]]\nprefix = "{prefix}"\nsend = "nobody"\nreceive = "anyone"\n')
    for key in matching:
        assert policy.decide(key, "send", None) is NEED_USER, (prefix, key)
    for key in other:
        assert policy.decide(key, "send", None) is ALLOW, (prefix, key)


# -- refusals, each naming its line --------------------------------------------------------------

RULE = '[[rules]]\nprefix = "/a/"\nsend = "anyone"\nreceive = "anyone"\n'

MALFORMED = [
    # (the file, the line it must name, what the reason must say)
    pytest.param(
        '# c\n\ndefault = { send = "anyone" receive = "anyone" }\n',
        3,
        "unclosed inline table",
        id="toml-inline",
    ),
    pytest.param(users("alice") + 'x = "no end\n', 4, "illegal character", id="toml-string"),
    pytest.param(
        users("alice") + "[users.alice]\n", 4, "cannot declare ('users', 'alice') twice", id="toml-twice"
    ),
    pytest.param(RULE + "send = 1\n", 5, "cannot overwrite a value", id="toml-overwrite"),
    pytest.param('rules = [\n  { prefix = "/a/" },\n', 2, "invalid value", id="toml-at-end"),
    pytest.param(
        '\ndefaults = { send = "anyone", receive = "anyone" }\n',
        2,
        "unknown key 'defaults'",
        id="unknown-top",
    ),
    pytest.param(
        users("alice") + RULE + "\n[rule]\nprefix = '/b/'\n", 9, "unknown key 'rule'", id="unknown-table"
    ),
    pytest.param(
        users("alice") + RULE + '\n[[rules]]\nprefixx = "/b/"\nsend = "anyone"\nreceive = "anyone"\n',
        9,
        "unknown key 'prefixx' (use pattern, prefix, receive, send)",
        id="unknown-rule-key",
    ),
    pytest.param(
        'default = { send = "anyone", receive = "anyone", prefix = "/" }\n',
        1,
        "unknown key 'prefix' (use receive, send)",
        id="unknown-default-key",
    ),
    pytest.param(
        users("alice") + '[users.bob]\npassword = "' + HASH + '"\nsalt = "x"\n',
        4,
        "user 'bob' needs ",
        id="unknown-user-key",
    ),
    pytest.param("\n\n[users.carol]\n", 3, "user 'carol' needs ", id="user-without-password"),
    pytest.param(
        RULE + '\n[[rules]]\nsend = "anyone"\nreceive = "anyone"\n',
        6,
        "a rule needs one of prefix or pattern",
        id="no-match",
    ),
    pytest.param(
        RULE + '\n[[rules]]\nprefix = "/b/"\npattern = "/b/*"\nsend = "anyone"\nreceive = "anyone"\n',
        6,
        "a rule needs one of prefix or pattern",
        id="both",
    ),
    pytest.param(
        RULE + '[[rules]]\nprefix = "/b/"\nsend = "anyone"\n', 5, "say who may receive", id="no-receive"
    ),
    pytest.param('default = { receive = "anyone" }\n', 1, "say who may send", id="default-no-send"),
    pytest.param(
        users("alice")
        + RULE
        + RULE
        + '[[rules]]\nprefix = "/c/"\nsend = ["alice", "mallory"]\nreceive = "anyone"\n',
        12,
        "no user 'mallory' in [users]",
        id="unknown-user-in-rule",
    ),
    pytest.param(
        '\ndefault = { send = ["zed"], receive = "anyone" }\n' + users("alice"),
        2,
        "no user 'zed' in [users]",
        id="unknown-user-in-default",
    ),
    pytest.param(
        users("alice") + '[users.bob]\npassword = "hunter2"\n',
        4,
        "user 'bob': password must be an argon2id hash (make one with `pipe-relay hash-password`), "
        "never the password itself",
        id="plaintext",
    ),
    pytest.param(
        '[users.bob]\npassword = "$argon2i$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"\n',
        1,
        "must be an argon2id hash",
        id="argon2i-not-id",
    ),
    pytest.param("[users.bob]\npassword = 42\n", 1, "must be an argon2id hash", id="password-number"),
    pytest.param('\n[users]\nbob = "' + HASH + '"\n', 3, "user 'bob' needs ", id="user-not-table"),
    pytest.param("\nusers = 'alice'\n", 2, "users must be a table", id="users-not-table"),
    pytest.param(
        "# long\n[users." + "a" * 65 + "]\npassword = '" + HASH + "'\n",
        2,
        "user name '" + "a" * 65 + "': 1 to 64 of A-Z a-z 0-9 . _ -",
        id="name-too-long",
    ),
    pytest.param('\ndefault = "anyone"\n', 2, "default must be a table", id="default-not-table"),
    pytest.param('rules = "everything"\n', 1, "rules must be an array", id="rules-not-array"),
    pytest.param("\n\nrules = ['/a/']\n", 3, "a rule must be a table", id="rule-not-table"),
    pytest.param(
        RULE + '[[rules]]\nprefix = "b/"\nsend = "anyone"\nreceive = "anyone"\n',
        5,
        "prefix must be a path starting with /",
        id="prefix-relative",
    ),
    pytest.param(
        RULE + '[[rules]]\nprefix = 3\nsend = "anyone"\nreceive = "anyone"\n',
        5,
        "prefix must be a path",
        id="prefix-number",
    ),
    pytest.param(
        RULE + '[[rules]]\npattern = "**"\nsend = "anyone"\nreceive = "anyone"\n',
        5,
        "pattern must be a path starting with /",
        id="pattern-relative",
    ),
]

NOT_A_WHO = "use anyone, users, nobody or a non-empty list of users"
WHO_VALUES = [
    pytest.param('"everyone"', "'everyone': use anyone, users, nobody or a list of users", id="word"),
    pytest.param('"Anyone"', "'Anyone': use anyone, users, nobody or a list of users", id="case"),
    pytest.param('""', "'': use anyone, users, nobody or a list of users", id="empty-string"),
    pytest.param("[]", NOT_A_WHO, id="empty-list"),
    pytest.param('["alice", 2]', NOT_A_WHO, id="mixed-list"),
    pytest.param("1", NOT_A_WHO, id="number"),
    pytest.param("true", NOT_A_WHO, id="bool"),
    pytest.param("{ users = true }", NOT_A_WHO, id="table"),
]


@pytest.mark.parametrize(("text", "line", "reason"), MALFORMED)
def test_a_malformed_file_is_refused_naming_its_line(text: str, line: int, reason: str) -> None:
    message = refusal(text)
    assert message.startswith(f"line {line}: "), message
    assert reason in message, message
    assert "\n" not in message


@pytest.mark.parametrize(("value", "reason"), WHO_VALUES)
@pytest.mark.parametrize("where", ["rule", "default"])
def test_who_values_that_are_not_allowed(value: str, reason: str, where: str) -> None:
    if where == "rule":
        text = users("alice") + RULE + f"\n[[rules]]\nprefix = '/b/'\nsend = 'anyone'\nreceive = {value}\n"
        line = 9
    else:
        text = f"# first\ndefault = {{ send = {value}, receive = 'anyone' }}\n" + users("alice")
        line = 2
    assert refusal(text) == f"line {line}: {reason}"


def test_a_reason_is_the_whole_message_after_the_line() -> None:
    """The exact text (the CLI prints it after `policy FILE: `)."""
    assert (
        refusal("\n\n" + RULE.replace('prefix = "/a/"\n', ""))
        == "line 3: a rule needs one of prefix or pattern"
    )
    assert refusal('\n[users.x]\npassword = "pw"\n') == (
        "line 2: user 'x': password must be an argon2id hash (make one with `pipe-relay hash-password`), "
        "never the password itself"
    )
    assert refusal("a = [\n") == "line 1: invalid value"


# Bugs: the line of a user is looked up by text, `[users.NAME]` or `NAME =`, the first line that
# looks like either.


@pytest.mark.parametrize(
    "header", ['[users."bob smith"]', '[users."bob@example"]', '[users."zoë"]', '[users.""]']
)
def test_a_bad_user_name_names_its_own_line(header: str) -> None:
    text = users("alice") + f"\n{header}\npassword = '{HASH}'\n"
    assert refusal(text).startswith("line 5: user name "), refusal(text)


def test_a_quoted_valid_user_name_with_a_plaintext_password_names_its_line() -> None:
    text = users("alice") + '[users."team.lead"]\npassword = "plain"\n'
    assert refusal(text).startswith("line 4: user 'team.lead'"), refusal(text)


def test_a_user_named_like_an_earlier_key_names_its_own_line() -> None:
    text = RULE + "\n[users.send]\npassword = 'plain'\n"
    assert refusal(text).startswith("line 6: user 'send'"), refusal(text)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[users]\nalice = { password = "H" }\n"bob smith" = { password = "H" }\n', 3),
        ("[users]\nalice.password = 'H'\n'zoë'.password = 'plain'\n", 3),
        ("[users.alice]\npassword = 'H'\n[ users . 'team.lead' ]  # the lead\npassword = 'plain'\n", 3),
    ],
    ids=["inline-table", "dotted-keys", "spaced-header"],
)
def test_a_user_written_in_any_toml_form_is_pointed_at_by_its_own_line(text: str, line: int) -> None:
    assert refusal(text.replace("'H'", f"'{HASH}'").replace('"H"', f'"{HASH}"')).startswith(f"line {line}: ")


@pytest.mark.parametrize("prefix", ["/%7Eteam/", "/caf%c3%a9/", "/%41dmin/"])
def test_a_rule_written_with_escapes_applies_to_the_url_it_names(prefix: str) -> None:
    policy = parse_policy(f'[[rules]]\nprefix = "{prefix}"\nsend = "nobody"\nreceive = "nobody"\n')
    key = parse_target(prefix + "x", max_path_length=1024).key  # (what the server routes by)
    assert policy.decide(key, "send", None) is NEED_USER, (prefix, key)


def test_a_rule_written_in_unicode_applies_to_the_escaped_url_a_client_sends() -> None:
    """(A request line is ASCII: curl and browsers send /café/ as /caf%C3%A9/, or in lower case.)"""
    policy = parse_policy('[[rules]]\nprefix = "/café/"\nsend = "nobody"\nreceive = "nobody"\n')
    for sent in ("/caf%C3%A9/x", "/caf%c3%a9/x"):
        key = parse_target(sent, max_path_length=1024).key
        assert policy.decide(key, "send", None) is NEED_USER, key
    assert policy.decide(parse_target("/cafe/x", max_path_length=1024).key, "send", None) is ALLOW


@pytest.mark.parametrize(
    "password",
    ["$argon2id$", HASH.rsplit("$", 1)[0], "$argon2id$v=19$m=lots,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaA"],
    ids=["prefix-only", "no-hash-part", "bad-parameter"],
)
def test_a_garbled_hash_is_refused_with_its_line(password: str) -> None:
    """(Else it would load, and its user could never log in: a check against it fails at once.)"""
    text = users("alice") + f'[users.bob]\npassword = "{password}"\n'
    assert refusal(text).startswith("line 4: user 'bob': "), password


# -- decide against a plain model ----------------------------------------------------------------

NAMES = ["alice", "bob", "carol"]
SEGMENT = st.text("ab.-", max_size=3)
keys = st.lists(SEGMENT, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
prefixes = st.text("ab/.-", max_size=5).map(lambda text: "/" + text)
patterns = st.lists(st.sampled_from(["a", "b", "/", "-", ".", "*", "**"]), max_size=6).map(
    lambda parts: "/" + "".join(parts)
)
whos = st.one_of(
    st.sampled_from(["anyone", "users", "nobody"]),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
)
rule_lists = st.lists(st.tuples(st.booleans(), st.one_of(prefixes, patterns), whos, whos), max_size=5)


def glob_matches(pattern: str, key: str) -> bool:
    """`*`: any run of characters but `/`; `**`: any run at all; anything else: itself."""

    @cache
    def at(p: int, k: int) -> bool:
        if p == len(pattern):
            return k == len(key)
        if pattern.startswith("**", p):
            return any(at(p + 2, end) for end in range(k, len(key) + 1))
        if pattern[p] == "*":
            end = k
            while True:
                if at(p + 1, end):
                    return True
                if end == len(key) or key[end] == "/":
                    return False
                end += 1
        return k < len(key) and key[k] == pattern[p] and at(p + 1, k + 1)

    return at(0, 0)


def model_verdict(who: str | list[str], user: str | None) -> Verdict:
    if who == "anyone":
        return ALLOW
    if user is None:
        return NEED_USER
    if who == "users" or (isinstance(who, list) and user in who):
        return ALLOW
    return FORBIDDEN


def toml_who(who: str | list[str]) -> str:
    return f'"{who}"' if isinstance(who, str) else "[" + ", ".join(f'"{name}"' for name in who) + "]"


@fuzz_settings(200)
@given(
    rules=rule_lists,
    default=st.tuples(whos, whos),
    key=keys,
    action=st.sampled_from(["send", "receive"]),
    user=st.one_of(st.none(), st.sampled_from(NAMES)),
)
def test_decide_is_the_first_matching_rule_s_who_or_the_default_s(
    rules: list[tuple[bool, str, str | list[str], str | list[str]]],
    default: tuple[str | list[str], str | list[str]],
    key: str,
    action: str,
    user: str | None,
) -> None:
    text = f"default = {{ send = {toml_who(default[0])}, receive = {toml_who(default[1])} }}\n\n"
    text += users(*NAMES)
    for is_prefix, where, send, receive in rules:
        text += f'[[rules]]\n{"prefix" if is_prefix else "pattern"} = "{where}"\n'
        text += f"send = {toml_who(send)}\nreceive = {toml_who(receive)}\n\n"
    policy = parse_policy(text)
    expected_who = default[0] if action == "send" else default[1]
    for index, (is_prefix, where, send, receive) in enumerate(rules):
        if key.startswith(where) if is_prefix else glob_matches(where, key):
            expected_who = send if action == "send" else receive
            assert policy.rule_for(key) is policy.rules[index]
            break
    else:
        assert policy.rule_for(key) is policy.default
    assert policy.decide(key, action, user) is model_verdict(expected_who, user)
    assert [rule.line for rule in policy.rules] == [
        number for number, line in enumerate(text.splitlines(), 1) if line == "[[rules]]"
    ]


@pytest.mark.parametrize(("pattern", "matching", "other"), PATTERNS)
def test_the_model_s_glob_agrees_with_the_examples(
    pattern: str, matching: list[str], other: list[str]
) -> None:
    """(The model, written without regular expressions, is itself checked on the examples above.)"""
    assert all(glob_matches(pattern, key) for key in matching)
    assert not any(glob_matches(pattern, key) for key in other)
