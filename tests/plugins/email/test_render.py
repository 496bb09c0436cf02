"""Rendering the email templates: every template in HTML and text, escaping, strict variables, overrides."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import jinja2
import pytest
from framework_email.render import TEMPLATES_DIR, EmailRenderer, EmailTemplateError

from framework.errors import SkipRetry

if TYPE_CHECKING:
    from pathlib import Path

HOSTILE = '<script>alert("x")</script> & Co'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co"

# template -> (data, required variable, the values each body must show)
CASES: dict[str, tuple[dict[str, Any], str | None, list[str]]] = {
    "welcome": (
        {"name": HOSTILE, "action_url": "https://app.test/start?a=1&b=2", "action_text": "Open the app"},
        None,
        ["Open the app"],
    ),
    "password-reset": (
        {"name": HOSTILE, "reset_url": "https://app.test/reset?token=abc&u=1", "expires_in": "1 hour"},
        "reset_url",
        ["1 hour"],
    ),
    "verify-email": (
        {"name": HOSTILE, "verify_url": "https://app.test/verify?token=xyz&u=1", "code": "493 201"},
        "verify_url",
        ["493 201"],
    ),
    "notification": (
        {"name": HOSTILE, "message": f"First paragraph {HOSTILE}.\n\nSecond paragraph.", "title": "Heads up"},
        "message",
        ["Heads up", "Second paragraph."],
    ),
}


@pytest.fixture
def renderer() -> EmailRenderer:
    return EmailRenderer(context={"app_name": "Acme & Sons", "app_url": "https://acme.test/?x=1&y=2"})


class _TagChecker(HTMLParser):
    """Fails on a closing tag that does not match the open one (void elements aside)."""

    VOID = frozenset({"meta", "br", "img", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def _url_of(data: dict[str, Any]) -> str:
    return str(next(v for k, v in data.items() if k.endswith("_url")))


@pytest.mark.parametrize("template", sorted(CASES))
async def test_every_template_renders_html_and_text(renderer: EmailRenderer, template: str) -> None:
    data, _, shown = CASES[template]
    rendered = await renderer.render(template, {**data, "subject": f"Subject of {template}"})
    assert rendered.html is not None
    assert rendered.text is not None

    html, text = rendered.html, rendered.text
    # Layout: the shared base, tables, inline styles, at most 600px wide, responsive viewport.
    assert html.startswith("<!DOCTYPE html>")
    assert 'name="viewport"' in html
    assert "max-width:600px" in html
    assert 'role="presentation"' in html
    assert f"<title>Subject of {template}</title>" in html
    checker = _TagChecker()
    checker.feed(html)
    assert checker.stack == []

    # Data shows up in both bodies; HTML escapes it, text keeps it as written.
    for value in shown:
        assert value in html
        assert value in text
    assert ESCAPED in html
    assert "<script>" not in html
    assert HOSTILE in text
    if template != "notification":
        url = _url_of(data)
        assert url.replace("&", "&amp;") in html
        assert url in text
    # The app's name from the context, escaped in HTML.
    assert "Acme &amp; Sons" in html
    assert "Acme & Sons" in text
    assert text.endswith("\n") and "\n\n\n" not in text


async def test_notification_splits_paragraphs(renderer: EmailRenderer) -> None:
    rendered = await renderer.render("notification", {"subject": "S", "message": "One.\n\nTwo <b>."})
    assert rendered.html is not None
    assert '<p style="margin:0 0 16px;">One.</p>' in rendered.html
    assert '<p style="margin:0 0 16px;">Two &lt;b&gt;.</p>' in rendered.html
    # Without a title the heading is the subject.
    assert ">S</h1>" in rendered.html


async def test_optional_variables_can_be_left_out(renderer: EmailRenderer) -> None:
    rendered = await renderer.render("welcome", {})
    assert rendered.html is not None
    assert rendered.text is not None
    assert "Hi there," in rendered.html
    assert "Hi there," in rendered.text
    assert "Get started" not in rendered.html


async def test_without_app_name_the_header_is_left_out() -> None:
    rendered = await EmailRenderer().render("password-reset", {"reset_url": "https://x.test/r"})
    assert rendered.html is not None
    assert rendered.text is not None
    assert "font-size:20px; font-weight:700" not in rendered.html
    assert "\n-- \n" not in rendered.text


@pytest.mark.parametrize("template", sorted(t for t, case in CASES.items() if case[1]))
async def test_missing_variable_is_permanent_and_named(renderer: EmailRenderer, template: str) -> None:
    data, required, _ = CASES[template]
    assert required is not None
    data = {k: v for k, v in data.items() if k != required}
    with pytest.raises(EmailTemplateError) as caught:
        await renderer.render(template, data)
    assert isinstance(caught.value, SkipRetry)
    assert repr(template) in str(caught.value)
    assert f"'{required}' is undefined" in str(caught.value)


async def test_missing_template_is_permanent_and_named(renderer: EmailRenderer) -> None:
    with pytest.raises(EmailTemplateError, match="email template 'no-such-thing' not found"):
        await renderer.render("no-such-thing", {})


async def test_path_traversal_is_not_a_template(renderer: EmailRenderer) -> None:
    with pytest.raises(EmailTemplateError, match="not found"):
        await renderer.render("../../render", {})


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def test_app_folder_overrides_a_template(tmp_path: Path) -> None:
    _write(tmp_path / "email" / "welcome.txt", "Custom welcome, {{ name }}!\n")
    rendered = await EmailRenderer([tmp_path]).render("welcome", {"name": "Ada"})
    assert rendered.text == "Custom welcome, Ada!\n"
    assert rendered.html is not None
    assert "Thanks for signing up" in rendered.html  # the .html was not overridden


async def test_override_extends_the_original_with_the_default_prefix(tmp_path: Path) -> None:
    _write(
        tmp_path / "email" / "welcome.html",
        '{% extends "default:email/welcome.html" %}{% block footer %}Sent with care by {{ app_name }}{% endblock %}',
    )
    rendered = await EmailRenderer([tmp_path], context={"app_name": "Acme"}).render("welcome", {"name": "Ada"})
    assert rendered.html is not None
    assert "Sent with care by Acme" in rendered.html
    assert "Thanks for signing up" in rendered.html


async def test_app_folders_are_searched_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _write(first / "email" / "invoice.txt", "first\n")
    _write(second / "email" / "invoice.txt", "second\n")
    _write(second / "email" / "invoice.html", '{% extends "email/base.html" %}{% block content %}Paid{% endblock %}')
    rendered = await EmailRenderer([first, second]).render("invoice", {})
    assert rendered.text == "first\n"
    assert rendered.html is not None
    assert "Paid" in rendered.html
    assert "max-width:600px" in rendered.html  # an app template can extend the plugin's layout


async def test_a_template_may_have_only_one_body(tmp_path: Path) -> None:
    _write(tmp_path / "email" / "plain.txt", "Just text\n")
    _write(tmp_path / "email" / "fancy.html", "<p>{{ what }}</p>")
    renderer = EmailRenderer([tmp_path])
    plain = await renderer.render("plain", {})
    assert (plain.html, plain.text) == (None, "Just text\n")
    fancy = await renderer.render("fancy", {"what": "<i>"})
    assert (fancy.html, fancy.text) == ("<p>&lt;i&gt;</p>", None)


async def test_broken_template_is_permanent(tmp_path: Path) -> None:
    _write(tmp_path / "email" / "broken.html", "{% if %}")
    _write(tmp_path / "email" / "orphan.html", '{% extends "email/missing-layout.html" %}')
    renderer = EmailRenderer([tmp_path])
    with pytest.raises(EmailTemplateError, match=r"'broken' \(email/broken.html\) is broken"):
        await renderer.render("broken", {})
    with pytest.raises(EmailTemplateError, match=r"missing-layout\.html"):
        await renderer.render("orphan", {})


async def test_missing_attribute_of_data_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "email" / "order.txt", "Order {{ order.number }}\n")
    with pytest.raises(EmailTemplateError, match="has no attribute 'number'"):
        await EmailRenderer([tmp_path]).render("order", {"order": {"id": 1}})


async def test_shared_environment_is_used_but_kept_strict(tmp_path: Path) -> None:
    shared_dir = tmp_path / "shared"
    _write(shared_dir / "email" / "shout.txt", "{{ word | shout }}\n")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(shared_dir), autoescape=False)
    env.filters["shout"] = lambda value: f"{value}!".upper()
    renderer = EmailRenderer(env=env)
    assert (await renderer.render("shout", {"word": "hey"})).text == "HEY!\n"
    # Built-in templates are still found, with HTML autoescaped and variables strict.
    welcome = await renderer.render("welcome", {"name": "<b>"})
    assert welcome.html is not None
    assert "&lt;b&gt;" in welcome.html
    with pytest.raises(EmailTemplateError, match="'reset_url' is undefined"):
        await renderer.render("password-reset", {})
    # The shared environment itself is left as it was.
    assert env.undefined is jinja2.Undefined
    assert env.autoescape is False


async def test_async_shared_environment(tmp_path: Path) -> None:
    env = jinja2.Environment(enable_async=True)
    rendered = await EmailRenderer(env=env).render("verify-email", {"verify_url": "https://x.test/v"})
    assert rendered.text is not None
    assert "https://x.test/v" in rendered.text


def test_templates_ship_with_the_package() -> None:
    names = {p.name for p in (TEMPLATES_DIR / "email").iterdir()}
    for template in CASES:
        assert {f"{template}.html", f"{template}.txt"} <= names
    assert {"base.html", "base.txt"} <= names
