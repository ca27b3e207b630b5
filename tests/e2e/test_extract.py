"""Attachment text (engine/extract.h) from the command line: PDF, Word, Excel, PowerPoint and
OpenDocument attachments are found by words that are only inside them, a phrase inside a PDF too; the
words mailark takes from a PDF are the words pdftotext (poppler's own converter, the peer) prints; a
damaged PDF and a zip bomb cost only their own text. Every document is made here, at test time."""
import email.message
import io
import json
import mailbox
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import zipfile

from harness import BIN

PDFTOTEXT = shutil.which("pdftotext")
CORPUS = os.environ.get("MAILARK_CORPUS") or os.environ.get("MAILARK_DEFAULT_CORPUS") or ""


def peer_words(data):
    """The words of a document as others read it: pdftotext for a PDF, Python's own zip and XML readers
    for an Office or OpenDocument file; None when the peer cannot read it either."""
    if data[:1024].find(b"%PDF-") >= 0:
        p = subprocess.run([PDFTOTEXT, "-", "-"], input=data, capture_output=True, timeout=60)
        text = p.stdout.decode(errors="replace") if p.returncode == 0 else None
    elif data[:4] == b"PK\x03\x04":
        import xml.etree.ElementTree as ET
        try:
            z = zipfile.ZipFile(io.BytesIO(data))
            names = [n for n in z.namelist() if n in ("word/document.xml", "xl/sharedStrings.xml", "content.xml")
                     or re.fullmatch(r"ppt/slides/slide\d+\.xml", n)]
            text = " ".join(" ".join(ET.fromstring(z.read(n)).itertext()) for n in names) if names else None
        except Exception:
            text = None
    else:
        return None
    if text is None:
        return None
    return sorted({w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4})


def make_pdf(lines):
    """A PDF with one page showing each line (Helvetica), with a correct cross-reference table."""
    ops = " ".join(f"72 {700 - 24 * i} Td ({line}) Tj 0 0 Td" if i == 0 else f"0 -24 Td ({line}) Tj"
                   for i, line in enumerate(lines))
    stream = f"BT /F1 18 Tf {ops} ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, o in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def make_zip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files:
            z.writestr(name, content)
    return b.getvalue()


CT = ("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def docx(paragraphs, header=None):
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    files = [CT, ("word/document.xml", f'<?xml version="1.0"?><w:document {W}><w:body>{body}</w:body></w:document>')]
    if header:
        files.append(("word/header1.xml", f'<?xml version="1.0"?><w:hdr {W}><w:p><w:r><w:t>{header}</w:t></w:r></w:p></w:hdr>'))
    return make_zip(files)


def xlsx(cells):
    si = "".join(f"<si><t>{c}</t></si>" for c in cells)
    return make_zip([CT, ("xl/sharedStrings.xml", f'<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">{si}</sst>')])


def pptx(slides):
    files = [CT]
    for i, text in enumerate(slides, 1):
        files.append((f"ppt/slides/slide{i}.xml", f'<?xml version="1.0"?><p:sld xmlns:p="p" xmlns:a="a"><p:cSld><a:p><a:r><a:t>{text}</a:t></a:r></a:p></p:cSld></p:sld>'))
    return make_zip(files)


def odt(paragraphs):
    body = "".join(f"<text:p>{p}</text:p>" for p in paragraphs)
    return make_zip([("mimetype", "application/vnd.oasis.opendocument.text"),
                     ("content.xml", '<?xml version="1.0"?><office:document-content xmlns:office="o" xmlns:text="t">'
                                     f"<office:body><office:text>{body}</office:text></office:body></office:document-content>")])


def message(subject, name, data, n):
    m = email.message.EmailMessage()
    m["From"] = "ana.ortega@northwind.example"
    m["To"] = "legal@northwind.example"
    m["Subject"] = subject
    m["Message-ID"] = f"<extract-{n}@northwind.example>"
    m["Date"] = "Mon, 30 Nov 2026 10:00:00 +0000"
    m.set_content("See the attached file.")
    m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return m


class ExtractTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-extract-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")

    def cli(self, *args):
        p = subprocess.run([BIN, "--data", self.data, *args], capture_output=True, timeout=300)
        self.assertEqual(p.returncode, 0, f"mailark {' '.join(args)}: {p.stderr.decode()}")
        return p

    def search(self, query):
        out = json.loads(self.cli("search", query, "--json", "--limit", "100").stdout)
        return sorted(r["subject"] for r in out["results"])

    def test_words_inside_attached_documents_find_their_messages(self):
        pdf = make_pdf(["Berth allocation for the Rotterdam quayside", "zebrafinch tariffs apply"])
        bomb = make_zip([CT, ("word/document.xml", b"<a>" + b" " * (130 << 20) + b"</a>")])
        docs = [("pdf", "q3.pdf", pdf),
                ("word", "memo.docx", docx(["Quarterly hummingbird memo"], header="confidential platypus")),
                ("excel", "sheet.xlsx", xlsx(["kingfisher", "ledger"])),
                ("powerpoint", "deck.pptx", pptx(["first slide", "second slide with an axolotl"])),
                ("opendocument", "note.odt", odt(["An okapi paragraph"])),
                ("damaged", "broken.pdf", pdf[: len(pdf) // 3]),
                ("bomb", "bomb.docx", bomb),
                ("plain zip", "photos.zip", make_zip([("a.txt", "narwhal")]))]
        path = os.path.join(self.tmp, "in.mbox")
        box = mailbox.mbox(path)
        for n, (subject, name, data) in enumerate(docs):
            box.add(message(subject, name, data, n))
        box.close()
        out = json.loads(self.cli("import", path, "--json").stdout)
        self.assertEqual(out["imported"], len(docs), out)
        self.assertEqual(self.search("zebrafinch"), ["pdf"])
        self.assertEqual(self.search("rotterdam"), ["pdf"])
        self.assertEqual(self.search('"zebrafinch tariffs"'), ["pdf"], "a phrase inside the PDF")
        self.assertEqual(self.search('"tariffs zebrafinch"'), [])
        self.assertEqual(self.search("hummingbird"), ["word"])
        self.assertEqual(self.search("platypus"), ["word"], "the document's header")
        self.assertEqual(self.search("kingfisher"), ["excel"])
        self.assertEqual(self.search("axolotl"), ["powerpoint"])
        self.assertEqual(self.search("okapi"), ["opendocument"])
        self.assertEqual(self.search("narwhal"), [], "a zip archive's files are not read")
        # The damaged PDF and the zip bomb are archived and indexed by everything else they have.
        self.assertEqual(self.search("subject:damaged"), ["damaged"])
        self.assertEqual(self.search("subject:bomb"), ["bomb"])
        # The same after the index is rebuilt from the archive.
        self.cli("reindex")
        self.assertEqual(self.search("okapi"), ["opendocument"])
        self.assertEqual(self.search("zebrafinch"), ["pdf"])

    @unittest.skipUnless(PDFTOTEXT, "pdftotext (Debian's poppler-utils) is not installed")
    def test_a_pdfs_words_are_those_pdftotext_prints(self):
        lines = ["Harbour dues for November", "Invoice 4471 from Rotterdam Port Authority",
                 "Payable within thirty days"]
        pdf = make_pdf(lines)
        pdf_path = os.path.join(self.tmp, "invoice.pdf")
        with open(pdf_path, "wb") as f:
            f.write(pdf)
        peer = subprocess.run([PDFTOTEXT, pdf_path, "-"], capture_output=True, check=True).stdout.decode()
        words = set(re.findall(r"[a-z0-9]+", peer.lower()))
        self.assertGreater(len(words), 10, peer)
        path = os.path.join(self.tmp, "in.mbox")
        box = mailbox.mbox(path)
        box.add(message("invoice", "invoice.pdf", pdf, 1))
        box.close()
        self.cli("import", path)
        for w in sorted(words):
            self.assertEqual(self.search(f"{w} AND subject:invoice"), ["invoice"], f"pdftotext reads {w!r}")

    @unittest.skipUnless(PDFTOTEXT and CORPUS and os.path.isdir(os.path.join(CORPUS, "mime-edge")),
                         "the corpus (../shared/corpus) or pdftotext is not here")
    def test_the_corpus_documents_read_as_their_peers_read_them(self):
        """Every PDF and Office attachment in the corpus's MIME edge cases: each word the peer reads
        from it (up to eight) finds its message as extracted text."""
        import email
        import email.policy
        checked = 0
        for root, _, files in sorted(os.walk(os.path.join(CORPUS, "mime-edge"))):
            for name in sorted(files):
                path = os.path.join(root, name)
                try:
                    with open(path, "rb") as f:
                        msg = email.message_from_binary_file(f, policy=email.policy.compat32)
                    parts = [p.get_payload(decode=True) for p in msg.walk() if not p.is_multipart()]
                except Exception:
                    continue
                wanted = [w for d in parts if isinstance(d, bytes) and d and (w := peer_words(d))]
                if not wanted:
                    continue
                data = os.path.join(self.tmp, f"d{checked}")
                p = subprocess.run([BIN, "--data", data, "import", path], capture_output=True, timeout=120)
                self.assertEqual(p.returncode, 0, p.stderr)
                for words in wanted:
                    for w in words[:8]:
                        out = subprocess.run([BIN, "--data", data, "search", f"extracted:{w}", "--json"],
                                             capture_output=True, timeout=60)
                        self.assertEqual(json.loads(out.stdout)["total"], 1, f"{path}: the peer reads {w!r}")
                checked += 1
        self.assertGreaterEqual(checked, 5, "the corpus's PDF and Office attachments were found")


if __name__ == "__main__":
    unittest.main()
