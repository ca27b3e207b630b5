"""An independent verifier of mailark's checkpoints and proofs, written from the published formats
(not from mailark's code): RFC 9162 section 2.1 (Merkle tree hashing, inclusion and consistency
proofs), C2SP tlog-checkpoint and signed-note (Ed25519, Python's `cryptography`), and the archive
record v1 of docs/FORMAT.md. What a court's expert could write to check an export without mailark.
"""
import json
import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def sha256(b):
    return hashlib.sha256(b).digest()


def leaf_hash(entry):
    return sha256(b"\x00" + entry)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_root, second_root, proof):
    """RFC 9162 2.1.4.2."""
    if first == 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


def parse_verifier_key(text):
    """NAME+KEYID+base64(0x01 || Ed25519 public key) -> (name, public key bytes)."""
    name, key_id, key = text.strip().split("+", 2)
    raw = b64(key)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 verifier key")
    expect = sha256(name.encode() + b"\n" + raw)[:4]
    if bytes.fromhex(key_id) != expect:
        raise ValueError("the verifier key's id does not match")
    return name, raw[1:]


def open_checkpoint(note, verifier_key):
    """Checks a signed checkpoint note (bytes) with the verifier key; returns (origin, size, root,
    extension lines). Raises ValueError when it does not check."""
    lines = open_signed_note(note, verifier_key).decode().split("\n")[:-1]
    return lines[0], int(lines[1]), b64(lines[2]), lines[3:]


def b64(text):
    """Strict base64: the alphabet, padding, and the one canonical spelling of the bytes."""
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise ValueError("not canonical base64")
    return raw


def _varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def _string(b, i):
    n, i = _varint(b, i)
    return b[i:i + n].decode("utf-8", "replace"), i + n


def _zigzag(b, i):
    v, i = _varint(b, i)
    return (v >> 1) ^ -(v & 1), i


def parse_record(value):
    """An archive record v1 or v2 (docs/FORMAT.md): checks its own hash and returns its fields."""
    body, stored_hash = value[:-32], value[-32:]
    if body[0] not in (1, 2):
        raise ValueError("not a record v1 or v2")
    r = {}
    r["seq"], i = _varint(body, 1)
    r["direction"] = body[i]
    r["mail_from"], i = _string(body, i + 1)
    n, i = _varint(body, i)
    r["rcpt_to"] = []
    for _ in range(n):
        s, i = _string(body, i)
        r["rcpt_to"].append(s)
    for f in ("client", "helo", "tls", "connector", "source") + (("custodian", "folder") if body[0] == 2 else ()):
        r[f], i = _string(body, i)
    r["received_at"], i = _zigzag(body, i)
    r["verdict"] = body[i]
    n, i = _varint(body, i + 1)
    r["signatures"] = []
    for _ in range(n):
        s, i = _string(body, i)
        r["signatures"].append(s)
    r["verdict_reason"], i = _string(body, i)
    r["flags"], i = _varint(body, i)
    r["content_sha256"] = body[i:i + 32]
    r["raw_size"], i = _varint(body, i + 32)
    r["archived_at"], i = _zigzag(body, i)
    r["prev_hash"] = body[i:i + 32]
    if i + 32 != len(body):
        raise ValueError("the record has bytes after its last field")
    seq_be = r["seq"].to_bytes(8, "big")
    if sha256(b"mailark-record-v1" + r["prev_hash"] + seq_be + body) != stored_hash:
        raise ValueError("the record's hash does not match its body")
    return r


def custodians_of(r):
    """Whose mail a record is (docs/FORMAT.md, exports): its custodian; else the recipients of inbound
    mail, the sender of outbound mail (and the recipients of an internal copy), lower case, each once."""
    if r.get("custodian"):
        return [r["custodian"]]
    out = []
    def add(a):
        a = a.lower()
        if a and a not in out:
            out.append(a)
    if r["direction"] == 1:
        for a in r["rcpt_to"]:
            add(a)
    elif r["direction"] == 2:
        add(r["mail_from"])
        if r["connector"].endswith("+internal") and len(r["connector"]) > len("+internal"):
            for a in r["rcpt_to"]:
                add(a)
    return out


def _mboxrd_unquote(quoted):
    out = []
    for line in quoted.splitlines(keepends=True):
        stripped = line.lstrip(b">")
        if line.startswith(b">") and stripped.startswith(b"From "):
            line = line[1:]
        out.append(line)
    return b"".join(out)


def verify_export(path, verifier_key):
    """Checks a mailark export (a zip: checkpoint, manifest.jsonl, manifest.sig, the messages) with the
    archive's verifier key, from the published formats alone; returns the number of messages checked.
    Raises ValueError naming the first thing wrong."""
    import json
    import zipfile
    with open(path, "rb") as f:
        whole = f.read()
    with zipfile.ZipFile(path) as z:
        # The seal: the zip comment is a signed note over the SHA-256 of every byte before it.
        origin = open_checkpoint(z.read("checkpoint"), verifier_key)[0]
        sealed = whole[:len(whole) - len(z.comment)]
        if not z.comment or open_signed_note(z.comment, verifier_key) != \
                f"mailark.export-zip/v1\n{origin}\n{sha256(sealed).hex()}\n".encode():
            raise ValueError("the seal does not check: the zip was changed")
        names = z.namelist()
        if names[:3] != ["checkpoint", "manifest.jsonl", "manifest.sig"]:
            raise ValueError("unexpected entries " + repr(names[:3]))
        origin, size, root, _ = open_checkpoint(z.read("checkpoint"), verifier_key)
        manifest = z.read("manifest.jsonl")
        sig_text = open_signed_note(z.read("manifest.sig"), verifier_key)
        if sig_text != f"mailark.export/v1\n{origin}\n{sha256(manifest).hex()}\n".encode():
            raise ValueError("the manifest's signed hash does not match")
        lines = manifest.decode().splitlines()
        header = json.loads(lines[0])
        if header["origin"] != origin or header["tree_size"] != size or bytes.fromhex(header["tree_root"]) != root:
            raise ValueError("the header does not match the checkpoint")
        entries = lines[1:]
        if len(entries) != header["count"]:
            raise ValueError("the count does not match")
        mbox = z.read("messages.mbox") if header["container"] == "mbox" else None
        v3 = header["format"] == "mailark-export-v3"
        v2 = v3 or header["format"] == "mailark-export-v2"
        if not v2 and header["format"] != "mailark-export-v1":
            raise ValueError("unknown export format " + header["format"])
        if v3 and names[3:4] != ["loadfile.csv"]:
            raise ValueError("a v3 export has no loadfile.csv after manifest.sig")
        files = names[4:] if v3 else names[3:]
        if mbox is None and files != [json.loads(e)["file"] for e in entries]:
            raise ValueError("the message files are not those the manifest lists, in its order")
        if mbox is not None and files != ["messages.mbox"]:
            raise ValueError("an mbox export holds more than messages.mbox")
        if v3:
            check_load_file(z.read("loadfile.csv"), [json.loads(e) for e in entries])

        def proven(entry):
            record = base64.b64decode(entry["record"], validate=True)
            fields = parse_record(record)
            if fields["seq"] != entry["id"]:
                raise ValueError(f"record {entry['id']}: another record's")
            proof = [bytes.fromhex(h) for h in entry["proof"]]
            if not verify_inclusion(entry["id"] - 1, size, leaf_hash(record), proof, root):
                raise ValueError(f"record {entry['id']}: not in the signed tree")
            if entry["envelope"]["mail_from"] != fields["mail_from"] or entry["envelope"]["rcpt_to"] != fields["rcpt_to"] \
                    or entry["envelope"].get("custodian", "") != fields.get("custodian", ""):
                raise ValueError(f"record {entry['id']}: the manifest's envelope is not the record's")
            return fields

        for line in entries:
            m = json.loads(line)
            fields = proven(m)
            if m["sha256"] != fields["content_sha256"].hex() or m["size"] != fields["raw_size"]:
                raise ValueError(f"record {m['id']}: the manifest's hash or size is not the record's")
            if v2:
                # Every copy (another record of the same bytes) proved too; the custodians of them all.
                records = {m["id"]: fields}
                ids = [c["id"] for c in m["copies"]]
                if ids != sorted(set(ids)) or m["id"] in ids:
                    raise ValueError(f"record {m['id']}: its copies are not each once in ascending order")
                for c in m["copies"]:
                    cf = proven(c)
                    if cf["content_sha256"] != fields["content_sha256"]:
                        raise ValueError(f"record {c['id']}: a copy of other bytes")
                    if c["custodians"] != custodians_of(cf):
                        raise ValueError(f"record {c['id']}: the manifest's custodians are not the record's")
                    records[c["id"]] = cf
                custodians = []
                for rid in sorted(records):
                    custodians += [x for x in custodians_of(records[rid]) if x not in custodians]
                if m["custodians"] != custodians:
                    raise ValueError(f"record {m['id']}: the manifest's custodians are not its records'")
            if mbox is None:
                body = z.read(m["file"])
            else:
                body = _mboxrd_unquote(mbox[m["mbox_offset"]:m["mbox_offset"] + m["mbox_length"]])
            if sha256(body) != fields["content_sha256"] or len(body) != fields["raw_size"]:
                raise ValueError(f"message {m['id']}: its bytes are not those archived")
        return len(entries)


LOAD_FILE_COLUMNS = ["DocID", "DateSent", "From", "To", "CC", "BCC", "Subject", "AttachmentCount",
                     "AttachmentNames", "MessageID", "InReplyTo", "Custodians", "Folder", "NativeFile",
                     "MboxOffset", "MboxLength", "FileSize", "SHA256", "EnvelopeFrom", "EnvelopeRecipients",
                     "ArchivedAt", "Verdict", "VerdictDetail", "CopyIDs"]


def load_file_cell(text):
    """What docs/FORMAT.md says a load file cell holds for `text`: control characters as spaces, at
    most 32,767 bytes, an apostrophe before a leading = + - @."""
    text = "".join(" " if ord(c) < 0x20 or c == "\x7f" else c for c in text)
    raw = text.encode()
    if len(raw) > 32767:
        text = raw[:32767].decode(errors="ignore")
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def load_file_rows(data):
    """The rows of a load file (bytes), read by Python's csv module; checks the byte-order mark and that
    every row is one CRLF-ended line."""
    import csv
    import io
    if not data.startswith(b"\xef\xbb\xbf"):
        raise ValueError("loadfile.csv does not begin with a UTF-8 byte-order mark")
    text = data[3:].decode("utf-8")
    lines = text.split("\r\n")
    if lines[-1] != "":
        raise ValueError("loadfile.csv does not end with CR LF")
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    if len(rows) != len(lines) - 1 or any("\n" in line or "\r" in line for line in lines):
        raise ValueError("a row of loadfile.csv is not one line")
    return rows


def check_load_file(data, entries):
    """A v3 export's load file against its manifest's entries: the header row, one row per entry in
    the same order, and every column the manifest says (the header fields are mailark's reading)."""
    rows = load_file_rows(data)
    if rows[0] != LOAD_FILE_COLUMNS:
        raise ValueError("loadfile.csv's header row is not the published one")
    if len(rows) - 1 != len(entries):
        raise ValueError(f"loadfile.csv has {len(rows) - 1} rows, the manifest {len(entries)} messages")
    for row, m in zip(rows[1:], entries):
        if len(row) != len(LOAD_FILE_COLUMNS):
            raise ValueError(f"message {m['id']}: its load file row is {len(row)} cells wide")
        cells = dict(zip(LOAD_FILE_COLUMNS, row))
        v = m["verdict"]
        want = {"DocID": str(m["id"]), "MessageID": m["message_id"], "Custodians": "; ".join(m["custodians"]),
                "Folder": m["envelope"].get("folder", ""),
                "NativeFile": m.get("file", "messages.mbox"),
                "MboxOffset": str(m.get("mbox_offset", "")), "MboxLength": str(m.get("mbox_length", "")),
                "FileSize": str(m["size"]), "SHA256": m["sha256"], "EnvelopeFrom": m["envelope"]["mail_from"],
                "EnvelopeRecipients": "; ".join(m["envelope"]["rcpt_to"]), "ArchivedAt": m["archived_at"],
                "Verdict": v["kind"], "VerdictDetail": "; ".join(v["signatures"]) or v["reason"],
                "CopyIDs": "; ".join(str(c["id"]) for c in m["copies"])}
        for name, value in want.items():
            if cells[name] != load_file_cell(value):
                raise ValueError(f"message {m['id']}: the load file's {name} is not the manifest's")


def open_signed_note(note, verifier_key):
    """A signed note's text, once its signature checks with the verifier key."""
    name, pub = parse_verifier_key(verifier_key)
    key_id = sha256(name.encode() + b"\n" + b"\x01" + pub)[:4]
    text, sep, sigs = note.rpartition(b"\n\n")
    if not sep or not note.endswith(b"\n"):
        raise ValueError("no signature block")
    text += b"\n"
    for line in sigs.decode().split("\n")[:-1]:  # lines end at "\n" only (signed-note)
        if not line.startswith("\u2014 "):
            raise ValueError("bad signature line")
        signer, sig = line[2:].rsplit(" ", 1)
        raw = b64(sig)
        if signer == name and raw[:4] == key_id:
            try:
                Ed25519PublicKey.from_public_bytes(pub).verify(raw[4:], text)
                return text
            except InvalidSignature:
                pass
    raise ValueError("no signature checks with " + name)


def verify_audit_export(path, verifier_key):
    """Checks a `mailark audit export` file from its bytes alone: every entry's hash chains from the one
    before (SHA-256 over "mailark-audit-v1\\n", the previous hash, 32 zero bytes before the first, and
    the entry's exact bytes), each entry names its own place, the last hash is the head, and the head
    is signed by the archive's key (a C2SP signed note: origin ".../audit", entry count, base64 head).
    Returns the entries (parsed); raises ValueError on anything else."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines[-1] != b"":
        raise ValueError("the file does not end with a newline")
    header = json.loads(lines[0])
    if header.get("format") != "mailark-audit-v1":
        raise ValueError("not a mailark-audit-v1 export")
    text = open_signed_note(header["signed_head"].encode(), verifier_key).decode().split("\n")[:-1]
    name, _ = parse_verifier_key(verifier_key)
    if text[0] != name + "/audit":
        raise ValueError("the signed head is not this archive's audit log")
    count, head = int(text[1]), b64(text[2])
    previous = bytes(32)
    entries = []
    for n, line in enumerate(lines[1:-1], start=1):
        row = json.loads(line)
        body = row["entry"].encode()
        h = sha256(b"mailark-audit-v1\n" + previous + body)
        if row["seq"] != n or h.hex() != row["hash"]:
            raise ValueError(f"audit entry {n} does not chain")
        entry = json.loads(body)
        if entry["seq"] != n:
            raise ValueError(f"audit entry {n} names another place")
        entries.append(entry)
        previous = h
    if len(entries) != count or previous != head or header["entries"] != count:
        raise ValueError("the entries do not end at the signed head")
    return entries


def verify_tombstones(lines, verifier_key):
    """Checks `mailark retention tombstones --json` output (one JSON object a line: id, body,
    signature in hex) from docs/FORMAT.md "Expiry and tombstones": each body is signed by the
    archive's key, and names the hash of the one before (SHA-256 of "mailark-tombstone-v1\\n" and
    its body; zeros for the first). Returns the bodies, parsed. Raises ValueError."""
    _, public = parse_verifier_key(verifier_key)
    key = Ed25519PublicKey.from_public_bytes(public)
    prev = bytes(32)
    out = []
    for n, line in enumerate(lines, 1):
        t = json.loads(line)
        body = t["body"].encode()
        try:
            key.verify(bytes.fromhex(t["signature"]), body)
        except InvalidSignature:
            raise ValueError(f"tombstone {t['id']}: the signature does not hold")
        b = json.loads(body)
        if t["id"] != n or b["id"] != n:
            raise ValueError(f"tombstone {n} is missing or out of order")
        if bytes.fromhex(b["prev"]) != prev:
            raise ValueError(f"tombstone {n} does not name the one before it")
        prev = sha256(b"mailark-tombstone-v1\n" + body)
        out.append(b)
    return out
