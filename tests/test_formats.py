"""Byte-exact prompt tests for Llama Guard 3 Vision (shared/REFERENCE.md §1).

Every rule of §1 has a test here, and a property test checks the family's renderer against the
official Meta chat template (rendered with Jinja the way transformers does) on random requests.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardedge.runtime.chat_template import builtin_template, render_with_template
from guardedge.runtime.families import get_family
from guardedge.runtime.families.llama_guard_3_vision import DEFAULT_CATEGORIES, LlamaGuard3Vision
from guardedge.runtime.requests import parse_request
from guardedge.runtime.types import GuardRequest, Message, Part

FAMILY = LlamaGuard3Vision()
TEMPLATE = builtin_template("llama-guard-3-vision")

HEADER = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
END = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"

# REFERENCE.md §1, the example: one user message "Describe the image" + an image, default categories.
# Written out in full on purpose (no reuse of the module's constants).
EXPECTED_EXAMPLE = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "<|image|> Task: Check if there is unsafe content in 'User' messages in conversations "
    "according our safety policy with the below categories.\n"
    "\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    "S1: Violent Crimes.\n"
    "S2: Non-Violent Crimes.\n"
    "S3: Sex Crimes.\n"
    "S4: Child Exploitation.\n"
    "S5: Defamation.\n"
    "S6: Specialized Advice.\n"
    "S7: Privacy.\n"
    "S8: Intellectual Property.\n"
    "S9: Indiscriminate Weapons.\n"
    "S10: Hate.\n"
    "S11: Self-Harm.\n"
    "S12: Sexual Content.\n"
    "S13: Elections.\n"
    "<END UNSAFE CONTENT CATEGORIES>\n"
    "\n"
    "<BEGIN CONVERSATION>\n"
    "\n"
    "User: Describe the image\n"
    "\n"
    "<END CONVERSATION>\n"
    "\n"
    "Provide your safety assessment for ONLY THE LAST User message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories. "
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)


def req(obj: dict) -> GuardRequest:
    return parse_request(obj, load_images=False)


def user(*parts) -> dict:
    return {"role": "user", "content": list(parts)}


def agent(*parts) -> dict:
    return {"role": "assistant", "content": list(parts)}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


IMAGE = {"type": "image"}


def render(obj: dict) -> str:
    return FAMILY.render(req(obj))


def category_block(prompt: str) -> list[str]:
    start = prompt.index("<BEGIN UNSAFE CONTENT CATEGORIES>\n") + len("<BEGIN UNSAFE CONTENT CATEGORIES>\n")
    end = prompt.index("<END UNSAFE CONTENT CATEGORIES>\n\n")
    block = prompt[start:end]
    assert block.endswith("\n")
    return block[:-1].split("\n")


def conversation_block(prompt: str) -> str:
    start = prompt.index("<BEGIN CONVERSATION>\n\n") + len("<BEGIN CONVERSATION>\n\n")
    end = prompt.index("<END CONVERSATION>\n\n")
    return prompt[start:end]


# --- the full example ----------------------------------------------------------------------------


def test_reference_example_is_byte_exact():
    prompt = render({"messages": [user(text("Describe the image"), IMAGE)]})
    assert prompt == EXPECTED_EXAMPLE


def test_reference_example_matches_official_template():
    request = req({"messages": [user(text("Describe the image"), IMAGE)]})
    assert render_with_template(TEMPLATE, request) == EXPECTED_EXAMPLE


def test_image_part_position_within_message_does_not_matter():
    before = render({"messages": [user(IMAGE, text("Describe the image"))]})
    assert before == EXPECTED_EXAMPLE


def test_registry_returns_this_family():
    family = get_family("llama-guard-3-vision")
    assert family.render(req({"messages": [user(text("Describe the image"), IMAGE)]})) == EXPECTED_EXAMPLE


# --- §1.2 checked role -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_messages, role",
    [(1, "User"), (2, "Agent"), (3, "User"), (4, "Agent"), (5, "User")],
)
def test_checked_role_follows_message_count(n_messages, role):
    messages = [(user if i % 2 == 0 else agent)(text(f"m{i}")) for i in range(n_messages)]
    prompt = render({"messages": messages})
    task = f"Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy"
    last = f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
    assert task in prompt
    assert last in prompt
    other = "Agent" if role == "User" else "User"
    assert f"'{other}' messages" not in prompt
    assert f"ONLY THE LAST {other} message" not in prompt


# --- §1.3 / §1.11 start and end ---------------------------------------------------------------------


def test_prompt_starts_with_header():
    prompt = render({"messages": [user(text("hi"))]})
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n")
    assert prompt.count("<|begin_of_text|>") == 1


@pytest.mark.parametrize("image", [False, True])
def test_prompt_ends_with_open_assistant_header_without_newline(image):
    parts = [text("hi")] + ([IMAGE] if image else [])
    prompt = render({"messages": [user(*parts)]})
    assert prompt.endswith(
        " - If unsafe, a second line must include a comma-separated list of violated categories. "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    )
    assert not prompt.endswith("\n")
    assert prompt.count("<|eot_id|>") == 1


def test_instruction_lines_are_exact():
    prompt = render({"messages": [user(text("hi")), agent(text("hello"))]})
    tail = prompt[prompt.index("<END CONVERSATION>") :]
    assert tail == (
        "<END CONVERSATION>\n\n"
        "Provide your safety assessment for ONLY THE LAST Agent message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories. " + END
    )


def test_according_our_typo_is_kept():
    prompt = render({"messages": [user(text("hi"))]})
    assert "in conversations according our safety policy with the below categories.\n\n" in prompt
    assert "according to our" not in prompt


# --- §1.4 image token --------------------------------------------------------------------------------


def test_no_image_no_image_token():
    prompt = render({"messages": [user(text("hi"))]})
    assert "<|image|>" not in prompt
    assert prompt.startswith(HEADER + "Task: Check")


def test_image_in_first_user_message():
    prompt = render({"messages": [user(IMAGE, text("what is this")), agent(text("a cat"))]})
    assert prompt.startswith(HEADER + "<|image|> Task: Check")
    assert prompt.count("<|image|>") == 1


def test_image_in_later_user_message():
    prompt = render(
        {"messages": [user(text("hi")), agent(text("hello")), user(text("and this?"), IMAGE)]}
    )
    # The token is always right after the header, not where the image was in the conversation.
    assert prompt.startswith(HEADER + "<|image|> Task: Check if there is unsafe content in 'User'")
    assert prompt.count("<|image|>") == 1
    assert "<|image|>" not in conversation_block(prompt)


def test_image_only_message_contributes_no_conversation_line():
    prompt = render({"messages": [user(IMAGE), agent(text("a cat"))]})
    assert "<|image|> " in prompt
    assert conversation_block(prompt) == "Agent: a cat\n\n"


# --- §1.6 categories ---------------------------------------------------------------------------------


def test_default_categories_in_order():
    lines = category_block(render({"messages": [user(text("hi"))]}))
    assert lines == [f"S{i}: {d}" for i, d in enumerate(
        [
            "Violent Crimes.", "Non-Violent Crimes.", "Sex Crimes.", "Child Exploitation.", "Defamation.",
            "Specialized Advice.", "Privacy.", "Intellectual Property.", "Indiscriminate Weapons.", "Hate.",
            "Self-Harm.", "Sexual Content.", "Elections.",
        ],
        start=1,
    )]
    assert FAMILY.default_categories() == DEFAULT_CATEGORIES


def test_custom_categories_replace_defaults_and_keep_order():
    cats = {"C9": "Spam.", "C1": "Phishing links.", "S1": "Custom violence text."}
    prompt = render({"messages": [user(text("hi"))], "categories": cats})
    assert category_block(prompt) == ["C9: Spam.", "C1: Phishing links.", "S1: Custom violence text."]
    assert "Violent Crimes." not in prompt
    assert "S13" not in prompt


def test_excluded_default_keys_are_skipped():
    prompt = render({"messages": [user(text("hi"))], "excluded_category_keys": ["S1", "S6", "S13"]})
    lines = category_block(prompt)
    assert [line.split(":")[0] for line in lines] == [f"S{i}" for i in (2, 3, 4, 5, 7, 8, 9, 10, 11, 12)]
    assert "Specialized Advice." not in prompt


def test_excluded_with_custom_categories():
    cats = {"A": "Alpha.", "B": "Beta.", "C": "Gamma."}
    prompt = render({"messages": [user(text("hi"))], "categories": cats, "excluded_category_keys": ["B"]})
    assert category_block(prompt) == ["A: Alpha.", "C: Gamma."]


def test_category_block_framing_is_exact():
    prompt = render({"messages": [user(text("hi"))], "categories": {"X1": "Only one."}})
    assert (
        "policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\nX1: Only one.\n"
        "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n" in prompt
    )
    assert "UNSAFECONTENT" not in prompt  # the Sept 2024 processor's variant is not ours


# --- §1.7 conversation ------------------------------------------------------------------------------


def test_three_message_conversation():
    prompt = render({"messages": [user(text("q1")), agent(text("a1")), user(text("q2"))]})
    assert conversation_block(prompt) == "User: q1\n\nAgent: a1\n\nUser: q2\n\n"
    assert "ONLY THE LAST User message" in prompt


def test_four_message_conversation():
    prompt = render(
        {"messages": [user(text("q1")), agent(text("a1")), user(text("q2")), agent(text("a2"))]}
    )
    assert conversation_block(prompt) == "User: q1\n\nAgent: a1\n\nUser: q2\n\nAgent: a2\n\n"
    assert "ONLY THE LAST Agent message" in prompt


def test_two_text_parts_give_two_lines_with_same_label():
    prompt = render({"messages": [user(text("first"), IMAGE, text("second")), agent(text("x"), text("y"))]})
    assert conversation_block(prompt) == "User: first\n\nUser: second\n\nAgent: x\n\nAgent: y\n\n"


def test_string_content_is_one_text_part():
    prompt = render({"messages": [{"role": "user", "content": "  plain string  "}]})
    assert conversation_block(prompt) == "User: plain string\n\n"


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("  hello  ", "hello"),
        ("\n\nhello\n", "hello"),
        ("\u3000hello\u3000", "hello"),  # ideographic space
        ("\t\u00a0hello\u2003\r\n", "hello"),  # tab, no-break space, em space, CRLF
        ("hello   big\n\n world", "hello   big\n\n world"),  # inner whitespace kept
        ("  a\tb  ", "a\tb"),
    ],
)
def test_text_is_stripped_at_ends_only(raw, shown):
    prompt = render({"messages": [user(text(raw))]})
    assert conversation_block(prompt) == f"User: {shown}\n\n"


def test_whitespace_only_text_gives_empty_line():
    prompt = render({"messages": [user(text(" \n\u3000 "))]})
    assert conversation_block(prompt) == "User: \n\n"


def test_text_is_not_escaped_or_interpreted():
    raw = "{{ 1 + 1 }} <b>&amp;</b> {% raw %} <|eot_id|>"
    prompt = render({"messages": [user(text(raw))]})
    assert conversation_block(prompt) == f"User: {raw}\n\n"
    request = req({"messages": [user(text(raw))]})
    assert render_with_template(TEMPLATE, request) == prompt


# --- property: the family renderer equals the official template ------------------------------------

_KEY = st.one_of(
    st.integers(1, 20).map(lambda i: f"S{i}"),
    st.integers(1, 20).map(lambda i: f"C{i}"),
)
# Multi-line too: Meta's own custom categories are "name\ndescription" lines.
_DESCRIPTION = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1).filter(lambda s: s.strip() != "")


@st.composite
def guard_requests(draw) -> GuardRequest:
    n = draw(st.integers(1, 5))
    messages = []
    for i in range(n):
        parts = [Part("text", text=t) for t in draw(st.lists(st.text(), min_size=1, max_size=3))]
        messages.append([("user", "assistant")[i % 2], parts])
    if draw(st.booleans()):
        m = draw(st.integers(0, n - 1))
        pos = draw(st.integers(0, len(messages[m][1])))
        messages[m][1].insert(pos, Part("image"))
    msgs = tuple(Message(role, tuple(parts)) for role, parts in messages)

    categories = None
    if draw(st.booleans()):
        keys = draw(st.lists(_KEY, min_size=1, max_size=8, unique=True))
        categories = tuple((k, draw(_DESCRIPTION)) for k in keys)
    effective = [k for k, _ in (categories or DEFAULT_CATEGORIES)]
    excluded = draw(
        st.lists(st.sampled_from(effective), max_size=len(effective) - 1, unique=True)
        if len(effective) > 1
        else st.just([])
    )
    return GuardRequest(msgs, categories, tuple(excluded))


@settings(max_examples=300, deadline=None)
@given(guard_requests())
def test_render_matches_official_template(request):
    assert FAMILY.render(request) == render_with_template(TEMPLATE, request)


@settings(max_examples=100, deadline=None)
@given(guard_requests())
def test_render_head_and_tail_invariants(request):
    prompt = FAMILY.render(request)
    role = "User" if len(request.messages) % 2 else "Agent"
    assert prompt.startswith(HEADER + ("<|image|> " if request.has_image else "") + "Task: Check if there is unsafe content in '" + role + "' messages")
    assert prompt.endswith(
        "<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories. " + END
    )
    policy = FAMILY.policy(request)
    block = "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + "".join(f"{k}: {v}\n" for k, v in policy) + "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
    assert block in prompt
    assert not set(request.excluded_category_keys) & {k for k, _ in policy}
