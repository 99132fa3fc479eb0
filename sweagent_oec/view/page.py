"""Render the viewer's data into one self-contained HTML file (no server, no network)."""

from __future__ import annotations

import json
import secrets
from importlib import resources

import jinja2


def _script_safe_json(data: dict) -> str:
    # Inside <script> the HTML parser ends the element at "</script" whatever JSON thinks: escape
    # every '<', '>' and '&' so text an agent wrote can never close the element or open another.
    return (json.dumps(data, ensure_ascii=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_html(data: dict) -> str:
    source = resources.files("sweagent_oec.view").joinpath("page.html.j2").read_text()
    template = jinja2.Environment(autoescape=True).from_string(source)
    # A fresh nonce: the page's content security policy runs only our own script, so even markup
    # that slipped through would stay inert.
    return template.render(title=data["source"], data_json=jinja2.utils.markupsafe.Markup(_script_safe_json(data)),
                           nonce=secrets.token_urlsafe(16))
