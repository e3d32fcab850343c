#!/usr/bin/env python3
"""Checks .tf files against the layout `terraform fmt` produces.

Terraform is not installable on the build machines, so this re-implements
the two rules of hclwrite's formatter (format.go) that hand-written files
get wrong: indentation (two spaces per line that opened brackets, however
many it opened) and the alignment of `=` across consecutive single-line
attributes. Also: no tabs, no trailing spaces, one final newline, single
spaces after `=` and `,`. Prints file:line: problem, exits 1 on any.

Usage: terraform_fmt_check.py DIR_OR_FILE...
"""
import pathlib
import re
import sys

OPEN, CLOSE = "([{", ")]}"


def tokens(line):
    """Yields (kind, text, column) for a line, skipping string contents.
    kind: 'str', 'open', 'close', 'eq', 'comment', 'other'."""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == '"':
            j, depth = i + 1, 0
            while j < n:
                if line[j] == "\\":
                    j += 2
                    continue
                if line.startswith("${", j):
                    depth += 1
                    j += 2
                    continue
                if line[j] == "}" and depth:
                    depth -= 1
                elif line[j] == '"' and not depth:
                    break
                j += 1
            yield ("str", line[i:j + 1], i)
            i = j + 1
        elif c == "#" or line.startswith("//", i):
            yield ("comment", line[i:], i)
            return
        elif c in OPEN:
            yield ("open", c, i)
            i += 1
        elif c in CLOSE:
            yield ("close", c, i)
            i += 1
        elif c == "=" and (i + 1 >= n or line[i + 1] not in "=>") and (i == 0 or line[i - 1] not in "=!<>"):
            yield ("eq", c, i)
            i += 1
        else:
            yield ("other", c, i)
            i += 1


def check(path):
    problems = []
    text = path.read_text()
    if not text.endswith("\n") or text.endswith("\n\n"):
        problems.append(f"{path}: must end with exactly one newline")
    lines = text.split("\n")[:-1]
    indents = []  # stack of opener counts, as hclwrite keeps it
    chain = []  # (lineno, lead_len, eq_col) of consecutive assignment lines

    def close_chain():
        if chain:
            want = max(lead for _, lead, _ in chain) + 1
            for lineno, lead, col in chain:
                if col != want:
                    problems.append(f"{path}:{lineno}: '=' at column {col + 1}, terraform fmt puts it at {want + 1}")
        chain.clear()

    for lineno, line in enumerate(lines, 1):
        if "\t" in line:
            problems.append(f"{path}:{lineno}: tab")
        if line != line.rstrip():
            problems.append(f"{path}:{lineno}: trailing whitespace")
        if not line.strip():
            close_chain()
            continue
        toks = list(tokens(line))
        net = sum(1 if k == "open" else -1 if k == "close" else 0 for k, _, _ in toks)
        if net > 0:
            want_indent = 2 * len(indents)
            indents.append(net)
        elif net < 0:
            closed = -net
            while closed > 0 and indents:
                if closed > indents[-1]:
                    closed -= indents.pop()
                elif closed < indents[-1]:
                    indents[-1] -= closed
                    closed = 0
                else:
                    indents.pop()
                    closed = 0
            want_indent = 2 * len(indents)
        else:
            want_indent = 2 * len(indents)
        have_indent = len(line) - len(line.lstrip(" "))
        if have_indent != want_indent:
            problems.append(f"{path}:{lineno}: indented {have_indent}, terraform fmt indents {want_indent}")

        # An assignment cell exists when the first '=' (not the first token)
        # starts a bracket-balanced rest of line.
        assign = None
        code = [t for t in toks if t[0] != "comment"]
        for idx, (kind, _, col) in enumerate(code):
            if kind == "eq" and idx > 0:
                rest = code[idx:]
                if sum(1 if k == "open" else -1 if k == "close" else 0 for k, _, _ in rest) == 0:
                    assign = col
                break
        if assign is None:
            close_chain()
        else:
            lead = len(line[:assign].rstrip())
            chain.append((lineno, lead, assign))
        for m in re.finditer(r"(?<![=!<>])=(?![=>])( *)", line):
            if m.group(1) != " " and not any(k == "str" and c <= m.start() < c + len(t) for k, t, c in toks) \
                    and not any(k == "comment" and c <= m.start() for k, t, c in toks):
                problems.append(f"{path}:{lineno}: one space after '='")
    close_chain()
    if indents:
        problems.append(f"{path}: unbalanced brackets at end of file")
    return problems


def main(args):
    files = []
    for a in args:
        p = pathlib.Path(a)
        files.extend(sorted(p.glob("*.tf")) if p.is_dir() else [p])
    if not files:
        print("no .tf files given", file=sys.stderr)
        return 2
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print(p)
    print(f"{len(files)} files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
