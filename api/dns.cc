#include "api/dns.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <unbound.h>

#include <algorithm>
#include <mutex>
#include <optional>
#include <random>

#include "common/ascii.h"

namespace mailark::api {

std::optional<std::string> ascii_domain(std::string_view domain) {
  if (std::all_of(domain.begin(), domain.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
    return std::string(domain);
  char* out = nullptr;
  const std::string in(domain);
  if (idn2_to_ascii_8z(in.c_str(), &out, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT) != IDN2_OK) {
    idn2_free(out);
    return std::nullopt;
  }
  std::string ascii(out);
  idn2_free(out);
  return ascii;
}

std::string domain_key(std::string_view domain) { return ascii_lower(ascii_domain(domain).value_or(std::string(domain))); }

std::string other_address_form(std::string_view address) {
  const std::size_t at = address.rfind('@');
  if (at == std::string_view::npos) return {};
  const std::string_view domain = address.substr(at + 1);
  const bool utf8 = std::any_of(domain.begin(), domain.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
  std::string other;
  if (utf8) {
    auto ascii = ascii_domain(domain);
    if (!ascii) return {};
    other = *ascii;
  } else {
    const std::string lower = ascii_lower(domain);
    if (lower.find("xn--") == std::string::npos) return {};
    char* out = nullptr;
    if (idn2_to_unicode_8z8z(lower.c_str(), &out, 0) != IDN2_OK) {
      idn2_free(out);
      return {};
    }
    other = out;
    idn2_free(out);
  }
  return std::string(address.substr(0, at + 1)) + other;
}

namespace {

constexpr int kTypeA = 1, kTypeMx = 15, kTypeAaaa = 28, kClassIn = 1;

// Reads a (possibly compressed) domain name from the RDATA of an MX record, which libunbound hands
// over in wire format without the packet: compression pointers do not occur there.
std::string wire_name(const unsigned char* p, std::size_t len) {
  std::string out;
  std::size_t i = 0;
  while (i < len && p[i] != 0) {
    unsigned l = p[i];
    if (l > 63 || i + 1 + l > len) return {};
    if (!out.empty()) out.push_back('.');
    out.append(reinterpret_cast<const char*>(p + i + 1), l);
    i += 1 + l;
  }
  return out;
}

}  // namespace

struct Resolver::Impl {
  asio::io_context& io;
  asio::thread_pool pool{1};
  ub_ctx* ctx = nullptr;
  std::mt19937 rng{std::random_device{}()};

  explicit Impl(asio::io_context& i) : io(i) {}
  ~Impl() {
    pool.join();
    if (ctx) ub_ctx_delete(ctx);
  }

  // One lookup, blocking (run on the pool). rcode_out: the DNS rcode; nxdomain is reported separately.
  Result<std::vector<std::vector<unsigned char>>> query(const std::string& name, int type, bool& nxdomain) {
    ub_result* res = nullptr;
    int rc = ub_resolve(ctx, name.c_str(), type, kClassIn, &res);
    if (rc != 0) return make_error(ErrorCode::kIo, "DNS lookup of " + name + ": " + ub_strerror(rc));
    std::vector<std::vector<unsigned char>> out;
    nxdomain = res->nxdomain != 0;
    bool servfail = res->rcode != 0 && !res->nxdomain;
    if (res->havedata) {
      for (int i = 0; res->data[i]; ++i) {
        out.emplace_back(reinterpret_cast<unsigned char*>(res->data[i]),
                         reinterpret_cast<unsigned char*>(res->data[i]) + res->len[i]);
      }
    }
    ub_resolve_free(res);
    if (servfail) return make_error(ErrorCode::kIo, "DNS lookup of " + name + " failed (server failure)");
    return out;
  }

  Result<std::vector<std::string>> addresses(const std::string& host, bool& nxdomain) {
    std::vector<std::string> out;
    bool nx4 = false, nx6 = false;
    auto a = query(host, kTypeA, nx4);
    if (!a) return a.error();
    for (const auto& rd : *a) {
      if (rd.size() != 4) continue;
      char buf[INET_ADDRSTRLEN];
      if (inet_ntop(AF_INET, rd.data(), buf, sizeof buf)) out.push_back(buf);
    }
    auto aaaa = query(host, kTypeAaaa, nx6);
    if (aaaa) {
      for (const auto& rd : *aaaa) {
        if (rd.size() != 16) continue;
        char buf[INET6_ADDRSTRLEN];
        if (inet_ntop(AF_INET6, rd.data(), buf, sizeof buf)) out.push_back(buf);
      }
    }
    nxdomain = nx4 && nx6;
    return out;
  }

  Result<std::vector<MailExchanger>> lookup(const std::string& name, std::size_t max_addresses) {
    // An internationalised domain is looked up by its A-labels (DNS holds no UTF-8 names).
    const std::optional<std::string> ascii = ascii_domain(name);
    if (!ascii) return make_error(ErrorCode::kNotFound, "domain " + name + " is not a valid internationalised name");
    const std::string& domain = *ascii;
    bool nx = false;
    auto mx = query(domain, kTypeMx, nx);
    if (!mx) return mx.error();
    if (nx) return make_error(ErrorCode::kNotFound, "domain " + domain + " does not exist");
    std::vector<MailExchanger> list;
    for (const auto& rd : *mx) {
      if (rd.size() < 3) continue;
      MailExchanger e;
      e.preference = static_cast<unsigned>(rd[0] << 8 | rd[1]);
      e.host = wire_name(rd.data() + 2, rd.size() - 2);
      if (e.host.empty() && rd.size() == 3) {
        // The null MX (RFC 7505): the domain accepts no mail.
        return make_error(ErrorCode::kNotFound, "domain " + domain + " accepts no mail (null MX)");
      }
      if (!e.host.empty()) list.push_back(std::move(e));
    }
    if (list.empty()) list.push_back({domain, 0, {}});  // implicit MX
    std::shuffle(list.begin(), list.end(), rng);
    std::stable_sort(list.begin(), list.end(),
                     [](const MailExchanger& a, const MailExchanger& b) { return a.preference < b.preference; });
    bool any = false;
    Error last_error = make_error(ErrorCode::kNotFound, "no address for the mail exchangers of " + domain);
    std::size_t found = 0, looked = 0;
    for (auto& e : list) {
      if ((max_addresses && found >= max_addresses) || looked++ >= Resolver::kMaxExchangersLooked) break;
      bool host_nx = false;
      auto addrs = addresses(e.host, host_nx);
      if (!addrs) {
        last_error = addrs.error();
        continue;
      }
      e.addresses = std::move(addrs).value();
      if (max_addresses && found + e.addresses.size() > max_addresses) e.addresses.resize(max_addresses - found);
      found += e.addresses.size();
      any |= !e.addresses.empty();
    }
    if (!any) return last_error;
    list.erase(std::remove_if(list.begin(), list.end(), [](const MailExchanger& e) { return e.addresses.empty(); }),
               list.end());
    return list;
  }
};

Result<std::unique_ptr<Resolver>> Resolver::create(asio::io_context& io, const std::vector<std::string>& servers) {
  std::unique_ptr<Resolver> r(new Resolver());
  r->impl_ = std::make_unique<Impl>(io);
  r->impl_->ctx = ub_ctx_create();
  if (!r->impl_->ctx) return make_error(ErrorCode::kInternal, "cannot create a libunbound context");
  int rc = 0;
  if (servers.empty()) {
    rc = ub_ctx_resolvconf(r->impl_->ctx, nullptr);
    if (rc == 0) rc = ub_ctx_hosts(r->impl_->ctx, nullptr);
  } else {
    for (const auto& s : servers) {
      rc = ub_ctx_set_fwd(r->impl_->ctx, s.c_str());
      if (rc) break;
    }
  }
  if (rc != 0) return make_error(ErrorCode::kInvalidArgument, std::string("DNS resolver setup: ") + ub_strerror(rc));
  return r;
}

Resolver::~Resolver() = default;

namespace {

using Answer = std::optional<Result<std::vector<MailExchanger>>>;

// A plain function, not a capturing lambda: GCC 12 destroys a coroutine lambda's captures twice.
template <typename Impl>
asio::awaitable<Answer> lookup_on_pool(Impl* m, std::string domain, std::size_t max_addresses) {
  co_return Answer(m->lookup(domain, max_addresses));
}

}  // namespace

asio::awaitable<Result<std::vector<MailExchanger>>> Resolver::mail_exchangers(std::string domain, std::size_t max_addresses) {
  Impl& m = *impl_;
  // The blocking lookup runs as a coroutine on the DNS thread; this one resumes on its own executor.
  Answer answer = co_await asio::co_spawn(m.pool.get_executor(), lookup_on_pool(&m, std::move(domain), max_addresses),
                                          asio::use_awaitable);
  co_return std::move(*answer);
}

}  // namespace mailark::api
