"""`zapc fmt`: the canonical layout of a schema, keeping every comment."""

from __future__ import annotations

from hanzocloud.zap.lexer import Line, Token, tokenize
from hanzocloud.zap.parser import parse

_STEP = "  "
# One output line: (level, code, trailing comment); level 1 is inside a declaration.
Row = tuple[int, str, str | None] | None


def _comment(text: str) -> str:
    return "# " + text.strip() if text.strip() else "#"


def _type(tokens: tuple[Token, ...]) -> str:
    return "".join(t.text for t in tokens)


def _group(tokens: tuple[Token, ...]) -> str:
    """`( a Text , b List ( X ) )` -> `(a Text, b List(X))`."""
    parts: list[str] = []
    depth, start = 0, 1
    for i, token in enumerate(tokens):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        if (token.text == "," and depth == 1) or (depth == 0 and i > 0):
            member = tokens[start:i]
            if member:
                parts.append(f"{member[0].text} {_type(member[1:])}")
            start = i + 1
    return "(" + ", ".join(parts) + ")"


def _method(tokens: tuple[Token, ...]) -> str:
    arrow = next(i for i, t in enumerate(tokens) if t.text == "->")
    return f"{tokens[0].text} {_group(tokens[1:arrow])} -> {_group(tokens[arrow + 1 :])}"


def _top(tokens: tuple[Token, ...]) -> str:
    if tokens[0].text == "@":
        return "@" + " ".join(t.text for t in tokens[1:])
    return " ".join(t.text for t in tokens)


def format_schema(text: str, *, path: str = "<schema>") -> str:
    """The formatted text; raises ZapSyntaxError first if `text` does not parse."""
    parse(text, path=path)
    lines = tokenize(text, path=path)
    rows: list[Row] = []
    kind = ""
    block: list[int] = []  # indices of the current declaration's member rows, for alignment
    blocks: list[tuple[str, list[int]]] = []
    for index, line in enumerate(lines):
        if line.blank:
            rows.append(None)
            continue
        if not line.tokens:
            rows.append((_next_level(lines, index), "", line.comment))
            continue
        if line.indent == 0:
            kind = line.tokens[0].text
            block = []
            blocks.append((kind, block))
            rows.append((0, _top(line.tokens), line.comment))
            continue
        block.append(len(rows))
        if kind == "interface":
            code = _method(line.tokens)
        elif kind == "enum":
            code = line.tokens[0].text
        else:
            code = f"{line.tokens[0].text}\0{_type(line.tokens[1:])}"
        rows.append((1, code, line.comment))
    _align(rows, blocks)
    return _render(rows)


def _next_level(lines: list[Line], index: int) -> int:
    for line in lines[index + 1 :]:
        if line.tokens:
            return 1 if line.indent > 0 else 0
    return 0


def _align(rows: list[Row], blocks: list[tuple[str, list[int]]]) -> None:
    """Line up field types in a column, then trailing comments in a column, per declaration."""
    for _kind, indices in blocks:
        members = [rows[i] for i in indices]
        names = [m[1].split("\0")[0] for m in members if m and "\0" in m[1]]
        width = max((len(n) for n in names), default=0) + 2
        for i in indices:
            row = rows[i]
            assert row is not None
            if "\0" in row[1]:
                name, type_text = row[1].split("\0")
                rows[i] = (row[0], name.ljust(width) + type_text, row[2])
        codes = [len(r[1]) for i in indices if (r := rows[i]) is not None]
        column = max(codes, default=0) + 2
        for i in indices:
            row = rows[i]
            if row is not None and row[2] is not None:
                rows[i] = (row[0], row[1].ljust(column), row[2])


def _render(rows: list[Row]) -> str:
    out: list[str] = []
    previous_level = 0
    for row in rows:
        if row is None:
            if out and out[-1] != "":
                out.append("")
            continue
        level, code, comment = row
        if level == 0 and previous_level == 1 and out and out[-1] != "":
            out.append("")  # a blank line closes every declaration block
        if comment is None:
            text = code
        elif not code or code.endswith("  "):  # comment-only, or already aligned by _align
            text = code + _comment(comment)
        else:
            text = f"{code}  {_comment(comment)}"
        out.append((_STEP * level + text).rstrip())
        previous_level = level
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n" if out else ""
