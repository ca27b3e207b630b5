#!/usr/bin/env python3
"""Writes demo/mailbox.mbox: a small mailbox written for mailark's README demo.

The messages are made up for the demo (a fictional company, Northwind Shipping). Run it again after
changing the messages below; the output is committed so a fresh machine needs nothing else.

The email package's default policy (compat32) writes a non-ASCII name's whole "Name <addr>" as RFC 2047
words (Chloé's From, To and Cc fields). That is not well-formed, but it is what many scripts send, so it
is kept: mailark finds the addresses in it (tests Message.AWholeAddressInEncodedWordsIsFound,
Mailbox.AnImportIsPlacedByAddressesWrittenAsEncodedWords), and tests pin the mailbox's bytes
(tests/e2e/test_upgrade.py imports it into folders written by older releases).
"""
import email.generator
import email.mime.application
import email.mime.multipart
import email.mime.text
import email.utils
import io
import os
import time

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
DOMAIN = "northwind.example"
start = time.mktime((2026, 3, 2, 9, 0, 0, 0, 0, 0))

people = {
    "ana": "Ana Ortega <ana.ortega@northwind.example>",
    "ben": "Ben Okafor <ben.okafor@northwind.example>",
    "chloe": "Chloé Dubois <chloe.dubois@northwind.example>",
    "dev": "Dev Raman <dev.raman@northwind.example>",
    "ops": "Harbour Ops <ops@harbour-logistics.example>",
}

messages = []


def add(frm, to, subject, body, cc=None, attachments=(), html=None, reply_to_index=None):
    n = len(messages)
    if attachments or html:
        m = email.mime.multipart.MIMEMultipart("mixed")
        if html:
            alt = email.mime.multipart.MIMEMultipart("alternative")
            alt.attach(email.mime.text.MIMEText(body, "plain", "utf-8"))
            alt.attach(email.mime.text.MIMEText(html, "html", "utf-8"))
            m.attach(alt)
        else:
            m.attach(email.mime.text.MIMEText(body, "plain", "utf-8"))
        for name, ctype, data in attachments:
            maintype, subtype = ctype.split("/")
            part = email.mime.application.MIMEApplication(data, subtype)
            part.replace_header("Content-Type", ctype)
            part.add_header("Content-Disposition", "attachment", filename=name)
            m.attach(part)
    else:
        m = email.mime.text.MIMEText(body, "plain", "utf-8")
    m["From"] = people[frm]
    m["To"] = ", ".join(people[t] for t in to)
    if cc:
        m["Cc"] = ", ".join(people[c] for c in cc)
    m["Subject"] = subject
    m["Date"] = email.utils.formatdate(start + n * 5400, localtime=False)
    m["Message-ID"] = f"<demo-{n + 1}@{DOMAIN}>"
    if reply_to_index is not None:
        m["In-Reply-To"] = f"<demo-{reply_to_index + 1}@{DOMAIN}>"
        m["References"] = f"<demo-{reply_to_index + 1}@{DOMAIN}>"
    messages.append((frm, m))


add("ana", ["ben", "chloe"], "Quarterly shipping forecast",
    "Hi both,\n\nThe quarterly shipping forecast is ready. Container volume through Rotterdam\n"
    "should rise by 12% while the Lisbon route stays flat.\n\nAna\n",
    attachments=[("forecast-q2.csv", "text/csv",
                  b"route,containers\nRotterdam,1840\nLisbon,610\nValencia,455\n")])
add("ben", ["ana"], "Re: Quarterly shipping forecast",
    "Thanks Ana. Can we book the harbour cranes for the Rotterdam peak in May?\n\nBen\n",
    cc=["chloe"], reply_to_index=0)
add("chloe", ["ana", "ben"], "Réunion à Lisbonne : ordre du jour",
    "Bonjour,\n\nVoici l'ordre du jour de la réunion à Lisbonne : tarifs portuaires,\n"
    "nouveaux entrepôts frigorifiques, et le calendrier d'été.\n\nChloé\n")
add("ops", ["dev"], "Berth schedule for the MV Aurora",
    "The MV Aurora is scheduled at berth 7 on Thursday from 06:00 to 18:00.\n"
    "Please confirm the customs paperwork by Wednesday noon.\n",
    html="<html><body><p>The <b>MV Aurora</b> is scheduled at <i>berth 7</i> on Thursday.</p>"
         "<p>Please confirm the customs paperwork by Wednesday noon.</p></body></html>")
add("dev", ["ops"], "Re: Berth schedule for the MV Aurora",
    "Confirmed. Customs paperwork for the Aurora is attached.\n",
    attachments=[("aurora-customs.pdf", "application/pdf",
                  b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")],
    reply_to_index=3)
add("ana", ["dev"], "Refrigerated warehouse contract",
    "Dev, the refrigerated warehouse contract in Valencia needs your signature\n"
    "before Friday. The penalty clause is in section 4.\n")
add("ben", ["ana", "chloe", "dev"], "Team lunch on Friday",
    "Lunch on Friday at the harbour café, 12:30. Reply if you can't make it.\n")
add("ops", ["ana"], "Invoice INV-2291 overdue",
    "Our invoice INV-2291 for crane hire is 30 days overdue. Please see the attached tool\n"
    "to check the payment status.\n",
    attachments=[("payment-check.com", "application/octet-stream", EICAR)])
add("chloe", ["ben"], "Re: Team lunch on Friday",
    "Count me in! I'll bring the Lisbon slides.\n", reply_to_index=6)
add("dev", ["ana", "ben"], "Crane maintenance window",
    "The cranes at berth 3 go into maintenance on 14 March. Rotterdam traffic moves to berth 5.\n")

out = io.StringIO()
for frm, m in messages:
    addr = email.utils.parseaddr(people[frm])[1]
    when = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(start))
    out.write(f"From {addr} {when}\n")
    gen = email.generator.Generator(out, mangle_from_=True, maxheaderlen=78)
    gen.flatten(m)
    out.write("\n")

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mailbox.mbox")
with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write(out.getvalue())
print(f"wrote {len(messages)} messages to {path}")
