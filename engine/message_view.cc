#include "engine/message_view.h"

#include "common/ascii.h"
#include "common/base64.h"
#include "engine/html_sanitize.h"
#include "engine/html_text.h"
#include "engine/mime_tree.h"

namespace mailark {

namespace {

constexpr std::size_t kMaxInlineImages = 10u << 20;

std::string param(const MimeParams& ps, std::string_view name) {
  for (const auto& [k, v] : ps)
    if (ascii_iequals(k, name)) return v;
  return "";
}

std::string filename_of(const MimeNode& n) {
  std::string f = param(n.disposition_params, "filename");
  if (f.empty()) f = param(n.params, "name");
  return f;
}

bool is_attachment_like(const MimeNode& n) {
  return (n.disposition && *n.disposition == "attachment") || !filename_of(n).empty();
}

std::string_view part_bytes(std::string_view raw, const MimeNode& n) {
  return raw.substr(n.header_begin, n.body_end - n.header_begin);
}

struct Walk {
  std::string_view raw;
  const MimeNode* text = nullptr;
  const MimeNode* html = nullptr;
  std::vector<std::pair<std::string, const MimeNode*>> leaves;  // section, node (not the body parts)

  void visit(const MimeNode& n, const std::string& section, unsigned depth) {
    if (depth > kMaxMimeDepth) return;
    if (n.is_multipart()) {
      for (std::size_t i = 0; i < n.children.size(); ++i)
        visit(n.children[i], section.empty() ? std::to_string(i + 1) : section + "." + std::to_string(i + 1), depth + 1);
      return;
    }
    const std::string sec = section.empty() ? "1" : section;
    if (!n.is_message() && n.type == "text" && !is_attachment_like(n)) {
      if (n.subtype == "plain" && !text) {
        text = &n;
        return;
      }
      if (n.subtype == "html" && !html) {
        html = &n;
        return;
      }
    }
    leaves.emplace_back(sec, &n);
  }
};

const MimeNode* find_section(const MimeNode& root, std::string_view section) {
  // IMAP part numbers (RFC 9051 6.4.5): a number picks a part of a multipart, or (1) the body of a
  // message that is not multipart; an attached message's parts are numbered within it.
  const MimeNode* n = &root;
  bool first = true;
  while (!section.empty()) {
    std::size_t dot = section.find('.');
    std::string_view num = section.substr(0, dot);
    section = dot == std::string_view::npos ? std::string_view() : section.substr(dot + 1);
    unsigned k = 0;
    if (num.empty() || num.size() > 5) return nullptr;
    for (char c : num) {
      if (c < '0' || c > '9') return nullptr;
      k = k * 10 + static_cast<unsigned>(c - '0');
    }
    if (k == 0) return nullptr;
    const MimeNode* container = n;
    if (!first) {
      if (n->is_message() && !n->children.empty()) container = &n->children[0];
      else if (!n->is_multipart()) return nullptr;  // a leaf has no parts
    }
    if (container->is_multipart()) {
      if (k > container->children.size()) return nullptr;
      n = &container->children[k - 1];
    } else {
      if (k != 1) return nullptr;
      n = container;
    }
    first = false;
  }
  return n;
}

}  // namespace

namespace {

// The header fields of a message and its parts' walk: what view_message and view_message_fields share.
// all_headers: every field decoded too (the view's header list).
MessageView view_fields(std::string_view raw, const MimeNode& root, Walk& w, bool all_headers) {
  MessageView v;
  std::string_view header = raw.substr(0, root.header_end);
  // Fields written twice read as the index reads them: the last Subject, Message-ID and Date, the
  // first In-Reply-To and References, the addresses of every From, To, Cc, Bcc and Reply-To
  // (engine/mime_tree.h; MessageView.FieldsWrittenTwiceReadAsTheIndexReadsThem).
  auto field = [&](std::string_view name) { return mime_header(header, name); };
  auto last = [&](std::string_view name) { return mime_header_last(header, name); };
  auto joined = [&](std::string_view name) { return mime_header_joined(header, name); };
  const std::string charset = declared_charset(raw);  // for raw 8-bit bytes (decode_header_text)
  if (auto s = last("Subject")) v.subject = decode_header_text(*s, charset);
  if (auto s = last("Message-ID")) v.message_id = *s;
  if (auto s = field("In-Reply-To")) v.in_reply_to = *s;
  if (auto s = field("References")) {
    std::string_view r = *s;
    std::size_t pos = 0;
    while ((pos = r.find('<', pos)) != std::string_view::npos && v.references.size() < 100) {
      std::size_t end = r.find('>', pos);
      if (end == std::string_view::npos) break;
      v.references.emplace_back(r.substr(pos, end - pos + 1));
      pos = end + 1;
    }
  }
  if (auto s = last("Date")) v.date = parse_date_value(*s);
  if (auto s = joined("From")) v.from = parse_address_list(*s, 100, false, charset);
  if (auto s = joined("To")) v.to = parse_address_list(*s, 1000, false, charset);
  if (auto s = joined("Cc")) v.cc = parse_address_list(*s, 1000, false, charset);
  if (auto s = joined("Bcc")) v.bcc = parse_address_list(*s, 1000, false, charset);
  if (auto s = joined("Reply-To")) v.reply_to = parse_address_list(*s, 100, false, charset);
  if (all_headers)
    for (auto& [name, value] : mime_header_list(header, 500)) v.headers.emplace_back(name, decode_header_text(value, charset));
  w.visit(root, "", 0);
  for (const auto& [section, n] : w.leaves) {
    ViewPart p;
    p.section = section;
    p.content_type = n->type + "/" + n->subtype;
    p.filename = filename_of(*n);
    if (n->id) {
      std::string id = *n->id;
      if (id.size() >= 2 && id.front() == '<' && id.back() == '>') id = id.substr(1, id.size() - 2);
      p.content_id = id;
    }
    p.size = n->body_end - n->body_begin;
    p.inline_image = n->type == "image" && !p.content_id.empty() && w.html;
    v.attachments.push_back(std::move(p));
  }
  return v;
}

}  // namespace

MessageView view_message(std::string_view raw, std::size_t max_text_bytes) {
  MimeNode root = parse_mime_tree(raw);
  Walk w{raw};
  MessageView v = view_fields(raw, root, w, /*all_headers=*/true);
  if (w.text) v.text = decode_part(part_bytes(raw, *w.text), true, max_text_bytes);
  if (w.html) {
    v.has_html = true;
    const std::string html = decode_part(part_bytes(raw, *w.html), true, max_text_bytes);
    v.remote_images = sanitize_html(html).remote_images_blocked;
    if (!w.text) v.text = html_to_text(html);
  }
  // Lines end in LF for readers (the stored bytes keep their CRLF).
  std::string lf;
  lf.reserve(v.text.size());
  for (std::size_t i = 0; i < v.text.size(); ++i)
    if (!(v.text[i] == '\r' && i + 1 < v.text.size() && v.text[i + 1] == '\n')) lf.push_back(v.text[i]);
  v.text = std::move(lf);
  return v;
}

MessageView view_message_fields(std::string_view raw) {
  MimeNode root = parse_mime_tree(raw);
  Walk w{raw};
  return view_fields(raw, root, w, /*all_headers=*/false);
}

std::string view_html(std::string_view raw, bool allow_remote_images, unsigned* remote_blocked) {
  MimeNode root = parse_mime_tree(raw);
  Walk w{raw};
  w.visit(root, "", 0);
  if (remote_blocked) *remote_blocked = 0;
  if (!w.html) {
    std::string text = w.text ? decode_part(part_bytes(raw, *w.text), true, 8u << 20) : std::string();
    return "<div style=\"white-space: pre-wrap\">" + text_to_html(text) + "</div>";
  }
  std::string html = decode_part(part_bytes(raw, *w.html), true, 16u << 20);
  std::size_t inlined = 0;
  SanitizeOptions opts;
  opts.allow_remote_images = allow_remote_images;
  opts.cid_url = [&](std::string_view cid) -> std::optional<std::string> {
    for (const auto& [section, n] : w.leaves) {
      if (n->type != "image" || !n->id) continue;
      std::string id = *n->id;
      if (id.size() >= 2 && id.front() == '<' && id.back() == '>') id = id.substr(1, id.size() - 2);
      if (id != cid) continue;
      std::string sub = ascii_lower(n->subtype);
      if (sub != "png" && sub != "gif" && sub != "jpeg" && sub != "jpg" && sub != "webp") return std::nullopt;
      std::string bytes = decode_part(part_bytes(raw, *n), false, kMaxInlineImages);
      if (inlined + bytes.size() > kMaxInlineImages) return std::nullopt;
      inlined += bytes.size();
      return "data:image/" + sub + ";base64," + base64_encode(bytes);
    }
    return std::nullopt;
  };
  SanitizedHtml s = sanitize_html(html, opts);
  if (remote_blocked) *remote_blocked = s.remote_images_blocked;
  return s.html;
}

std::optional<PartContent> part_content(std::string_view raw, std::string_view section, std::size_t max_bytes) {
  MimeNode root = parse_mime_tree(raw);
  const MimeNode* n = find_section(root, section);
  if (!n || n->is_multipart()) return std::nullopt;
  PartContent c;
  c.content_type = n->type + "/" + n->subtype;
  c.filename = filename_of(*n);
  if (n->is_message()) {
    c.bytes = std::string(raw.substr(n->body_begin, std::min(max_bytes, n->body_end - n->body_begin)));
  } else {
    c.bytes = decode_part(part_bytes(raw, *n), false, max_bytes);
  }
  return c;
}

}  // namespace mailark
