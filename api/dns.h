// DNS for outbound delivery: MX lookup with the implicit-MX fallback to A/AAAA (RFC 5321 5.1), and
// address lookup of the exchangers, through libunbound (the one translation point to it is dns.cc).
// Lookups are blocking libunbound calls run on a dedicated thread; callers co_await them from the
// server's io_context.
#pragma once

#include <asio.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace mailark::api {

// A domain as DNS and servers without SMTPUTF8 take it: a name with UTF-8 labels (an IDN, as an
// SMTPUTF8 sender may write it: "bücher.example") in its A-label form ("xn--bcher-kva.example",
// IDNA2008 with UTS #46's mapping, libidn2); an ASCII name as it is. Empty when the name is not a
// valid IDN. Test: Dns.AsciiDomain.
std::optional<std::string> ascii_domain(std::string_view domain);
// A domain as the served-domain list compares it: its A-labels, lower case ("Bücher.example",
// "bücher.example" and "XN--BCHER-KVA.example" are one domain); a name that is no valid IDN as it is,
// lower-cased. Test: Dns.AsciiDomain.
std::string domain_key(std::string_view domain);
// The other spelling of an address whose domain is an IDN: its A-labels for one written in UTF-8,
// its UTF-8 (lower case) for one written in A-labels; "" when there is none (an ASCII domain, or
// no valid IDN). For MailboxStore::set_other_address_form. Test: Dns.AsciiDomain.
std::string other_address_form(std::string_view address);
// Whether `address`, in either spelling of an IDN domain, is one of `who`'s (a User: has_address).
template <typename Holder>
bool has_address_either_form(const Holder& who, std::string_view address) {
  if (who.has_address(address)) return true;
  const std::string other = other_address_form(address);
  return !other.empty() && who.has_address(other);
}

struct MailExchanger {
  std::string host;                    // the exchanger's name
  unsigned preference = 0;
  std::vector<std::string> addresses;  // IPv4 and IPv6 literals
};

class Resolver {
 public:
  // servers: "ip" or "ip@port" forwarders; empty: the system's /etc/resolv.conf.
  static Result<std::unique_ptr<Resolver>> create(asio::io_context& io, const std::vector<std::string>& servers);
  ~Resolver();

  // The exchangers for `domain`, best preference first (ties in random order), each with its
  // addresses. A domain without MX records is its own exchanger. Errors: kNotFound when the domain
  // does not exist or has no usable address (a permanent failure: bounce), kIo when the lookup failed
  // (temporary: try later). `max_addresses` (0: no limit) bounds the addresses over all exchangers,
  // best first, and the lookups made for them, as Postfix's smtp_mx_address_limit: a domain that
  // lists a hundred exchangers costs a hundred connection timeouts a try otherwise (test_mx.py
  // test_at_most_the_address_limit_of_exchangers_is_tried). At most kMaxExchangersLooked up in any case.
  static constexpr std::size_t kMaxExchangersLooked = 100;
  asio::awaitable<Result<std::vector<MailExchanger>>> mail_exchangers(std::string domain, std::size_t max_addresses = 0);

 private:
  Resolver() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark::api
