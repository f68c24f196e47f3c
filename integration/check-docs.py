#!/usr/bin/env python3
"""Builds the documentation site (docs/, an mdBook) and checks its links.

1. `mdbook build docs` (Debian's mdbook package) into target/book; mdbook
   itself fails on a chapter SUMMARY.md names that does not exist.
2. Every relative link of every built page (`href`, `src`) must reach a file
   of the site, and a `#fragment` an element with that id in the page it
   names. Links out of the site (http:, https:, mailto:) are not followed:
   the check needs no network.
3. The relative links of the repository's README.md must reach a file.

Usage: integration/check-docs.py [REPO_DIR]   (default: the current directory)
"""
import html.parser
import os
import re
import subprocess
import sys
import urllib.parse

EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)

# Files mdbook's own page template links that Debian's mdbook (0.4.48+ds-2)
# does not ship: its theme script (theme switch, copy buttons, keyboard
# navigation; the pages read fine without it). Counted, not failed.
DEBIAN_OMITS = {"book.js"}


class Page(html.parser.HTMLParser):
    """The ids a page defines and the links it makes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v:
                self.ids.add(v)
            if k in ("href", "src") and v is not None:
                self.links.append((tag, v))


def parse(path):
    p = Page()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p


def check_site(book):
    pages, problems, omitted = {}, [], set()
    for root, _, files in os.walk(book):
        for f in files:
            if f.endswith(".html"):
                pages[os.path.normpath(os.path.join(root, f))] = None
    for page in sorted(pages):
        pages[page] = pages[page] or parse(page)
        for tag, link in pages[page].links:
            # 404.html's <base> is the site's root URL (output.html.site-url).
            if tag == "base" or EXTERNAL.match(link) or link.startswith("//"):
                continue
            url = urllib.parse.urlsplit(link)
            path = urllib.parse.unquote(url.path)
            if path.startswith("/"):
                problems.append(f"{os.path.relpath(page, book)}: absolute link {link!r} (breaks when served from a subdirectory)")
                continue
            target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if os.path.isdir(target):
                target = os.path.join(target, "index.html")
            if not os.path.exists(target):
                if os.path.dirname(target) == os.path.normpath(book) and os.path.basename(target) in DEBIAN_OMITS:
                    omitted.add(os.path.basename(target))
                    continue
                problems.append(f"{os.path.relpath(page, book)}: {link!r}: no such file in the site")
                continue
            if url.fragment and target.endswith(".html"):
                if target not in pages or pages[target] is None:
                    pages[target] = parse(target)
                if urllib.parse.unquote(url.fragment) not in pages[target].ids:
                    problems.append(f"{os.path.relpath(page, book)}: {link!r}: no #{url.fragment} in {os.path.relpath(target, book)}")
    return len(pages), problems, omitted


MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def check_readme(repo):
    problems = []
    readme = os.path.join(repo, "README.md")
    with open(readme, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    for link in MD_LINK.findall(text):
        if EXTERNAL.match(link) or link.startswith("#"):
            continue
        path = urllib.parse.unquote(link.split("#", 1)[0])
        if not os.path.exists(os.path.join(repo, path)):
            problems.append(f"README.md: {link!r}: no such file")
    return problems


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else "."
    docs = os.path.join(repo, "docs")
    book = os.path.join(repo, "target", "book")
    r = subprocess.run(["mdbook", "build", docs], capture_output=True, text=True)
    # mdbook reports a broken include or a bad SUMMARY as an ERROR line; some
    # versions still exit 0 after one.
    if r.returncode != 0 or "[ERROR]" in r.stderr or "[WARN]" in r.stderr:
        sys.stderr.write(r.stdout + r.stderr)
        print("check-docs: mdbook build failed or warned", file=sys.stderr)
        return 1
    n, problems, omitted = check_site(book)
    problems += check_readme(repo)
    for p in problems:
        print(p, file=sys.stderr)
    note = f" (not shipped by Debian's mdbook: {', '.join(sorted(omitted))})" if omitted else ""
    print(f"check-docs: {n} pages built in {os.path.relpath(book, repo)}, {len(problems)} broken link(s){note}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
