"""Convert HTML pages to plain text, e.g. to build a prose corpus for data.name=text_file.

Usage:
  python launch/html_to_text.py [--drop-code] [--min-words N] -o corpus.txt page1.html [page2.html ...]

Tags are stripped and entities decoded; script, style, head, nav, noscript, svg and button elements are
dropped, and with --drop-code so are <pre> blocks (code listings). Each block element (paragraph,
heading, list item, table cell, ...) becomes one line whose whitespace is collapsed to single spaces;
with --min-words N, lines of fewer than N words (menus, captions, stray labels) are dropped. Pages are
written in the order given, separated by a blank line. Standard library only.
"""

import argparse
import html.parser
import re
import sys

# Elements whose whole content is dropped.
SKIP = {"script", "style", "head", "nav", "noscript", "svg", "button", "template"}
# Elements that start and end a line of output.
BLOCKS = {
  "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
  "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "ol", "p", "pre", "section",
  "table", "td", "th", "tr", "ul",
}  # fmt: skip
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class TextExtractor(html.parser.HTMLParser):
  """Collects the text of one page as lines, one per block element."""

  def __init__(self, drop_code: bool):
    super().__init__(convert_charrefs=True)
    self.skip = SKIP | ({"pre"} if drop_code else set())
    self.skipping = []  # the open skipped elements, innermost last
    self.lines, self.current = [], []

  def _break(self):
    line = re.sub(r"\s+", " ", "".join(self.current)).strip()
    if line:
      self.lines.append(line)
    self.current = []

  def handle_starttag(self, tag, attrs):
    if self.skipping:
      if tag == self.skipping[-1] and tag not in VOID:
        self.skipping.append(tag)  # nested element of the same kind
      return
    if tag in self.skip:
      self._break()
      if tag not in VOID:
        self.skipping.append(tag)
    elif tag in BLOCKS:
      self._break()

  def handle_endtag(self, tag):
    if self.skipping:
      if tag == self.skipping[-1]:
        self.skipping.pop()
      return
    if tag in BLOCKS:
      self._break()

  def handle_data(self, data):
    if not self.skipping:
      self.current.append(data)

  def text(self, min_words: int) -> str:
    self._break()
    return "\n".join(line for line in self.lines if len(line.split()) >= min_words)


def html_to_text(page: str, drop_code: bool = False, min_words: int = 0) -> str:
  """The plain text of an HTML page: one line per block element."""
  extractor = TextExtractor(drop_code)
  extractor.feed(page)
  extractor.close()
  return extractor.text(min_words)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("pages", nargs="+", help="HTML files, converted in this order")
  parser.add_argument("-o", "--output", default="-", help="output text file (default: standard output)")
  parser.add_argument("--drop-code", action="store_true", help="drop <pre> blocks (code listings)")
  parser.add_argument("--min-words", type=int, default=0, help="drop lines with fewer words than this")
  args = parser.parse_args(argv)
  texts = []
  for path in args.pages:
    with open(path, encoding="utf-8", errors="replace") as f:
      texts.append(html_to_text(f.read(), args.drop_code, args.min_words))
  corpus = "\n\n".join(t for t in texts if t) + "\n"
  if args.output == "-":
    sys.stdout.write(corpus)
  else:
    with open(args.output, "w", encoding="utf-8") as f:
      f.write(corpus)


if __name__ == "__main__":
  main()
