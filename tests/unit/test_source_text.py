"""Untrusted text (a note's title) on the surfaces that are not HTML: one terminal line without
control or bidirectional formatting characters, cut by terminal columns (a CJK character takes
two and is never split), and one Markdown line whose marks read as text."""

from __future__ import annotations

from monitor.display import cut_width, one_line, text_width
from monitor.notify.digest_sources import markdown_text
from monitor.notify.event_text import note_variables
from monitor.notify.plaintext import plain_text


def test_one_line_drops_controls_and_bidi_marks() -> None:
    title = "a\x1b[31mb\u202e c\u2066d\u2069\n\t e\x00f\u200f 冬季"
    assert one_line(title) == "a[31mb cd ef 冬季"
    assert one_line("  ") == ""
    assert one_line("👩‍💻 ok") == "👩‍💻 ok"  # a joiner is not a control


def test_cut_width_counts_terminal_columns() -> None:
    assert cut_width("short", 10) == "short"
    assert cut_width("冬季宿舍好物分享", 9) == "冬季宿舍…"  # 8 columns and the ellipsis
    assert text_width(cut_width("冬季宿舍好物分享", 9)) <= 9
    assert cut_width("冬季宿舍好物分享", 16) == "冬季宿舍好物分享"
    assert cut_width("abcdefghij", 5) == "abcd…"


def test_markdown_text_reads_as_written() -> None:
    title = "[x](javascript:alert(1)) **b** _i_ `c` <b>h</b>\n# head | 1. item"
    escaped = markdown_text(title)
    assert "\n" not in escaped
    assert "](" not in escaped  # no link of its own
    assert escaped.startswith("\\[x\\]\\(javascript:alert\\(1\\)\\)")
    assert "\\<b\\>h\\</b\\>" in escaped
    assert plain_text(escaped) == one_line(title) + "\n"


def test_a_new_note_message_body_shows_an_untrusted_title_as_written() -> None:
    """The title and brand go into the Markdown body escaped: no link, emphasis or heading of
    their own; the headline (the message's title line) keeps the text as it is."""
    details = {
        "kind": "new_note",
        "note_id": "0123456789abcdef01234567",
        "title": "# *Win* [free](http://evil.example) <b>",
        "published": "2025-12-01",
        "video": False,
        "ad": True,
        "brand": "_Acme_",
    }
    note = note_variables(details, "en")
    assert note is not None
    assert note["title"] == markdown_text("# *Win* [free](http://evil.example) <b>")
    assert "\\[free\\]" in note["title"]
    assert note["brand"] == "\\_Acme\\_"
    assert plain_text(f"- Title: {note['title']}").rstrip() == (
        "- Title: # *Win* [free](http://evil.example) <b>"
    )
